"""Re-timing mel columns: a beat-time mel brought to the clock hop its vocoder runs at (linear interpolation of the
magnitudes along time; circular for loops, so that the wrap stays seamless)."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from .params import SpectrogramParams


def columns_per_clock_column(params: SpectrogramParams) -> float:
    """Beat-time columns a clock-time column spans: the clock hop over the beat hop (at the params' tempo)."""
    return params.clock().hop_length / params.hop_length


def retime_loop(mel: torch.Tensor, params: SpectrogramParams, multiple: int = 1) -> torch.Tensor:
    """`(..., n_mels, T)` one period of a beat-time loop -> `(..., n_mels, round(T x hop / clock hop))` at the clock
    hop, interpolated circularly (the column after the last is the first); with `multiple`, the multiple of it
    nearest that width."""
    width = mel.shape[-1]
    out_width = max(multiple, multiple * round(width / columns_per_clock_column(params) / multiple))
    return columns_at(mel, torch.arange(out_width, dtype=torch.float64) * width / out_width, circular=True)


@dataclass(frozen=True)
class TempoMap:
    """Beat-time columns in sections heard one after another, each at its own tempo (a composition whose tempo
    changes on a bar line): `widths`, the beat columns of every section but the last (which holds all the columns
    after them; fractional for a section that is not whole beats); `steps`, each section's beat columns a clock
    column spans (`columns_per_clock_column` at its tempo). Clock column j samples beat column `beat_column(j)`, so
    the sections' audio follows on without a gap."""

    widths: tuple[float, ...]
    steps: tuple[float, ...]

    @classmethod
    def steady(cls, params: SpectrogramParams) -> TempoMap:
        """One tempo throughout: the params'."""
        return cls((), (columns_per_clock_column(params),))

    @property
    def starts(self) -> tuple[list[float], list[float]]:
        """Each section's first beat column, and the clock column (fractional) at which it is heard."""
        beats = [0.0, *itertools.accumulate(float(w) for w in self.widths)]
        clocks = [0.0, *itertools.accumulate(w / step for w, step in zip(self.widths, self.steps, strict=False))]
        return beats, clocks

    def beat_column(self, clock: torch.Tensor) -> torch.Tensor:
        """`(N,)` float64 clock columns -> the beat columns, fractional, that they sample."""
        beats, clocks = (torch.tensor(starts, dtype=torch.float64) for starts in self.starts)
        section = torch.searchsorted(clocks, clock, right=True) - 1
        steps = torch.tensor(self.steps, dtype=torch.float64)
        return beats[section] + (clock - clocks[section]) * steps[section]

    def clock_column(self, beat: float) -> float:
        """The clock column, fractional, at which beat column `beat` is heard."""
        beats, clocks = self.starts
        section = bisect.bisect_right(beats, beat) - 1
        return clocks[section] + (beat - beats[section]) / self.steps[section]


def retime_pieces(pieces: Iterable[torch.Tensor], params: SpectrogramParams,
                  tempo_map: TempoMap | None = None) -> Iterator[torch.Tensor]:
    """Beat-time mel pieces `(..., n_mels, t)`, in order -> clock-time pieces, streamed: clock column j lies at
    beat column j x step (`columns_per_clock_column`; with `tempo_map`, as it maps them), interpolated between its
    neighbours; the last clock column is the last that the beat columns reach, so the audio never outlasts theirs."""
    tempo_map = tempo_map or TempoMap.steady(params)
    held: torch.Tensor | None = None
    offset = done = 0  # beat column of held's first; clock columns made
    for piece in pieces:
        held = piece if held is None else torch.cat([held, piece], dim=-1)
        end = offset + held.shape[-1]
        count = math.ceil(tempo_map.clock_column(end - 1) - 1e-9) - done  # columns whose both neighbours arrived
        if count > 0:
            yield columns_at(held, tempo_map.beat_column(done + torch.arange(count, dtype=torch.float64)) - offset)
            done += count
        reached = tempo_map.beat_column(torch.tensor([float(done)], dtype=torch.float64)).item()
        drop = max(0, min(math.floor(reached) - offset, held.shape[-1] - 1))
        held, offset = held[..., drop:], offset + drop
    if held is None:
        return
    last = math.floor(tempo_map.clock_column(offset + held.shape[-1] - 1) + 1e-9)  # may sit on the last beat column
    if last >= done:
        clock = done + torch.arange(last - done + 1, dtype=torch.float64)
        yield columns_at(held, tempo_map.beat_column(clock) - offset)


def columns_at(mel: torch.Tensor, x: torch.Tensor, circular: bool = False) -> torch.Tensor:
    """`(..., n_mels, W)` -> `(..., n_mels, len(x))` its columns at fractional positions `x` `(K,)` float64,
    linearly interpolated: round the loop when `circular` (the column after the last is the first), else clamped to
    the first and last columns."""
    width = mel.shape[-1]
    if circular:
        floor = x.floor()
        low, weight = floor.long() % width, x - floor
        high = (low + 1) % width
    else:
        low = x.floor().long().clamp(0, width - 1)
        high = (low + 1).clamp(max=width - 1)
        weight = (x - low).clamp(0, 1)
    weight = weight.to(mel.dtype)
    return mel[..., low] * (1 - weight) + mel[..., high] * weight
