"""Mel-consistency refinement: a few projections that pull a waveform's mel onto a target mel, keeping its phase
and the fine structure of its spectrum.

A neural vocoder predicts a magnitude and a phase per frame, and their overlap-add is not exactly the STFT it
predicted, so the mel of its audio drifts from the mel it was given (the bundled mini vocoder's mel spectral
convergence was 0.22-0.30, Griffin-Lim's 0.11). Each iteration here measures the audio's mel on the mel's own STFT
frames, scales every FFT bin by the (over-relaxed) ratio of target to measured mel of the filters it falls in, and
goes back through an inverse and forward STFT, with Fast Griffin-Lim's momentum. Unlike Griffin-Lim, it never
replaces the magnitude by the mel's least-squares inverse, so the detail the vocoder predicted between and above the
mel filters survives (its multi-resolution STFT distance gets lower too, measured in benchmarks/vocoder.py).
"""

from __future__ import annotations

import functools
import math

import torch

from .errors import SpectrodiffError
from .griffin_lim import FrameTransform
from .mel import INT16_SCALE, mel_filterbank
from .params import SpectrogramParams

# Over-relaxation of the mel ratio and momentum on the spectra: 1.3 and 0.9 converged fastest among those tried on
# held-out recordings (1.5 with 0.95 diverged).
RATIO_POWER = 1.3
MOMENTUM = 0.9
# Mel magnitudes (int16 scale, peaks near 1e7) this small are silence; the ratio is also bounded so that one
# iteration cannot blow a near-silent bin up.
MEL_EPSILON = 1.0
MAX_RATIO = 1e3


@functools.lru_cache(maxsize=8)
def grid_filterbank(key: tuple, device: torch.device) -> torch.Tensor:
    """`(bins, n_mels)` mel filterbank on the window-sized FFT grid (`win_length // 2 + 1` bins, cut above the
    highest filter): each bin of the mel's zero-padded `n_fft` grid adds its weight to the nearest coarse bin, so
    every filter keeps its total weight even when it is narrower than a coarse bin (Riffusion's lowest are)."""
    params = SpectrogramParams(**dict(key))
    step = params.n_fft // params.win_length
    fine = mel_filterbank(params)
    nearest = torch.div(torch.arange(fine.shape[0]) + step // 2, step, rounding_mode="floor")
    coarse = torch.zeros(params.win_length // 2 + 1, fine.shape[1]).index_add_(0, nearest, fine)
    bins = int(coarse.sum(dim=1).nonzero().max()) + 1
    return coarse[:bins].to(device)


def check_refinable(params: SpectrogramParams) -> None:
    """SpectrodiffError unless the mel's FFT size is a multiple of its window (the projections work on the window's
    grid, which must be a subset of the mel's)."""
    if params.n_fft % params.win_length:
        raise SpectrodiffError("mel refinement needs an FFT size that is a multiple of the window, got "
                               f"{params.n_fft} and {params.win_length} samples: set refine_iterations to 0")


def refinement_reach(params: SpectrogramParams, iterations: int) -> int:
    """Frames either side of a frame whose input can change its refined output: each STFT or inverse STFT reaches
    half a window, and every iteration does both (plus the first analysis and the last synthesis)."""
    if iterations == 0:
        return 0
    return math.ceil(params.win_length / (2 * params.hop_length)) * (2 * iterations + 2)


def refine_to_mel(audio: torch.Tensor, mel: torch.Tensor, params: SpectrogramParams, iterations: int) -> torch.Tensor:
    """Pull `audio`'s mel towards `mel`.

    Args:
        audio: `(B, (T - 1) * hop)` float audio on the [-1, 1] scale (e.g. a vocoder's output).
        mel: `(B, n_mels, T)` Riffusion-scale target mel of the same frames.
        iterations: projections (0 returns `audio` unchanged).
    Returns:
        `(B, (T - 1) * hop)` audio; the part of it above the highest mel filter is left as it was.
    """
    frames = mel.shape[-1]
    if iterations == 0 or frames < 2:
        return audio
    check_refinable(params)
    filters = grid_filterbank(params.key(), audio.device)
    weight = filters.sum(dim=1)
    covered = weight > 0
    transform = FrameTransform(params.win_length, params.hop_length, params.win_length, frames, filters.shape[0],
                               audio.device)
    scaled = audio.float() * INT16_SCALE
    spectrum = transform.forward(scaled)  # (B, T, bins)
    rest = scaled - transform.inverse(spectrum)  # what lies above the filters is kept as is
    target = mel.float().transpose(1, 2) + MEL_EPSILON  # (B, T, n_mels)
    previous = None
    for _ in range(iterations):
        ratio = (target / (spectrum.abs() @ filters + MEL_EPSILON)).clamp(1 / MAX_RATIO, MAX_RATIO) ** RATIO_POWER
        gain = torch.where(covered, (ratio @ filters.T) / weight.clamp(min=1e-12), 1.0)
        rebuilt = transform.forward(transform.inverse(spectrum * gain))
        spectrum = rebuilt if previous is None else rebuilt + MOMENTUM * (rebuilt - previous)
        previous = rebuilt
    return (transform.inverse(spectrum) + rest) / INT16_SCALE
