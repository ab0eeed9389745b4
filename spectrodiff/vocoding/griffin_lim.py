"""Fast Griffin-Lim (Perraudin et al. 2013): phase recovery from an STFT magnitude, batched."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .stft import FrameTransform

# Init STFT bins below this fraction of the init's peak magnitude (-80 dB) carry no usable phase (e.g. the silent
# span of an inpainting init); they start from random phase instead.
INIT_PHASE_FLOOR = 1e-4


def initial_angles(
    transform: FrameTransform, shape: torch.Size, init: torch.Tensor | None, generator: torch.Generator | None
) -> torch.Tensor:
    """Unit phasors `shape = (B, T, bins)`: the phase of `init`'s STFT where it has energy, random elsewhere.

    The random draw is made even when `init` covers everything, so a generator advances the same way whatever
    the init holds.
    """
    phase = torch.rand(shape, generator=generator, device="cpu").to(transform.window.device)
    angles = torch.polar(torch.ones_like(phase), 2 * torch.pi * phase)
    if init is None:
        return angles
    spec = transform.forward(init)
    magnitude = spec.abs()
    known = magnitude > INIT_PHASE_FLOOR * magnitude.amax(dim=(1, 2), keepdim=True)
    return torch.where(known, torch.sgn(spec), angles)


def griffin_lim(
    magnitude: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int,
    n_iter: int = 32,
    momentum: float = 0.99,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    on_iter: Callable[[int], None] | None = None,
    circular: bool = False,
) -> torch.Tensor:
    """Waveform whose STFT magnitude approximates `magnitude` (centred Hann frames, as torch.stft).

    Bins above the highest non-zero one are left out of the iterations (exactly, since their target is zero):
    at Riffusion's 0-10 kHz that halves the work.

    Args:
        magnitude: `(B, n_fft // 2 + 1, T)`; every batch row (channel or tile) is solved at once.
        n_iter: projections; 0 returns the initial estimate.
        momentum: Fast Griffin-Lim's acceleration, 0.99 as Riffusion (torchaudio) and librosa use.
        init: `(B, L)` waveform (L as returned) whose STFT phase starts the iterations (e.g. a coarser solution, or
            known audio); bins where its magnitude is negligible (below `INIT_PHASE_FLOOR` of its peak), such as a
            silent span to fill, start from random phase. None starts from random phase everywhere.
        generator: seeds the random initial phase; None draws from torch's global generator.
        on_iter: called with the iteration number after each one (for progress).
        circular: treat the time axis as one period of a loop (see `FrameTransform`): T frames give `T * hop`
            samples that repeat without a seam.
    Returns:
        `(B, L)` with `L = (T - 1) * hop_length`, or `T * hop_length` when circular.
    """
    batch, _, frames = magnitude.shape
    if frames < (1 if circular else 2):
        return magnitude.new_zeros(batch, 0)
    nonzero = torch.nonzero(magnitude.amax(dim=(0, 2)))
    bins = int(nonzero[-1]) + 1 if len(nonzero) else 1
    transform = FrameTransform(n_fft, hop_length, win_length, frames, bins, magnitude.device, circular)
    target = magnitude[:, :bins].transpose(1, 2).contiguous()  # (B, T, bins)

    angles = initial_angles(transform, target.shape, init, generator)
    previous = torch.zeros_like(angles)
    decay = momentum / (1 + momentum)
    for i in range(n_iter):
        rebuilt = transform.forward(transform.inverse(target, angles))
        angles = torch.sgn(torch.add(rebuilt, previous, alpha=-decay))
        previous = rebuilt
        if on_iter:
            on_iter(i + 1)
    return transform.inverse(target, angles)
