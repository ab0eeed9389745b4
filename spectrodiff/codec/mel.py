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
    """STFT magnitude on Riffusion's int16 scale, centred frames with reflect padding; in beat time each frame is
    centred on the sample nearest its column's time (`beat_frames`).

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
    if params.beat_time:
        return beat_frames(x, params, width).reshape(*lead, params.n_fft // 2 + 1, width)
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


# Frames transformed at once in beat time: bounds the framed copy of the signal (frames x n_fft floats).
BEAT_FRAME_CHUNK = 64


def beat_starts(first: int, count: int, hop: float) -> torch.Tensor:
    """`(count,)` start samples, in the reflect-padded signal, of beat-time frames `first ... first + count - 1`:
    frame k starts at round(k x hop), so that it is centred on the sample nearest its column's time."""
    return torch.round(torch.arange(first, first + count, dtype=torch.float64) * hop).long()


def frame_magnitudes(padded: torch.Tensor, starts: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """STFT magnitudes of the frames of `padded` `(B, M)` that start at `starts` `(k,)`, the Hann window centred in
    each `n_fft` frame as torch.stft places it.

    Returns:
        `(B, n_fft // 2 + 1, k)`.
    """
    n_fft = params.n_fft
    if not len(starts):  # (an empty batch of frames is an error to some FFT backends)
        return padded.new_zeros(padded.shape[0], n_fft // 2 + 1, 0)
    window = torch.zeros(n_fft, device=padded.device)
    left = (n_fft - params.win_length) // 2
    window[left: left + params.win_length] = hann_window(params.win_length, padded.device)
    offsets = torch.arange(n_fft, device=padded.device)
    columns = []
    for chunk in starts.to(padded.device).split(BEAT_FRAME_CHUNK):
        frames = padded[:, chunk.unsqueeze(1) + offsets]  # (B, k, n_fft)
        columns.append(torch.fft.rfft(frames * window, dim=-1).abs().transpose(1, 2))
    return torch.cat(columns, dim=-1)


def beat_frames(x: torch.Tensor, params: SpectrogramParams, width: int) -> torch.Tensor:
    """STFT magnitudes at a hop of a fraction of a sample: frame k is centred on sample round(k x hop), reflect
    padded as torch.stft's `center=True` (which it equals when the hop is whole).

    Args:
        x: `(B, N)` float signal (already on the int16 scale).
    Returns:
        `(B, n_fft // 2 + 1, width)`.
    """
    pad = params.n_fft // 2
    padded = torch.nn.functional.pad(x.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    return frame_magnitudes(padded, beat_starts(0, width, params.hop_length), params)


def _beat_frames_starting_by(last: int, hop: float) -> int:
    """How many beat-time frames start at or before sample `last` of the padded signal."""
    if last < 0:
        return 0
    count = int((last + 0.5) // hop) + 1  # round(k x hop) <= last needs k x hop <= last + 0.5
    return count - int(beat_starts(count - 1, 1, hop).item() > last)


def _emit_beat_frames(buffer: torch.Tensor, origin: int, done: int, params: SpectrogramParams
                      ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The beat-time frames that fit in `buffer` `(C, n)`, the padded signal from its sample `origin`, after the
    `done` frames already made: their magnitudes `(C, n_fft // 2 + 1, k)`, then the buffer, origin and frame
    count to go on with (the buffer keeps the next frame's start, and at least the pad the right reflection needs).
    """
    hop, end = params.hop_length, origin + buffer.shape[-1]
    count = max(_beat_frames_starting_by(end - params.n_fft, hop) - done, 0)
    magnitude = frame_magnitudes(buffer.float() * INT16_SCALE, beat_starts(done, count, hop) - origin, params)
    keep_from = min(int(beat_starts(done + count, 1, hop).item()), end - params.n_fft // 2 - 1)
    return magnitude, buffer[..., keep_from - origin:], keep_from, done + count


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
    pad, n_fft = params.n_fft // 2, params.n_fft
    head: list[torch.Tensor] = []  # blocks held until the left reflect padding can be built
    buffer: torch.Tensor | None = None  # padded signal from the next frame's start
    frames: list[torch.Tensor] = []
    total = origin = done = 0  # samples read; in beat time, where the buffer starts in the padded signal, frames made

    def emit() -> None:
        nonlocal buffer, origin, done
        if params.beat_time:
            magnitude, buffer, origin, done = _emit_beat_frames(buffer, origin, done, params)
            frames.append(linear_to_mel(magnitude, params))
        else:
            hop = params.hop_length
            count = (buffer.shape[-1] - n_fft) // hop + 1 if buffer.shape[-1] >= n_fft else 0
            if count <= 0:
                return
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
    # The buffer always keeps more than `pad` samples (clock time: n_fft - hop), so the right reflection is there.
    buffer = torch.cat([buffer, buffer[..., -pad - 1: -1].flip(-1)], dim=-1)
    emit()
    return torch.cat(frames, dim=-1)[..., : params.width_for_samples(total)]
