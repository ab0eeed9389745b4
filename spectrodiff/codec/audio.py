"""Audio files: read (any channels, rate, bit depth; spans or streamed blocks), resample, normalise, write."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from ..errors import SpectrodiffError
from ..files import atomic_path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff")
# Float files may hold anything; beyond this (80 dB over full scale) values are corrupt, and would overflow float32.
MAX_SAMPLE_MAGNITUDE = 1e4
# Below telephone quality no file holds music worth converting; a header saying so is more likely corrupt.
MIN_SAMPLE_RATE = 8000
# Samples (frames x channels) decoded at once (16 MiB of float32): a file's rate and channel count raise memory no
# further, whatever they are (a short 8-channel FLAC at 655,350 Hz decoded whole took gigabytes).
READ_BLOCK_SAMPLES = 1 << 22
# What libsndfile's log says of a file shorter than its header declares (WAV/AIFF chunk sizes, an unfinished Ogg).
_TRUNCATION_SIGNS = ("(should be", "lacks an end-of-stream", "truncated")
# Riffusion's output loudness: gain to -12 dBFS (RMS, as pydub measures it) with its 0.1 dB peak headroom.
DEFAULT_LOUDNESS_DBFS = -12.0
PEAK_CEILING_DBFS = -0.1


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


_STDERR = threading.Lock()


@contextlib.contextmanager
def _decoder_notes_silenced() -> Iterator[None]:
    """libmpg123 prints its notes ("Illegal Audio-MPEG-Header ...") straight to the process's stderr while
    libsndfile probes a file; a file that cannot be read gets one line of ours instead."""
    with _STDERR:
        with contextlib.suppress(ValueError, OSError):  # a replaced sys.stderr, already closed
            sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _open(path: Path) -> soundfile.SoundFile:
    path = Path(path)
    if not path.exists():
        raise SpectrodiffError(f"no such file: {path}")
    if path.is_dir():
        raise SpectrodiffError(f"{path} is a folder, not an audio file")
    try:
        with _decoder_notes_silenced():
            return soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)
        if "does not exist" in reason:  # libsndfile's words when its MPEG decoder finds no frame in a file that exists
            reason = "format not recognised"
        reason = reason[:1].lower() + reason[1:].rstrip(".")
        raise SpectrodiffError(f"{path} is not a readable audio file ({reason})") from None


def find_audio(source: Path) -> list[Path]:
    """The audio files a source names: the file itself, or every file with an audio suffix under a folder,
    recursively (hidden files and folders skipped, links to folders not followed), sorted by their path relative to
    it. SpectrodiffError when the source is missing or holds none."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise SpectrodiffError(f"no such file or folder: {source}")
    found = []
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / name for name in files
                  if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_SUFFIXES]
    if not found:
        raise SpectrodiffError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {source}")
    return sorted(found, key=lambda p: p.relative_to(source).as_posix())


def audio_info(path: Path) -> AudioInfo:
    """What a file holds, from its header."""
    with _open(path) as f:
        return AudioInfo(Path(path), f.samplerate, f.channels, f.frames, f.format, f.subtype)


def is_truncated(path: Path) -> bool:
    """Whether the file ends before its header says it does: libsndfile's log says so (WAV, AIFF, Ogg), or its last
    frame cannot be read (FLAC). It reads the file's end, so only `info` asks."""
    with _open(path) as f:
        if any(sign in f.extra_info for sign in _TRUNCATION_SIGNS):
            return True
        try:
            f.seek(max(f.frames - 1, 0))
            f.read(1)
            return False
        except (soundfile.LibsndfileError, RuntimeError):
            return True


def check_readable(info: AudioInfo) -> AudioInfo:
    """SpectrodiffError unless the file has audio to convert: at least one frame, at a rate of 8 kHz or more."""
    if info.frames == 0:
        raise SpectrodiffError(f"{info.path} holds no audio (0 frames)")
    if info.sample_rate < MIN_SAMPLE_RATE:
        raise SpectrodiffError(f"{info.path} says its sample rate is {info.sample_rate} Hz; at least "
                               f"{MIN_SAMPLE_RATE} Hz is needed")
    return info


def _open_readable(path: Path) -> soundfile.SoundFile:
    f = _open(path)
    try:
        check_readable(AudioInfo(Path(path), f.samplerate, f.channels, f.frames, f.format, f.subtype))
    except SpectrodiffError:
        f.close()
        raise
    return f


def select_channels(audio: np.ndarray, channels: str | int) -> np.ndarray:
    """Pick the channels to convert.

    Args:
        audio: `(C, N)`.
        channels: "mono" (mean of all, as Riffusion downmixes), "stereo" (first two; mono is duplicated),
            "keep", or a channel index.
    Returns:
        `(C', N)` float32.
    """
    if channels == "mono":
        return audio.mean(axis=0, keepdims=True, dtype=np.float32)
    if channels == "stereo":
        picked = np.repeat(audio, 2, axis=0) if audio.shape[0] == 1 else audio[:2]
    elif channels == "keep":
        picked = audio
    elif isinstance(channels, int) and 0 <= channels < audio.shape[0]:
        picked = audio[channels: channels + 1]
    else:
        raise SpectrodiffError(f"cannot take channel {channels!r} of audio with {audio.shape[0]} channel(s)")
    return picked.astype(np.float32, copy=False)


def load_audio(
    path: Path,
    sample_rate: int,
    channels: str | int = "mono",
    start: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Read a span of a file, reading only that span from disk, a block at a time (`_read_blocks`).

    Args:
        start, duration: seconds; duration None reads to the end.
    Returns:
        `(C, N)` float32 in [-1, 1] at `sample_rate`, N = round(duration * sample_rate) when the file is long enough.
    """
    return np.concatenate(list(_span_blocks(path, sample_rate, channels, start, duration)), axis=1)


def iter_audio_blocks(path: Path, sample_rate: int, channels: str | int = "mono", block_seconds: float = 30.0,
                      start: float = 0.0, duration: float | None = None) -> Iterator[np.ndarray]:
    """Stream a span of a file (as `load_audio` reads it; default the whole file) as consecutive non-empty `(C, n)`
    float32 blocks at `sample_rate`, each from at most `block_seconds` of the file.

    Memory holds one block, whatever the file's length.
    """
    blocks = _span_blocks(path, sample_rate, channels, start, duration, block_seconds)
    yield from (block for block in blocks if block.shape[1])


def _span_blocks(path: Path, sample_rate: int, channels: str | int, start: float, duration: float | None,
                 block_seconds: float | None = None) -> Iterator[np.ndarray]:
    """`_read_blocks` of the span from `start` seconds for `duration` (None: to the end), cut to
    round(duration * sample_rate) samples in all."""
    if start < 0 or (duration is not None and duration < 0):
        raise SpectrodiffError(f"start and duration must be >= 0, got {start} and {duration}")
    with _open_readable(path) as f:
        first = min(int(round(start * f.samplerate)), f.frames)
        count = f.frames - first if duration is None else min(int(round(duration * f.samplerate)), f.frames - first)
        block = READ_BLOCK_SAMPLES
        if block_seconds is not None:
            block = min(block, max(1, int(block_seconds * f.samplerate)) * f.channels)
        left = None if duration is None else int(round(duration * sample_rate))
        for audio in _read_blocks(f, path, first, count, sample_rate, channels, block):
            if left is not None:
                audio = audio[:, :left]
                left -= audio.shape[1]
            yield audio


def _read_blocks(f: soundfile.SoundFile, path: Path, first: int, count: int, sample_rate: int,
                channels: str | int = "mono", block_samples: int = READ_BLOCK_SAMPLES) -> Iterator[np.ndarray]:
    """`count` frames of an open file from frame `first`, as consecutive `(C, n)` float32 blocks at `sample_rate`
    (some may be empty), decoded, channels picked (`select_channels`) and resampled (soxr's streaming resampler) a
    block of at most `block_samples` samples (frames x the file's channels) at a time, so that memory holds one
    block whatever the file's rate, channel count and length. NaN and infinite samples read as silence, with one
    warning that counts them (SpectrodiffError when no sample is finite: not audio); absurd magnitudes are clipped,
    so the maths downstream stays finite."""
    out_channels = select_channels(np.zeros((f.channels, 1), np.float32), channels).shape[0]
    stream = None
    if f.samplerate != sample_rate:
        stream = soxr.ResampleStream(f.samplerate, sample_rate, out_channels, dtype="float32", quality="HQ")
    blocksize = max(1, block_samples // f.channels)
    left, bad, finite = count, 0, False
    f.seek(first)
    try:
        while True:
            block = f.read(min(blocksize, left), dtype="float32", always_2d=True).T
            left -= block.shape[1]
            last = left <= 0 or block.shape[1] < blocksize
            good = np.isfinite(block)
            finite = finite or bool(good.any())
            if not good.all():
                bad += block.size - int(good.sum())
                block = np.where(good, block, np.float32(0))
            if last and bad:
                if not finite:
                    raise SpectrodiffError(f"{path} holds no finite samples (all NaN or infinite): not audio")
                warnings.warn(f"{path}: {bad} NaN or infinite samples read as silence", stacklevel=2)
            block = select_channels(np.clip(block, -MAX_SAMPLE_MAGNITUDE, MAX_SAMPLE_MAGNITUDE, out=block), channels)
            if stream is not None:
                block = np.ascontiguousarray(stream.resample_chunk(np.ascontiguousarray(block.T), last=last).T)
            yield block
            if last:
                return
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise SpectrodiffError(f"{path}: cannot decode audio ({exc})") from None


def normalize_loudness(audio: np.ndarray, target_dbfs: float = DEFAULT_LOUDNESS_DBFS) -> np.ndarray:
    """Gain to `target_dbfs` RMS (Riffusion's level), limited so the peak stays at -0.1 dBFS. Silence stays silent.

    Args:
        audio: `(C, N)`.
    """
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak == 0.0:
        return audio
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    gain = min(10 ** (target_dbfs / 20) / rms, 10 ** (PEAK_CEILING_DBFS / 20) / peak)
    return (audio * gain).astype(np.float32)


_SUBTYPES = {".wav": "PCM_16", ".flac": "PCM_16", ".ogg": "VORBIS", ".mp3": "MPEG_LAYER_III"}
# Frames handed to libsndfile a call: its Vorbis encoder crashed the process (SIGSEGV) on about 50 s or more at once.
WRITE_BLOCK_FRAMES = 1 << 16


def save_audio(path: Path, audio: np.ndarray, sample_rate: int, overwrite: bool = False) -> Path:
    """Write `(C, N)` float audio; the format follows the suffix (wav and flac as 16-bit PCM).

    Written a block at a time to a temporary name and renamed, so a failure never leaves a half-written file.
    """
    path = Path(path)
    subtype = _SUBTYPES.get(path.suffix.lower())
    if subtype is None:
        raise SpectrodiffError(f"cannot write {path.suffix or 'files without a suffix'}; use one of "
                               f"{', '.join(_SUBTYPES)}")
    with atomic_path(path, overwrite) as tmp:
        try:
            f = soundfile.SoundFile(tmp, "w", sample_rate, audio.shape[0], subtype=subtype,
                                    format=path.suffix[1:].upper())
        except soundfile.LibsndfileError as exc:
            raise SpectrodiffError(f"cannot write {path}: {_write_failure(None, exc)}") from None
        with f:
            for start in range(0, audio.shape[1], WRITE_BLOCK_FRAMES):
                block = np.clip(np.nan_to_num(audio[:, start: start + WRITE_BLOCK_FRAMES].T), -1.0, 1.0)
                write_block(f, block, path)
    return path


def write_block(f: soundfile.SoundFile, block: np.ndarray, path: Path) -> None:
    """`f.write(block)`; SpectrodiffError naming `path` (the name the user knows) and the cause when it fails."""
    try:
        f.write(block)
    except soundfile.LibsndfileError as exc:
        raise SpectrodiffError(f"cannot write {path}: {_write_failure(f, exc)}") from None


def _write_failure(f: soundfile.SoundFile | None, exc: soundfile.LibsndfileError) -> str:
    """Why libsndfile could not open (`f` None) or write a file: soundfile's exception says only "System error",
    where libsndfile's own message names the cause ("No space left on device")."""
    handle = f._file if f is not None else soundfile._ffi.NULL
    reason = soundfile._ffi.string(soundfile._snd.sf_strerror(handle)).decode(errors="replace")
    return reason.removeprefix("System error : ").rstrip(".") or exc.error_string
