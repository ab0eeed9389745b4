"""Beat-time spectrograms: a beat is a fixed number of columns (hop 60 / (tempo x columns_per_beat) s), the EXIF
carries the axis and the tempo, and an image is heard at its tempo or re-timed, at exactly its beat-time length."""

import math

import numpy as np
import pytest
import soundfile
import soxr
import torch
from PIL import Image

from spectrodiff import SpectrogramParams, audio_to_image, image_params, image_to_audio, image_to_mel, waveform_to_mel
from spectrodiff.codec.convert import save_image
from spectrodiff.codec.image import mel_to_image, open_image
from spectrodiff.codec.mel import waveform_to_mel_streaming
from spectrodiff.codec.params import ExifTag
from spectrodiff.metrics import loop_wrap_ratio, mel_spectral_convergence
from spectrodiff.signals import SIGNALS
from spectrodiff.vocoding.reconstruct import mel_to_waveform
from spectrodiff.vocoding.registry import choose_vocoder, resolve_vocoder
from spectrodiff.vocoding.render import mel_to_audio

from .test_cli import assert_ok, assert_one_error, exif, invoke, sine, write_wav

SR = 44100
CLOCK = SpectrogramParams(num_frequencies=128)  # mini's parameters: 128 mel bins, Riffusion's STFT
BEAT = SpectrogramParams(num_frequencies=128, columns_per_beat=32)
# Tempi whose hops are fractions of a sample (852.4, 670.3 and 483.6 samples at 32 columns a beat).
FRACTIONAL_TEMPI = (97.0, 123.35, 171.0)


@pytest.fixture(scope="module")
def mini_vocoder():
    return resolve_vocoder("mini")


def clip_samples(width: int, tempo: float) -> int:
    """Samples of a clip of `width` columns at 32 columns a beat: its `width - 1` hops, rounded up (so that they make
    `width` columns again)."""
    return math.ceil((width - 1) * 60 * SR / (tempo * 32) - 1e-9)


def clicks(tempo: float, beats: int, first: int = 1) -> torch.Tensor:
    """`(1, N)` single-sample clicks on beats `first ... beats - 1` at `tempo`, N the length of `beats` beats."""
    beat = 60 / tempo * SR
    audio = torch.zeros(1, round(beats * beat))
    audio[0, [round(k * beat) for k in range(first, beats)]] = 0.9
    return audio


def peak_columns(mel: torch.Tensor) -> list[int]:
    """Columns where the `(1, n_mels, T)` mel's energy has a local maximum above half its largest."""
    energy = mel[0].sum(dim=0)
    inner = (energy[1:-1] > energy[:-2]) & (energy[1:-1] >= energy[2:]) & (energy[1:-1] > 0.5 * energy.max())
    return (torch.nonzero(inner)[:, 0] + 1).tolist()


def drum_loop(params: SpectrogramParams, beats: int) -> torch.Tensor:
    """`(1, L)` one period of a drum loop of `beats` beats at the params' tempo, L its exact loop length, rolled
    half an eighth so that the wrap falls between hits (as tests/test_metrics.py does)."""
    length = params.samples_for_loop(beats * params.columns_per_beat)
    drums = SIGNALS["drums"]((length + 1) / SR, bpm=params.tempo)[:length]
    return torch.from_numpy(np.roll(drums, -round(15 / params.tempo * SR)))[None]


def loop_mel(loop: torch.Tensor, params: SpectrogramParams, width: int) -> torch.Tensor:
    """The beat-time mel `(1, n_mels, width)` of one period of a loop, read round the wrap (the middle of three)."""
    return waveform_to_mel(loop.repeat(1, 3), params)[..., width: 2 * width]


# --- the axis -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tempo", FRACTIONAL_TEMPI)
def test_a_beat_is_columns_per_beat_columns_and_clock_time_is_not(tempo):
    audio = clicks(tempo, beats=8)
    beat_time = peak_columns(waveform_to_mel(audio, BEAT.at_tempo(tempo)))
    assert beat_time == [32 * k for k in range(1, 8)]
    # Control: in clock time a beat is 60 / tempo / 10 ms columns, a fraction, so the clicks fall unevenly.
    clock_time = peak_columns(waveform_to_mel(audio, CLOCK))
    assert len(clock_time) == 7 and len(set(np.diff(clock_time))) > 1


def test_the_hop_is_a_beat_over_columns_per_beat():
    params = BEAT.at_tempo(97)
    assert params.hop_length == pytest.approx(60 * SR / (97 * 32))
    assert params.clock() == CLOCK and params.clock().hop_length == 441
    assert params.samples_for_loop(2 * 4 * 32) == round(2 * 4 * 60 / 97 * SR)  # 2 bars of 4/4, to the sample


def test_streamed_beat_time_frames_are_the_whole_signal_frames():
    params = BEAT.at_tempo(123.35)
    audio = torch.from_numpy(SIGNALS["mix"](2.3, seed=2))[None]
    whole = waveform_to_mel(audio, params)
    for block in (500, 44100):  # shorter than a hop, a second
        streamed = waveform_to_mel_streaming((audio[..., i: i + block] for i in range(0, audio.shape[-1], block)),
                                             params)
        assert streamed.shape == whole.shape
        torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5 * float(whole.max()))


# --- the image: EXIF ------------------------------------------------------------------------------------------------


def test_a_beat_time_image_round_trips_its_axis_and_tempo(tmp_path):
    params = BEAT.at_tempo(97)
    audio = SIGNALS["mix"](3.0)[None]
    image = audio_to_image(audio, params)
    assert image.width == params.width_for_samples(audio.shape[-1]) == 1 + int(audio.shape[-1] // params.hop_length)
    path = save_image(tmp_path / "beat.png", image)
    tags = exif(path)
    assert tags[ExifTag.COLUMNS_PER_BEAT] == 32 and tags[ExifTag.TEMPO] == 97.0
    assert tags[ExifTag.STEP_SIZE_MS] == 10  # what a reader of Riffusion's tags alone sees: 10 ms columns
    reopened = open_image(path)
    read, _ = image_params(reopened)
    assert read == params and read.tempo == 97.0
    assert np.array_equal(np.asarray(reopened), np.asarray(image))
    # Control: a clock-time image of the same audio carries Riffusion's tags alone, as it always did.
    clock_tags = exif(save_image(tmp_path / "clock.png", audio_to_image(audio, CLOCK)))
    assert ExifTag.COLUMNS_PER_BEAT not in clock_tags and ExifTag.TEMPO not in clock_tags


def beat_image(params: SpectrogramParams, seconds: float = 1.5, tags: dict | None = None) -> Image.Image:
    """An image of a chord, its EXIF the params' with `tags` changed (a beat-time image without a tempo is made at
    100 BPM and written without it)."""
    audio = torch.from_numpy(SIGNALS["chord"](seconds))[None]
    made_at = params.at_tempo(100) if params.beat_time and params.tempo is None else params
    image = mel_to_image(waveform_to_mel(audio, made_at), params)
    image.getexif().update(tags or {})
    return image


@pytest.mark.parametrize("tags", [{11090: 0}, {11090: 2.5}, {11090: "many"}, {11100: float("nan")}, {11100: 5000.0},
                                  {11100: "fast"}, {11090: 300}], ids=str)
@pytest.mark.parametrize("command", ["image-to-audio", "info"])
def test_corrupt_beat_exif_is_the_corrupt_exif_error(tmp_path, tags, command):
    path = save_image(tmp_path / "corrupt.png", beat_image(BEAT.at_tempo(100), tags=tags))
    args = ["-o", tmp_path / "out.wav", "--iters", 2] if command == "image-to-audio" else []
    assert_one_error(invoke(command, path, *args), "corrupt spectrogram EXIF")
    assert not (tmp_path / "out.wav").exists()


def test_a_tempo_without_columns_per_beat_is_corrupt_exif(tmp_path):
    path = save_image(tmp_path / "odd.png", beat_image(CLOCK, tags={11100: 120.0}))
    assert_one_error(invoke("info", path), "corrupt spectrogram EXIF")


# --- image -> audio: exact lengths ----------------------------------------------------------------------------------


def test_rendered_lengths_are_the_beat_time_lengths(mini_vocoder):
    # Lengths hang on the hop alone: Griffin-Lim's are checked on a small, quick STFT, the vocoder's on mini's.
    quick = SpectrogramParams(num_frequencies=32, window_duration_ms=20, padded_duration_ms=40, columns_per_beat=32)
    for tempo in FRACTIONAL_TEMPI:
        for beats in (3, 8):  # a bar of 3/4, two of 4/4
            mel = torch.rand(1, 32, beats * 32) * 1e6
            loop, clip = round(beats * 60 / tempo * SR), clip_samples(beats * 32, tempo)
            assert mel_to_audio(mel, quick.at_tempo(tempo), None, circular=True, n_iter=1).shape == (1, loop)
            assert mel_to_audio(mel, quick.at_tempo(tempo), None, n_iter=1).shape == (1, clip)
    mel, params = torch.rand(1, 128, 3 * 32) * 1e6, BEAT.at_tempo(123.35)
    assert mel_to_audio(mel, params, mini_vocoder, circular=True).shape == (1, round(3 * 60 / 123.35 * SR))
    assert mel_to_audio(mel, params, mini_vocoder).shape == (1, clip_samples(3 * 32, 123.35))


def test_image_to_audio_renders_at_the_tempo_with_the_bundled_vocoder_of_the_clock_twin(mini_vocoder):
    params = BEAT.at_tempo(123.35)
    source = torch.from_numpy(SIGNALS["mix"](1.5, seed=1))[None]
    image = audio_to_image(source, params)
    audio, used = image_to_audio(image)
    assert used == params and audio.shape == (1, clip_samples(image.width, 123.35))
    # The vocoder for 128 bins at 10 ms is mini's, found through the clock twin; Griffin-Lim would sound otherwise.
    assert choose_vocoder(None, params.clock()) is mini_vocoder
    mel = image_to_mel(image, params, image_params(image)[1])
    assert np.array_equal(audio, mel_to_audio(mel, params, mini_vocoder).numpy())
    assert not np.array_equal(audio, mel_to_audio(mel, params, None, n_iter=2).numpy())
    # The audio is the music: its mel is close to the source's, as close as the vocoder gets in clock time.
    beat_error = mel_spectral_convergence(source[..., : audio.shape[-1]], audio, CLOCK)
    clock_audio, _ = image_to_audio(audio_to_image(source, CLOCK))
    assert beat_error < 1.3 * mel_spectral_convergence(source[..., : clock_audio.shape[-1]], clock_audio, CLOCK)


def test_clock_time_rendering_is_the_committed_path_bit_for_bit(mini_vocoder):
    mel = waveform_to_mel(torch.from_numpy(SIGNALS["mix"](1.0))[None], CLOCK)
    assert torch.equal(mel_to_audio(mel, CLOCK, None, n_iter=4), mel_to_waveform(mel, CLOCK, n_iter=4))
    assert torch.equal(mel_to_audio(mel, CLOCK, mini_vocoder, circular=True), mini_vocoder.vocode(mel, circular=True))


# --- loops ----------------------------------------------------------------------------------------------------------


def test_a_beat_time_loop_wraps_without_a_seam(mini_vocoder):
    drums = BEAT.at_tempo(171)  # a bar is 128 columns, 61894.7 samples: 140.4 clock columns, resampled round
    mel = loop_mel(drum_loop(drums, beats=4), drums, 128)
    for audio in (mel_to_audio(mel, drums, mini_vocoder, circular=True),
                  mel_to_audio(mel, drums, None, circular=True, n_iter=16)):
        assert audio.shape[-1] == drums.samples_for_loop(128)
        assert loop_wrap_ratio(audio, drums.clock()) <= 1.0  # the wrap no more abrupt than the music inside
    # Held tones show any seam (their flux inside is small): the loop rendered round stays near the music's own
    # (1.44 here; mini's vocoder gives 1.2 on such tones in clock time too), where the same mel rendered as a plain
    # clip and played round jumps (9.4).
    params = BEAT.at_tempo(97)  # 247.4 clock columns
    length = params.samples_for_loop(128)
    tones = sum(np.sin(2 * np.pi * round(hz * length / SR) * np.arange(length) / length) for hz in (220, 277, 330))
    swell = 0.6 + 0.4 * np.cos(2 * np.pi * np.arange(length) / length)
    mel = loop_mel(torch.from_numpy((0.1 * tones * swell).astype(np.float32))[None], params, 128)
    assert loop_wrap_ratio(mel_to_audio(mel, params, mini_vocoder, circular=True), params.clock()) < 2.0
    assert loop_wrap_ratio(mel_to_audio(mel, params, mini_vocoder), params.clock()) > 5.0


# --- the command line -----------------------------------------------------------------------------------------------


def dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * SR / len(audio))


def test_bpm_re_times_an_image_the_length_by_the_tempo_ratio_and_keeps_the_pitch(tmp_path):
    wav = write_wav(tmp_path / "tone.wav", sine(3.0, hz=1000.0))
    png = tmp_path / "tone.png"
    assert_ok(invoke("audio-to-image", wav, "-o", png, "--columns-per-beat", 32, "--bpm", 120))
    width = Image.open(png).width
    assert width == BEAT.at_tempo(120).width_for_samples(3 * SR)
    played, slower = tmp_path / "own.wav", tmp_path / "slower.wav"
    for out, extra in ((played, []), (slower, ["--bpm", 90])):
        assert_ok(invoke("image-to-audio", png, "-o", out, "--vocoder", "griffin-lim", "--iters", 8, *extra))
    own, _ = soundfile.read(played)
    retimed, _ = soundfile.read(slower)
    assert len(own) == clip_samples(width, 120)
    assert len(retimed) == clip_samples(width, 90)
    assert len(retimed) / len(own) == pytest.approx(120 / 90, rel=1e-4)
    assert abs(dominant_hz(own) - 1000) < 5 and abs(dominant_hz(retimed) - 1000) < 5
    # Control: stretching the audio itself to that length would have lowered the tone to 750 Hz.
    resampled = soxr.resample(own, len(own), len(retimed))
    assert abs(dominant_hz(resampled) - 750) < 5


def test_a_beat_time_image_without_a_tempo_needs_bpm(tmp_path):
    path = save_image(tmp_path / "untimed.png", beat_image(BEAT, seconds=1.0))  # 32 columns a beat, no tempo
    assert ExifTag.TEMPO not in exif(path) and exif(path)[ExifTag.COLUMNS_PER_BEAT] == 32
    out = tmp_path / "out.wav"
    assert_one_error(invoke("image-to-audio", path, "-o", out, "--iters", 2), "no tempo: give one with --bpm")
    assert not out.exists()
    result = invoke("info", path)
    assert_ok(result)
    assert "beats (no tempo)" in result.stdout
    assert_ok(invoke("image-to-audio", path, "-o", out, "--vocoder", "griffin-lim", "--iters", 2, "--bpm", 100))
    assert soundfile.info(out).frames == clip_samples(Image.open(path).width, 100)


def test_codec_command_errors_are_one_line(tmp_path):
    wav = write_wav(tmp_path / "a.wav", sine(1.0))
    clock_png = tmp_path / "clock.png"
    assert_ok(invoke("audio-to-image", wav, "-o", clock_png))
    cases = [
        (("audio-to-image", wav, "-o", tmp_path / "x.png", "--bpm", 120), "go together"),
        (("audio-to-image", wav, "-o", tmp_path / "x.png", "--columns-per-beat", 32), "go together"),
        (("audio-to-image", wav, "-o", tmp_path / "x.png", "--columns-per-beat", 0, "--bpm", 120),
         "--columns-per-beat must be between 1 and 256"),
        (("audio-to-image", wav, "-o", tmp_path / "x.png", "--columns-per-beat", 32, "--bpm", 1000),
         "--bpm must be between 20 and 400"),
        (("slice", wav, "-o", tmp_path / "tiles", "--seconds", 0.5, "--bpm", 120), "go together"),
        (("slice", wav, "-o", tmp_path / "tiles", "--seconds", 0.5, "--format", "wav", "--columns-per-beat", 32,
          "--bpm", 120), "--format png"),
        (("image-to-audio", clock_png, "-o", tmp_path / "x.wav", "--bpm", 100), "is in clock time"),
    ]
    for args, fragment in cases:
        result = invoke(*args)
        assert result.exit_code == 1
        assert_one_error(result, fragment)
    assert not any((tmp_path / name).exists() for name in ("x.png", "x.wav", "tiles"))


def test_slice_makes_beat_time_tiles(tmp_path):
    wav = write_wav(tmp_path / "song.wav", SIGNALS["mix"](2.2))
    assert_ok(invoke("slice", wav, "-o", tmp_path / "tiles", "--seconds", 1.0, "--columns-per-beat", 32,
                     "--bpm", 97))
    tiles = sorted((tmp_path / "tiles").glob("*.png"))
    params = SpectrogramParams(columns_per_beat=32, tempo=97.0)
    assert len(tiles) == 2
    first = open_image(tiles[0])
    assert image_params(first)[0] == params
    span = soundfile.read(wav, dtype="float32")[0][: 99 * 441]  # a 1 s tile is 100 clock columns, 99 hops
    assert first.width == params.width_for_samples(len(span))
    assert np.array_equal(np.asarray(first), np.asarray(audio_to_image(span[None], params)))
