"""Chords and bar position as conditions aligned with the spectrogram's columns (beat-time models).

A model trained with them (`aligned_conditions: true` in its training config, e.g. mini v3) has a UNet whose input
is its latents with `ALIGNED_CHANNELS` more channels concatenated (diffusers' `in_channels`), the same at every
latent row: the chord sounding at each column as 12 pitch classes (all zero: no chord known, what classifier-free
guidance's unconditional branch and unlabelled training tiles get), then where the column falls in its bar and in
its beat (sine and cosine of each phase). In beat time a bar is a fixed number of columns, so these are geometry.

Chord symbols as producers write them: a root A-G with # or b, then a quality: "" (major), "m", "7", "maj7", "m7",
"dim", "aug", "sus2", "sus4", "m7b5", "dim7", "6", "m6", "9", "add9", e.g. "Fm Db Ab Eb".
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from ..errors import SpectrodiffError
from .musical import NOTE_NAMES, beats_per_bar, parse_key

# A beat-time model's denoising window, in beats: 16 (4 bars of 4/4; 512 columns at 32 a beat, Riffusion's tile width).
BEAT_TILE_BEATS = 16
CHORD_CHANNELS = 12
POSITION_CHANNELS = 4
ALIGNED_CHANNELS = CHORD_CHANNELS + POSITION_CHANNELS
# The level of the aligned channels. The UNet's input weights for them start at zero and Adam moves each weight by
# about the learning rate a step, so their effect grows with their input's level: at 1.0, mini v3's 2000 steps left
# them at a norm of 0.035 a channel (the latents' 1.7) and the asked chords were heard in 5 % of bars.
ALIGNED_LEVEL = 10.0
# Semitones above the root of each quality's chord tones.
QUALITIES = {
    "": (0, 4, 7), "m": (0, 3, 7), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11), "m7": (0, 3, 7, 10),
    "dim": (0, 3, 6), "aug": (0, 4, 8), "sus2": (0, 2, 7), "sus4": (0, 5, 7), "m7b5": (0, 3, 6, 10),
    "dim7": (0, 3, 6, 9), "6": (0, 4, 7, 9), "m6": (0, 3, 7, 9), "9": (0, 4, 7, 10, 2), "add9": (0, 4, 7, 2),
}
_SPELLINGS = {"maj": "", "M": "", "min": "m", "-": "m", "mmaj7": "maj7", "M7": "maj7", "ø": "m7b5", "°": "dim",
              "+": "aug", "min7": "m7", "dom7": "7"}
_CHORD = re.compile(r"^([A-G])([#b♯♭]?)(.*)$")
_LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
Chord = tuple[int, ...]  # pitch classes 0-11, root first

if TYPE_CHECKING:
    import torch


def parse_chord(symbol: str) -> Chord:
    """"Fm" -> (5, 8, 0); SpectrodiffError naming the symbol when it is not a chord."""
    match = _CHORD.match(symbol.strip())
    quality = match and _SPELLINGS.get(match.group(3), match.group(3))
    if match is None or quality not in QUALITIES:
        raise SpectrodiffError(f"unknown chord symbol {symbol[:20]!r}: a root A-G with an optional # or b, then one "
                               f"of {', '.join(repr(q) for q in QUALITIES if q)} or nothing (major), e.g. 'Fm'")
    letter, accidental = match.group(1), {"♯": "#", "♭": "b"}.get(match.group(2), match.group(2))
    root = (_LETTERS[letter] + {"#": 1, "b": -1, "": 0}[accidental]) % 12
    return tuple(dict.fromkeys((root + step) % 12 for step in QUALITIES[quality]))


def parse_chords(text: str) -> list[Chord]:
    """"Fm Db Ab Eb" (spaces, commas or bars between chords) -> one chord per bar."""
    symbols = [s for s in re.split(r"[\s,|]+", text) if s]
    if not symbols:
        raise SpectrodiffError("--chords is empty: give one chord a bar, e.g. 'Fm Db Ab Eb'")
    return [parse_chord(symbol) for symbol in symbols]


def chord_name(chord: Chord) -> str:
    """The symbol of a chord's pitch classes, root first: (5, 8, 0) -> "Fm"; the best-fitting quality."""
    root, tones = chord[0], {(p - chord[0]) % 12 for p in chord}
    quality = max(QUALITIES, key=lambda q: (len(tones & set(QUALITIES[q])) - len(tones ^ set(QUALITIES[q])), -len(q)))
    return NOTE_NAMES[root] + quality


def fit_chords(chords: list[Chord], bars: int) -> list[Chord]:
    """One chord per bar for `bars` bars, the list repeated; SpectrodiffError when it does not divide them."""
    if len(chords) > bars or bars % len(chords):
        raise SpectrodiffError(f"{len(chords)} chords do not fit {bars} bars: give one chord a bar, as many as the "
                               "bars or a number that divides them (it repeats)")
    return chords * (bars // len(chords))


def key_of_chords(chords: list[Chord]) -> str:
    """The key a progression implies: its first chord's root, minor when that chord's third is minor."""
    first = chords[0]
    minor = (first[0] + 3) % 12 in first and (first[0] + 4) % 12 not in first
    return parse_key(f"{NOTE_NAMES[first[0]]} {'minor' if minor else 'major'}").name


def aligned_conditions(chords: list[Chord] | None, meter: str, columns_per_beat: int, width: int, factor: int,
                       start_column: int = 0) -> torch.Tensor:
    """The conditions of `width` latent columns whose first pixel column is `start_column` columns after a
    downbeat.

    Args:
        chords: one chord a bar from the downbeat (repeating), or None (no chord known: zeros).
        factor: pixel columns a latent column (the VAE's scale factor).
    Returns:
        `(ALIGNED_CHANNELS, width)` float32: 12 pitch classes (ALIGNED_LEVEL where the chord has them), then bar
        phase and beat phase as sine and cosine (times ALIGNED_LEVEL), of each latent column's centre.
    """
    import numpy as np  # here, not at the top: jobs.py parses chords, and the command line's start stays light
    import torch

    bar_columns = beats_per_bar(meter) * columns_per_beat
    centres = start_column + (np.arange(width) + 0.5) * factor
    out = np.zeros((ALIGNED_CHANNELS, width), dtype=np.float32)
    if chords:
        bars = (centres // bar_columns).astype(int) % len(chords)
        for column, bar in enumerate(bars):
            out[list(chords[bar]), column] = 1.0
    for i, period in enumerate((bar_columns, columns_per_beat)):
        phase = 2 * math.pi * (centres % period) / period
        out[CHORD_CHANNELS + 2 * i] = np.sin(phase)
        out[CHORD_CHANNELS + 2 * i + 1] = np.cos(phase)
    return torch.from_numpy(out * ALIGNED_LEVEL)


def without_chords(conditions: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Conditions with the chord channels zeroed, the bar position kept; `dim` is the channel dimension (1 for a
    batch `(B, ALIGNED_CHANNELS, ...)`)."""
    out = conditions.clone()
    out.narrow(dim, 0, CHORD_CHANNELS).zero_()
    return out
