"""Re-timing mel columns: a beat-time mel brought to the clock hop its vocoder runs at (linear interpolation of the
magnitudes along time; circular for loops, so that the wrap stays seamless)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

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
    x = torch.arange(out_width, dtype=torch.float64) * width / out_width
    low = x.floor().long()
    weight = (x - low).to(mel.dtype)
    return mel[..., low % width] * (1 - weight) + mel[..., (low + 1) % width] * weight


def retime_pieces(pieces: Iterable[torch.Tensor], params: SpectrogramParams) -> Iterator[torch.Tensor]:
    """Beat-time mel pieces `(..., n_mels, t)`, in order -> clock-time pieces, streamed: clock column j lies at
    beat column j x step (`columns_per_clock_column`), interpolated between its neighbours; the last clock column is
    the last that the beat columns reach, so the audio never outlasts theirs."""
    step = columns_per_clock_column(params)
    held: torch.Tensor | None = None
    offset = done = 0  # beat column of held's first; clock columns made
    for piece in pieces:
        held = piece if held is None else torch.cat([held, piece], dim=-1)
        end = offset + held.shape[-1]
        count = math.ceil((end - 1) / step - 1e-9) - done  # columns whose both neighbours have arrived
        if count > 0:
            yield _interpolate(held, (done + torch.arange(count, dtype=torch.float64)) * step - offset)
            done += count
        drop = max(0, min(math.floor(done * step) - offset, held.shape[-1] - 1))
        held, offset = held[..., drop:], offset + drop
    if held is None:
        return
    last = math.floor((offset + held.shape[-1] - 1) / step + 1e-9)  # the final column may sit on the last beat one
    if last >= done:
        yield _interpolate(held, (done + torch.arange(last - done + 1, dtype=torch.float64)) * step - offset)


def _interpolate(mel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Columns of `mel` at fractional positions `x` (clamped to its last column)."""
    low = x.floor().long().clamp(0, mel.shape[-1] - 1)
    high = (low + 1).clamp(max=mel.shape[-1] - 1)
    weight = (x - low).clamp(0, 1).to(mel.dtype)
    return mel[..., low] * (1 - weight) + mel[..., high] * weight
