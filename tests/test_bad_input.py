"""Bad and unusual input: one `error:` line and a non-zero exit, never a traceback, never a stray file.

Odd but valid input (empty, silent, tiny, many channels, any rate, any bit depth, compressed) must convert.
"""

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image
from typer.testing import CliRunner

from spectrodiff import SpectrogramParams, audio_to_image, image_to_audio
from spectrodiff.cli import app, main
from spectrodiff.codec.convert import save_image

SR = 44100
HOP = 441


@pytest.fixture(autouse=True)
def _no_debug_tracebacks(monkeypatch):
    monkeypatch.delenv("SPECTRODIFF_DEBUG", raising=False)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """The console entry point, in process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["spectrodiff", *map(str, args)])
    status = main()
    out, err = capsys.readouterr()
    return status, out, err


def tree(root: Path) -> set[str]:
    """Every file and folder under `root`, hidden ones included."""
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def assert_clean_error(result, root: Path, before: set[str], *fragments: str) -> str:
    """Non-zero exit, exactly one `error:` line (holding every fragment), no traceback, nothing new under root."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]
    assert tree(root) == before
    return lines[0]


def assert_ok(result) -> None:
    assert result.exit_code == 0, result.output
    assert result.exception is None, repr(result.exception)
    assert not error_lines(result.stderr), result.stderr
    assert "Traceback" not in result.output


def sine(samples: int, hz: float = 1000.0, rate: int = SR, amplitude: float = 0.3) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(samples) / rate)).astype(np.float32)


def size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def exif(path: Path) -> dict:
    with Image.open(path) as image:
        return dict(image.getexif())


def peak_row(path: Path) -> int:
    """Pixel row of the loudest mel band (left channel), averaged over time (0 = top = highest band)."""
    with Image.open(path) as image:
        grey = np.asarray(image.convert("RGB"))[..., 1].astype(float)  # G: grey in mono, left in stereo
    return int(np.argmin(grey.mean(axis=1)))


@pytest.fixture
def out_dir(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def spectrogram(tmp_path) -> Image.Image:
    """A valid 1 s mono spectrogram image with its EXIF (made by the library, not the CLI)."""
    image = audio_to_image(sine(SR)[None], SpectrogramParams())
    save_image(tmp_path / "good.png", image)
    with Image.open(tmp_path / "good.png") as reopened:
        reopened.load()
        return reopened


def spectrogram_exif(spectrogram: Image.Image, **changes) -> Image.Exif:
    """A fresh copy of the image's EXIF with some tags replaced (`t11000=...`)."""
    tags = Image.Exif()
    tags.update(dict(spectrogram.getexif()))
    for key, value in changes.items():
        tags[int(key[1:])] = value
    return tags


# --- missing and wrong files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["audio-to-image", "image-to-audio", "slice", "info"])
def test_missing_input_file(tmp_path, out_dir, command):
    before = tree(tmp_path)
    missing = tmp_path / ("missing.png" if command == "image-to-audio" else "missing.wav")
    result = invoke(command, missing, "-o", out_dir) if command != "info" else invoke(command, missing)
    assert_clean_error(result, tmp_path, before, "no such file", "missing.")


@pytest.mark.parametrize("command", ["audio-to-image", "info"])
def test_text_file_named_wav(tmp_path, out_dir, command):
    fake = tmp_path / "fake.wav"
    fake.write_text("RIFF? no, just some words\n" * 20)
    before = tree(tmp_path)
    result = invoke(command, fake, "-o", out_dir) if command != "info" else invoke(command, fake)
    assert_clean_error(result, tmp_path, before, "fake.wav", "not a readable audio file")


def test_slice_of_a_single_text_file_named_wav(tmp_path, out_dir):
    fake = tmp_path / "fake.wav"
    fake.write_text("not audio")
    before = tree(tmp_path)
    result = invoke("slice", fake, "-o", out_dir)
    assert_clean_error(result, tmp_path, before, "nothing to slice")
    assert "fake.wav" in result.stderr  # the warning says which file was skipped


@pytest.mark.parametrize("command", ["image-to-audio", "info"])
def test_text_file_named_png(tmp_path, out_dir, command):
    fake = tmp_path / "fake.png"
    fake.write_text("\x89PNG? no, just some words\n")
    before = tree(tmp_path)
    result = invoke(command, fake, "-o", out_dir) if command != "info" else invoke(command, fake)
    assert_clean_error(result, tmp_path, before, "fake.png", "not a readable image")


def test_folder_as_audio_input(tmp_path, out_dir):
    (tmp_path / "folder.wav").mkdir()
    before = tree(tmp_path)
    assert_clean_error(invoke("audio-to-image", tmp_path / "folder.wav", "-o", out_dir), tmp_path, before,
                       "folder")


def test_folder_as_image_input(tmp_path, out_dir):
    (tmp_path / "folder.png").mkdir()
    before = tree(tmp_path)
    assert_clean_error(invoke("image-to-audio", tmp_path / "folder.png", "-o", out_dir), tmp_path, before,
                       "folder.png")


def test_failed_run_does_not_create_the_output_folder(tmp_path):
    """`-o new_folder/` for an input that turns out not to be an image: nothing, not even the folder, is left."""
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    before = tree(tmp_path)
    assert_clean_error(invoke("image-to-audio", fake, "-o", tmp_path / "new_folder"), tmp_path, before,
                       "not a readable image")


# --- usage errors through the console entry point -------------------------------------------------------------------


@pytest.mark.parametrize("iters", ["5000", "-1"])
def test_iters_out_of_range_through_main(tmp_path, monkeypatch, capsys, spectrogram, iters):
    before = tree(tmp_path)
    status, out, err = run_main(monkeypatch, capsys, "image-to-audio", tmp_path / "good.png", "--iters", iters,
                                "-o", tmp_path / "x.wav")
    assert status == 2
    assert out == ""
    assert err.splitlines() == error_lines(err) and len(error_lines(err)) == 1, err
    assert "--iters" in err and "Traceback" not in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("args", [["bogus-command"], ["audio-to-image"], ["slice", "x.wav"],
                                  ["audio-to-image", "x.wav", "--start", "-1"]])
def test_usage_errors_through_main_are_one_line(monkeypatch, capsys, args):
    status, out, err = run_main(monkeypatch, capsys, *args)
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err


def test_runtime_error_through_main(tmp_path, monkeypatch, capsys):
    status, out, err = run_main(monkeypatch, capsys, "info", tmp_path / "absent.wav")
    assert status == 1
    assert out == ""
    assert err.splitlines() == [f"error: no such file: {tmp_path / 'absent.wav'}"]


@pytest.mark.parametrize("args", [[], ["dev"]])
def test_no_arguments_prints_usage_not_an_error(monkeypatch, capsys, args):
    """`spectrodiff` (or a command group) alone shows the help; it must not be dressed up as `error: Usage: ...`."""
    status, out, err = run_main(monkeypatch, capsys, *args)
    assert out.startswith(f"Usage: spectrodiff {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND") and err == ""
    assert status == 0


# --- empty, silent and tiny audio -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stereo", [False, True])
def test_empty_audio_is_a_clean_error(tmp_path, out_dir, stereo):
    """A 0-frame file has nothing to convert (an empty image would only fail later, further from the cause)."""
    source = tmp_path / "empty.wav"
    soundfile.write(source, np.zeros((0, 2 if stereo else 1), np.float32), SR)
    assert soundfile.info(source).frames == 0
    before = tree(tmp_path)
    result = invoke("audio-to-image", source, "-o", out_dir, *(["--stereo"] if stereo else []))
    assert_clean_error(result, tmp_path, before, "holds no audio (0 frames)")


def test_silent_audio_round_trips_to_finite_audio(tmp_path, out_dir):
    source = tmp_path / "silent.wav"
    soundfile.write(source, np.zeros(SR // 2, np.float32), SR)
    assert_ok(invoke("audio-to-image", source, "-o", out_dir))
    png = out_dir / "silent.png"
    assert size(png) == (1 + (SR // 2) // HOP, 512)
    max_value = float(exif(png)[11080])
    assert math.isfinite(max_value) and max_value >= 0
    with Image.open(png) as image:
        audio, _ = image_to_audio(image, n_iter=4)
    assert np.isfinite(audio).all()
    back = out_dir / "silent.wav"
    assert_ok(invoke("image-to-audio", png, "-o", back, "--iters", 4))
    samples, rate = soundfile.read(back)
    assert rate == SR and len(samples) == SR // 2
    assert np.isfinite(samples).all() and np.abs(samples).max() < 1e-3


@pytest.mark.parametrize("samples", [1, 100, 440])
def test_audio_shorter_than_a_frame(tmp_path, out_dir, samples):
    source = tmp_path / "tiny.wav"
    soundfile.write(source, sine(samples), SR)
    assert_ok(invoke("audio-to-image", source, "-o", out_dir))
    assert size(out_dir / "tiny.png") == (1, 512)
    assert math.isfinite(float(exif(out_dir / "tiny.png")[11080]))
    # One column holds no audio: refused, rather than an empty WAV (hostile round 2).
    result = invoke("image-to-audio", out_dir / "tiny.png", "-o", out_dir, "--iters", 4)
    assert result.exit_code == 1 and "too narrow to hold audio" in result.output
    assert not (out_dir / "tiny.wav").exists()


@pytest.mark.parametrize("samples", [441, 1000, 5000, 9000])
def test_clips_shorter_than_a_window_round_trip(tmp_path, out_dir, samples):
    """A few columns (less than one 100 ms window of audio) still convert both ways."""
    source = tmp_path / "few.wav"
    soundfile.write(source, sine(samples), SR)
    assert_ok(invoke("audio-to-image", source, "-o", out_dir))
    width = 1 + samples // HOP
    assert size(out_dir / "few.png") == (width, 512)
    assert_ok(invoke("image-to-audio", out_dir / "few.png", "-o", out_dir, "--iters", 4))
    back, rate = soundfile.read(out_dir / "few.wav")
    assert rate == SR and len(back) == (width - 1) * HOP
    assert np.isfinite(back).all() and np.abs(back).max() > 0


def test_nan_samples_are_treated_as_silence(tmp_path, out_dir):
    audio = sine(SR // 2)
    audio[1000:1010] = np.nan
    source = tmp_path / "nan.wav"
    soundfile.write(source, audio, SR, subtype="FLOAT")
    assert_ok(invoke("audio-to-image", source, "-o", out_dir))
    max_value = float(exif(out_dir / "nan.png")[11080])
    assert math.isfinite(max_value) and max_value > 0


def test_infinite_sample_gives_a_valid_image_or_a_clean_error(tmp_path, out_dir):
    """A float WAV holding an infinite sample must not yield a PNG whose EXIF max value is NaN or infinite."""
    audio = sine(SR // 2)
    audio[1000] = np.inf
    source = tmp_path / "inf.wav"
    soundfile.write(source, audio, SR, subtype="FLOAT")
    before = tree(tmp_path)
    result = invoke("audio-to-image", source, "-o", out_dir)
    if result.exit_code != 0:
        assert_clean_error(result, tmp_path, before)
    else:
        assert "Traceback" not in result.output
        assert math.isfinite(float(exif(out_dir / "inf.png")[11080]))


# --- channels, rates, sample formats, containers --------------------------------------------------------------------


@pytest.mark.parametrize("channels", range(1, 9))
def test_any_channel_count_converts(tmp_path, out_dir, channels):
    tone = sine(SR // 2)
    source = tmp_path / "multi.wav"
    soundfile.write(source, np.stack([tone * (k + 1) / 9 for k in range(channels)], axis=1), SR)
    assert_ok(invoke("audio-to-image", source, "-o", out_dir / "mono.png"))
    assert_ok(invoke("audio-to-image", source, "-o", out_dir / "stereo.png", "--stereo"))
    assert size(out_dir / "mono.png") == size(out_dir / "stereo.png") == (51, 512)
    with Image.open(out_dir / "stereo.png") as image:
        rgb = np.asarray(image)
    assert (rgb[..., 0] == 0).all()
    assert peak_row(out_dir / "mono.png") == peak_row(out_dir / "stereo.png")


@pytest.fixture(scope="module")
def reference_peak_row(tmp_path_factory) -> int:
    folder = tmp_path_factory.mktemp("reference")
    soundfile.write(folder / "ref.wav", sine(SR // 2), SR, subtype="FLOAT")
    assert_ok(invoke("audio-to-image", folder / "ref.wav", "-o", folder / "ref.png"))
    return peak_row(folder / "ref.png")


@pytest.mark.parametrize("rate", [8000, 22050, 48000, 96000])
def test_any_sample_rate_converts(tmp_path, out_dir, rate, reference_peak_row):
    source = tmp_path / "rate.wav"
    soundfile.write(source, sine(rate // 2, rate=rate), rate)
    assert_ok(invoke("audio-to-image", source, "-o", out_dir))
    assert size(out_dir / "rate.png") == (1 + (SR // 2) // HOP, 512)
    # Resampled, the 1 kHz tone lands in the same mel band as at 44.1 kHz.
    assert abs(peak_row(out_dir / "rate.png") - reference_peak_row) <= 1


@pytest.mark.parametrize(
    ("suffix", "container", "subtype"),
    [
        (".wav", "WAV", "PCM_U8"),
        (".wav", "WAV", "PCM_16"),
        (".wav", "WAV", "PCM_24"),
        (".wav", "WAV", "PCM_32"),
        (".wav", "WAV", "FLOAT"),
        (".wav", "WAV", "DOUBLE"),
        (".flac", "FLAC", "PCM_16"),
        (".flac", "FLAC", "PCM_24"),
        (".ogg", "OGG", "VORBIS"),
        (".mp3", "MP3", "MPEG_LAYER_III"),
        (".aiff", "AIFF", "PCM_16"),
    ],
)
def test_bit_depths_and_containers_read(tmp_path, out_dir, suffix, container, subtype, reference_peak_row):
    source = tmp_path / f"clip{suffix}"
    soundfile.write(source, sine(SR // 2), SR, format=container, subtype=subtype)
    info = invoke("info", source)
    assert_ok(info)
    assert container in info.stdout and "44100 Hz" in info.stdout
    assert_ok(invoke("audio-to-image", source, "-o", out_dir))
    width, height = size(out_dir / "clip.png")
    assert height == 512
    lossy = container in ("OGG", "MP3")
    assert abs(width - 51) <= (3 if lossy else 0)
    assert abs(peak_row(out_dir / "clip.png") - reference_peak_row) <= 1


# --- images that are not spectrograms -------------------------------------------------------------------------------


def test_image_of_the_wrong_height(tmp_path, out_dir, spectrogram):
    path = tmp_path / "short.png"
    spectrogram.resize((spectrogram.width, 256)).save(path, exif=spectrogram_exif(spectrogram))
    before = tree(tmp_path)
    assert_clean_error(invoke("image-to-audio", path, "-o", out_dir, "--iters", 4), tmp_path, before, "256")


def test_exif_num_frequencies_disagreeing_with_height(tmp_path, out_dir, spectrogram):
    path = tmp_path / "lying.png"
    spectrogram.save(path, exif=spectrogram_exif(spectrogram, t11040=256))
    before = tree(tmp_path)
    assert_clean_error(invoke("image-to-audio", path, "-o", out_dir, "--iters", 4), tmp_path, before, "512")


def _as_mode(image: Image.Image, mode: str) -> Image.Image:
    grey = image.convert("L")
    if mode == "I;16":
        return Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    return grey.convert(mode)


@pytest.mark.parametrize(("mode", "suffix"), [("F", ".tif"), ("I;16", ".png"), ("I;16", ".tif"), ("1", ".png"),
                                              ("CMYK", ".tif"), ("LA", ".png")])
def test_image_of_a_wrong_mode(tmp_path, out_dir, spectrogram, mode, suffix):
    path = tmp_path / f"odd{suffix}"
    _as_mode(spectrogram, mode).save(path, exif=spectrogram_exif(spectrogram))
    with Image.open(path) as reopened:
        assert reopened.mode == mode
    before = tree(tmp_path)
    assert_clean_error(invoke("image-to-audio", path, "-o", out_dir, "--iters", 4), tmp_path, before, "mode", mode)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA"])
def test_accepted_modes_decode(tmp_path, out_dir, spectrogram, mode):
    path = tmp_path / "fine.png"
    _as_mode(spectrogram, mode).save(path, exif=spectrogram_exif(spectrogram))
    assert_ok(invoke("image-to-audio", path, "-o", out_dir, "--iters", 4))
    assert soundfile.info(out_dir / "fine.wav").frames == (spectrogram.width - 1) * HOP


def test_image_without_exif_decodes_with_a_warning(tmp_path, out_dir, spectrogram):
    path = tmp_path / "bare.png"
    spectrogram.save(path, exif=Image.Exif())
    assert exif(path) == {}
    result = invoke("image-to-audio", path, "-o", out_dir, "--iters", 4)
    assert_ok(result)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "EXIF" in warnings[0], result.stderr
    info = soundfile.info(out_dir / "bare.wav")
    assert (info.samplerate, info.frames) == (SR, (spectrogram.width - 1) * HOP)


# --- corrupt EXIF ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"t11000": "abc"},
        {"t11000": -44100},
        {"t11000": 0},
        {"t11000": 44100.5},
        {"t11000": float("nan")},
        {"t11040": "many"},
        {"t11005": 2},
        {"t11070": -1.0},
        {"t11080": "xyz"},
        {"t11080": -5.0},
        {"t11080": float("inf")},
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
@pytest.mark.parametrize("command", ["image-to-audio", "info"])
def test_corrupt_exif_is_a_clean_error_naming_exif(tmp_path, out_dir, spectrogram, changes, command):
    path = tmp_path / "corrupt.png"
    spectrogram.save(path, exif=spectrogram_exif(spectrogram, **changes))
    before = tree(tmp_path)
    args = ["-o", out_dir, "--iters", 4] if command == "image-to-audio" else []
    assert_clean_error(invoke(command, path, *args), tmp_path, before, "EXIF")


@pytest.mark.parametrize("block", [b"Exif\x00\x00garbage", b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\xff\xff",
                                   b"Exif\x00\x00II*\x00\xff\xff\xff\x7f"])
@pytest.mark.parametrize("command", ["image-to-audio", "info"])
def test_garbage_exif_chunk_never_gives_a_traceback(tmp_path, out_dir, spectrogram, block, command):
    path = tmp_path / "garbage.png"
    spectrogram.save(path, exif=block)
    before = tree(tmp_path)
    args = ["-o", out_dir, "--iters", 4] if command == "image-to-audio" else []
    result = invoke(command, path, *args)
    if result.exit_code == 0:
        assert_ok(result)
        assert any(line.startswith("warning:") for line in result.stderr.splitlines()), result.stderr
        if command == "image-to-audio":
            assert soundfile.info(out_dir / "garbage.wav").frames == (spectrogram.width - 1) * HOP
    else:
        assert_clean_error(result, tmp_path, before, "EXIF")


# --- bad output requests --------------------------------------------------------------------------------------------


def test_image_to_audio_unsupported_output_suffix(tmp_path, spectrogram):
    before = tree(tmp_path)
    assert_clean_error(invoke("image-to-audio", tmp_path / "good.png", "-o", tmp_path / "x.aiff", "--iters", 4),
                       tmp_path, before, "x.aiff")


def test_audio_to_image_out_is_an_existing_file_of_another_kind(tmp_path):
    source = tmp_path / "a.wav"
    soundfile.write(source, sine(SR // 4), SR)
    (tmp_path / "notes").write_text("keep me")
    before = tree(tmp_path)
    assert_clean_error(invoke("audio-to-image", source, "-o", tmp_path / "notes"), tmp_path, before, "not a folder")
    assert (tmp_path / "notes").read_text() == "keep me"
