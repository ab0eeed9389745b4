"""Warping a clock-time clip to an asked tempo, as a DAW warps a sample: the clip's beat is tracked
(`beats.track_beats`, a loop heard three times so that its beat across the wrap counts) and its spectrogram's
columns are resampled in time (`retime.columns_at`, round the period for a loop) so that the tracked tempo becomes
the asked one, the clip is exactly its whole bars, and its first downbeat is column 0.

The tracked tempo is first brought to the octave nearest the asked one (half or double time is the same beat), so a
warp never changes the tempo by more than a factor of sqrt(2). Columns are interpolated linearly: warping by more
than about 15 % blurs attacks (docs/generation.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .beats import METERS, BeatGrid, track_beats
from .retime import columns_at

# A loop whose tracked bars fill its period to within a 16th note holds exactly that many: the warp then reads the
# whole period, and the warped loop's wrap stays as seamless as the one made.
SNAP_BEATS = 0.25
LOOP_HEARINGS = 3  # times a loop is played to the tracker


@dataclass(frozen=True)
class Warp:
    """Play the source from `first_downbeat` seconds at `bpm` where it was at `tracked_bpm` (round its `period`
    seconds for a loop; None for a plain clip, read no further than its end)."""

    bpm: float
    tracked_bpm: float
    first_downbeat: float
    period: float | None

    @property
    def ratio(self) -> float:
        """Asked over tracked tempo: above 1 the clip is sped up."""
        return self.bpm / self.tracked_bpm

    def record(self) -> dict:
        """What a sidecar's "tempo_made" says of it."""
        return {"how": "warped", "tracked_bpm": round(self.tracked_bpm, 2), "ratio": round(self.ratio, 4),
                "first_downbeat": round(self.first_downbeat, 4)}


def nearest_octave(tracked: float, bpm: float) -> float:
    """`tracked` halved or doubled until it is within a factor of sqrt(2) of `bpm`."""
    return tracked * 2.0 ** round(math.log2(bpm / tracked))


def plan_warp(audio: np.ndarray, rate: int, bpm: float, bars: int, beats_per_bar: float,
              period: float | None = None) -> Warp | BeatGrid:
    """How to bring `(C, N)` audio (a loop's one period of `period` seconds, else a plain clip) to `bars` bars of
    `beats_per_bar` quarter-note beats at `bpm`: a Warp, or the tracked BeatGrid when the audio has no steady beat
    (then there is nothing to warp by)."""
    meter = f"{round(beats_per_bar)}/4"
    known_meter = beats_per_bar == round(beats_per_bar) and meter in METERS
    heard = np.tile(audio, LOOP_HEARINGS) if period is not None else audio
    grid = track_beats(heard, rate, meter=meter if known_meter else "4/4")
    if not grid.steady:
        return grid
    tracked = nearest_octave(grid.bpm, bpm)
    # a meter the tracker does not count in (7/8) starts on its first beat
    first = grid.first_downbeat if known_meter else grid.first_downbeat % grid.beat_seconds
    if period is not None:
        span = bars * beats_per_bar * 60 / tracked
        if abs(span - period) < SNAP_BEATS * 60 / tracked:
            tracked = bars * beats_per_bar * 60 / period
        first %= period
    return Warp(bpm, tracked, first, period)


def warp_columns(columns: torch.Tensor, hop_seconds: float, warp: Warp, width: int) -> torch.Tensor:
    """`(..., W)` spectrogram columns `hop_seconds` apart -> `(..., width)` the warped clip's: output column j is
    the source at `first_downbeat + j x hop x ratio` seconds, interpolated (round the period for a loop)."""
    x = (warp.first_downbeat + torch.arange(width, dtype=torch.float64) * hop_seconds * warp.ratio) / hop_seconds
    return columns_at(columns, x, circular=warp.period is not None)
