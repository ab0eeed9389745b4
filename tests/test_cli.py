"""The `spectrodiff` command line: every command through typer's runner, and the installed console script."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image
from typer.testing import CliRunner

from spectrodiff.cli import app
from spectrodiff.signals import chord, drums, noise
from spectrodiff.testing import heavy_imports

SR = 44100
HOP = 441
TILE_SAMPLES = 511 * HOP  # a 512-column tile spans (512 - 1) * hop samples
PEAK_CEILING = 10 ** (-0.1 / 20)
CONSOLE = Path(sys.executable).parent / "spectrodiff"
# Every registered command, so a new one cannot ship without help and an example.
COMMANDS = [command.name for command in app.registered_commands]


@pytest.fixture(autouse=True)
def _no_debug_tracebacks(monkeypatch):
    monkeypatch.delenv("SPECTRODIFF_DEBUG", raising=False)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def write_wav(path: Path, data: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> Path:
    """`data` is `(N,)` or `(N, C)`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, data, rate, subtype=subtype)
    return path


def sine(seconds: float, hz: float = 1000.0, amplitude: float = 0.3, rate: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def assert_ok(result) -> None:
    assert result.exit_code == 0, result.output
    assert result.exception is None, result.exception
    assert not error_lines(result.stderr)


def assert_one_error(result, fragment: str = "") -> str:
    assert result.exit_code != 0, result.output
    # The command turned its failure into an exit status; no exception escaped to print a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert fragment.lower() in lines[0].lower(), lines[0]
    return lines[0]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def exif(path: Path) -> dict:
    with Image.open(path) as image:
        return dict(image.getexif())


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def tone_wav(tmp_path) -> Path:
    """1 s of a 1 kHz sine, 16-bit, 44.1 kHz mono."""
    return write_wav(tmp_path / "tone.wav", sine(1.0))


@pytest.fixture
def tone_png(tmp_path, tone_wav) -> Path:
    out = tmp_path / "tone.png"
    assert_ok(invoke("audio-to-image", tone_wav, "-o", out))
    return out


# --- help, version --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert re.search(rf"^\s*Example: spectrodiff {command} ", result.stdout, re.MULTILINE), result.stdout


def test_root_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert re.fullmatch(r"spectrodiff \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


@pytest.mark.slow
def test_help_needs_no_torch_and_the_codec_commands_no_diffusers(tmp_path, tone_wav, tone_png):
    """`--help` of every command imports neither torch nor diffusers (it takes a tenth of a second), and the codec
    commands never import diffusers, transformers or peft (seconds of start-up each). Control: a generating command
    does import diffusers, and the probe sees it."""
    for command in ([], *([c] for c in COMMANDS)):
        assert heavy_imports(*command, "--help") == [], command
    codec = [["info", tone_png], ["info", tone_wav], ["audio-to-image", tone_wav, "-o", tmp_path / "a.png"],
             ["image-to-audio", tone_png, "-o", tmp_path / "a.wav"],
             ["slice", tone_wav, "-o", tmp_path / "tiles", "--seconds", "0.5"]]
    for command in codec:
        assert not {"diffusers", "transformers", "peft"} & set(heavy_imports(*command)), command
    assert heavy_imports("info", tone_wav) == []  # describing audio needs no torch either
    assert (tmp_path / "a.wav").is_file() and len(list((tmp_path / "tiles").glob("*.png"))) == 2
    assert "diffusers" in heavy_imports("generate", "x", "--model", tmp_path / "no-model")


# --- the installed console script -----------------------------------------------------------------------------------


def console(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SPECTRODIFF_DEBUG"}
    return subprocess.run([str(CONSOLE), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_console_script_is_installed():
    assert CONSOLE.is_file() and os.access(CONSOLE, os.X_OK)


def test_console_script_success(tmp_path, tone_wav):
    done = console("audio-to-image", tone_wav.name, "-o", "out/", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(Path("out") / "tone.png")
    assert image_size(tmp_path / "out" / "tone.png") == (1 + SR // HOP, 512)
    assert "error:" not in done.stderr and "Traceback" not in done.stderr


def test_console_script_runtime_error(tmp_path):
    done = console("audio-to-image", "missing.wav", "-o", "out.png", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == ["error: no such file: missing.wav"]
    assert listing(tmp_path) == []


def test_console_script_usage_error(tmp_path, tone_png):
    before = listing(tmp_path)
    done = console("image-to-audio", tone_png.name, "--iters", "5000", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--iters" in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert listing(tmp_path) == before


# --- output paths and overwriting -----------------------------------------------------------------------------------


def test_out_naming_a_file_writes_that_file(tmp_path, tone_wav):
    out = tmp_path / "deep" / "er" / "picture.png"
    result = invoke("audio-to-image", tone_wav, "-o", out)
    assert_ok(result)
    assert result.stdout.strip() == str(out)
    assert listing(out.parent) == ["picture.png"]


def test_out_naming_an_existing_folder_writes_default_name_inside(tmp_path, tone_wav):
    folder = tmp_path / "images.png"  # a folder, whatever its name looks like
    folder.mkdir()
    assert_ok(invoke("audio-to-image", tone_wav, "-o", folder))
    assert listing(folder) == ["tone.png"]
    assert image_size(folder / "tone.png")[1] == 512


def test_out_without_suffix_is_a_new_folder(tmp_path, tone_wav, tone_png):
    assert_ok(invoke("audio-to-image", tone_wav, "-o", tmp_path / "new_images"))
    assert listing(tmp_path / "new_images") == ["tone.png"]
    assert_ok(invoke("image-to-audio", tone_png, "-o", tmp_path / "new_audio", "--iters", 4))
    assert listing(tmp_path / "new_audio") == ["tone.wav"]


def test_default_output_folder_is_outputs(tmp_path, tone_wav, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("audio-to-image", "tone.wav")
    assert_ok(result)
    assert result.stdout.strip() == str(Path("outputs") / "tone.png")
    assert (tmp_path / "outputs" / "tone.png").is_file()


@pytest.mark.parametrize("name", ["picture.jpg", "picture.wav"])
def test_out_with_a_foreign_suffix_is_refused(tmp_path, tone_wav, name):
    assert_one_error(invoke("audio-to-image", tone_wav, "-o", tmp_path / name), name)
    assert not (tmp_path / name).exists()


def test_audio_to_image_refuses_to_overwrite(tmp_path, tone_wav):
    out = tmp_path / "existing.png"
    out.write_bytes(b"precious bytes")
    assert_one_error(invoke("audio-to-image", tone_wav, "-o", out), "already exists")
    assert out.read_bytes() == b"precious bytes"
    assert listing(tmp_path) == ["existing.png", "tone.wav"]  # no temporary file either


def test_audio_to_image_refuses_to_overwrite_default_name_in_folder(tmp_path, tone_wav):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "tone.png").write_bytes(b"precious bytes")
    assert_one_error(invoke("audio-to-image", tone_wav, "-o", folder), "already exists")
    assert (folder / "tone.png").read_bytes() == b"precious bytes"
    assert listing(folder) == ["tone.png"]


def test_audio_to_image_overwrite_replaces(tmp_path, tone_wav):
    out = tmp_path / "existing.png"
    out.write_bytes(b"precious bytes")
    assert_ok(invoke("audio-to-image", tone_wav, "-o", out, "--overwrite"))
    assert image_size(out) == (1 + SR // HOP, 512)
    assert listing(tmp_path) == ["existing.png", "tone.wav"]


def test_image_to_audio_refuses_to_overwrite_then_overwrites(tmp_path, tone_png):
    out = tmp_path / "existing.wav"
    out.write_bytes(b"precious bytes")
    assert_one_error(invoke("image-to-audio", tone_png, "-o", out, "--iters", 4), "already exists")
    assert out.read_bytes() == b"precious bytes"
    assert_ok(invoke("image-to-audio", tone_png, "-o", out, "--iters", 4, "--overwrite"))
    assert soundfile.info(out).frames == (image_size(tone_png)[0] - 1) * HOP
    assert listing(tmp_path) == ["existing.wav", "tone.png", "tone.wav"]


def test_slice_refuses_to_overwrite_a_tile_then_overwrites(tmp_path):
    source = write_wav(tmp_path / "song.wav", noise(6.0))
    tile = tmp_path / "tiles" / "song_wav_00000000ms.png"
    tile.parent.mkdir()
    tile.write_bytes(b"precious bytes")
    assert_one_error(invoke("slice", source, "-o", tile.parent), "already exists")
    assert tile.read_bytes() == b"precious bytes"
    assert_ok(invoke("slice", source, "-o", tile.parent, "--overwrite"))
    assert image_size(tile) == (512, 512)


# --- audio-to-image -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", [1, 440, 441, 442, 22050, 44100 + 440])
def test_audio_to_image_width_is_one_column_per_hop(tmp_path, samples):
    source = write_wav(tmp_path / "clip.wav", sine(samples / SR))
    assert soundfile.info(source).frames == samples
    out = tmp_path / "clip.png"
    assert_ok(invoke("audio-to-image", source, "-o", out))
    assert image_size(out) == (1 + samples // HOP, 512)
    with Image.open(out) as image:
        assert image.mode == "RGB"


def test_audio_to_image_writes_riffusion_exif(tone_png):
    tags = exif(tone_png)
    assert tags[11000] == 44100
    assert tags[11040] == 512
    assert float(tags[11080]) > 0
    assert tags[11005] in (0, False)


def test_mono_image_is_grey(tone_png):
    rgb = pixels(tone_png).astype(int)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert rgb.min() < 128 < rgb.max()  # the tone is dark, empty bands are light


def test_start_and_duration_pick_a_span(tmp_path):
    audio = noise(2.0)
    source = write_wav(tmp_path / "long.wav", audio)
    span = tmp_path / "span.png"
    assert_ok(invoke("audio-to-image", source, "--start", 0.5, "--duration", 1, "-o", span))
    assert image_size(span) == (1 + SR // HOP, 512)
    # The same samples cut beforehand give the same picture.
    cut = write_wav(tmp_path / "cut.wav", soundfile.read(source, dtype="float32")[0][SR // 2: SR // 2 + SR])
    assert_ok(invoke("audio-to-image", cut, "-o", tmp_path / "cut.png"))
    np.testing.assert_array_equal(pixels(span), pixels(tmp_path / "cut.png"))


def test_start_without_duration_runs_to_the_end(tmp_path):
    source = write_wav(tmp_path / "long.wav", noise(2.0))
    assert_ok(invoke("audio-to-image", source, "--start", 1.5, "-o", tmp_path / "tail.png"))
    assert image_size(tmp_path / "tail.png") == (1 + (SR // 2) // HOP, 512)
    assert_ok(invoke("audio-to-image", source, "--start", 1.5, "--duration", 3, "-o", tmp_path / "clipped.png"))
    assert image_size(tmp_path / "clipped.png") == (1 + (SR // 2) // HOP, 512)


def test_start_beyond_the_end_is_an_error(tmp_path, tone_wav):
    assert_one_error(invoke("audio-to-image", tone_wav, "--start", 2, "-o", tmp_path / "x.png"), "beyond the end")
    assert not (tmp_path / "x.png").exists()


def test_stereo_puts_left_in_green_and_right_in_blue(tmp_path):
    source = write_wav(tmp_path / "stereo.wav", np.stack([chord(1.0), drums(1.0)], axis=1))
    out = tmp_path / "stereo.png"
    assert_ok(invoke("audio-to-image", source, "--stereo", "-o", out))
    rgb = pixels(out)
    assert rgb.shape == (512, 1 + SR // HOP, 3)
    assert (rgb[..., 0] == 0).all()
    assert (rgb[..., 1] != rgb[..., 2]).mean() > 0.5
    assert exif(out)[11005] in (1, True)


def test_stereo_with_identical_channels_has_equal_green_and_blue(tmp_path):
    tone = sine(0.5)
    source = write_wav(tmp_path / "dual.wav", np.stack([tone, tone], axis=1))
    assert_ok(invoke("audio-to-image", source, "--stereo", "-o", tmp_path / "dual.png"))
    rgb = pixels(tmp_path / "dual.png")
    assert (rgb[..., 0] == 0).all()
    np.testing.assert_array_equal(rgb[..., 1], rgb[..., 2])


# --- image-to-audio -------------------------------------------------------------------------------------------------


def test_image_to_audio_length_and_rate(tmp_path, tone_png):
    out = tmp_path / "back.wav"
    result = invoke("image-to-audio", tone_png, "-o", out, "--iters", 4)
    assert_ok(result)
    assert result.stdout.strip() == str(out)
    info = soundfile.info(out)
    assert info.samplerate == 44100
    assert info.channels == 1
    assert info.frames == (image_size(tone_png)[0] - 1) * HOP == SR


def test_image_to_audio_keeps_the_tone(tmp_path, tone_png):
    out = tmp_path / "back.wav"
    assert_ok(invoke("image-to-audio", tone_png, "-o", out, "--iters", 4))
    audio, rate = soundfile.read(out)
    peak_hz = np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(np.abs(np.fft.rfft(audio)))]
    assert abs(peak_hz - 1000) < 30


def test_default_normalisation_is_minus_12_dbfs_with_peak_headroom(tmp_path, tone_png):
    out = tmp_path / "loud.wav"
    assert_ok(invoke("image-to-audio", tone_png, "-o", out, "--iters", 4))
    audio, _ = soundfile.read(out)
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(audio**2)))
    assert rms_dbfs == pytest.approx(-12.0, abs=0.25)
    assert np.abs(audio).max() <= PEAK_CEILING + 1 / 32768


def test_no_normalize_keeps_the_source_level(tmp_path):
    quiet = write_wav(tmp_path / "quiet.wav", sine(1.0, amplitude=0.05))
    assert_ok(invoke("audio-to-image", quiet, "-o", tmp_path / "quiet.png"))
    raw, normal = tmp_path / "raw.wav", tmp_path / "normal.wav"
    assert_ok(invoke("image-to-audio", tmp_path / "quiet.png", "-o", raw, "--iters", 4, "--no-normalize"))
    assert_ok(invoke("image-to-audio", tmp_path / "quiet.png", "-o", normal, "--iters", 4, "--normalize"))
    raw_audio, normal_audio = soundfile.read(raw)[0], soundfile.read(normal)[0]
    source_dbfs = 20 * np.log10(0.05 / np.sqrt(2))  # about -29 dBFS
    raw_dbfs = 20 * np.log10(np.sqrt(np.mean(raw_audio**2)))
    normal_dbfs = 20 * np.log10(np.sqrt(np.mean(normal_audio**2)))
    assert raw_dbfs == pytest.approx(source_dbfs, abs=2.0)
    assert normal_dbfs == pytest.approx(-12.0, abs=0.25)
    # Same reconstruction, different gain.
    gain = np.dot(normal_audio, raw_audio) / np.dot(raw_audio, raw_audio)
    assert gain > 5
    np.testing.assert_allclose(normal_audio, gain * raw_audio, atol=2 / 32768 * gain)


def test_same_seed_same_audio_other_seed_other_audio(tmp_path, tone_png):
    """Griffin-Lim's initial phase follows --seed; the default for Riffusion's images, the bundled neural vocoder,
    has no random phase at all."""
    runs = {}
    for name, seed, vocoder in (("a", 7, "griffin-lim"), ("b", 7, "griffin-lim"), ("c", 8, "griffin-lim"),
                                ("d", 7, None), ("e", 8, None)):
        out = tmp_path / f"{name}.wav"
        chosen = ["--vocoder", vocoder] if vocoder else []
        assert_ok(invoke("image-to-audio", tone_png, "-o", out, "--iters", 4, "--seed", seed, *chosen))
        runs[name] = soundfile.read(out, dtype="int16")[0]
    np.testing.assert_array_equal(runs["a"], runs["b"])
    assert not np.array_equal(runs["a"], runs["c"])
    np.testing.assert_array_equal(runs["d"], runs["e"])
    assert not np.array_equal(runs["a"], runs["d"])


@pytest.mark.parametrize("iters", ["5000", "-1", "1001", "many"])
def test_iters_out_of_range_is_a_usage_error(tmp_path, tone_png, iters):
    result = invoke("image-to-audio", tone_png, "-o", tmp_path / "x.wav", "--iters", iters)
    assert result.exit_code == 2, result.output
    assert "--iters" in result.output
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize("suffix", [".flac", ".ogg", ".mp3"])
def test_image_to_audio_other_formats(tmp_path, tone_png, suffix):
    out = tmp_path / f"back{suffix}"
    assert_ok(invoke("image-to-audio", tone_png, "-o", out, "--iters", 4))
    info = soundfile.info(out)
    assert info.samplerate == 44100
    assert info.format == {".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}[suffix]
    assert abs(info.frames - SR) <= (0 if suffix == ".flac" else 2048)


# --- slice ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def song(tmp_path) -> Path:
    """8 s of noise, 16-bit mono."""
    return write_wav(tmp_path / "song.wav", noise(8.0))


def test_slice_png_tiles(tmp_path, song):
    out = tmp_path / "tiles"
    result = invoke("slice", song, "-o", out, "--hop", 1)
    assert_ok(result)
    names = ["song_wav_00000000ms.png", "song_wav_00001000ms.png", "song_wav_00002000ms.png"]
    assert listing(out) == names
    assert result.stdout.startswith("3 tiles (512 columns")
    for name in names:
        assert image_size(out / name) == (512, 512)
        assert exif(out / name)[11000] == 44100


def test_slice_tile_equals_audio_to_image_of_that_span(tmp_path, song):
    assert_ok(invoke("slice", song, "-o", tmp_path / "tiles", "--hop", 1))
    span = tmp_path / "span.png"
    assert_ok(invoke("audio-to-image", song, "--start", 1, "--duration", TILE_SAMPLES / SR, "-o", span))
    np.testing.assert_array_equal(pixels(tmp_path / "tiles" / "song_wav_00001000ms.png"), pixels(span))


def test_slice_default_hop_is_one_tile(tmp_path):
    source = write_wav(tmp_path / "song.wav", noise(11.0))
    assert_ok(invoke("slice", source, "-o", tmp_path / "tiles"))
    assert listing(tmp_path / "tiles") == ["song_wav_00000000ms.png", "song_wav_00005110ms.png"]


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_slice_audio_clips_are_exactly_one_tile(tmp_path, song, fmt):
    out = tmp_path / "clips"
    assert_ok(invoke("slice", song, "-o", out, "--hop", 1, "--format", fmt))
    names = [f"song_wav_0000{k}000ms.{fmt}" for k in range(3)]
    assert listing(out) == names
    source = soundfile.read(song, dtype="int16")[0]
    for k, name in enumerate(names):
        clip, rate = soundfile.read(out / name, dtype="int16")
        assert rate == 44100
        assert clip.shape == (TILE_SAMPLES,)
        np.testing.assert_array_equal(clip, source[k * SR: k * SR + TILE_SAMPLES])


def test_slice_stereo_tiles(tmp_path):
    source = write_wav(tmp_path / "duo.wav", np.stack([chord(5.5), drums(5.5)], axis=1))
    assert_ok(invoke("slice", source, "-o", tmp_path / "tiles", "--stereo"))
    rgb = pixels(tmp_path / "tiles" / "duo_wav_00000000ms.png")
    assert rgb.shape == (512, 512, 3)
    assert (rgb[..., 0] == 0).all() and (rgb[..., 1] != rgb[..., 2]).any()


def test_slice_48k_source_gives_512_tiles(tmp_path):
    source = write_wav(tmp_path / "hi.wav", noise(5.5, sample_rate=48000), rate=48000)
    assert_ok(invoke("slice", source, "-o", tmp_path / "tiles", "--format", "wav"))
    assert listing(tmp_path / "tiles") == ["hi_wav_00000000ms.wav"]
    info = soundfile.info(tmp_path / "tiles" / "hi_wav_00000000ms.wav")
    assert (info.samplerate, info.frames) == (44100, TILE_SAMPLES)


def test_slice_searches_a_folder_recursively(tmp_path):
    tracks = tmp_path / "tracks"
    write_wav(tracks / "a.wav", noise(5.5))
    write_wav(tracks / "sub" / "deeper" / "b.flac", chord(6.0))
    (tracks / "notes.txt").write_text("not audio, and not named like audio")
    result = invoke("slice", tracks, "-o", tmp_path / "tiles")
    assert_ok(result)
    assert listing(tmp_path / "tiles") == ["a_wav_00000000ms.png", "sub"]
    assert listing(tmp_path / "tiles" / "sub" / "deeper") == ["b_flac_00000000ms.png"]
    assert "skipped" not in result.output


def test_slice_skips_an_unreadable_file_with_a_warning(tmp_path):
    tracks = tmp_path / "tracks"
    write_wav(tracks / "good.wav", noise(5.5))
    (tracks / "broken.wav").write_text("this is not a wave file")
    result = invoke("slice", tracks, "-o", tmp_path / "tiles")
    assert_ok(result)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "broken.wav" in warnings[0], result.stderr
    assert listing(tmp_path / "tiles") == ["good_wav_00000000ms.png"]
    assert "1 file(s) skipped" in result.stdout


def test_slice_same_stem_in_two_subfolders_keeps_both(tmp_path):
    """Recursive search finds `x/take.wav` and `y/take.wav`; neither file's tiles may be lost."""
    tracks = tmp_path / "tracks"
    write_wav(tracks / "x" / "take.wav", noise(5.5, seed=1))
    write_wav(tracks / "y" / "take.wav", noise(5.5, seed=2))
    result = invoke("slice", tracks, "-o", tmp_path / "tiles")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "tiles").iterdir())) == 2


def test_slice_file_shorter_than_a_tile_is_an_error(tmp_path):
    source = write_wav(tmp_path / "short.wav", noise(5.0))
    assert_one_error(invoke("slice", source, "-o", tmp_path / "tiles"), "nothing to slice")
    assert not (tmp_path / "tiles").exists()


def test_slice_shorter_tiles(tmp_path):
    source = write_wav(tmp_path / "short.wav", noise(2.0))
    assert_ok(invoke("slice", source, "-o", tmp_path / "tiles", "--seconds", 1.0, "--hop", 0.5))
    names = listing(tmp_path / "tiles")
    assert names == [f"short_wav_{ms:08d}ms.png" for ms in (0, 500, 1000)]  # tiles of 0.99 s (100 columns)
    assert all(image_size(tmp_path / "tiles" / n) == (100, 512) for n in names)


@pytest.mark.parametrize("fmt", ["mp3", "jpg"])
def test_slice_unknown_format_is_an_error(tmp_path, song, fmt):
    assert_one_error(invoke("slice", song, "-o", tmp_path / "tiles", "--format", fmt), "--format")
    assert not (tmp_path / "tiles").exists()


def test_slice_out_must_be_a_folder(tmp_path, song):
    (tmp_path / "file.txt").write_text("x")
    assert_one_error(invoke("slice", song, "-o", tmp_path / "file.txt"), "not a folder")
    assert (tmp_path / "file.txt").read_text() == "x"


def test_slice_folder_without_audio_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_error(invoke("slice", tmp_path / "empty", "-o", tmp_path / "tiles"), "no audio files")


# --- info -----------------------------------------------------------------------------------------------------------


def info_rows(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        key, _, value = line.partition("  ")
        rows[key.strip()] = value.strip()
    return rows


def test_info_on_a_png_prints_the_parameters(tone_png):
    result = invoke("info", tone_png)
    assert_ok(result)
    rows = info_rows(result.stdout)
    assert rows["kind"] == "spectrogram image"
    assert rows["sample rate"] == "44100"
    assert rows["num frequencies"] == "512"
    assert rows["size"] == f"{1 + SR // HOP} x 512"
    assert rows["channels"] == "mono"
    assert rows["duration"] == "1.000 s"
    assert float(rows["max value"]) == pytest.approx(float(exif(tone_png)[11080]), rel=1e-4)
    assert float(rows["max value"]) > 0


def test_info_on_audio_prints_rate_channels_duration(tmp_path):
    source = write_wav(tmp_path / "stereo.flac", np.zeros((72000, 2), np.float32), rate=48000)
    result = invoke("info", source)
    assert_ok(result)
    rows = info_rows(result.stdout)
    assert rows["kind"] == "audio"
    assert rows["sample rate"] == "48000 Hz"
    assert rows["channels"] == "2"
    assert rows["frames"] == "72000"
    assert rows["duration"] == "1.500 s"
    assert rows["format"].startswith("FLAC")


def test_info_missing_file(tmp_path):
    assert_one_error(invoke("info", tmp_path / "nothing.png"), "no such file")
