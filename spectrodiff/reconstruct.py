"""Mel magnitude -> waveform: least-squares mel inversion, then coarse-to-fine Griffin-Lim phase recovery."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .griffin_lim import griffin_lim
from .mel import INT16_SCALE, mel_filterbank
from .params import SpectrogramParams

# Share of the iterations spent on the coarse grid; the rest refine on the finer one.
COARSE_SHARE = 0.6


def phase_fft_sizes(params: SpectrogramParams) -> list[int]:
    """FFT sizes for phase recovery, coarse to fine: the bare window, then twice it, when they divide `n_fft`.

    Zero-padding a frame only interpolates its spectrum, so the magnitude at FFT size `win_length` is exactly the
    magnitude at `n_fft` taken every `n_fft // win_length` bins: Griffin-Lim on that grid solves the same frames
    far faster (Riffusion's 17640 is also a slow FFT size, 7 x 7 in it). The coarse grid does most iterations;
    the 2x grid then recovers the detail between its bins that dense spectra (noise, cymbals) need.
    """
    sizes = [size for size in (params.win_length, 2 * params.win_length) if params.n_fft % size == 0]
    return sizes or [params.n_fft]


@functools.lru_cache(maxsize=16)
def _inverse_filterbank(key: tuple, device: torch.device) -> torch.Tensor:
    """`(num_frequencies, n_fft // 2 + 1)` pseudo-inverse of the mel filterbank, in float64 then cast.

    With independent filters (Riffusion's: condition number about 43) the normal equations give the pseudo-inverse
    in milliseconds; filterbanks with empty or overlapping filters fall back to the SVD (about a second).
    """
    filters = mel_filterbank(SpectrogramParams(**dict(key))).double()
    gram = filters.T @ filters
    if torch.linalg.cond(gram) < 1e8:
        pinv = torch.linalg.solve(gram, filters.T)
    else:
        pinv = torch.linalg.pinv(filters)
    return pinv.float().to(device)


def mel_to_linear(mel: torch.Tensor, params: SpectrogramParams, n_fft: int | None = None) -> torch.Tensor:
    """Minimum-norm least-squares inverse of the mel filterbank, negatives clamped to zero.

    The pseudo-inverse is computed once per parameter set and device; each call is then one matmul.

    Args:
        mel: `(..., num_frequencies, T)`.
        n_fft: grid of the result, a divisor of `params.n_fft` (default `params.n_fft`).
    Returns:
        `(..., n_fft // 2 + 1, T)` linear magnitude.
    """
    step = params.n_fft // (n_fft or params.n_fft)
    pinv = _inverse_filterbank(params.key(), mel.device)[:, ::step]
    return torch.matmul(mel.transpose(-1, -2).float(), pinv).transpose(-1, -2).clamp_(min=0.0)


def mel_to_waveform(
    mel: torch.Tensor,
    params: SpectrogramParams,
    n_iter: int = 32,
    momentum: float = 0.99,
    seed: int | None = 0,
    on_iter: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Reconstruct audio from a mel magnitude (Riffusion scale), batched over every leading dimension.

    Args:
        mel: `(..., num_frequencies, T)`, e.g. `(C, 512, T)` for one clip or `(tiles, C, 512, T)`.
        n_iter: Griffin-Lim iterations in all (split coarse to fine, see `phase_fft_sizes`).
        seed: seeds the initial phase, so the same mel gives the same audio; None for a fresh random phase.
        on_iter: called with the number of iterations done so far.
    Returns:
        `(..., (T - 1) * hop)` float audio, unnormalised, on the [-1, 1] scale of the source.
    """
    *lead, n_mels, width = mel.shape
    mel = mel.reshape(-1, n_mels, width)
    sizes = phase_fft_sizes(params)
    coarse = round(n_iter * COARSE_SHARE) if len(sizes) > 1 else n_iter
    split = (coarse, n_iter - coarse)[: len(sizes)]
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    audio, done = None, 0
    for size, iters in zip(sizes, split, strict=True):
        audio = griffin_lim(
            mel_to_linear(mel, params, size), size, params.hop_length, params.win_length, n_iter=iters,
            momentum=momentum, init=audio, generator=generator,
            on_iter=(lambda i, base=done: on_iter(base + i)) if on_iter else None,
        )
        done += iters
    return audio.reshape(*lead, -1) / INT16_SCALE
