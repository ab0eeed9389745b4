"""Mel magnitude -> waveform: least-squares mel inversion, then coarse-to-fine Griffin-Lim phase recovery."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator

import torch

from ..codec.mel import INT16_SCALE, mel_filterbank, waveform_to_mel
from ..codec.params import SpectrogramParams
from .griffin_lim import griffin_lim

# Share of the iterations spent on the coarse grid; the rest refine on the finer one.
COARSE_SHARE = 0.6
# Frames of already reconstructed audio that streaming re-solves with each new piece and crossfades (0.31 s at 10 ms).
CONTEXT_FRAMES = 32
# Streaming after a prefix: linear prediction (order, samples it is fitted on) continues the prefix for 30 ms, the
# crossfade by which the new audio enters without a click.
LPC_ORDER, LPC_SPAN, BRIDGE_SAMPLES = 64, 4096, 1323


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
def _normal_equations(key: tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The filterbank in float64, cut below its highest non-zero bin, and its Gram matrix when the filters are
    independent (Riffusion's: condition number about 43; None for empty or overlapping filters)."""
    filters = mel_filterbank(SpectrogramParams.from_key(key)).double()
    filters = filters[: int(filters.sum(dim=1).nonzero().max()) + 1]
    gram = filters.T @ filters
    eigenvalues = torch.linalg.eigvalsh(gram)
    return filters, (gram if eigenvalues[0] > eigenvalues[-1] / 1e8 else None)


def least_squares_inverse(params: SpectrogramParams, bins: slice | torch.Tensor = slice(None)) -> torch.Tensor:
    """`(num_frequencies, len(bins))` float32 columns of the filterbank's pseudo-inverse for the FFT bins `bins`
    (of `n_fft // 2 + 1`): with independent filters from the normal equations in milliseconds, else from the SVD
    (about a second). Bins above the highest filter are zero columns."""
    filters, gram = _normal_equations(params.key())
    full = torch.zeros(params.n_fft // 2 + 1, params.num_frequencies, dtype=torch.float64)
    full[: len(filters)] = filters
    rows = full[bins]
    return (torch.linalg.solve(gram, rows.T) if gram is not None else torch.linalg.pinv(full)[:, bins]).float()


@functools.lru_cache(maxsize=16)
def inverse_filterbank(key: tuple, device: torch.device) -> torch.Tensor:
    """`(num_frequencies, n_fft // 2 + 1)` pseudo-inverse of the mel filterbank (`least_squares_inverse`), cached
    per parameter set and device."""
    return least_squares_inverse(SpectrogramParams.from_key(key)).to(device)


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
    pinv = inverse_filterbank(params.key(), mel.device)[:, ::step]
    return torch.matmul(mel.transpose(-1, -2).float(), pinv).transpose(-1, -2).clamp_(min=0.0)


def _solve(
    mel: torch.Tensor,
    params: SpectrogramParams,
    n_iter: int,
    momentum: float,
    generator: torch.Generator | None,
    init: torch.Tensor | None = None,
    circular: bool = False,
    on_iter: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Coarse-to-fine Griffin-Lim of `(B, num_frequencies, T)` mel -> `(B, L)` audio on the [-1, 1] scale.

    `init` `(B, L)` (any scale) seeds the phase of the first grid; each finer grid starts from the coarser result.
    """
    sizes = phase_fft_sizes(params)
    coarse = round(n_iter * COARSE_SHARE) if len(sizes) > 1 else n_iter
    split = (coarse, n_iter - coarse)[: len(sizes)]
    audio, done = init, 0
    for size, iters in zip(sizes, split, strict=True):
        audio = griffin_lim(
            mel_to_linear(mel, params, size), size, params.hop_length, params.win_length, n_iter=iters,
            momentum=momentum, init=audio, generator=generator, circular=circular,
            on_iter=(lambda i, base=done: on_iter(base + i)) if on_iter else None,
        )
        done += iters
    return audio / INT16_SCALE


def _generator(seed: int | None) -> torch.Generator | None:
    return torch.Generator().manual_seed(seed) if seed is not None else None


def mel_to_waveform(
    mel: torch.Tensor,
    params: SpectrogramParams,
    n_iter: int = 32,
    momentum: float = 0.99,
    seed: int | None = 0,
    on_iter: Callable[[int], None] | None = None,
    circular: bool = False,
    init_audio: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reconstruct audio from a mel magnitude (Riffusion scale), batched over every leading dimension.

    Args:
        mel: `(..., num_frequencies, T)`, e.g. `(C, 512, T)` for one clip or `(tiles, C, 512, T)`.
        n_iter: Griffin-Lim iterations in all (split coarse to fine, see `phase_fft_sizes`).
        seed: seeds the initial phase, so the same mel gives the same audio; None for a fresh random phase.
        on_iter: called with the number of iterations done so far.
        circular: the mel is one period of a loop: the result has `T * hop` samples and repeats without a seam
            (frame t centred at sample `t * hop`, the last frames overlapping the first ones).
        init_audio: `(..., L)` known audio (L as returned; leading dims broadcast to the mel's) whose STFT phase
            starts the iterations, e.g. the source for extend or inpaint; where it is silent (a span to fill) the
            phase starts random from `seed`.
    Returns:
        `(..., L)` float audio, unnormalised, on the [-1, 1] scale of the source: `L = (T - 1) * hop`, or `T * hop`
        when circular.
    """
    *lead, n_mels, width = mel.shape
    length = width * params.hop_length if circular else params.samples_for_width(width)
    init = None
    if init_audio is not None:
        init_audio = torch.as_tensor(init_audio, dtype=torch.float32, device=mel.device)
        if init_audio.shape[-1] != length:
            raise ValueError(f"init_audio has {init_audio.shape[-1]} samples; {width} frames need {length}")
        init = torch.broadcast_to(init_audio, (*lead, length)).reshape(-1, length)
    audio = _solve(mel.reshape(-1, n_mels, width), params, n_iter, momentum, _generator(seed), init, circular,
                   on_iter)
    return audio.reshape(*lead, -1)


def _crossfade(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """`old` `(C, K)` fades out over the first K samples of `new` `(C, L >= K)`; returns `(C, L)`.

    Raised-cosine gains that sum to 1: the two sides are correlated (streamed: two solutions for the same frames,
    the new one seeded with the old one's phase, correlation 0.6-0.85 measured), so equal gain holds the level
    (equal power would bulge towards +3 dB mid-fade); the cosine's zero slope at both ends adds no kink of its own.
    The 30 ms bridge out of a prefix uses it too, where the seam ratio is what was checked.
    """
    k = old.shape[-1]
    fade_in = torch.sin(0.5 * math.pi * (torch.arange(k, device=new.device) + 0.5) / k) ** 2
    return torch.cat([torch.lerp(old.to(new.device), new[..., :k], fade_in), new[..., k:]], dim=-1)


def _lpc_continuation(audio: torch.Tensor, samples: int) -> torch.Tensor:
    """The next `samples` samples `(C, samples)` of `(C, N)` audio, predicted by linear prediction (LPC).

    Order `LPC_ORDER` from the autocorrelation of the last `LPC_SPAN` samples (Hann-windowed, which keeps the
    predictor stable); empty when the audio is too short to fit one or `samples` is 0.
    """
    span = min(LPC_SPAN, audio.shape[-1])
    if span <= 2 * LPC_ORDER or samples == 0:
        return audio.new_zeros(audio.shape[0], 0)
    segment = audio[..., -span:].double()
    spectrum = torch.fft.rfft(segment * torch.hann_window(span, dtype=torch.float64, device=audio.device), 2 * span)
    autocorr = torch.fft.irfft(spectrum.abs() ** 2, 2 * span)[..., : LPC_ORDER + 1]
    # A touch of white noise keeps the system well posed (and silence predicting silence).
    autocorr[..., 0] = autocorr[..., 0] * (1 + 1e-6) + 1e-12
    lags = torch.arange(LPC_ORDER, device=audio.device)
    toeplitz = autocorr[..., (lags[:, None] - lags[None, :]).abs()]
    coefficients = torch.linalg.solve(toeplitz, autocorr[..., 1:]).flip(-1)  # oldest sample first
    history = list(segment[..., -LPC_ORDER:].unbind(-1))
    for _ in range(samples):
        history.append((torch.stack(history[-LPC_ORDER:], dim=-1) * coefficients).sum(dim=-1))
    return torch.stack(history[LPC_ORDER:], dim=-1).float()


def _prefix_context(
    prefix: torch.Tensor, params: SpectrogramParams, context_frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `c <= context_frames` frames of `waveform_to_mel(prefix)` `(C, n_mels, c)`, and the prefix audio from
    the first one's centre on, `(C, (c - 1) * hop + N % hop)` for a prefix `(C, N)`.

    Only the prefix's tail is transformed, from early enough that the left reflect padding stays out of them.
    """
    hop = params.hop_length
    frames = min(context_frames, params.width_for_samples(prefix.shape[-1]))
    first = (params.width_for_samples(prefix.shape[-1]) - frames) * hop  # centre of the first context frame
    margin = min(-(-(params.n_fft // 2) // hop), first // hop)
    mel = waveform_to_mel(prefix[..., first - margin * hop:], params)[..., margin:]
    return mel, prefix[..., first:]


def _solve_window(
    window: torch.Tensor,
    known: torch.Tensor | None,
    params: SpectrogramParams,
    n_iter: int,
    momentum: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """`(C, n_mels, w)` mel -> `(C, (w - 1) * hop)` audio, its phase seeded from `known` `(C, K)` over the first K
    samples (the rest of the init is zeros, so the new frames start from random phase)."""
    length = params.samples_for_width(window.shape[-1])
    init = None if known is None else torch.nn.functional.pad(known.to(window.device), (0, length - known.shape[-1]))
    return _solve(window, params, n_iter, momentum, generator, init)


def stream_mel_to_waveform(
    chunks: Iterable[torch.Tensor],
    params: SpectrogramParams,
    n_iter: int = 32,
    seed: int | None = 0,
    context_frames: int = CONTEXT_FRAMES,
    prefix_audio: torch.Tensor | None = None,
    momentum: float = 0.99,
) -> Iterator[torch.Tensor]:
    """`mel_to_waveform` of a long mel that arrives in pieces, phase-continuous across them, in bounded memory.

    Each piece is solved together with the `context_frames` frames before it, their phase seeded from the audio
    already made for them, which was held back and is now crossfaded into the new solution (see `_crossfade`).
    Memory holds one piece, its context and `context_frames - 1` hops of audio, whatever the length.

    Args:
        chunks: `(C, num_frequencies, t_k)` mel pieces (tensors or arrays) that together form one mel of T frames.
        seed: seeds the random phase of the new frames (one generator for the whole stream).
        context_frames: frames re-solved with each piece (at least 2); the crossfade spans `context_frames - 1`
            hops.
        prefix_audio: `(C, N)` known audio in [-1, 1] that the mel continues (extend): the pieces follow the
            `1 + N // hop` frames of `waveform_to_mel(prefix)` on the same grid (frame k centred at sample
            `k * hop`), so `waveform_to_mel(prefix ++ output)` is those frames then the T new ones. The prefix's
            last frames are the first piece's context, their phase taken from it; the prefix is neither changed
            nor yielded, so the new audio enters through a `BRIDGE_SAMPLES` crossfade from the prefix's own
            linear-prediction continuation instead.
    Yields:
        `(C, n)` float audio blocks on the [-1, 1] scale. Without a prefix: `(T - 1) * hop` samples in all, from the
        first frame's centre to the last one's, as `mel_to_waveform`. With one: from sample N on to the last
        frame's centre, `(N // hop + T) * hop - N` samples.
    """
    if context_frames < 2:
        raise ValueError(f"context_frames must be at least 2, got {context_frames}")
    hop, generator = params.hop_length, _generator(seed)
    context = known = bridge = None  # mel frames before the piece, and their audio from the first one's centre
    if prefix_audio is not None:
        prefix = torch.as_tensor(prefix_audio, dtype=torch.float32)
        context, known = _prefix_context(prefix, params, context_frames)
        bridge = _lpc_continuation(prefix, BRIDGE_SAMPLES)
    for chunk in chunks:
        chunk = torch.as_tensor(chunk, dtype=torch.float32)
        if chunk.shape[-1] == 0:
            continue
        window = chunk if context is None else torch.cat([context.to(chunk.device), chunk], dim=-1)
        audio = _solve_window(window, known, params, n_iter, momentum, generator)
        if bridge is not None:  # the known audio is the caller's prefix: keep only what follows it
            audio = audio[..., known.shape[-1]:]
            audio, owned, bridge = _crossfade(bridge[..., : audio.shape[-1]], audio), chunk.shape[-1], None
        else:
            audio, owned = (audio if known is None else _crossfade(known, audio)), window.shape[-1]
        keep = min(context_frames, owned)
        split = audio.shape[-1] - (keep - 1) * hop  # the audio of the last `keep` frames waits for the next piece
        # Copies, so that the window and its audio can be freed.
        context, known = window[..., -keep:].clone(), audio[..., split:].clone()
        if split > 0:
            yield audio[..., :split]
    if bridge is None and known is not None and known.shape[-1]:
        yield known


def vocode_stream(
    vocoder, chunks: Iterable[torch.Tensor], params: SpectrogramParams, prefix_audio: torch.Tensor | None = None
) -> Iterator[torch.Tensor]:
    """`stream_mel_to_waveform` with a neural vocoder (`spectrodiff.vocoding.vocoder.NeuralVocoder`) instead of
    Griffin-Lim.

    The vocoder's output at a frame depends only on nearby frames, so its chunks line up exactly (see
    `NeuralVocoder.vocode`); with `prefix_audio` `(C, N)`, the prefix's last frames are its context and the new
    audio enters through the same `BRIDGE_SAMPLES` crossfade from the prefix's own continuation.

    Yields:
        `(C, L)` audio blocks that continue the prefix (if any); `L` as `stream_mel_to_waveform` gives.
    """
    mel = torch.cat([torch.as_tensor(c, dtype=torch.float32) for c in chunks], dim=-1)
    if prefix_audio is None:
        yield vocoder.vocode(mel)
        return
    prefix = torch.as_tensor(prefix_audio, dtype=torch.float32)
    context, known = _prefix_context(prefix, params, vocoder.context_frames)
    audio = vocoder.vocode(torch.cat([context, mel], dim=-1))[..., known.shape[-1]:]
    yield _crossfade(_lpc_continuation(prefix, BRIDGE_SAMPLES)[..., : audio.shape[-1]], audio)
