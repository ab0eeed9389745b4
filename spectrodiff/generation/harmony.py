"""Chords and bar position as conditions aligned with the spectrogram's columns (beat-time models).

A model trained with them (`aligned_conditions` in its training config, e.g. mini v3) has a UNet whose input is
its latents with more channels concatenated (diffusers' `in_channels`): the chord sounding at each column (all zero:
no chord known, what classifier-free guidance's unconditional branch and unlabelled training tiles get), then where
the column falls in its bar and in its beat (sine and cosine of each phase, the same at every latent row). In beat
time a bar is a fixed number of columns, so these are geometry. The chord comes in one of two layouts
(`ChordLayout`, the pipeline config's `aligned_layout`): "chroma", 12 pitch classes the same at every latent row
(mini v3), or "mel", the chord's notes drawn as the spectrogram would show them, aligned in frequency as in time.

Chord symbols as producers write them: a root A-G with # or b, then a quality: "" (major), "m", "7", "maj7", "m7",
"dim", "aug", "sus2", "sus4", "m7b5", "dim7", "6", "m6", "9", "add9", e.g. "Fm Db Ab Eb".
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import SpectrodiffError
from .musical import NOTE_NAMES, beats_per_bar, parse_key

# A beat-time model's denoising window, in beats: 16 (4 bars of 4/4; 512 columns at 32 a beat, Riffusion's tile width).
BEAT_TILE_BEATS = 16
CHORD_CHANNELS = 12
POSITION_CHANNELS = 4
ALIGNED_CHANNELS = CHORD_CHANNELS + POSITION_CHANNELS  # of the chroma layout
LAYOUTS = ("chroma", "mel")
# The notes a "mel" chord draws: each of its pitch classes from C2 to B6, with partials 1-6 at 1/n.
TEMPLATE_NOTES = range(36, 96)
TEMPLATE_PARTIALS = 6
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
    import numpy as np
    import torch

    from ..codec.params import SpectrogramParams


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


@dataclass(frozen=True)
class ChordLayout:
    """How a model's aligned conditions carry the chord.

    "chroma" (mini v3): 12 channels, the chord's pitch classes, the same at every latent row; the UNet must learn
    which rows and which of the latents' channels each pitch class lights, from an input that does not say where in
    frequency a row is. "mel": `factor` channels at each of the `rows` latent rows, the image rows inside it: the
    chord's notes (`TEMPLATE_NOTES`, `TEMPLATE_PARTIALS`) through the model's mel filterbank at its image power,
    flipped as the image is (high frequencies on top), so the chord lies where the music it asks for would.
    """

    name: str = "chroma"
    templates: np.ndarray | None = None  # (12, n_mels) magnitudes of each pitch class's notes, lowest band first
    factor: int = 1
    power: float = 1.0

    @property
    def chord_channels(self) -> int:
        return CHORD_CHANNELS if self.templates is None else self.factor

    @property
    def channels(self) -> int:
        return self.chord_channels + POSITION_CHANNELS

    @property
    def rows(self) -> int:
        """Latent rows the conditions vary over (1: the same at every row)."""
        return 1 if self.templates is None else self.templates.shape[1] // self.factor

    def chord_map(self, chord: Chord) -> np.ndarray:
        """`(chord_channels, rows)` the chord's channels at each latent row, in [0, 1]."""
        import numpy as np

        if self.templates is None:
            out = np.zeros((CHORD_CHANNELS, 1), dtype=np.float32)
            out[list(chord)] = 1.0
            return out
        magnitude = self.templates[list(chord)].sum(axis=0)
        image = (magnitude / magnitude.max()) ** self.power
        return image[::-1].reshape(self.rows, self.factor).T.astype(np.float32)


CHROMA = ChordLayout()


def chord_layout(name: str, params: SpectrogramParams, factor: int) -> ChordLayout:
    """The `ChordLayout` called `name` for a model of `params` whose VAE scales by `factor`; SpectrodiffError for
    an unknown name or a mel layout whose bands do not fill whole latent rows."""
    if name not in LAYOUTS:
        raise SpectrodiffError(f"unknown aligned layout {name!r}: one of {', '.join(LAYOUTS)}")
    if name == "chroma":
        return CHROMA
    if params.num_frequencies % factor:
        raise SpectrodiffError(f"a mel chord layout needs mel bands in whole latent rows: {params.num_frequencies} "
                               f"bands, {factor} a row")
    return ChordLayout("mel", _pitch_class_templates(params.sample_rate, params.n_fft, params.num_frequencies,
                                                     params.min_frequency, params.max_frequency),
                       factor, params.power_for_image)


@functools.lru_cache(maxsize=8)
def _pitch_class_templates(sample_rate: int, n_fft: int, n_mels: int, low: float, high: float) -> np.ndarray:
    """`(12, n_mels)` mel magnitudes of each pitch class's notes and partials (linear interpolation onto the FFT
    bins, then the model's triangular filters)."""
    import numpy as np

    from ..codec.mel import mel_filterbank
    from ..codec.params import SpectrogramParams

    params = SpectrogramParams(sample_rate=sample_rate, num_frequencies=n_mels, min_frequency=low,
                               max_frequency=high)
    filters = mel_filterbank(params, n_fft).numpy()
    spectra = np.zeros((12, filters.shape[0]))
    for note in TEMPLATE_NOTES:
        for partial in range(1, TEMPLATE_PARTIALS + 1):
            position = 440.0 * 2 ** ((note - 69) / 12) * partial * n_fft / sample_rate
            below = int(position)
            if below + 1 < filters.shape[0]:
                spectra[note % 12, below] += (below + 1 - position) / partial
                spectra[note % 12, below + 1] += (position - below) / partial
    return spectra @ filters


def aligned_conditions(chords: list[Chord] | None, meter: str, columns_per_beat: int, width: int, factor: int,
                       start_column: int = 0, layout: ChordLayout = CHROMA) -> torch.Tensor:
    """The conditions of `width` latent columns whose first pixel column is `start_column` columns after a
    downbeat.

    Args:
        chords: one chord a bar from the downbeat (repeating), or None (no chord known: zeros).
        factor: pixel columns a latent column (the VAE's scale factor).
        layout: how the chord is carried (`ChordLayout`).
    Returns:
        `(layout.channels, layout.rows, width)` float32: the chord's channels (`ChordLayout.chord_map`), then bar
        phase and beat phase as sine and cosine, of each latent column's centre, all times ALIGNED_LEVEL.
    """
    import numpy as np  # here, not at the top: jobs.py parses chords, and the command line's start stays light
    import torch

    bar_columns = beats_per_bar(meter) * columns_per_beat
    centres = start_column + (np.arange(width) + 0.5) * factor
    chord_channels = layout.chord_channels
    out = np.zeros((layout.channels, layout.rows, width), dtype=np.float32)
    if chords:
        bars = (centres // bar_columns).astype(int) % len(chords)
        maps = [layout.chord_map(chord) for chord in chords]
        for column, bar in enumerate(bars):
            out[:chord_channels, :, column] = maps[bar]
    for i, period in enumerate((bar_columns, columns_per_beat)):
        phase = 2 * math.pi * (centres % period) / period
        out[chord_channels + 2 * i] = np.sin(phase)
        out[chord_channels + 2 * i + 1] = np.cos(phase)
    return torch.from_numpy(out * ALIGNED_LEVEL)


def without_chords(conditions: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Conditions with the chord channels zeroed, the bar position kept (the last POSITION_CHANNELS); `dim` is the
    channel dimension (1 for a batch `(B, channels, ...)`)."""
    out = conditions.clone()
    out.narrow(dim, 0, conditions.shape[dim] - POSITION_CHANNELS).zero_()
    return out
