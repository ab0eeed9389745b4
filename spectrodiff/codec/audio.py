"""Audio files: read (any channels, rate, bit depth; spans or streamed blocks), resample, normalise, write."""

from __future__ import annotations

import os
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


def _open(path: Path) -> soundfile.SoundFile:
    path = Path(path)
    if not path.exists():
        raise SpectrodiffError(f"no such file: {path}")
    if path.is_dir():
        raise SpectrodiffError(f"{path} is a folder, not an audio file")
    try:
        return soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise SpectrodiffError(f"{path} is not a readable audio file ({exc})") from None


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


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """soxr high-quality resampling. `(C, N)` -> `(C, M)`, M = round(N * to / from)."""
    if from_rate == to_rate or audio.shape[-1] == 0:
        return audio.astype(np.float32, copy=False)
    return np.ascontiguousarray(soxr.resample(audio.T, from_rate, to_rate, quality="HQ").T, dtype=np.float32)


def load_audio(
    path: Path,
    sample_rate: int,
    channels: str | int = "mono",
    start: float = 0.0,
    duration: float | None = None,
) -> np.ndarray:
    """Read a span of a file, reading only that span from disk.

    Args:
        start, duration: seconds; duration None reads to the end.
    Returns:
        `(C, N)` float32 in [-1, 1] at `sample_rate`, N = round(duration * sample_rate) when the file is long enough.
    """
    if start < 0 or (duration is not None and duration < 0):
        raise SpectrodiffError(f"start and duration must be >= 0, got {start} and {duration}")
    with _open_readable(path) as f:
        first = min(int(round(start * f.samplerate)), f.frames)
        count = f.frames - first if duration is None else min(int(round(duration * f.samplerate)), f.frames - first)
        f.seek(first)
        try:
            audio = f.read(count, dtype="float32", always_2d=True).T
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise SpectrodiffError(f"{path}: cannot decode audio ({exc})") from None
        rate = f.samplerate
    audio = sanitize(audio, path, whole=True)
    audio = resample(select_channels(audio, channels), rate, sample_rate)
    if duration is not None:
        audio = audio[:, : int(round(duration * sample_rate))]
    return audio


def sanitize(audio: np.ndarray, path: Path | None = None, whole: bool = False) -> np.ndarray:
    """Replace NaN and infinite samples by 0 (with a warning naming `path`) and clip absurd magnitudes, so the maths
    downstream stays finite. SpectrodiffError when `whole` (no finite sample came before) and none is here either:
    that file is not audio."""
    bad = ~np.isfinite(audio)
    count = int(bad.sum())
    if count:
        if whole and count == audio.size:
            raise SpectrodiffError(f"{path or 'the audio'} holds no finite samples (all NaN or infinite): not audio")
        warnings.warn(f"{path or 'the audio'}: {count} NaN or infinite samples read as silence", stacklevel=2)
        audio = np.where(bad, np.float32(0), audio)
    return np.clip(audio, -MAX_SAMPLE_MAGNITUDE, MAX_SAMPLE_MAGNITUDE)


def iter_audio_blocks(
    path: Path, sample_rate: int, channels: str | int = "mono", block_seconds: float = 30.0
) -> Iterator[np.ndarray]:
    """Stream a whole file as consecutive `(C, n)` float32 blocks at `sample_rate` (soxr's streaming resampler).

    Memory holds one block, whatever the file's length.
    """
    with _open_readable(path) as f:
        out_channels = select_channels(np.zeros((f.channels, 1), np.float32), channels).shape[0]
        stream = None
        if f.samplerate != sample_rate:
            stream = soxr.ResampleStream(f.samplerate, sample_rate, out_channels, dtype="float32", quality="HQ")
        blocksize = max(1, int(block_seconds * f.samplerate))
        finite = False
        try:
            while True:
                block = f.read(blocksize, dtype="float32", always_2d=True).T
                last = f.tell() >= f.frames or block.shape[1] < blocksize
                seen = finite
                finite = finite or bool(np.isfinite(block).any())
                block = sanitize(block, path, whole=last and not seen)
                block = select_channels(block, channels)
                if stream is not None:
                    block = np.ascontiguousarray(stream.resample_chunk(np.ascontiguousarray(block.T), last=last).T)
                if block.shape[1]:
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


def save_audio(path: Path, audio: np.ndarray, sample_rate: int, overwrite: bool = False) -> Path:
    """Write `(C, N)` float audio; the format follows the suffix (wav and flac as 16-bit PCM).

    Written to a temporary name and renamed, so a failure never leaves a half-written file.
    """
    path = Path(path)
    subtype = _SUBTYPES.get(path.suffix.lower())
    if subtype is None:
        raise SpectrodiffError(f"cannot write {path.suffix or 'files without a suffix'}; use one of "
                               f"{', '.join(_SUBTYPES)}")
    audio = np.clip(np.nan_to_num(audio), -1.0, 1.0)
    with atomic_path(path, overwrite) as tmp:
        try:
            soundfile.write(tmp, audio.T, sample_rate, subtype=subtype, format=path.suffix[1:].upper())
        except soundfile.LibsndfileError as exc:
            raise SpectrodiffError(f"cannot write {path} ({exc.error_string})") from None
    return path
