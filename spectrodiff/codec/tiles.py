"""Cutting audio into tiles of a fixed length: the one rule `slice` and `prepare` share."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np

from .audio import load_audio
from .params import SpectrogramParams, TileSettings


@dataclass(frozen=True)
class Tiling:
    """A tile is `params.tile_width(seconds)` columns, spanning `params.samples_for_width(width)` samples; tiles start
    every `hop` seconds (default: a whole tile) while a whole tile fits, so a partial last tile is dropped."""

    seconds: float = 5.12
    hop: float | None = None
    stereo: bool = False
    n_mels: int = 512

    def __post_init__(self) -> None:
        TileSettings.from_dict({"seconds": self.seconds, "hop": self.hop, "stereo": self.stereo,
                                "n_mels": self.n_mels}, flag=True)

    @property
    def params(self) -> SpectrogramParams:
        return _params(self.stereo, self.n_mels)

    @property
    def width(self) -> int:
        return self.params.tile_width(self.seconds)

    @property
    def samples(self) -> int:
        return self.params.samples_for_width(self.width)

    @property
    def tile_seconds(self) -> float:
        return self.samples / self.params.sample_rate

    @property
    def hop_seconds(self) -> float:
        return self.hop or self.tile_seconds

    def starts(self, duration: float) -> list[float]:
        """Start times (seconds) of the tiles of a file `duration` seconds long: (duration - tile) // hop + 1."""
        return self.params.tile_starts(duration, self.tile_seconds, self.hop_seconds)

    def read(self, path: Path, start: float) -> np.ndarray:
        """The tile at `start` seconds of `path`, read from disk alone: `(C, samples)` float32 (C = 1, or 2 with
        stereo), padded with silence where the file's end falls inside the last samples."""
        clip = load_audio(path, self.params.sample_rate, "stereo" if self.stereo else "mono", start,
                          self.tile_seconds)[:, : self.samples]
        return np.pad(clip, ((0, 0), (0, self.samples - clip.shape[1])))


def tile_name(source: str | Path, start: float, suffix: str) -> str:
    """A tile's path relative to the output folder: the source's own folders (a posix path relative to what was
    tiled), then `<stem>_<extension>_<start ms>ms.<suffix>` (the extension keeps `song.wav` and `song.mp3` apart)."""
    rel = PurePosixPath(Path(source).as_posix())
    return str(rel.parent / f"{rel.stem}_{rel.suffix.lstrip('.').lower()}_{round(start * 1000):08d}ms.{suffix}")


@lru_cache(maxsize=2)
def _params(stereo: bool, n_mels: int) -> SpectrogramParams:
    return SpectrogramParams(stereo=stereo, num_frequencies=n_mels)
