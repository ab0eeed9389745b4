"""Fast Griffin-Lim (Perraudin et al. 2013): phase recovery from an STFT magnitude, batched."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .mel import hann_window

# Init STFT bins below this fraction of the init's peak magnitude (-80 dB) carry no usable phase (e.g. the silent
# span of an inpainting init); they start from random phase instead.
INIT_PHASE_FLOOR = 1e-4


class FrameTransform:
    """Centred STFT / ISTFT pair (as torch.stft / torch.istft), time-major and band-limited, linear or circular.

    Linear: reflect padding as torch.stft, T frames span `(T - 1) * hop` samples. Circular: the signal is one period
    of a loop, T frames span exactly `T * hop` samples, frame t is centred at sample `t * hop`, and both the padding
    and the overlap-add wrap around, so the last frames overlap the first ones as they do when the loop repeats.

    Spectra are `(B, T, bins)` holding only the lowest `bins` FFT bins: the rest are zero by construction, so
    the inverse zero-fills them and the forward transform drops them. Only the window's `win_length` samples of each
    frame are cut out and overlap-added (the FFT zero-pads them to `n_fft`), so a spectrum's phase is counted from
    the window's start rather than the FFT frame's: magnitudes are torch.stft's, and the pair is still exact. The
    overlap-add envelope is computed once.
    """

    def __init__(
        self, n_fft: int, hop_length: int, win_length: int, frames: int, bins: int, device: torch.device,
        circular: bool = False,
    ):
        self.window = hann_window(win_length, device)
        self.n_fft, self.hop, self.frames, self.bins, self.circular = n_fft, hop_length, frames, bins, circular
        self.win_length = win_length
        # torch.stft centres the window inside the FFT frame, and the FFT frame on sample t * hop.
        self.pad = n_fft // 2 - (n_fft - win_length) // 2
        self.length = frames * hop_length if circular else (frames - 1) * hop_length
        self.span = (frames - 1) * hop_length + win_length
        envelope = self._unpad(self._overlap_add((self.window**2).expand(1, frames, win_length)))
        self.inverse_envelope = 1.0 / envelope[0].clamp(min=1e-11)

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """`(B, T, win_length)` -> `(B, span)`: each frame cut into hop-long pieces, piece j of every frame added at
        once (a few strided adds; F.fold took a third of a Griffin-Lim iteration at Riffusion's sizes)."""
        batch, count, _ = frames.shape
        pieces = -(-self.win_length // self.hop)
        if pieces * self.hop != self.win_length:
            frames = F.pad(frames, (0, pieces * self.hop - self.win_length))
        cut = frames.reshape(batch, count, pieces, self.hop)
        out = frames.new_zeros(batch, count + pieces - 1, self.hop)
        for j in range(pieces):
            out[:, j: j + count] += cut[:, :, j]
        return out.reshape(batch, -1)[:, : self.span]

    def _wrap(self) -> tuple[int, int]:
        """Circular padding as tiling: padded position j holds sample `(j - pad) mod length`, which is position
        `j + shift` of the signal repeated `reps` times (a loop shorter than an FFT frame wraps more than once)."""
        shift = -self.pad % self.length
        return shift, -(-(shift + self.span) // self.length)

    def _pad(self, audio: torch.Tensor) -> torch.Tensor:
        """`(B, N)` -> the samples the frames read: `(B, N + 2 * pad)` reflect-padded, or (circular, N = length)
        `(B, span)` wrapped around."""
        if self.circular:
            shift, reps = self._wrap()
            return audio.repeat(1, reps)[:, shift: shift + self.span]
        # Reflect padding needs more samples than the pad; clips of a few frames are zero-padded instead.
        mode = "reflect" if audio.shape[-1] > self.pad else "constant"
        return F.pad(audio.unsqueeze(1), (self.pad, self.pad), mode=mode).squeeze(1)

    def _unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """`(B, span)` overlap-added frames -> `(B, length)`: linear drops the padding, circular adds each padded
        sample back onto the sample it wrapped from (the adjoint of `_pad`)."""
        if not self.circular:
            return padded[:, self.pad: self.pad + self.length]
        shift, reps = self._wrap()
        tiled = F.pad(padded, (shift, reps * self.length - shift - self.span))
        return tiled.reshape(padded.shape[0], reps, self.length).sum(dim=1)

    def inverse(self, spec: torch.Tensor) -> torch.Tensor:
        """`(B, T, bins)` complex -> `(B, length)`."""
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=-1)[..., : self.win_length] * self.window
        return self._unpad(self._overlap_add(frames)) * self.inverse_envelope

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """`(B, length)` -> `(B, T, bins)` complex (linear mode takes any N and gives `1 + N // hop` frames)."""
        frames = self._pad(audio).unfold(-1, self.win_length, self.hop) * self.window
        return torch.fft.rfft(frames, n=self.n_fft, dim=-1)[..., : self.bins]

    def initial_angles(
        self, shape: torch.Size, init: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Unit phasors `shape = (B, T, bins)`: the phase of `init`'s STFT where it has energy, random elsewhere.

        The random draw is made even when `init` covers everything, so a generator advances the same way whatever
        the init holds.
        """
        phase = torch.rand(shape, generator=generator, device="cpu").to(self.window.device)
        angles = torch.polar(torch.ones_like(phase), 2 * torch.pi * phase)
        if init is None:
            return angles
        spec = self.forward(init)
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

    angles = transform.initial_angles(target.shape, init, generator)
    previous = torch.zeros_like(angles)
    decay = momentum / (1 + momentum)
    for i in range(n_iter):
        rebuilt = transform.forward(transform.inverse(target * angles))
        angles = torch.sgn(torch.add(rebuilt, previous, alpha=-decay))
        previous = rebuilt
        if on_iter:
            on_iter(i + 1)
    return transform.inverse(target * angles)
