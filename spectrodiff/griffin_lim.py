"""Fast Griffin-Lim (Perraudin et al. 2013): phase recovery from an STFT magnitude, batched."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .mel import hann_window


class _FrameTransform:
    """Centred STFT / ISTFT pair (as torch.stft / torch.istft with reflect padding), time-major and band-limited.

    Spectra are `(B, T, bins)` holding only the lowest `bins` FFT bins: the rest are zero by construction, so
    the inverse zero-fills them and the forward transform drops them. The overlap-add envelope is computed once.
    """

    def __init__(self, n_fft: int, hop_length: int, win_length: int, frames: int, bins: int, device: torch.device):
        window = hann_window(win_length, device)
        left = (n_fft - win_length) // 2  # torch.stft centres a short window inside the FFT frame
        self.window = F.pad(window, (left, n_fft - win_length - left))
        self.n_fft, self.hop, self.frames, self.bins = n_fft, hop_length, frames, bins
        self.pad = n_fft // 2
        self.length = (frames - 1) * hop_length
        self.span = (frames - 1) * hop_length + n_fft
        envelope = self._overlap_add((self.window**2).expand(1, frames, n_fft))[0, self.pad: self.pad + self.length]
        self.inverse_envelope = 1.0 / envelope.clamp(min=1e-11)

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """`(B, T, n_fft)` -> `(B, span)`."""
        folded = F.fold(frames.transpose(1, 2), (1, self.span), (1, self.n_fft), stride=(1, self.hop))
        return folded.reshape(frames.shape[0], -1)

    def inverse(self, spec: torch.Tensor) -> torch.Tensor:
        """`(B, T, bins)` complex -> `(B, (T - 1) * hop)`."""
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=-1) * self.window
        return self._overlap_add(frames)[:, self.pad: self.pad + self.length] * self.inverse_envelope

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """`(B, N)` -> `(B, 1 + N // hop, bins)` complex."""
        # Reflect padding needs more samples than the pad; clips of a few frames are zero-padded instead.
        mode = "reflect" if audio.shape[-1] > self.pad else "constant"
        padded = F.pad(audio.unsqueeze(1), (self.pad, self.pad), mode=mode).squeeze(1)
        frames = padded.unfold(-1, self.n_fft, self.hop) * self.window
        return torch.fft.rfft(frames, dim=-1)[..., : self.bins]


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
) -> torch.Tensor:
    """Waveform whose STFT magnitude approximates `magnitude` (centred Hann frames, as torch.stft).

    Bins above the highest non-zero one are left out of the iterations (exactly, since their target is zero):
    at Riffusion's 0-10 kHz that halves the work.

    Args:
        magnitude: `(B, n_fft // 2 + 1, T)`; every batch row (channel or tile) is solved at once.
        n_iter: projections; 0 returns the initial estimate.
        momentum: Fast Griffin-Lim's acceleration, 0.99 as Riffusion (torchaudio) and librosa use.
        init: `(B, (T - 1) * hop_length)` waveform whose phase starts the iterations (e.g. a coarser solution);
            None starts from random phase.
        generator: seeds the random initial phase; None draws from torch's global generator.
        on_iter: called with the iteration number after each one (for progress).
    Returns:
        `(B, (T - 1) * hop_length)`.
    """
    batch, _, frames = magnitude.shape
    if frames < 2:
        return magnitude.new_zeros(batch, 0)
    nonzero = torch.nonzero(magnitude.amax(dim=(0, 2)))
    bins = int(nonzero[-1]) + 1 if len(nonzero) else 1
    transform = _FrameTransform(n_fft, hop_length, win_length, frames, bins, magnitude.device)
    target = magnitude[:, :bins].transpose(1, 2).contiguous()  # (B, T, bins)

    if init is not None:
        angles = torch.sgn(transform.forward(init))
    else:
        phase = torch.rand(target.shape, generator=generator, device="cpu").to(target.device)
        angles = torch.polar(torch.ones_like(phase), 2 * torch.pi * phase)
    previous = torch.zeros_like(angles)
    decay = momentum / (1 + momentum)
    for i in range(n_iter):
        rebuilt = transform.forward(transform.inverse(target * angles))
        angles = torch.sgn(torch.add(rebuilt, previous, alpha=-decay))
        previous = rebuilt
        if on_iter:
            on_iter(i + 1)
    return transform.inverse(target * angles)
