"""Musical time and keys as producers write them: a loop's length from tempo, bars and meter; key names."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SpectrodiffError

MIN_BPM, MAX_BPM = 40.0, 240.0
MAX_BARS = 64
METERS = ("4/4", "3/4", "2/4", "5/4", "6/8", "7/8", "12/8")
_LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_KEY = re.compile(r"^\s*([A-Ga-g])\s*([#b♯♭]?)\s*(major|maj|minor|min|m|M)?\s*$")
# MIDI note of the tonic in the octave from middle C (60), as a WAV's acid chunk names a loop's root.
MIDDLE_C = 60
# Pitch classes 0-11 as keys are written here and in the reference catalogue.
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


@dataclass(frozen=True)
class Key:
    """A key: tonic spelled as written (letter and accidental) and mode."""

    letter: str
    accidental: str
    minor: bool

    @property
    def name(self) -> str:
        """"F minor", "C# major"."""
        return f"{self.letter}{self.accidental} {'minor' if self.minor else 'major'}"

    @property
    def short(self) -> str:
        """The sample-pack spelling: "Fmin", "C#maj"."""
        return f"{self.letter}{self.accidental}{'min' if self.minor else 'maj'}"

    @property
    def pitch_class(self) -> int:
        return (_LETTERS[self.letter] + {"#": 1, "b": -1, "": 0}[self.accidental]) % 12

    @property
    def root_note(self) -> int:
        """The tonic's MIDI note in the octave from middle C, as a WAV's acid chunk names a loop's root."""
        return MIDDLE_C + self.pitch_class


def parse_key(text: str) -> Key:
    """"F minor", "Fmin", "F#m", "Bb major", "eb" (major unless said) -> Key; SpectrodiffError otherwise."""
    match = _KEY.match(text)
    if match is None:
        raise SpectrodiffError(f"key {text[:40]!r} is not a key: a note A-G, optionally # or b, then major or minor "
                               "(e.g. 'F minor', 'C# major', 'Bbm')")
    letter, accidental, mode = match.groups()
    accidental = {"♯": "#", "♭": "b"}.get(accidental, accidental)
    return Key(letter.upper(), accidental, mode in ("minor", "min", "m"))


def beats_per_bar(meter: str) -> float:
    """Quarter-note beats in one bar: 4/4 -> 4, 6/8 -> 3 (tempo counts quarter notes, as DAWs do)."""
    numerator, denominator = (int(part) for part in meter.split("/"))
    return numerator * 4 / denominator


def bar_seconds(bpm: float, meter: str) -> float:
    return beats_per_bar(meter) * 60.0 / bpm


def nearest_bars(seconds: float, bpm: float, meter: str) -> int:
    """The whole number of bars nearest `seconds` (at least one): a clip's length when a tempo is known."""
    return max(1, round(seconds / bar_seconds(bpm, meter)))


def whole_bars(seconds: float, bpm: float, meter: str, what: str) -> int:
    """The number of bars `seconds` holds; SpectrodiffError naming `what` when it is not a whole number of them."""
    bar = bar_seconds(bpm, meter)
    bars = round(seconds / bar)
    if bars < 1 or abs(seconds - bars * bar) > 1e-6:
        raise SpectrodiffError(f"{what}: {seconds:g} s is not whole bars of {meter} at {bpm:g} BPM ({bar:g} s a bar)")
    return bars
