"""Audio I/O units: header info, span reading, resampling, channel selection, streaming, loudness, atomic writes."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from spectrodiff.codec.audio import (
    AUDIO_SUFFIXES,
    audio_info,
    iter_audio_blocks,
    load_audio,
    normalize_loudness,
    save_audio,
    select_channels,
)
from spectrodiff.errors import SpectrodiffError
from spectrodiff.files import atomic_path, resolve_output
from spectrodiff.signals import chord, noise

SR = 44100
PEAK_CEILING = 10 ** (-0.1 / 20)


def sine(samples: int, hz: float = 1000.0, rate: int = SR, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(samples) / rate)).astype(np.float32)


def write(path: Path, data: np.ndarray, rate: int = SR, subtype: str = "FLOAT") -> Path:
    """`data` is `(N,)` or `(N, C)`, as soundfile takes it."""
    soundfile.write(path, data, rate, subtype=subtype)
    return path


def dbfs(audio: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))))


def peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))  # hidden files included


@pytest.fixture
def stereo_file(tmp_path) -> tuple[Path, np.ndarray]:
    """2 s of float32 stereo at 44.1 kHz and the exact `(2, N)` samples it holds."""
    data = np.stack([noise(2.0, seed=1), chord(2.0, seed=2)])
    return write(tmp_path / "stereo.wav", data.T), data


# --- audio_info -----------------------------------------------------------------------------------------------------


def test_audio_info_reads_the_header(tmp_path):
    path = write(tmp_path / "x.flac", np.zeros((24000, 3), np.float32), rate=48000, subtype="PCM_24")
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (48000, 3, 24000)
    assert (info.format, info.subtype) == ("FLAC", "PCM_24")
    assert info.duration == pytest.approx(0.5)
    assert info.path == path


def test_audio_info_errors(tmp_path):
    with pytest.raises(SpectrodiffError, match="no such file"):
        audio_info(tmp_path / "absent.wav")
    with pytest.raises(SpectrodiffError, match="folder"):
        audio_info(tmp_path)
    (tmp_path / "text.wav").write_text("hello")
    with pytest.raises(SpectrodiffError, match="not a readable audio file"):
        audio_info(tmp_path / "text.wav")


def test_audio_suffixes_cover_the_readable_containers():
    assert {".wav", ".flac", ".ogg", ".mp3"} <= set(AUDIO_SUFFIXES)


# --- load_audio -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "duration", "first", "count"),
    [
        (0.0, None, 0, 2 * SR),
        (0.5, 0.25, 22050, 11025),
        (0.01, 1.0, 441, SR),
        (1.23, None, 54243, 2 * SR - 54243),
        (1.9, 0.5, 83790, 2 * SR - 83790),  # runs past the end: clipped
        (0.0, 0.0, 0, 0),
        (3.0, 1.0, 2 * SR, 0),  # starts past the end: empty
    ],
)
def test_load_audio_reads_an_exact_span(stereo_file, start, duration, first, count):
    path, data = stereo_file
    span = load_audio(path, SR, "keep", start, duration)
    assert span.dtype == np.float32
    assert span.shape == (2, count)
    np.testing.assert_array_equal(span, data[:, first: first + count])


def test_load_audio_mono_is_the_channel_mean(stereo_file):
    path, data = stereo_file
    mono = load_audio(path, SR, "mono", 0.5, 0.5)
    np.testing.assert_allclose(mono[0], data[:, 22050:44100].mean(axis=0), atol=1e-7)


def test_load_audio_channel_index_and_stereo(stereo_file):
    path, data = stereo_file
    np.testing.assert_array_equal(load_audio(path, SR, 1)[0], data[1])
    np.testing.assert_array_equal(load_audio(path, SR, "stereo"), data)
    with pytest.raises(SpectrodiffError):
        load_audio(path, SR, 2)


def test_load_audio_reads_integer_pcm_on_the_float_scale(tmp_path):
    path = write(tmp_path / "pcm.wav", sine(4410), subtype="PCM_16")
    audio = load_audio(path, SR)
    expected = soundfile.read(path, dtype="int16")[0] / 32768
    np.testing.assert_allclose(audio[0], expected, atol=1e-7)


@pytest.mark.parametrize(("start", "duration"), [(-0.1, None), (0.0, -1.0)])
def test_load_audio_rejects_negative_times(stereo_file, start, duration):
    with pytest.raises(SpectrodiffError, match=">= 0"):
        load_audio(stereo_file[0], SR, "mono", start, duration)


def test_load_audio_resamples_a_span_to_the_requested_length(tmp_path):
    path = write(tmp_path / "hi.wav", sine(96000, rate=48000), rate=48000)
    span = load_audio(path, SR, "mono", 0.5, 1.0)
    assert span.shape == (1, SR)
    assert peak_hz(span[0], SR) == pytest.approx(1000, abs=2)


def test_load_audio_replaces_nan_with_zero(tmp_path):
    data = sine(1000)
    data[10:20] = np.nan
    with pytest.warns(UserWarning, match="10 NaN or infinite samples read as silence"):
        audio = load_audio(write(tmp_path / "nan.wav", data), SR)
    assert np.isfinite(audio).all()
    assert (audio[0, 10:20] == 0).all()


# --- resampling, in blocks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("samples", [48000, 48001, 12345])
def test_resampling_48k_to_44k_keeps_frequency_and_length(tmp_path, samples):
    tone = sine(samples, rate=48000)
    out = load_audio(write(tmp_path / "tone.wav", tone, rate=48000), SR)
    assert out.dtype == np.float32
    assert abs(out.shape[1] - round(samples * SR / 48000)) <= 1
    resolution = SR / out.shape[1]
    assert peak_hz(out[0], SR) == pytest.approx(1000, abs=resolution)
    # The level survives too (away from the filter's edges).
    middle = out[0, 2000:-2000]
    assert dbfs(middle) == pytest.approx(dbfs(tone), abs=0.1)


def test_resampling_keeps_channels_apart(tmp_path):
    audio = np.stack([sine(4800, 500, 48000), sine(4800, 3000, 48000)], axis=1)
    out = load_audio(write(tmp_path / "two.wav", audio, rate=48000), 22050, "keep")
    assert out.shape == (2, 2205)
    assert peak_hz(out[0], 22050) == pytest.approx(500, abs=10)
    assert peak_hz(out[1], 22050) == pytest.approx(3000, abs=10)


# --- select_channels ------------------------------------------------------------------------------------------------


def test_select_mono_is_the_mean():
    audio = np.arange(12, dtype=np.float32).reshape(3, 4)
    mono = select_channels(audio, "mono")
    assert mono.shape == (1, 4) and mono.dtype == np.float32
    np.testing.assert_array_equal(mono[0], [4, 5, 6, 7])


def test_select_stereo_duplicates_mono():
    audio = np.arange(5, dtype=np.float32)[None]
    stereo = select_channels(audio, "stereo")
    assert stereo.shape == (2, 5)
    np.testing.assert_array_equal(stereo[0], audio[0])
    np.testing.assert_array_equal(stereo[1], audio[0])


def test_select_stereo_takes_the_first_two_of_six():
    audio = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    np.testing.assert_array_equal(select_channels(audio, "stereo"), audio[:2])


def test_select_keep_and_index():
    audio = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    np.testing.assert_array_equal(select_channels(audio, "keep"), audio)
    for index in range(6):
        np.testing.assert_array_equal(select_channels(audio, index), audio[index: index + 1])


@pytest.mark.parametrize("channels", [6, 7, -1, "left", "", None])
def test_select_bad_channel_is_an_error(channels):
    with pytest.raises(SpectrodiffError, match="channel"):
        select_channels(np.zeros((6, 4), np.float32), channels)


def test_select_returns_float32_as_documented():
    """The docstring promises `(C', N)` float32 whatever the input dtype."""
    audio = np.zeros((2, 4), np.float64)
    dtypes = {channels: select_channels(audio, channels).dtype for channels in ("mono", "stereo", "keep", 0)}
    assert dtypes == dict.fromkeys(dtypes, np.dtype(np.float32))


# --- iter_audio_blocks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_seconds", [0.1, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("channels", ["mono", "keep", "stereo", 1])
def test_blocks_at_the_same_rate_concatenate_to_the_whole(stereo_file, block_seconds, channels):
    path, _ = stereo_file
    blocks = list(iter_audio_blocks(path, SR, channels, block_seconds))
    assert all(b.dtype == np.float32 and 0 < b.shape[1] <= int(block_seconds * SR) for b in blocks)
    assert len(blocks) == int(np.ceil(2.0 / block_seconds - 1e-9))
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), load_audio(path, SR, channels))


@pytest.mark.parametrize("block_seconds", [0.25, 0.3333, 1.0, 3.0])
def test_blocks_resampled_from_48k_match_the_whole(tmp_path, block_seconds):
    path = write(tmp_path / "hi.wav", np.stack([noise(2.0, 48000, seed=3), chord(2.0, 48000)], axis=1), 48000)
    whole = load_audio(path, SR, "keep")
    blocks = list(iter_audio_blocks(path, SR, "keep", block_seconds))
    assert all(b.dtype == np.float32 and b.shape[0] == 2 for b in blocks)
    streamed = np.concatenate(blocks, axis=1)
    assert abs(streamed.shape[1] - whole.shape[1]) <= 1
    assert abs(streamed.shape[1] - round(2.0 * SR)) <= 1
    n = min(streamed.shape[1], whole.shape[1])
    edge = 1000
    assert np.abs(streamed[:, edge: n - edge] - whole[:, edge: n - edge]).max() < 1e-3


def test_blocks_of_an_empty_file(tmp_path):
    path = write(tmp_path / "empty.wav", np.zeros((0, 2), np.float32), 48000)
    with pytest.raises(SpectrodiffError, match=r"holds no audio \(0 frames\)"):
        list(iter_audio_blocks(path, SR, "mono", 0.5))


def test_blocks_of_a_missing_file(tmp_path):
    with pytest.raises(SpectrodiffError, match="no such file"):
        list(iter_audio_blocks(tmp_path / "absent.wav", SR))


# --- normalize_loudness ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("amplitude", [0.01, 0.2, 0.9])
def test_normalize_reaches_minus_12_dbfs_rms(amplitude):
    tone = sine(SR, amplitude=amplitude)[None]  # crest factor 3 dB: the peak ceiling is not reached
    out = normalize_loudness(tone)
    assert out.dtype == np.float32 and out.shape == tone.shape
    assert dbfs(out) == pytest.approx(-12.0, abs=0.01)
    assert np.abs(out).max() < PEAK_CEILING
    np.testing.assert_allclose(out, tone * (out.max() / tone.max()), rtol=1e-5, atol=1e-7)


def test_normalize_other_target():
    out = normalize_loudness(sine(SR, amplitude=0.3)[None], target_dbfs=-20.0)
    assert dbfs(out) == pytest.approx(-20.0, abs=0.01)


def test_normalize_limits_the_peak_to_minus_0_1_dbfs():
    clicks = np.zeros((2, SR), np.float32)
    clicks[0, ::4410] = 0.3  # huge crest factor: -12 dBFS RMS would need a peak far above full scale
    clicks[1, 5::4410] = -0.2
    out = normalize_loudness(clicks)
    assert np.abs(out).max() == pytest.approx(PEAK_CEILING, abs=1e-6)
    assert dbfs(out) < -12.0
    np.testing.assert_allclose(out[1, 5], -0.2 / 0.3 * PEAK_CEILING, rtol=1e-5)


def test_normalize_leaves_silence_and_empty_alone():
    silence = np.zeros((2, 1000), np.float32)
    out = normalize_loudness(silence)
    assert np.isfinite(out).all() and not out.any()
    assert out.shape == (2, 1000)
    assert normalize_loudness(np.zeros((1, 0), np.float32)).shape == (1, 0)


# --- save_audio -----------------------------------------------------------------------------------------------------


def test_save_audio_writes_16_bit_wav_atomically(tmp_path):
    audio = np.stack([sine(4410), sine(4410, 500)])
    path = save_audio(tmp_path / "out.wav", audio, 22050)
    assert path == tmp_path / "out.wav"
    assert names(tmp_path) == ["out.wav"]  # no temporary file left
    info = soundfile.info(path)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (22050, 2, 4410, "PCM_16")
    np.testing.assert_allclose(soundfile.read(path, dtype="float32")[0].T, audio, atol=1 / 32768)


@pytest.mark.parametrize(("suffix", "container"), [(".flac", "FLAC"), (".ogg", "OGG"), (".mp3", "MP3"),
                                                   (".WAV", "WAV")])
def test_save_audio_follows_the_suffix(tmp_path, suffix, container):
    path = save_audio(tmp_path / f"out{suffix}", sine(SR // 2)[None], SR)
    assert names(tmp_path) == [f"out{suffix}"]
    info = soundfile.info(path)
    assert info.format == container and info.samplerate == SR
    assert abs(info.frames - SR // 2) <= (0 if container in ("FLAC", "WAV") else 2048)


def test_save_audio_clips_and_cleans(tmp_path):
    audio = np.array([[0.5, 2.0, -3.0, np.nan, np.inf, -np.inf]], np.float32)
    path = save_audio(tmp_path / "wild.wav", audio, SR)
    written = soundfile.read(path, dtype="int16")[0]
    np.testing.assert_array_equal(written, [16384, 32767, -32768, 0, 32767, -32768])


def test_save_audio_refuses_to_overwrite(tmp_path):
    path = tmp_path / "keep.wav"
    path.write_bytes(b"precious bytes")
    with pytest.raises(SpectrodiffError, match="already exists"):
        save_audio(path, sine(100)[None], SR)
    assert path.read_bytes() == b"precious bytes"
    assert names(tmp_path) == ["keep.wav"]
    save_audio(path, sine(100)[None], SR, overwrite=True)
    assert soundfile.info(path).frames == 100
    assert names(tmp_path) == ["keep.wav"]


@pytest.mark.parametrize("name", ["out.aiff", "out.txt", "out", "out.png"])
def test_save_audio_unsupported_suffix(tmp_path, name):
    with pytest.raises(SpectrodiffError, match="cannot write"):
        save_audio(tmp_path / name, sine(100)[None], SR)
    assert names(tmp_path) == []


def test_save_audio_failure_leaves_nothing(tmp_path):
    with pytest.raises(Exception, match="sample rate"):  # MP3 cannot hold 96 kHz: libsndfile refuses
        save_audio(tmp_path / "hi.mp3", sine(9600, rate=96000)[None], 96000)
    assert names(tmp_path) == []


# --- files: atomic_path, resolve_output -----------------------------------------------------------------------------


def test_atomic_path_removes_the_temporary_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp != target
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert names(tmp_path) == []


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "x.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
        assert not target.exists()
    assert target.read_bytes() == b"whole"
    assert names(tmp_path) == ["x.bin"]


def test_resolve_output(tmp_path):
    assert resolve_output(tmp_path / "a" / "f.png", "d.png", (".png",)) == tmp_path / "a" / "f.png"
    assert resolve_output(tmp_path / "b", "d.png", (".png",)) == tmp_path / "b" / "d.png"
    assert names(tmp_path) == [], "folders are created only when a file is written"
    with atomic_path(tmp_path / "b" / "d.png") as tmp:
        tmp.write_bytes(b"png")
    assert (tmp_path / "b" / "d.png").read_bytes() == b"png"
    with pytest.raises(SpectrodiffError, match="expected a folder or a file ending in .png"):
        resolve_output(tmp_path / "f.jpg", "d.png", (".png",))


# --- memory: one block at a time, whatever the file ---------------------------------------------------------------


def test_reading_holds_one_block_whatever_the_files_rate_and_channels(tmp_path, monkeypatch):
    """An 8-channel FLAC at 655,350 Hz (a 340 KB one of 59.5 s took 2.99 GB to convert) is decoded, downmixed and
    resampled a block at a time: reading 6 s of it (126 MB as float32) peaks far below that; read whole (the
    control), it does not."""
    import tracemalloc

    import spectrodiff.codec.audio as audio_module

    rate, channels, seconds = 655_350, 8, 6
    path = tmp_path / "wide.flac"
    with soundfile.SoundFile(path, "w", rate, channels, subtype="PCM_16") as f:
        for _ in range(seconds):
            f.write(np.zeros((rate, channels), np.float32))
    whole_bytes = seconds * rate * channels * 4

    def peak(span: float | None) -> int:
        tracemalloc.start()
        try:
            load_audio(path, SR, "mono", 0.0, span)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(None) < whole_bytes / 2
    assert peak(4.0) < whole_bytes / 2  # a span too
    monkeypatch.setattr(audio_module, "READ_BLOCK_SAMPLES", 1 << 40)
    assert peak(None) > whole_bytes


def test_a_long_span_streams_that_span_only(tmp_path, monkeypatch):
    """`audio-to-image --duration 500` of a 600 s file streamed the whole file (a 600 s image); streamed spans are
    the span, and the same pixels as the span read at once."""
    import spectrodiff.codec.convert as convert
    from spectrodiff.codec.params import SpectrogramParams

    path = write(tmp_path / "long.wav", noise(3.0, SR, seed=1))
    params = SpectrogramParams()
    at_once = np.asarray(convert.file_to_image(path, params, 0.0, 1.5))
    monkeypatch.setattr(convert, "STREAM_ABOVE_SECONDS", 1.0)
    streamed = np.asarray(convert.file_to_image(path, params, 0.0, 1.5))
    assert streamed.shape == at_once.shape == (params.num_frequencies, 151, 3)
    np.testing.assert_array_equal(streamed, at_once)
    assert np.asarray(convert.file_to_image(path, params, 0.5, 1.5)).shape[1] == 151
