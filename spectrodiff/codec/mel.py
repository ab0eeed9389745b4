"""Waveform <-> mel magnitude in torch, matching Riffusion's torchaudio pipeline exactly (without torchaudio)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable

import torch

from .params import SpectrogramParams

# Riffusion computes magnitudes on int16 sample values; our waveforms are floats in [-1, 1].
INT16_SCALE = 32768.0


def _hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(params: SpectrogramParams, n_fft: int | None = None) -> torch.Tensor:
    """Triangular HTK mel filters without normalisation, as torchaudio's `melscale_fbanks`; computed once per
    parameter set (the result is shared: do not change it in place).

    Returns:
        `(n_fft // 2 + 1, num_frequencies)` float32 on the CPU.
    """
    return _filterbank(params.key(), n_fft or params.n_fft)


@functools.lru_cache(maxsize=16)
def _filterbank(key: tuple, n_fft: int) -> torch.Tensor:
    params = SpectrogramParams.from_key(key)
    n_freqs = n_fft // 2 + 1
    all_freqs = torch.linspace(0, params.sample_rate // 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(
        _hz_to_mel(torch.tensor(float(params.min_frequency), dtype=torch.float64)).item(),
        _hz_to_mel(torch.tensor(float(params.max_frequency), dtype=torch.float64)).item(),
        params.num_frequencies + 2,
        dtype=torch.float64,
    )
    f_pts = _mel_to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    used = int((all_freqs <= f_pts[-1]).sum())  # above the top filter every weight is zero
    slopes = f_pts.unsqueeze(0) - all_freqs[:used].unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    filters = torch.zeros(n_freqs, params.num_frequencies)
    filters[:used] = torch.clamp(torch.minimum(down, up), min=0.0)
    return filters


@functools.lru_cache(maxsize=16)
def _cached_filterbank(key: tuple, device: torch.device) -> torch.Tensor:
    return mel_filterbank(SpectrogramParams.from_key(key)).to(device)


@functools.lru_cache(maxsize=16)
def _cached_window(win_length: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(win_length, device=device)


def hann_window(win_length: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Periodic Hann window `(win_length,)`, cached per device."""
    return _cached_window(win_length, torch.device(device))


def linear_magnitude(waveform: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """STFT magnitude on Riffusion's int16 scale, centred frames with reflect padding.

    Args:
        waveform: `(..., N)` float audio in [-1, 1].
    Returns:
        `(..., n_fft // 2 + 1, 1 + N // hop)`.
    """
    *lead, num_samples = waveform.shape
    x = waveform.reshape(math.prod(lead), num_samples).float() * INT16_SCALE
    width = params.width_for_samples(num_samples)
    pad = params.n_fft // 2
    if num_samples <= pad:
        # Reflect padding needs more samples than the pad; for such short clips zero-extend instead.
        x = torch.nn.functional.pad(x, (0, pad + 1 - num_samples))
    spec = torch.stft(
        x,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        win_length=params.win_length,
        window=hann_window(params.win_length, x.device),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return spec.abs()[..., :width].reshape(*lead, params.n_fft // 2 + 1, width)


def linear_to_mel(magnitude: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """`(..., n_fft // 2 + 1, T)` -> `(..., num_frequencies, T)`."""
    fb = _cached_filterbank(params.key(), magnitude.device)
    return torch.matmul(magnitude.transpose(-1, -2), fb).transpose(-1, -2)


def waveform_to_mel(waveform: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """Riffusion's mel magnitude of a waveform (batched, any device).

    Args:
        waveform: `(..., N)` float audio in [-1, 1]; leading dims (batch, channels) are kept.
    Returns:
        `(..., num_frequencies, 1 + N // hop)` float32, on Riffusion's int16 scale (peaks near 1e7).
    """
    return linear_to_mel(linear_magnitude(waveform, params), params)


def waveform_to_mel_streaming(
    blocks: Iterable[torch.Tensor], params: SpectrogramParams, on_frames: Callable[[int], None] | None = None
) -> torch.Tensor:
    """`waveform_to_mel` of a signal that arrives in blocks, without holding the whole signal.

    The result equals `waveform_to_mel` of the concatenated blocks (same reflect padding at both ends); memory
    holds one block plus one FFT window of samples, and the mel frames.

    Args:
        blocks: `(C, n)` float audio blocks in [-1, 1], any lengths.
        on_frames: called with the number of frames finished after each block (for progress).
    Returns:
        `(C, num_frequencies, T)`.
    """
    pad, hop, n_fft = params.n_fft // 2, params.hop_length, params.n_fft
    head: list[torch.Tensor] = []  # blocks held until the left reflect padding can be built
    buffer: torch.Tensor | None = None  # padded signal from the next frame's start
    frames: list[torch.Tensor] = []
    total = 0

    def emit() -> None:
        nonlocal buffer
        count = (buffer.shape[-1] - n_fft) // hop + 1 if buffer.shape[-1] >= n_fft else 0
        if count > 0:
            chunk = buffer[..., : (count - 1) * hop + n_fft]
            spec = torch.stft(chunk.float() * INT16_SCALE, n_fft=n_fft, hop_length=hop,
                              win_length=params.win_length, window=hann_window(params.win_length, chunk.device),
                              center=False, return_complex=True)
            frames.append(linear_to_mel(spec.abs(), params))
            buffer = buffer[..., count * hop:]
            if on_frames:
                on_frames(sum(f.shape[-1] for f in frames))

    for block in blocks:
        total += block.shape[-1]
        if buffer is None:
            head.append(block)
            if total <= pad:
                continue
            signal = torch.cat(head, dim=-1)
            buffer = torch.cat([signal[..., 1: pad + 1].flip(-1), signal], dim=-1)
        else:
            buffer = torch.cat([buffer, block], dim=-1)
        emit()
    if buffer is None:  # the whole signal is shorter than the padding: no streaming needed
        return waveform_to_mel(torch.cat(head, dim=-1) if head else torch.zeros(1, 0), params)
    # The buffer always keeps n_fft - hop > pad samples, so the right reflection is available.
    buffer = torch.cat([buffer, buffer[..., -pad - 1: -1].flip(-1)], dim=-1)
    emit()
    return torch.cat(frames, dim=-1)[..., : params.width_for_samples(total)]
