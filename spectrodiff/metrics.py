"""Quality measures (docs/measures.md): spectral convergence, multi-resolution STFT distance, seams and loops.

Audio arguments are `(C, N)` or `(N,)` float waveforms in [-1, 1], numpy arrays or torch tensors.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from .codec.mel import hann_window, waveform_to_mel
from .codec.params import SpectrogramParams

AudioLike = np.ndarray | torch.Tensor

STFT_SIZES = (512, 1024, 2048)
# Keeps the log of silent STFT bins finite ([-1, 1] scale).
STFT_LOG_EPS = 1e-7
# Log-mel flux floor, relative to the clip's mel maximum: quieter bins count as silence.
FLUX_FLOOR = 1e-5
# Frames either side of a boundary in which a seam may show (a 100 ms window smears a click over several frames).
SEAM_RADIUS = 2
SEAM_PERCENTILE = 0.95


def _as_audio(audio: AudioLike) -> torch.Tensor:
    """`(C, N)` or `(N,)` -> `(C, N)` float32 tensor."""
    audio = torch.as_tensor(audio, dtype=torch.float32)
    return audio.unsqueeze(0) if audio.ndim == 1 else audio


def spectral_convergence(reference: AudioLike, estimate: AudioLike) -> float:
    """`||ref - est||_F / ||ref||_F` of two spectrograms `(..., T)`, over the shorter length of the last axis."""
    reference, estimate = torch.as_tensor(reference), torch.as_tensor(estimate)
    n = min(reference.shape[-1], estimate.shape[-1])
    reference, estimate = reference[..., :n].double(), estimate[..., :n].double()
    return float((reference - estimate).norm() / reference.norm())


def mel_spectral_convergence(ref_audio: AudioLike, est_audio: AudioLike, params: SpectrogramParams) -> float:
    """Spectral convergence of Riffusion's mel magnitudes of two waveforms (channel by channel). Lower is better."""
    return spectral_convergence(waveform_to_mel(_as_audio(ref_audio), params),
                                waveform_to_mel(_as_audio(est_audio), params))


def stft_magnitude(audio: torch.Tensor, n_fft: int) -> torch.Tensor:
    """`(..., N)` -> `(..., n_fft // 2 + 1, 1 + N // hop)`, Hann window, hop `n_fft // 4`; differentiable even at
    exact silence (where `abs()` of a complex zero has no gradient)."""
    spectrum = torch.stft(audio.reshape(-1, audio.shape[-1]), n_fft, n_fft // 4,
                          window=hann_window(n_fft, audio.device).to(audio.dtype), return_complex=True)
    magnitude = torch.view_as_real(spectrum).square().sum(-1).clamp_min(1e-20).sqrt()
    return magnitude.reshape(*audio.shape[:-1], *magnitude.shape[-2:])


def multi_resolution_stft_loss(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """`multi_resolution_stft_distance` as a differentiable scalar tensor of `(..., N)` waveforms (a vocoder's
    training loss is the benchmark's own figure)."""
    n = min(reference.shape[-1], estimate.shape[-1])
    total = 0
    for n_fft in STFT_SIZES:
        ref, est = stft_magnitude(reference[..., :n], n_fft), stft_magnitude(estimate[..., :n], n_fft)
        convergence = (ref - est).norm() / ref.norm().clamp_min(torch.finfo(ref.dtype).tiny)
        total = total + convergence + (torch.log(ref + STFT_LOG_EPS) - torch.log(est + STFT_LOG_EPS)).abs().mean()
    return total / len(STFT_SIZES)


def multi_resolution_stft_distance(ref_audio: AudioLike, est_audio: AudioLike) -> float:
    """Mean over FFT sizes 512, 1024, 2048 of spectral convergence plus mean |log magnitude difference|.

    Compares waveforms directly (a vocoder against the original), lengths aligned to the shorter. Lower is better.
    """
    with torch.no_grad():
        return float(multi_resolution_stft_loss(_as_audio(ref_audio).double(), _as_audio(est_audio).double()))


def log_mel_flux(audio: AudioLike, params: SpectrogramParams) -> torch.Tensor:
    """How abruptly the mono mix's mel changes from frame to frame.

    Returns:
        `(T - 1,)`: entry `t - 1` is `f_t = mean over bins |log(M_t + floor) - log(M_{t-1} + floor)|`, with M the
        mel `(n_mels, T)` and `floor = 1e-5 * max(M)`.
    """
    mel = waveform_to_mel(_as_audio(audio).mean(dim=0), params).double()
    floor = (FLUX_FLOOR * mel.max()).clamp(min=torch.finfo(torch.float64).tiny)  # silence: flux 0, not NaN
    return torch.log(mel + floor).diff(dim=-1).abs().mean(dim=0)


def seam_ratios(
    audio: AudioLike, boundaries: Iterable[int], params: SpectrogramParams, radius: int = SEAM_RADIUS
) -> torch.Tensor:
    """Each boundary's largest log-mel flux within `radius` frames, over the clip's 95th percentile of flux.

    At or below 1.0 a join is no more abrupt than the music itself.

    Args:
        audio: `(C, N)` or `(N,)`.
        boundaries: sample positions of the joins (frame `position // hop`), each inside the clip.
        radius: frames either side; 2 by default. A click smears over the mel window (+-5 frames at
            Riffusion's 100 ms), and its flux can peak just outside 2 frames: a wider radius is the stricter test.

    Returns:
        `(len(boundaries),)` float64 ratios, in the order given.
    """
    flux = log_mel_flux(audio, params)
    typical = torch.quantile(flux, SEAM_PERCENTILE).clamp(min=torch.finfo(torch.float64).tiny)
    ratios = []
    for boundary in boundaries:
        frame = int(boundary) // params.hop_length
        # f_t sits at index t - 1.
        near = flux[max(frame - radius - 1, 0): max(frame + radius, 0)]
        if not len(near):
            raise ValueError(f"boundary {int(boundary)} falls outside the clip ({len(flux) + 1} frames)")
        ratios.append(near.max() / typical)
    if not ratios:
        raise ValueError("no boundary given")
    return torch.stack(ratios)


def seam_ratio(
    audio: AudioLike, boundaries: Iterable[int], params: SpectrogramParams, radius: int = SEAM_RADIUS
) -> float:
    """The seam ratio of a long clip: the largest of `seam_ratios` over its joins."""
    return float(seam_ratios(audio, boundaries, params, radius).max())


def loop_wrap_ratio(audio: AudioLike, params: SpectrogramParams, radius: int = SEAM_RADIUS) -> float:
    """`seam_ratio` at the wrap point of the clip `(C, N)` or `(N,)` played twice: how audible a loop's seam is."""
    audio = _as_audio(audio)
    return seam_ratio(torch.cat([audio, audio], dim=-1), [audio.shape[-1]], params, radius)

