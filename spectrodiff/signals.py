"""Short test signals synthesised in code (chords, drums, noise), for the demo, tests and benchmarks.

`spectrodiff dev signal OUT.wav [--kind mix] [--seconds 5.12]` (or `python -m spectrodiff.signals ...`) writes one to
a file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .errors import SpectrodiffError

SAMPLE_RATE = 44100


def _envelope(n: int, attack: float, decay: float, sample_rate: int) -> np.ndarray:
    t = np.arange(n) / sample_rate
    return np.minimum(t / attack, 1.0) * np.exp(-t / decay)


def chord(seconds: float = 5.12, sample_rate: int = SAMPLE_RATE, root_hz: float = 220.0, seed: int = 0) -> np.ndarray:
    """A major-triad progression of harmonic tones, one chord a second. Returns `(N,)` float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    out = np.zeros(n)
    for k, start in enumerate(range(0, n, sample_rate)):
        length = min(sample_rate, n - start)
        t = np.arange(length) / sample_rate
        base = root_hz * 2 ** ([0, 5, 7, 3][k % 4] / 12)
        for ratio in (1.0, 1.25, 1.5):
            f0 = base * ratio * (1 + 0.002 * rng.standard_normal())
            tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h**1.5 for h in range(1, 8))
            out[start: start + length] += tone * _envelope(length, 0.01, 0.6, sample_rate)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def drums(seconds: float = 5.12, sample_rate: int = SAMPLE_RATE, bpm: float = 120.0, seed: int = 0) -> np.ndarray:
    """Kick (pitched sine sweep), snare (noise burst) and hi-hat (filtered noise) in a 4/4 pattern. `(N,)` float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    out = np.zeros(n)
    step = int(60 / bpm / 2 * sample_rate)  # eighth notes
    for i, start in enumerate(range(0, n, step)):
        length = min(step, n - start)
        t = np.arange(length) / sample_rate
        if i % 4 == 0:
            sweep = 2 * np.pi * (50 * t + 60 * (1 - np.exp(-t * 30)) / 30)
            out[start: start + length] += np.sin(sweep) * np.exp(-t * 8)
        if i % 4 == 2:
            out[start: start + length] += 0.6 * rng.standard_normal(length) * np.exp(-t * 20)
        hat = rng.standard_normal(length)
        hat = np.diff(hat, prepend=0.0)  # crude high-pass
        out[start: start + length] += 0.15 * hat * np.exp(-t * 60)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def noise(seconds: float = 5.12, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """Pink-ish noise with a slow swell. `(N,)` float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    out = np.fft.irfft(spectrum, n) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * np.arange(n) / sample_rate))
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def mix(seconds: float = 5.12, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """Chords over drums. `(N,)` float32."""
    out = chord(seconds, sample_rate, seed=seed) + 0.7 * drums(seconds, sample_rate, seed=seed)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


SIGNALS = {"chord": chord, "drums": drums, "noise": noise, "mix": mix}


def write_signal(out: Path, kind: str = "mix", seconds: float = 5.12) -> Path:
    """Write the signal `kind` (a name in SIGNALS), `seconds` long, to `out` as 16-bit audio at SAMPLE_RATE."""
    import soundfile

    if kind not in SIGNALS:
        raise SpectrodiffError(f"unknown signal {kind!r}; choose one of {', '.join(sorted(SIGNALS))}")
    if not seconds > 0:
        raise SpectrodiffError(f"--seconds must be positive, got {seconds:g}")
    soundfile.write(out, SIGNALS[kind](seconds), SAMPLE_RATE, subtype="PCM_16")
    return Path(out)


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["dev", "signal", *sys.argv[1:]]))
