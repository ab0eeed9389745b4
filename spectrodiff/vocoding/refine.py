"""Mel-consistency refinement: projections that pull a waveform's mel onto a target mel, keeping its phase and the
fine structure of its spectrum.

A neural vocoder predicts a magnitude and a phase per frame, and their overlap-add is not exactly the STFT it
predicted, so the mel of its audio drifts from the mel it was given, further than Griffin-Lim's does (figures in
docs/benchmarks.md). Each projection measures the audio's mel on the mel's own STFT
frames, scales every FFT bin by the (over-relaxed) ratio of target to measured mel of the filters it falls in, and
goes back through an inverse and forward STFT, with Fast Griffin-Lim's momentum. Unlike Griffin-Lim, it never
replaces the magnitude by the mel's least-squares inverse, so the detail the vocoder predicted between and above the
mel filters survives (its multi-resolution STFT distance gets lower too, measured in benchmarks/vocoder.py).

Two stages share that projection:
- full band, on the window's FFT grid (`win_length` points, 10 Hz at Riffusion's settings): cheap, and exact where
  the filters are wider than its bins;
- bass (optional), on the mel's own zero-padded grid (2.5 Hz), where narrow filters need it: Riffusion's 512
  filters are 4-25 Hz apart below 3.5 kHz, and on the 10 Hz grid its mel spectral convergence stalls short of
  Griffin-Lim's however many projections run.
The bass stage runs at the lowest rate that holds its band (`stage_rate`: a fraction p / q of the sample rate at
which frames stay whole samples), so that its fine grid costs a fraction of the full one; the change made there is
brought back to the full rate and added. At Riffusion's settings it holds the band to 3.7 kHz at 2/9 of the rate:
the 2-3.7 kHz filters are too narrow for the 10 Hz grid too (on held-out real music the full-band projections alone
left more error there than Griffin-Lim at Riffusion's FFT size).
With a bass stage the full-band projections are split around it: half before on every filter, the rest after on the
filters the bass stage leaves out (on the coarse grid they would pull its own filters off their targets, which
measurably lowered the bass stage's gain).
Every stage projects every `FRAME_STEP`-th frame only, which halves its cost.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..codec.mel import INT16_SCALE, mel_filterbank
from ..codec.params import SpectrogramParams
from ..errors import SpectrodiffError
from .stft import FrameTransform

# Over-relaxation of the mel ratio and momentum on the spectra: these converged fastest among those tried on
# held-out recordings; stronger over-relaxation diverged (docs/benchmarks.md).
RATIO_POWER = 1.3
MOMENTUM = 0.9
# Mel magnitudes (int16 scale, peaks near 1e7) this small are silence; the ratio is also bounded so that one
# iteration cannot blow a near-silent bin up.
MEL_EPSILON = 1.0
MAX_RATIO = 1e3
# The bass stage holds the filters below this frequency at least (2/9 of Riffusion's rate; see the docstring).
BASS_BAND_HZ = 3500.0
# A stage's lowpass keeps this fraction of its band's Nyquist frequency whole (the filters it refines lie inside it)
# and rolls off over the rest; a Kaiser-windowed sinc (beta 8, about -80 dB) of `STAGE_FIR_SIDE` samples at the
# stage's rate either side. Stage rates are fractions p / q with q at most `MAX_RATE_DENOMINATOR`.
STAGE_PASS = 0.75
STAGE_FIR_SIDE = 20
STAGE_FIR_BETA = 8.0
MAX_RATE_DENOMINATOR = 12
# Every stage projects every other frame only: Riffusion's frames (100 ms windows 10 ms apart) then still overlap
# five times, and the mel of the frames between follows (the same mel spectral convergence as with every frame for
# half the work; every third frame lost accuracy: docs/benchmarks.md).
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
        self.complete = sum(last - first for _, _, first, last, _ in self.blocks) == self.filters

    def measure(self, magnitude: torch.Tensor) -> torch.Tensor:
        if self.complete:  # every group has weights: their outputs side by side
            return torch.cat([magnitude[..., lo:hi] @ block for lo, hi, _, _, block in self.blocks], dim=-1)
        out = magnitude.new_zeros(*magnitude.shape[:-1], self.filters)
        for lo, hi, first, last, block in self.blocks:
            out[..., first:last] = magnitude[..., lo:hi] @ block
        return out

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros(*values.shape[:-1], self.bins)
        for lo, hi, first, last, block in self.blocks:
            out[..., lo:hi] += values[..., first:last] @ block.T
        return out


def stage_rate(params: SpectrogramParams, band_hz: float) -> tuple[int, int]:
    """The lowest sample rate `sample_rate * p / q` (as `(p, q)`, p <= q <= `MAX_RATE_DENOMINATOR`) at which the
    hop, the window and the FFT size are whole numbers of samples and `band_hz` lies inside the passband
    (`STAGE_PASS` of the Nyquist frequency); `(1, 1)` when no lower rate qualifies.

    At Riffusion's settings the bass band (`BASS_BAND_HZ`) runs at 2/9 of the rate (9.8 kHz).
    """
    best = (1, 1)
    for q in range(2, MAX_RATE_DENOMINATOR + 1):
        for p in range(1, q):
            whole = all(n * p % q == 0 for n in (params.hop_length, params.win_length, params.n_fft))
            if (math.gcd(p, q) == 1 and whole and params.sample_rate * p / q / 2 * STAGE_PASS >= band_hz
                    and p * best[1] < best[0] * q):
                best = (p, q)
    return best


def _stage_grid(params: SpectrogramParams, rate: tuple[int, int], fft_size: int) -> torch.Tensor:
    """`(fft_size // 2 + 1, n_mels)` mel filterbank on the grid of a `fft_size`-point FFT at the stage's rate (a
    subset of the mel's `n_fft` grid): each bin of the mel's grid adds its weight to the nearest bin of this one, so
    every filter keeps its total weight even when it is narrower than a bin (Riffusion's lowest are on the window's
    10 Hz grid). Scaled by q / p: a spectrum at p / q of the rate is p / q of the full-rate one."""
    p, q = rate
    step = params.n_fft * p // (q * fft_size)
    fine = mel_filterbank(params)
    nearest = torch.div(torch.arange(fine.shape[0]) + step // 2, step, rounding_mode="floor")
    grid = torch.zeros(fft_size // 2 + 1, fine.shape[1]).index_add_(0, nearest.clamp(max=fft_size // 2), fine)
    return grid * (q / p)


@dataclass(frozen=True)
class Stage:
    """Where one stage projects: its rate `(p, q)`, its FFT size and hop and window (samples at that rate), its
    filters on that grid and the `(k,)` indices of the mel bins they measure."""

    rate: tuple[int, int]
    n_fft: int
    hop: int
    win_length: int
    filters: BandedFilterbank
    indices: torch.Tensor


def _bass_indices(params: SpectrogramParams) -> tuple[tuple[int, int], torch.Tensor]:
    """The bass stage's rate and the filters lying wholly inside its passband."""
    return _bass_band(params.key())


@functools.lru_cache(maxsize=8)
def _bass_band(key: tuple) -> tuple[tuple[int, int], torch.Tensor]:
    params = SpectrogramParams.from_key(key)
    rate = stage_rate(params, BASS_BAND_HZ)
    passband = params.sample_rate * rate[0] / rate[1] / 2 * STAGE_PASS
    fine = mel_filterbank(params)
    hz = torch.arange(fine.shape[0]) * (params.sample_rate / params.n_fft)
    top = torch.where(fine > 0, hz[:, None], -1.0).amax(dim=0)
    return rate, torch.nonzero((top >= 0) & (top < passband)).flatten()


def _stage(params: SpectrogramParams, rate: tuple[int, int], fft_size: int, indices: torch.Tensor,
           device: torch.device) -> Stage:
    p, q = rate
    grid = _stage_grid(params, rate, fft_size)[:, indices]
    grid = grid[: int(grid.sum(dim=1).nonzero().max()) + 1]  # cut above the highest filter
    return Stage(rate, fft_size, params.hop_length * p // q, params.win_length * p // q,
                 BandedFilterbank(grid.to(device)), indices.to(device))


@functools.lru_cache(maxsize=8)
def full_band_stage(key: tuple, device: torch.device) -> Stage:
    """Every filter, on the window's grid (10 Hz at Riffusion's settings), at the full rate.

    Not at a lower rate: at 2/3 of Riffusion's rate the mel came out the same and a little faster, but the
    multi-resolution STFT distance to held-out recordings rose (docs/benchmarks.md), the change losing what its
    frames leak above the band."""
    params = SpectrogramParams.from_key(key)
    return _stage(params, (1, 1), params.win_length, torch.arange(params.num_frequencies), device)


@functools.lru_cache(maxsize=8)
def bass_stage(key: tuple, device: torch.device) -> Stage:
    """The filters inside the bass band, on the mel's own grid (2.5 Hz at Riffusion's settings) at its rate."""
    params = SpectrogramParams.from_key(key)
    (p, q), indices = _bass_indices(params)
    return _stage(params, (p, q), params.n_fft * p // q, indices, device)


@functools.lru_cache(maxsize=8)
def upper_stage(key: tuple, device: torch.device) -> Stage | None:
    """The filters the bass stage leaves out, on the full band's grid (None when it covers them all)."""
    params = SpectrogramParams.from_key(key)
    outside = torch.ones(params.num_frequencies, dtype=torch.bool)
    outside[_bass_indices(params)[1]] = False
    indices = torch.nonzero(outside).flatten()
    if not len(indices):
        return None
    return _stage(params, (1, 1), params.win_length, indices, device)


@functools.lru_cache(maxsize=8)
def _lowpass(rate: tuple[int, int]) -> torch.Tensor:
    """`(2 * STAGE_FIR_SIDE * q + 1,)` float64 lowpass at p times the full rate for a change of rate by p / q:
    passes `STAGE_PASS` of the new Nyquist frequency, a Kaiser-windowed sinc (about -80 dB), gain p at DC."""
    p, q = rate
    half = STAGE_FIR_SIDE * q
    cutoff = (1 + STAGE_PASS) / 2 / (2 * q)  # cycles a sample: midway through the roll-off
    taps = torch.arange(-half, half + 1, dtype=torch.float64)
    fir = torch.sinc(2 * cutoff * taps) * torch.kaiser_window(2 * half + 1, periodic=False, beta=STAGE_FIR_BETA,
                                                              dtype=torch.float64)
    return fir * (p / fir.sum())


@functools.lru_cache(maxsize=16)
def _polyphase(fir_rate: tuple[int, int], up: int, down: int, scale: float,
               device: torch.device) -> tuple[torch.Tensor, int]:
    """One conv1d kernel per output phase for `_resample` (`(up, 1, taps)` float32), and the left padding it
    needs: output m = r + up * k takes sum_i fir[half + r * down + up * i] * x[k * down - i]."""
    fir = _lowpass(fir_rate) * scale
    half = (len(fir) - 1) // 2
    lows = [-((half + r * down) // up) for r in range(up)]  # ceil((-half - r * down) / up)
    highs = [(half - r * down) // up for r in range(up)]
    pad, taps = max(highs), max(highs) - min(lows) + 1
    kernels = torch.zeros(up, 1, taps, dtype=torch.float64)
    for r in range(up):
        for i in range(lows[r], highs[r] + 1):
            kernels[r, 0, pad - i] = fir[half + r * down + up * i]
    return kernels.float().to(device), pad


def _resample(x: torch.Tensor, up: int, down: int, kernels: tuple[torch.Tensor, int], length: int,
              circular: bool, reflect: bool) -> torch.Tensor:
    """`(B, N)` -> `(B, length)` at `up / down` times the rate: output sample m lies at input sample
    `m * down / up`. Outside the clip the input is reflected (`reflect`) or zero, or wraps round (`circular`)."""
    weight, pad = kernels
    outputs = -(-length // up)
    right = max((outputs - 1) * down + weight.shape[-1] - pad - x.shape[-1], 0)
    if circular:  # wrap round, however short the loop
        padded = x[:, torch.arange(-pad, x.shape[-1] + right, device=x.device) % x.shape[-1]]
    else:
        mode = "reflect" if reflect and x.shape[-1] > max(pad, right) else "constant"
        padded = F.pad(x[:, None], (pad, right), mode=mode)[:, 0]
    out = F.conv1d(padded[:, None], weight, stride=down)[..., :outputs]  # (B, up, outputs)
    return out.transpose(1, 2).reshape(x.shape[0], -1)[:, :length]


def _at_rate(change_at_rate, audio: torch.Tensor, rate: tuple[int, int], circular: bool) -> torch.Tensor:
    """`change_at_rate` (a function of `(B, N * p / q)` audio, returning a change of the same shape) applied to
    `(B, N)` audio at p / q of its rate: lowpassed down, and the change brought back up through the same lowpass
    (the adjoint of going down, times q / p)."""
    p, q = rate
    if rate == (1, 1):
        return change_at_rate(audio)
    length = audio.shape[-1] * p // q
    down = _resample(audio, p, q, _polyphase(rate, p, q, 1.0, audio.device), length, circular, reflect=True)
    change = change_at_rate(down)
    return _resample(change, q, p, _polyphase(rate, q, p, q / p, audio.device), audio.shape[-1], circular,
                     reflect=False)


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
    a stage at a lower rate adds its lowpass on the way down and up."""
    half_window = math.ceil(params.win_length / (2 * params.hop_length))
    stages = [(k, rate) for k, rate in zip((*_full_band_stages(iterations, bass_iterations), bass_iterations),
                                           ((1, 1), (1, 1), _bass_indices(params)[0]), strict=True) if k]
    reach = 0
    for k, (p, q) in stages:
        reach += half_window * (2 * k + 2) + FRAME_STEP - 1
        if (p, q) != (1, 1):
            reach += math.ceil(2 * STAGE_FIR_SIDE * q / (p * params.hop_length)) + 1
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
        rebuilt = transform.forward(transform.inverse(spectrum, gain))
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
    of frame 0 here); a linear clip's first and last frames are projected too when the stride passes them by (half
    their window lies outside the clip, where it is mirrored: nothing else holds them). Loops whose frame count the
    step does not divide, and clips too short to pick two frames, use every frame.
    """
    frames, step = target.shape[1], FRAME_STEP
    offset = -first_frame % step
    if not (frames % step == 0 if circular else frames - offset > step):
        step, offset = 1, 0
    if circular:  # frame `offset` becomes frame 0
        transform = FrameTransform(n_fft, step * hop, win_length, frames // step, filters.bins, audio.device, True)
        return _project(audio.roll(-offset * hop, -1), target[:, offset::step], filters, transform,
                        iterations).roll(offset * hop, -1)
    grid = torch.arange(offset, frames, step, device=audio.device)
    ends = [t for t in (0, frames - 1) if t not in (int(grid[0]), int(grid[-1]))]
    transform = FrameTransform(n_fft, step * hop, win_length, len(grid), filters.bins, audio.device,
                               length=audio.shape[-1], start=offset * hop, extra=tuple(t * hop for t in ends))
    chosen = torch.cat([grid, torch.tensor(ends, dtype=grid.dtype, device=grid.device)])
    return _project(audio, target[:, chosen], filters, transform, iterations)


def _stage_change(audio: torch.Tensor, target: torch.Tensor, stage: Stage, iterations: int, circular: bool,
                  first_frame: int) -> torch.Tensor:
    """One stage's change to `(B, L)` full-rate audio (int16 scale), given the `(B, T, n_mels)` target."""
    return _at_rate(lambda audio: _strided_change(audio, target[..., stage.indices], stage.filters, stage.n_fft,
                                                  stage.hop, stage.win_length, iterations, circular, first_frame),
                    audio, stage.rate, circular)


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
    key, device = params.key(), audio.device
    stage = functools.partial(_stage_change, target=target, circular=circular, first_frame=first_frame)
    before, after = _full_band_stages(iterations, bass_iterations)
    scaled = audio.float() * INT16_SCALE
    if before:
        scaled = scaled + stage(scaled, stage=full_band_stage(key, device), iterations=before)
    if bass_iterations:
        scaled = scaled + stage(scaled, stage=bass_stage(key, device), iterations=bass_iterations)
    upper = upper_stage(key, device) if after else None
    if upper is not None:  # only the filters the bass stage leaves out: the window's grid is too coarse for its own
        scaled = scaled + stage(scaled, stage=upper, iterations=after)
    return scaled / INT16_SCALE
