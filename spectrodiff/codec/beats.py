"""Tempo, beats and downbeats of recorded music by classic signal processing and two small log-linear rankers whose
weights are in this file: no model to download, numpy, torch and soxr only.

After Ellis ("Beat tracking by dynamic programming", J. New Music Research 36(1), 2007) and the comb tempograms of
Scheirer (1998) and Klapuri et al. (2006):

1. onsets: the rise of a 64-band log-mel spectrogram of the mono mix (22.05 kHz, 1024-point FFT, hop 256: 86 frames
   a second), summed over all bands, over those below LOW_HZ (kick, bass) and over those above HIGH_HZ (hi-hats);
   and two chromagrams (12 pitch classes, all notes and the bass's) from a finer FFT;
2. tempo: the peaks of the onset strength's comb salience (its autocorrelation at a period's first multiples) are
   the candidates, and a ranker weighs each by a log-Gaussian prior over tempo, that salience and the
   autocorrelation at fractions of the period (is there a pulse 3 or 8 times as fast? then the beat is slower than
   the music's): TEMPO_FEATURES, TEMPO_WEIGHTS;
3. beats: Ellis's dynamic programme (each beat an onset peak, each interval close to the period), one steady grid
   fitted to its beats, the period refined to the sharpest fold of the onset strength: a `BeatGrid` is one steady
   grid, as a loop's or a DAW's;
4. downbeat: every 16th of the first bar is a candidate, and a second ranker weighs each by the onsets (all, low,
   high) at its bar lines and beats and by the change of chroma and bass chroma across them: DOWNBEAT_FEATURES,
   DOWNBEAT_WEIGHTS. Audio known to start on a downbeat (a loop) can say so instead (`starts_on_downbeat`).

The weights are fitted by `python benchmarks/tracker.py --fit` on renders of the reference catalogue (fluidsynth with
MuseScore General and avldrums, and with FluidR3 GM); that script also measures the tracker on the held-out timidity
render (docs/benchmarks.md).

    grid = track_beats(audio, 44100, meter="3/4")   # audio (C, N) or (N,)
    grid.bpm, grid.first_downbeat, grid.steady      # 96.0, 0.012, True
    grid.downbeats(20.0)                            # seconds of every downbeat in a 20 s file
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
import torch

from spectrodiff.errors import SpectrodiffError

from .audio import AUDIO_SUFFIXES
from .mel import mel_filterbank
from .params import SpectrogramParams

ANALYSIS_RATE = 22050
FFT = 1024
HOP = 256
FRAME_RATE = ANALYSIS_RATE / HOP  # onset frames a second
MEL_BANDS = 64
LOW_HZ = 150.0  # kick and bass: the bands below it feed the downbeat's low-frequency onset
HIGH_HZ = 4000.0  # hi-hats and shakers: the bands above it show the beat's subdivisions
CHROMA_FFT = 4096  # 5.4 Hz bins: semitones apart down to about 90 Hz
CHROMA_HOP = 512
CHROMA_RATE = ANALYSIS_RATE / CHROMA_HOP  # chroma frames a second
CHROMA_HZ = (55.0, 2000.0)
BASS_HZ = (70.0, 300.0)  # the bass line's own chroma: its notes change at bar lines
LOG_GAIN = 1000.0  # log(1 + gain x spectrum / its maximum): about 60 dB of range before the floor

COMB_MULTIPLES = 4  # periods summed into a tempo's salience
BPM_STEPS_PER_OCTAVE = 400  # the salience's tempo grid: 0.17 % apart
TEMPO_CANDIDATES = 10
FOLD_PHASES = 24
FEATURE_CENTRE_BPM = 120.0
# What the tempo ranker weighs each candidate by, and the weights (a log-linear model, softmax over the candidates;
# `benchmarks/tracker.py --fit`). The first two make a log-Gaussian prior over tempo; "ac(p/k)": the autocorrelation
# of the onset strength at 1/k of the period p, "high(p/k)" that of the onset strength above HIGH_HZ (hi-hats: the
# beat's subdivisions); "fold contrast": `_fold_contrast`.
TEMPO_FEATURES = ("octaves from 120 BPM", "octaves squared", "comb salience", "ac(p)", "ac(p/2)", "ac(p/3)",
                  "ac(p/4)", "ac(p/8)", "fold contrast", "high(p/2)", "high(p/3)", "high(p/4)", "high(p/6)",
                  "high(p/8)")
TEMPO_WEIGHTS = (-0.024, -2.136, 7.818, 1.909, -0.779, -3.323, 1.709, -6.160, 0.799, 1.023, -2.459, -2.148, -5.265,
                 -7.285)
TIGHTNESS = 100.0  # the dynamic programme's cost of an interval off the period: tightness x log(interval/period)^2
AMBIGUOUS_PROBABILITY = 0.6  # the ranker's least probability for a tempo that is not ambiguous
STEADY_CLARITY = 0.25  # least clarity (comb salience of the tempo) of a steady beat
REFINE_SPAN = 0.03  # the period is refined within 3 % of the dynamic programme's
GRID_TOLERANCE = 0.1  # periods: a tracked beat this close to the steady grid is on it
STEADY_ON_GRID = 0.8  # least share of the tracked beats on the steady grid, for a steady beat
SUBDIVISIONS = 4  # downbeat candidates a beat: the beat grid's phase may be off by a 16th or an 8th
# What the downbeat ranker weighs each candidate by: the onset strength (all bands, below LOW_HZ, above HIGH_HZ) at
# the candidate's bar lines and at its beats, each against the mean of the two; the change of the chroma and of the
# bass chroma across its bar lines and across its beats (half a bar, or a beat, on either side) against the mean of
# the two; whether it is on the tracked beat.
DOWNBEAT_FEATURES = ("onset at bar lines", "onset at beats", "low onset at bar lines", "low onset at beats",
                     "high onset at bar lines", "high onset at beats",
                     "chord change at bar lines", "chord change at beats",
                     "chord change at bar lines (a beat)", "chord change at beats (a beat)",
                     "bass change at bar lines", "bass change at beats",
                     "bass change at bar lines (a beat)", "bass change at beats (a beat)", "on the tracked beat")
DOWNBEAT_WEIGHTS = (0.775, 0.642, 0.678, -0.029, -0.190, 0.233, 1.985, 4.795, 1.511, -0.819, -0.273, 2.918, 0.224,
                    1.871, 0.774)
FIRST_ONSET = 0.3  # a first onset reaches this share of the onset strength's 95th percentile
# The tracked downbeats of the reference catalogue's clips fall a median 7 ms after the labelled ones (the onset
# strength's rise peaks that late); the grid is moved back by as much.
ONSET_LATENCY = 0.007
START_TOLERANCE = 0.025  # seconds: a downbeat this close before the start counts as on it

METERS = {"2/4": 2, "3/4": 3, "4/4": 4, "5/4": 5, "6/4": 6, "7/4": 7}  # beats are quarter notes

# Tempo files a user may give: at the catalogue's root, or beside an audio file.
TEMPO_CSV = "tempo.csv"
TEMPO_SIDECAR = ".tempo.json"
BPM_RANGE = (20.0, 400.0)


@dataclass(frozen=True)
class BeatGrid:
    """A steady beat: `bpm` beats a minute, bars of `beats_per_bar` beats, the first downbeat `first_downbeat`
    seconds into the audio (0 <= first_downbeat < one bar). `clarity` (0-1, the comb salience of the tempo) says how
    strongly the audio's onsets repeat at the beat; `steady` that it is clear enough and that the tracked beats keep
    to one grid, enough to tile or warp by it; `ambiguous` that the tempo ranker found another tempo (most often half
    or double) nearly as likely (it gave this one less than AMBIGUOUS_PROBABILITY); `runner_up` is the tempo it
    ranked next (None when it weighed no other)."""

    bpm: float
    first_downbeat: float
    beats_per_bar: int
    clarity: float
    steady: bool
    ambiguous: bool
    runner_up: float | None = None

    @property
    def beat_seconds(self) -> float:
        return 60.0 / self.bpm

    @property
    def bar_seconds(self) -> float:
        return self.beats_per_bar * self.beat_seconds

    def beats(self, duration: float) -> np.ndarray:
        """Seconds `(K,)` of every beat in [0, duration), the beats before the first downbeat included."""
        first = self.first_downbeat % self.beat_seconds
        return first + self.beat_seconds * np.arange(max(0, math.ceil((duration - first) / self.beat_seconds)))

    def downbeats(self, duration: float) -> np.ndarray:
        """Seconds `(K,)` of every downbeat in [0, duration)."""
        count = max(0, math.ceil((duration - self.first_downbeat) / self.bar_seconds))
        return self.first_downbeat + self.bar_seconds * np.arange(count)


@dataclass(frozen=True)
class _Onsets:
    """What the tracker hears: onset strength `(T,)` over all bands and below LOW_HZ, at FRAME_RATE, frame t centred
    on t / FRAME_RATE seconds; chroma `(12, T_c)` between CHROMA_HZ and that of the bass (BASS_HZ), at CHROMA_RATE
    frames a second."""

    strength: np.ndarray
    low: np.ndarray
    high: np.ndarray
    chroma: np.ndarray
    bass: np.ndarray


def _mono(audio: np.ndarray, rate: int) -> np.ndarray:
    """`(C, N)` or `(N,)` audio at `rate` -> `(M,)` float32 mono at ANALYSIS_RATE."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=0)
    elif audio.ndim != 1:
        raise ValueError(f"audio must be (C, N) or (N,), got shape {audio.shape}")
    if rate != ANALYSIS_RATE:
        audio = soxr.resample(audio, rate, ANALYSIS_RATE)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _magnitude(signal: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """`(M,)` -> `(n_fft // 2 + 1, 1 + M // hop)` STFT magnitude, frames centred on multiples of `hop`, the signal
    padded with silence (so that a sound starting at sample 0 is an onset)."""
    return torch.stft(signal, n_fft, hop, window=torch.hann_window(n_fft), center=True, pad_mode="constant",
                      return_complex=True).abs()


def _rise(spectrum: torch.Tensor) -> np.ndarray:
    """`(bands, T)` magnitude -> `(bands, T)` rectified rise of its log, frame 0 against silence."""
    level = torch.log1p(LOG_GAIN * spectrum / spectrum.max().clamp_min(1e-10))
    return torch.diff(level, dim=1, prepend=torch.zeros_like(level[:, :1])).clamp_min(0).numpy()


def _chroma(signal: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """`(M,)` -> two `(12, T_c)` chromagrams, between CHROMA_HZ and between BASS_HZ: the square-root magnitude of
    each pitch class (C = 0), over the loudest frame's total (so that a silent frame weighs nothing)."""
    magnitude = torch.sqrt(_magnitude(signal, CHROMA_FFT, CHROMA_HOP))
    hz = torch.arange(magnitude.shape[0], dtype=torch.float64) * ANALYSIS_RATE / CHROMA_FFT
    pitch_class = torch.round(12 * torch.log2(hz.clamp_min(1.0) / 440.0) + 9).long() % 12
    chromas = []
    for low, high in (CHROMA_HZ, BASS_HZ):
        used = (hz >= low) & (hz <= high)
        folding = torch.zeros(12, len(hz))
        folding[pitch_class[used], used.nonzero().squeeze(1)] = 1.0
        chroma = (folding @ magnitude).numpy().astype(np.float64)
        chromas.append(chroma / max(chroma.sum(axis=0).max(), 1e-10))
    return chromas[0], chromas[1]


def _onsets(signal: np.ndarray) -> _Onsets:
    """`(M,)` mono at ANALYSIS_RATE -> its onset strength and chroma."""
    x = torch.from_numpy(signal)
    params = SpectrogramParams(sample_rate=ANALYSIS_RATE, num_frequencies=MEL_BANDS, min_frequency=30,
                               max_frequency=ANALYSIS_RATE // 2)
    filters = mel_filterbank(params, FFT)  # (FFT // 2 + 1, MEL_BANDS)
    rise = _rise(filters.T @ _magnitude(x, FFT, HOP) ** 2)
    centre_hz = filters.argmax(dim=0).numpy() * ANALYSIS_RATE / FFT
    return _Onsets(rise.sum(axis=0), rise[centre_hz < LOW_HZ].sum(axis=0), rise[centre_hz > HIGH_HZ].sum(axis=0),
                   *_chroma(x))


def _autocorrelation(strength: np.ndarray) -> np.ndarray:
    """`(T,)` -> `(T,)` unbiased autocorrelation of the mean-removed onset strength, 1 at lag 0."""
    x = strength - strength.mean()
    n = len(x)
    spectrum = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(spectrum.real ** 2 + spectrum.imag ** 2)[:n]
    ac = ac * n / (n - np.arange(n))
    return ac / max(ac[0], 1e-12)


def _comb(ac: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """`(L,)` autocorrelation -> `(B,)` comb salience of each period (frames): the mean autocorrelation over its
    first COMB_MULTIPLES multiples (those within the first half of the lags), linearly interpolated."""
    multiples = periods[:, None] * np.arange(1, COMB_MULTIPLES + 1)
    known = multiples < len(ac) * 0.5
    values = np.interp(multiples, np.arange(len(ac)), ac)
    return (values * known).sum(axis=1) / np.maximum(known.sum(axis=1), 1)


def _fold_contrast(strength: np.ndarray, period: float) -> float:
    """How much the onset strength `(T,)` folded at `period` frames peaks: the log of its highest phase (of
    FOLD_PHASES, smoothed over three) against the mean. High only where the period is exact."""
    phase = (np.arange(len(strength)) % period * FOLD_PHASES / period).astype(int) % FOLD_PHASES
    profile = np.bincount(phase, strength, FOLD_PHASES) / np.maximum(np.bincount(phase, None, FOLD_PHASES), 1)
    peak = np.argmax(profile + np.roll(profile, 1) + np.roll(profile, -1))
    return float(np.log(max(profile[peak], 1e-12) / max(profile.mean(), 1e-12)))


def _candidate_features(onsets: _Onsets, ac: np.ndarray, ac_high: np.ndarray, bpm: float) -> np.ndarray:
    """`(len(TEMPO_FEATURES),)`: what the tempo ranker weighs a candidate tempo by (TEMPO_FEATURES says what)."""
    period = 60.0 * FRAME_RATE / bpm
    octaves = math.log2(bpm / FEATURE_CENTRE_BPM)
    lags = np.arange(len(ac))
    full = np.interp(period / np.array([1, 2, 3, 4, 8]), lags, ac)
    high = np.interp(period / np.array([2, 3, 4, 6, 8]), lags, ac_high)
    return np.concatenate([[octaves, octaves ** 2, _comb(ac, np.array([period]))[0]], full,
                           [_fold_contrast(onsets.strength, period)], high])


def _tempo_candidates(onsets: _Onsets, min_bpm: float, max_bpm: float) -> tuple[np.ndarray, np.ndarray]:
    """The tempi worth weighing: the TEMPO_CANDIDATES highest peaks of the comb salience between the bounds.

    Returns (bpms `(K,)`, their features `(K, len(TEMPO_FEATURES))`).
    """
    ac = _autocorrelation(onsets.strength)
    bpms = np.geomspace(min_bpm, max_bpm, max(1, int(np.log2(max_bpm / min_bpm) * BPM_STEPS_PER_OCTAVE) + 1))
    salience = _comb(ac, 60.0 * FRAME_RATE / bpms)
    padded = np.concatenate([[-np.inf], salience, [-np.inf]])
    peaks = np.flatnonzero((salience >= padded[:-2]) & (salience >= padded[2:]))
    peaks = peaks[np.argsort(-salience[peaks], kind="stable")][:TEMPO_CANDIDATES]
    ac_high = _autocorrelation(onsets.high)
    features = np.array([_candidate_features(onsets, ac, ac_high, bpm) for bpm in bpms[peaks]])
    return bpms[peaks], features


def tempo_candidates(audio: np.ndarray, rate: int, *, min_bpm: float = 40.0,
                     max_bpm: float = 240.0) -> tuple[np.ndarray, np.ndarray]:
    """The candidate tempi `track_beats` chooses from and their features: (bpms `(K,)`, features `(K, F)`), F =
    len(TEMPO_FEATURES); for fitting TEMPO_WEIGHTS (benchmarks/tracker.py --fit)."""
    return _tempo_candidates(_onsets(_mono(audio, rate)), min_bpm, max_bpm)


def _tempo(onsets: _Onsets, min_bpm: float, max_bpm: float) -> tuple[float, float, float, float | None]:
    """The most likely tempo between the bounds, the ranker's probability for it (softmax over the candidates), its
    comb salience, and the next most likely tempo (None when there is no other candidate)."""
    bpms, features = _tempo_candidates(onsets, min_bpm, max_bpm)
    scores = features @ np.asarray(TEMPO_WEIGHTS)
    probability = np.exp(scores - scores.max())
    probability /= probability.sum()
    best, *others = np.argsort(-scores, kind="stable")
    return (float(bpms[best]), float(probability[best]), float(features[best, TEMPO_FEATURES.index("comb salience")]),
            float(bpms[others[0]]) if others else None)


def _dp_beats(strength: np.ndarray, period: float) -> np.ndarray:
    """Ellis's dynamic programme: `(K,)` beat frames that together maximise onset strength at the beats less
    TIGHTNESS x log(interval / period)^2 for each interval; intervals range over period / 2 to 2 x period."""
    onset = strength / max(strength.std(), 1e-12)
    n = len(onset)
    shortest, longest = max(1, round(period / 2)), max(2, round(2 * period))
    steps = np.arange(shortest, longest + 1)
    penalty = -TIGHTNESS * np.log(steps / period) ** 2
    score = onset.copy()
    previous = np.full(n, -1)
    for t in range(shortest, n):
        candidates = t - steps
        valid = candidates >= 0
        totals = score[candidates[valid]] + penalty[valid]
        pick = int(np.argmax(totals))
        if totals[pick] > 0:
            score[t] += totals[pick]
            previous[t] = candidates[valid][pick]
    last_span = score[max(0, n - round(period)):]
    t = n - len(last_span) + int(np.argmax(last_span))
    beats = [t]
    while previous[beats[-1]] >= 0:
        beats.append(previous[beats[-1]])
    return np.array(beats[::-1], dtype=float)


def _fit_grid(beats: np.ndarray, period: float) -> tuple[float, float, float]:
    """Least-squares (period, phase) in frames of a steady grid through `(K,)` beat frames, each counted as
    round(interval / period) beats after the one before, refitted without the beats more than a quarter period off;
    and the share of the beats within GRID_TOLERANCE periods of the grid."""
    if len(beats) < 3:
        return period, float(beats[0]) if len(beats) else 0.0, 0.0
    index = np.concatenate([[0], np.cumsum(np.maximum(1, np.round(np.diff(beats) / period)))])
    slope, intercept = np.polyfit(index, beats, 1)
    keep = np.abs(beats - (intercept + slope * index)) < 0.25 * period
    if keep.sum() >= 3:
        slope, intercept = np.polyfit(index[keep], beats[keep], 1)
    on_grid = np.abs(beats - (intercept + slope * index)) <= GRID_TOLERANCE * slope
    return float(slope), float(intercept), float(on_grid.mean())


def _peaks_at(strength: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The onset strength's highest value within a frame of each of `frames` (any shape, fractional; NaN outside
    the signal)."""
    padded = np.pad(strength, 2)
    peak = np.maximum(np.maximum(padded[:-2], padded[1:-1]), padded[2:])  # peak[i + 1] = max(strength[i-1..i+1])
    index = np.round(frames).astype(int) + 1
    inside = (index >= 1) & (index <= len(strength))
    return np.where(inside, peak[np.clip(index, 0, len(peak) - 1)], np.nan)


def _chroma_change(chroma: np.ndarray, at: np.ndarray, span: float) -> np.ndarray:
    """1 - cosine similarity of the chroma summed over `span` chroma frames before each of `at` (chroma frames, any
    shape) and that after it; NaN where either side falls outside the audio."""
    totals = np.concatenate([np.zeros((12, 1)), np.cumsum(chroma, axis=1)], axis=1)
    last = chroma.shape[1]
    at = np.round(at).astype(int)
    start, end = at - max(1, round(span)), at + max(1, round(span))
    inside = (start >= 0) & (end <= last)
    start, middle, end = (np.clip(x, 0, last) for x in (start, at, end))
    before = totals[:, middle] - totals[:, start]  # (12, *shape)
    after = totals[:, end] - totals[:, middle]
    norm = np.linalg.norm(before, axis=0) * np.linalg.norm(after, axis=0)
    similarity = (before * after).sum(axis=0) / np.maximum(norm, 1e-12)
    return np.where(inside, np.where(norm > 0, 1 - similarity, 0.0), np.nan)


def _downbeat_candidates(onsets: _Onsets, period: float, phase: float, per_bar: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the first downbeat may be: every SUBDIVISIONS-th of a beat through the first bar from the beat grid's
    `phase` (frames), with what the downbeat ranker weighs each by (DOWNBEAT_FEATURES says what).

    Returns (frames `(S,)`, features `(S, len(DOWNBEAT_FEATURES))`), S = SUBDIVISIONS x per_bar.
    """
    steps = SUBDIVISIONS * per_bar
    bar = period * per_bar
    starts = (phase + period / SUBDIVISIONS * np.arange(steps)) % bar
    bar_lines = starts[:, None] + bar * np.arange(math.ceil(len(onsets.strength) / bar))  # (S, bars)
    beat_lines = starts[:, None] + period * np.arange(math.ceil(len(onsets.strength) / period))  # (S, beats)
    columns = []
    for strength in (onsets.strength, onsets.low, onsets.high):
        at_bars, at_beats = (_mean(_peaks_at(strength, lines)) for lines in (bar_lines, beat_lines))
        scale = max(np.concatenate([at_bars, at_beats]).mean(), 1e-12)
        columns += [at_bars / scale, at_beats / scale]
    chroma_per_frame = CHROMA_RATE / FRAME_RATE
    for chroma in (onsets.chroma, onsets.bass):
        for span in (bar / 2, period):
            changes = [_mean(_chroma_change(chroma, lines * chroma_per_frame, span * chroma_per_frame))
                       for lines in (bar_lines, beat_lines)]
            scale = max(np.concatenate(changes).mean(), 1e-12)
            columns += [change / scale for change in changes]
    columns.append((np.arange(steps) % SUBDIVISIONS == 0).astype(float))
    return starts, np.stack(columns, axis=1)


def _mean(values: np.ndarray) -> np.ndarray:
    """`(S, K)` -> `(S,)` mean of each row's numbers (NaN: none), 0 for a row of none."""
    counts = (~np.isnan(values)).sum(axis=1)
    return np.where(counts > 0, np.nansum(values, axis=1) / np.maximum(counts, 1), 0.0)


def _first_downbeat(onsets: _Onsets, period: float, phase: float, per_bar: int, starts_on_downbeat: bool) -> float:
    """Frame of the first downbeat: the downbeat ranker's best candidate or, for audio that starts on a downbeat,
    the candidate nearest its first onset (the first frame whose onset strength reaches FIRST_ONSET of its 95th
    percentile)."""
    starts, features = _downbeat_candidates(onsets, period, phase, per_bar)
    if not starts_on_downbeat:
        return float(starts[np.argmax(features @ np.asarray(DOWNBEAT_WEIGHTS))])
    first = np.argmax(onsets.strength >= FIRST_ONSET * np.percentile(onsets.strength, 95))
    bar = period * per_bar
    return float(starts[np.argmin(np.abs((starts - first + bar / 2) % bar - bar / 2))])


def _refine_period(strength: np.ndarray, period: float, shortest: float, longest: float) -> float:
    """The period, within REFINE_SPAN of `period` and between `shortest` and `longest` frames, at which the onset
    strength `(T,)` folds to the sharpest peak (`_fold_contrast`): exact to about 0.05 %."""
    periods = period * (1 + np.linspace(-REFINE_SPAN, REFINE_SPAN, 2 * round(REFINE_SPAN / 0.0005) + 1))
    periods = periods[(periods >= shortest) & (periods <= longest)]
    if len(periods) == 0:
        return float(np.clip(period, shortest, longest))
    return float(periods[np.argmax([_fold_contrast(strength, p) for p in periods])])


def _beat_grid(onsets: _Onsets, bpm: float, min_bpm: float, max_bpm: float) -> tuple[float, float, float]:
    """(period, phase), in frames, of the steady grid through the dynamic programme's beats at about `bpm`, and the
    share of those beats on the grid fitted to them (`_fit_grid`). The period is then refined (`_refine_period`)
    within the bounds, and the phase is the beats' circular mean against it."""
    period = 60.0 * FRAME_RATE / bpm
    beats = _dp_beats(onsets.strength, period)
    fitted, _, on_grid = _fit_grid(beats, period)
    period = _refine_period(onsets.strength, fitted, 60.0 * FRAME_RATE / max_bpm, 60.0 * FRAME_RATE / min_bpm)
    return period, _circular_phase(beats, period), on_grid


def _circular_phase(beats: np.ndarray, period: float) -> float:
    """The phase (frames, 0 to `period`) of `(K,)` beat frames against `period`: their circular mean, taken again
    without the beats more than a quarter period from the first."""
    turns = np.exp(2j * np.pi * beats / period)
    mean = np.angle(turns.mean())
    near = np.abs(np.angle(turns * np.exp(-1j * mean))) < np.pi / 2
    if near.any():
        mean = np.angle(turns[near].mean())
    return float(mean / (2 * np.pi) * period % period)


def downbeat_candidates(audio: np.ndarray, rate: int, bpm: float, *,
                        meter: str = "4/4") -> tuple[np.ndarray, np.ndarray]:
    """The first downbeats `track_beats` chooses from at a known tempo, and their features: (seconds `(S,)`,
    features `(S, len(DOWNBEAT_FEATURES))`); for fitting DOWNBEAT_WEIGHTS (benchmarks/tracker.py --fit)."""
    onsets = _onsets(_mono(audio, rate))
    period, phase, _ = _beat_grid(onsets, bpm, bpm, bpm)
    starts, features = _downbeat_candidates(onsets, period, phase, beats_per_bar(meter))
    return starts / FRAME_RATE, features


def beats_per_bar(meter: str) -> int:
    """Beats a bar of a meter such as "4/4" or "3/4"; SpectrodiffError for one not in METERS."""
    if meter not in METERS:
        raise SpectrodiffError(f"unknown meter {meter!r}; choose one of {', '.join(METERS)}")
    return METERS[meter]


def track_beats(audio: np.ndarray, rate: int, *, meter: str = "4/4", min_bpm: float = 40.0, max_bpm: float = 240.0,
                starts_on_downbeat: bool = False) -> BeatGrid:
    """The steady beat grid of `(C, N)` or `(N,)` float audio at `rate` Hz: tempo between `min_bpm` and `max_bpm`
    (pass the same number to both for a known tempo, to find only the downbeat), bars of `meter`.
    `starts_on_downbeat`: the audio is known to start on a downbeat (a loop cut on a bar line, as a DAW assumes of
    a sample's first transient), so the first downbeat is the beat grid's point nearest the first onset rather than
    the downbeat ranker's choice.

    Audio with no onsets at all gives a grid at the prior's tempo with clarity 0, neither steady nor certain.
    """
    per_bar = beats_per_bar(meter)
    if not 0 < min_bpm <= max_bpm:
        raise SpectrodiffError(f"need 0 < min_bpm <= max_bpm, got {min_bpm:g} and {max_bpm:g}")
    signal = _mono(audio, rate)
    onsets = _onsets(signal)
    if not onsets.strength.any():
        return BeatGrid(float(np.clip(FEATURE_CENTRE_BPM, min_bpm, max_bpm)), 0.0, per_bar, 0.0, False, True)
    bpm, probability, salience, runner_up = _tempo(onsets, min_bpm, max_bpm)
    period, phase, on_grid = _beat_grid(onsets, bpm, min_bpm, max_bpm)
    seconds = _first_downbeat(onsets, period, phase, per_bar, starts_on_downbeat) / FRAME_RATE - ONSET_LATENCY
    bar = per_bar * period / FRAME_RATE
    if seconds > bar - START_TOLERANCE:
        seconds -= bar
    clarity = float(np.clip(salience, 0, 1))
    return BeatGrid(60.0 * FRAME_RATE / period, max(0.0, seconds), per_bar, clarity,
                    clarity >= STEADY_CLARITY and on_grid >= STEADY_ON_GRID, probability < AMBIGUOUS_PROBABILITY,
                    runner_up)


# ---- tempi a user gives ---------------------------------------------------------------------------------------


def _tempo_entry(where: str, bpm: object, downbeat: object) -> tuple[float, float]:
    """(bpm, downbeat) from a table's or sidecar's values; SpectrodiffError naming `where` for bad ones."""
    try:
        tempo, first = float(bpm), float(downbeat)
    except (TypeError, ValueError):
        raise SpectrodiffError(f"{where}: bpm and downbeat must be numbers, got {bpm!r} and {downbeat!r}") from None
    if not BPM_RANGE[0] <= tempo <= BPM_RANGE[1]:
        raise SpectrodiffError(f"{where}: bpm must be between {BPM_RANGE[0]:g} and {BPM_RANGE[1]:g}, got {tempo:g}")
    if not 0 <= first < math.inf:
        raise SpectrodiffError(f"{where}: downbeat must be a number of seconds >= 0, got {first:g}")
    return tempo, first


def _csv_tempi(path: Path) -> dict[str, tuple[float, float]]:
    tempi = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {(name or "").strip().lower() for name in reader.fieldnames or []}
        if not {"file", "bpm", "downbeat"} <= columns:
            raise SpectrodiffError(f"{path}: needs a header with the columns file, bpm and downbeat")
        for row in reader:
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            where = f"{path} line {reader.line_num}"
            if not row["file"]:
                raise SpectrodiffError(f"{where}: no file named")
            tempi[_relative(row["file"])] = _tempo_entry(where, row["bpm"], row["downbeat"])
    return tempi


def _relative(file: str) -> str:
    key = file.strip().replace("\\", "/")
    return key[2:] if key.startswith("./") else key


def _sidecar_tempi(catalogue: Path) -> dict[str, tuple[float, float]]:
    tempi = {}
    for folder, dirs, files in os.walk(catalogue):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        audio = {Path(name).stem: name for name in files if Path(name).suffix.lower() in AUDIO_SUFFIXES}
        for name in sorted(n for n in files if n.endswith(TEMPO_SIDECAR)):
            path = Path(folder) / name
            stem = name[: -len(TEMPO_SIDECAR)]
            if stem not in audio:
                raise SpectrodiffError(f"{path}: no audio file {stem}.* beside it")
            try:
                fields = json.loads(path.read_text(encoding="utf-8-sig"))
            except (OSError, ValueError) as exc:
                raise SpectrodiffError(f"{path}: not readable JSON ({exc})") from None
            if not isinstance(fields, dict) or not {"bpm", "downbeat"} <= fields.keys():
                raise SpectrodiffError(f'{path}: expected {{"bpm": ..., "downbeat": ...}}')
            source = (Path(folder) / audio[stem]).relative_to(catalogue).as_posix()
            tempi[source] = _tempo_entry(str(path), fields["bpm"], fields["downbeat"])
    return tempi


def load_known_tempi(catalogue: Path) -> dict[str, tuple[float, float]]:
    """The tempi a user gives for a catalogue's files: `tempo.csv` at its root (columns file, bpm, downbeat: the
    file's path relative to the catalogue, its tempo in BPM and its first downbeat in seconds) and sidecars
    `<stem>.tempo.json` beside audio files (`{"bpm": 96, "downbeat": 0.5}`); a sidecar wins over the table.

    Returns posix path relative to the catalogue -> (bpm, first downbeat seconds); {} when there are none.
    SpectrodiffError naming the file (and line) for a bad row or sidecar.
    """
    catalogue = Path(catalogue)
    table = catalogue / TEMPO_CSV
    tempi = _csv_tempi(table) if table.is_file() else {}
    return tempi | _sidecar_tempi(catalogue)
