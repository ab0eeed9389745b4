"""Mel-consistency refinement: projections that pull a waveform's mel onto a target mel, keeping its phase and the
fine structure of its spectrum.

A neural vocoder predicts a magnitude and a phase per frame, and their overlap-add is not exactly the STFT it
predicted, so the mel of its audio drifts from the mel it was given (the bundled mini vocoder's mel spectral
convergence was 0.22-0.30, Griffin-Lim's 0.11). Each projection measures the audio's mel on the mel's own STFT
frames, scales every FFT bin by the (over-relaxed) ratio of target to measured mel of the filters it falls in, and
goes back through an inverse and forward STFT, with Fast Griffin-Lim's momentum. Unlike Griffin-Lim, it never
replaces the magnitude by the mel's least-squares inverse, so the detail the vocoder predicted between and above the
mel filters survives (its multi-resolution STFT distance gets lower too, measured in benchmarks/vocoder.py).

Two stages share that projection:
- full band, on the window's FFT grid (`win_length` points, 10 Hz at Riffusion's settings): cheap, and exact where
  the filters are wider than its bins;
- bass (optional), on the mel's own zero-padded grid (2.5 Hz), where narrow filters need it: Riffusion's 512
  filters are 4-20 Hz apart below 3 kHz, and on the 10 Hz grid its mel spectral convergence stalled at 0.12 after
  30 projections (Griffin-Lim: 0.10). The band below `BASS_BAND_HZ` is decimated by `bass_decimation` so that this
  grid costs a fraction of the full one; the change made there is interpolated back and added.
With a bass stage the full-band projections are split around it: half before on every filter, the rest after on the
filters the bass stage leaves out (on the coarse grid they would pull its own filters off their targets: measured on
Riffusion's vocoder, 6 held-out recordings, 0.088 -> 0.082 for 8 + 32 projections).
Every stage projects every `FRAME_STEP`-th frame only, which halves its cost.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

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
# The bass stage covers the filters below this frequency at least: above it Riffusion's filters are two or more
# window-grid bins apart.
BASS_BAND_HZ = 2000.0
# Its lowpass keeps this fraction of the decimated band whole (the filters it refines lie inside it) and rolls off
# over the rest; a Kaiser-windowed sinc (beta 8, about -80 dB) of `BASS_FIR_SIDE` decimated samples either side.
BASS_PASS = 0.75
BASS_FIR_SIDE = 20
BASS_FIR_BETA = 8.0
# Every stage projects every other frame only: Riffusion's frames (100 ms windows 10 ms apart) then still overlap
# five times, and the mel of the frames between follows (6 recordings a source, Riffusion's vocoder: the same or
# better mel spectral convergence than with every frame, for half the time; every third frame lost 25 %).
FRAME_STEP = 2


class BandedFilterbank:
    """A `(bins, k)` filterbank applied group by group of adjacent filters, each group to the run of bins it covers:
    mel filters are short runs, so this does a tenth of a dense matmul's work (which took half of each projection).

    `measure`: `(..., bins)` magnitudes -> `(..., k)`; `spread`: `(..., k)` per-filter values -> `(..., bins)`, the
    transposed map. `weight` `(bins,)` is each bin's total weight, `inverse_weight` its inverse (0 where no filter
    reaches) and `uncovered` 1 where no filter reaches, else 0.
    """

    def __init__(self, filters: torch.Tensor, groups: int = 8):
        self.bins, self.filters = filters.shape
        self.weight = filters.sum(dim=1)
        self.inverse_weight = torch.where(self.weight > 0, 1 / self.weight.clamp(min=1e-12), 0.0)
        self.uncovered = (self.weight == 0).to(filters.dtype)
        self.blocks = []
        for columns in torch.arange(self.filters).chunk(groups):
            rows = torch.nonzero(filters[:, columns].sum(dim=1)).flatten()
            if len(rows):
                lo, hi, first, last = int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1
                self.blocks.append((lo, hi, first, last, filters[lo:hi, first:last].contiguous()))

    def measure(self, magnitude: torch.Tensor) -> torch.Tensor:
        out = magnitude.new_zeros(*magnitude.shape[:-1], self.filters)
        for lo, hi, first, last, block in self.blocks:
            out[..., first:last] = magnitude[..., lo:hi] @ block
        return out

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros(*values.shape[:-1], self.bins)
        for lo, hi, first, last, block in self.blocks:
            out[..., lo:hi] += values[..., first:last] @ block.T
        return out


def _window_grid(params: SpectrogramParams) -> torch.Tensor:
    """`(bins, n_mels)` mel filterbank on the window-sized FFT grid (`win_length // 2 + 1` bins, cut above the
    highest filter): each bin of the mel's zero-padded `n_fft` grid adds its weight to the nearest coarse bin, so
    every filter keeps its total weight even when it is narrower than a coarse bin (Riffusion's lowest are)."""
    step = params.n_fft // params.win_length
    fine = mel_filterbank(params)
    nearest = torch.div(torch.arange(fine.shape[0]) + step // 2, step, rounding_mode="floor")
    coarse = torch.zeros(params.win_length // 2 + 1, fine.shape[1]).index_add_(0, nearest, fine)
    return coarse[: int(coarse.sum(dim=1).nonzero().max()) + 1]


@functools.lru_cache(maxsize=8)
def grid_filterbank(key: tuple, device: torch.device) -> BandedFilterbank:
    """All the mel's filters on the window's grid (`_window_grid`)."""
    return BandedFilterbank(_window_grid(SpectrogramParams(**dict(key))).to(device))


@functools.lru_cache(maxsize=8)
def upper_filterbank(key: tuple, device: torch.device) -> tuple[BandedFilterbank | None, torch.Tensor]:
    """The filters the bass stage leaves out, on the window's grid, and their `(k,)` indices (None and no indices
    when it covers them all)."""
    params = SpectrogramParams(**dict(key))
    coarse = _window_grid(params)
    outside = torch.ones(coarse.shape[1], dtype=torch.bool)
    outside[bass_filterbank(key, torch.device("cpu"))[1]] = False
    indices = torch.nonzero(outside).flatten()
    return (BandedFilterbank(coarse[:, indices].to(device)) if len(indices) else None), indices.to(device)


def bass_decimation(params: SpectrogramParams) -> int:
    """The largest factor dividing the hop, the window and the FFT size whose decimated band still holds
    `BASS_BAND_HZ` inside its passband (7 at Riffusion's settings: a 3150 Hz band, 2.5 Hz bins of 2520 points)."""
    common = math.gcd(params.hop_length, params.win_length, params.n_fft)
    return max([1] + [d for d in range(2, common + 1)
                      if common % d == 0 and params.sample_rate / (2 * d) * BASS_PASS >= BASS_BAND_HZ])


@functools.lru_cache(maxsize=8)
def bass_filterbank(key: tuple, device: torch.device) -> tuple[BandedFilterbank, torch.Tensor]:
    """The filters lying wholly inside the bass passband, on the decimated FFT grid (the mel's own bins, cut above
    the highest of them): `(bins, k)` weights, scaled by D (a decimated frame's spectrum is 1/D of the full-rate
    one's), and the `(k,)` indices of those filters."""
    params = SpectrogramParams(**dict(key))
    decimation = bass_decimation(params)
    fine = mel_filterbank(params)
    passband = int(params.sample_rate / (2 * decimation) * BASS_PASS * params.n_fft / params.sample_rate)
    top = torch.where(fine > 0, torch.arange(fine.shape[0])[:, None], -1).amax(dim=0)
    inside = torch.nonzero((top >= 0) & (top < passband)).flatten()
    rows = int(top[inside].max()) + 1
    return BandedFilterbank((fine[:rows, inside] * decimation).to(device)), inside.to(device)


@functools.lru_cache(maxsize=8)
def _lowpass(decimation: int, device: torch.device) -> torch.Tensor:
    """`(1, 1, 2 * BASS_FIR_SIDE * D + 1)` lowpass for decimation by D, unit gain at DC."""
    half = BASS_FIR_SIDE * decimation
    cutoff = (1 + BASS_PASS) / 2 / (2 * decimation)  # cycles a sample: midway through the roll-off
    taps = torch.arange(-half, half + 1, dtype=torch.float64)
    fir = torch.sinc(2 * cutoff * taps) * torch.kaiser_window(2 * half + 1, periodic=False, beta=BASS_FIR_BETA,
                                                              dtype=torch.float64)
    return (fir / fir.sum()).float().reshape(1, 1, -1).to(device)


def _decimate(audio: torch.Tensor, decimation: int, circular: bool) -> torch.Tensor:
    """`(B, N)` -> `(B, N // D)`, lowpassed; sample k is centred on sample k * D."""
    fir = _lowpass(decimation, audio.device)
    half = fir.shape[-1] // 2
    if circular:  # wrap round, however short the loop
        padded = audio[:, torch.arange(-half, audio.shape[-1] + half, device=audio.device) % audio.shape[-1]]
    else:
        mode = "reflect" if audio.shape[-1] > half else "constant"
        padded = F.pad(audio[:, None], (half, half), mode=mode)[:, 0]
    return F.conv1d(padded[:, None], fir, stride=decimation)[:, 0, : audio.shape[-1] // decimation]


def _interpolate(decimated: torch.Tensor, length: int, decimation: int, circular: bool) -> torch.Tensor:
    """`(B, N // D)` -> `(B, N)` through the same lowpass (the adjoint of `_decimate`, times D)."""
    fir = _lowpass(decimation, decimated.device) * decimation
    half = fir.shape[-1] // 2
    extra = -(-half // decimation) + 1
    if circular:
        index = torch.arange(-extra, decimated.shape[-1] + extra, device=decimated.device) % decimated.shape[-1]
        padded = decimated[:, index]
    else:
        padded = F.pad(decimated, (extra, extra))
    full = F.conv_transpose1d(padded[:, None], fir, stride=decimation)[:, 0]
    start = extra * decimation + half
    return full[:, start: start + length]


def check_refinable(params: SpectrogramParams) -> None:
    """SpectrodiffError unless the mel's FFT size is a multiple of its window (the projections work on the window's
    grid, which must be a subset of the mel's)."""
    if params.n_fft % params.win_length:
        raise SpectrodiffError("mel refinement needs an FFT size that is a multiple of the window, got "
                               f"{params.n_fft} and {params.win_length} samples: set refine_iterations to 0")


def _full_band_stages(iterations: int, bass_iterations: int) -> tuple[int, int]:
    """Full-band projections before and after the bass stage."""
    return (iterations, 0) if bass_iterations == 0 else ((iterations + 1) // 2, iterations // 2)


def refinement_reach(params: SpectrogramParams, iterations: int, bass_iterations: int = 0) -> int:
    """Frames either side of a frame whose input can change its refined output: in each stage every STFT or inverse
    STFT reaches half a window (k projections: 2k + 2 of them) and its picked frames may lie a step from the edges;
    the bass stage's lowpass adds twice its half-length."""
    half_window = math.ceil(params.win_length / (2 * params.hop_length))
    stages = [k for k in (*_full_band_stages(iterations, bass_iterations), bass_iterations) if k]
    reach = sum(half_window * (2 * k + 2) + FRAME_STEP - 1 for k in stages)
    if bass_iterations:
        reach += math.ceil(2 * BASS_FIR_SIDE * bass_decimation(params) / params.hop_length)
    return reach


def _magnitude(spectrum: torch.Tensor) -> torch.Tensor:
    """|spectrum| of a complex tensor, a third of the time `abs` takes (no overflow guard needed at these scales)."""
    parts = torch.view_as_real(spectrum)
    real, imag = parts[..., 0], parts[..., 1]
    return torch.addcmul(real * real, imag, imag).sqrt_()


def _project(audio: torch.Tensor, target: torch.Tensor, filters: BandedFilterbank, transform: FrameTransform,
             iterations: int) -> torch.Tensor:
    """The change `iterations` projections make to `(B, L)` audio (int16 scale), pulling it towards `target`
    `(B, T, k)` as measured by `filters` on `transform`'s grid: `(B, L)`, nothing outside every filter's bins."""
    initial = spectrum = transform.forward(audio)  # (B, T, bins)
    previous = None
    for _ in range(iterations):
        ratio = torch.div(target, filters.measure(_magnitude(spectrum)).add_(MEL_EPSILON))
        ratio = ratio.clamp_(1 / MAX_RATIO, MAX_RATIO).pow_(RATIO_POWER)
        gain = torch.addcmul(filters.uncovered, filters.spread(ratio), filters.inverse_weight)
        rebuilt = transform.forward(transform.inverse(spectrum * gain))
        spectrum = rebuilt if previous is None else torch.view_as_complex(  # momentum: (1 + m) rebuilt - m previous
            torch.lerp(torch.view_as_real(previous), torch.view_as_real(rebuilt), 1 + MOMENTUM))
        previous = rebuilt
    # The inverse is linear: one inverse of the difference instead of inverse(spectrum) + audio - inverse(initial).
    return transform.inverse(spectrum - initial)


def _strided_change(audio: torch.Tensor, target: torch.Tensor, filters: BandedFilterbank, n_fft: int, hop: int,
                    win_length: int, iterations: int, circular: bool, first_frame: int) -> torch.Tensor:
    """`_project`'s change to `(B, L)` audio (frames `hop` samples apart) made on every `FRAME_STEP`-th of the
    `(B, T, k)` target's frames only.

    Frames are counted from absolute frame 0, so that chunks pick the same ones (`first_frame` is the absolute index
    of frame 0 here); a linear clip's last picked frame may lie up to a step past its end, where the audio is
    reflected and the target is the last frame's. Loops whose frame count the step does not divide, and clips too
    short to pick two frames, use every frame.
    """
    frames, step = target.shape[1], FRAME_STEP
    offset = -first_frame % step
    if not (frames % step == 0 if circular else frames - offset > step):
        step, offset = 1, 0
    picked = frames // step if circular else -(-(frames - 1 - offset) // step) + 1
    transform = FrameTransform(n_fft, step * hop, win_length, picked, filters.bins, audio.device, circular)
    if circular:  # frame `offset` becomes frame 0
        return _project(audio.roll(-offset * hop, -1), target[:, offset::step], filters, transform,
                        iterations).roll(offset * hop, -1)
    piece = audio[:, offset * hop:]
    extra = (picked - 1) * step * hop - piece.shape[-1]
    padded = F.pad(piece[:, None], (0, extra), mode="reflect" if extra < piece.shape[-1] else "constant")[:, 0]
    chosen = (offset + torch.arange(picked, device=audio.device) * step).clamp(max=frames - 1)
    change = _project(padded, target[:, chosen], filters, transform, iterations)
    return F.pad(change[:, : piece.shape[-1]], (offset * hop, 0))


def _bass_change(audio: torch.Tensor, target: torch.Tensor, params: SpectrogramParams, iterations: int,
                 circular: bool, first_frame: int) -> torch.Tensor:
    """The bass stage's change to `(B, L)` full-rate audio (int16 scale), given the `(B, T, n_mels)` target."""
    decimation = bass_decimation(params)
    filters, inside = bass_filterbank(params.key(), audio.device)
    change = _strided_change(_decimate(audio, decimation, circular), target[..., inside], filters,
                             params.n_fft // decimation, params.hop_length // decimation,
                             params.win_length // decimation, iterations, circular, first_frame)
    return _interpolate(change, audio.shape[-1], decimation, circular)


def refine_to_mel(audio: torch.Tensor, mel: torch.Tensor, params: SpectrogramParams, iterations: int,
                  bass_iterations: int = 0, circular: bool = False, first_frame: int = 0) -> torch.Tensor:
    """Pull `audio`'s mel towards `mel`.

    Args:
        audio: `(B, L)` float audio on the [-1, 1] scale (e.g. a vocoder's output), `L = (T - 1) * hop`, or
            `T * hop` when circular.
        mel: `(B, n_mels, T)` Riffusion-scale target mel of the same frames.
        iterations: full-band projections.
        bass_iterations: projections of the band below `BASS_BAND_HZ` on the mel's own grid (0: no bass stage).
        circular: the audio is one period of a loop (frame t centred at sample t * hop, wrapping round).
        first_frame: the absolute index of the mel's first frame, when it is a piece of a longer one (chunks).
    Returns:
        audio shaped as `audio`; the part of it above the highest mel filter is left as it was.
    """
    frames = mel.shape[-1]
    if iterations + bass_iterations == 0 or frames < (1 if circular else 2):
        return audio
    check_refinable(params)
    target = mel.float().transpose(1, 2) + MEL_EPSILON  # (B, T, n_mels)
    stage = functools.partial(_strided_change, n_fft=params.win_length, hop=params.hop_length,
                              win_length=params.win_length, circular=circular, first_frame=first_frame)
    before, after = _full_band_stages(iterations, bass_iterations)
    scaled = audio.float() * INT16_SCALE
    if before:
        scaled = scaled + stage(scaled, target, grid_filterbank(params.key(), audio.device), iterations=before)
    if bass_iterations:
        scaled = scaled + _bass_change(scaled, target, params, bass_iterations, circular, first_frame)
    if after:  # only the filters the bass stage leaves out: the window's grid is too coarse for its own
        filters, outside = upper_filterbank(params.key(), audio.device)
        if filters is not None:
            scaled = scaled + stage(scaled, target[..., outside], filters, iterations=after)
    return scaled / INT16_SCALE
