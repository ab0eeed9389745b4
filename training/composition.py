"""What the reference catalogue's music is: its styles, and each clip's MIDI drawn from a seed.

The style table lives in styles.yaml beside this file (29 styles: instruments, tempo range, meter, modes, chord
progressions, rhythm and drum patterns, drum kit and five caption phrasings); `STYLES` is that table, loaded and
checked when this module is imported. Every clip draws its tempo, key, progression, patterns and instruments from a
seed, so its MIDI is a pure function of (style, seed, length). training/rendering.py makes it sound,
training/catalogue.py decides which clips a catalogue holds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
from pydantic import field_validator, model_validator

from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.musical import NOTE_NAMES
from spectrodiff.generation.plans import load_yaml
from spectrodiff.settings import Settings, quote_value, refuse, setting

STYLES_FILE = Path(__file__).with_name("styles.yaml")
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
}
# General MIDI drum notes, by the names styles.yaml gives them.
DRUM_NOTES = {"kick": 36, "side_stick": 37, "snare": 38, "clap": 39, "low_tom": 41, "hat": 42, "pedal_hat": 44,
              "mid_tom": 45, "open_hat": 46, "high_tom": 48, "crash": 49, "ride": 51, "tambourine": 54,
              "cowbell": 56, "low_conga": 64, "claves": 75, "shaker": 82}
HAT, OPEN_HAT, CRASH, RIDE = (DRUM_NOTES[name] for name in ("hat", "open_hat", "crash", "ride"))
# Drum pattern letters: velocity of a hit on that 16th step ('.' is no hit).
HIT_VELOCITY = {"X": 118, "x": 92, "o": 52}


# ---- the style table ------------------------------------------------------------------------------------------


ROLES = ("chords", "arp", "bass", "walk", "lead")
METERS = (4, 3)
# "acoustic" (avldrums' recorded kits) or a General MIDI drum kit program of MuseScore General: 0 standard,
# 24 electronic, 25 TR-808, 32 jazz, 40 brush.
KITS = ("acoustic", 0, 24, 25, 32, 40)


class Part(Settings):
    """One pitched instrument of a style."""

    role: str = setting(help="What the part plays: all chord tones at each onset (chords), chord tones in turn "
                        "(arp), root, fifth, octave (bass), a walking bass line (walk) or a melody (lead).",
                        choices=ROLES)
    programs: tuple[int, ...] = setting(help="General MIDI programs, one picked per clip.", low=1, max_items=128)
    octave: int = setting(help="MIDI octave of the part's lowest notes (4 = middle C).", low=0, high=8)
    rhythms: tuple[str, ...] = setting(help="Patterns of one bar, four steps a beat ('x' an onset, '.' none), one "
                                       "picked per bar.", low=1, max_items=64)
    gate: float = setting(0.9, "Sounding fraction of the time to the next onset.", low=0, above=True, high=1)
    velocity: int = setting(90, "Base MIDI velocity.", low=1, high=127)

    @model_validator(mode="after")
    def _midi_programs_and_onsets(self) -> Part:
        if not all(0 <= program <= 127 for program in self.programs):
            refuse(f"programs must be General MIDI programs 0-127, got {list(self.programs)}", ": ")
        if any(set(rhythm) - set("x.") for rhythm in self.rhythms):
            refuse("rhythms hold only 'x' (an onset) and '.' (none)", ": ")
        return self


def _drum_notes(pattern: dict) -> dict:
    """A drum pattern keyed by drum names -> keyed by General MIDI note, in the same order."""
    if not isinstance(pattern, dict):
        refuse(f"a drum pattern is a mapping of drum names to hits, got {quote_value(pattern)}", ": ")
    unknown = [name for name in pattern if name not in DRUM_NOTES]
    if unknown:
        refuse(f"unknown drum {quote_value(unknown[0])}; drums: {', '.join(DRUM_NOTES)}", ": ")
    return {DRUM_NOTES[name]: hits for name, hits in pattern.items()}


class Style(Settings):
    """A style: what it is called and captioned, its tempo range, modes, progressions, parts and drum patterns.
    drums and fill map General MIDI drum notes to one bar of hits; styles.yaml names the drums (DRUM_NOTES)."""

    name: str = setting(help="The style's name (the tag of its clips).", low=1)
    slug: str = setting(help="Its folder in the catalogue: lower-case letters and underscores.", low=1)
    captions: tuple[str, ...] = setting(help="Caption phrasings, one picked per clip.", low=1, max_items=64)
    tempo: tuple[int, int] = setting(help="Tempo range, quarter notes a minute; a clip draws its tempo in it.")
    modes: tuple[str, ...] = setting(help="Modes, one picked per clip.", low=1, max_items=len(SCALES))
    progressions: tuple[tuple[int, ...], ...] = setting(help="Chord progressions: 0-based scale degrees, one chord "
                                                        "a bar; one picked per clip.", low=1, max_items=64)
    parts: tuple[Part, ...] = setting(help="The pitched instruments.")
    drums: tuple[dict[int, str], ...] = setting((), "Drum patterns, one picked per clip: a General MIDI drum (by "
                                                "name) -> one bar of hits, four steps a beat ('X' accented, 'x', 'o' "
                                                "ghost, '.' none).")
    fill: dict[int, str] = setting({}, "A drum fill (by its name under `fills`) for the last bar of four.")
    swing: float = setting(0.5, "Where the off-beat 8th falls in the beat: 0.5 straight, 0.67 triplet.", low=0.5,
                           high=0.75)
    dominant: bool = setting(False, "Every chord a dominant seventh (the blues).")
    sevenths: bool = setting(False, "Every chord gets its scale seventh.")
    lead_scale: tuple[int, ...] | None = setting(None, "The lead's scale in semitones (default: the mode's).")
    meter: int = setting(4, "Quarter-note beats a bar: 4, or 3.")
    kit: str | int = setting(0, "The drum sound in catalogue version 2: acoustic (one of avldrums' recorded kits, "
                             "picked per clip), or a General MIDI drum kit of MuseScore General (KITS).")

    @field_validator("progressions", mode="before")
    @classmethod
    def _progressions_as_tuples(cls, progressions: list) -> tuple:
        return tuple(tuple(p) if isinstance(p, list) else p for p in progressions)

    @field_validator("drums", mode="before")
    @classmethod
    def _named_drum_patterns(cls, drums: list) -> list:
        return [_drum_notes(pattern) for pattern in drums]

    @field_validator("fill", mode="before")
    @classmethod
    def _named_fill(cls, fill: dict) -> dict:
        return _drum_notes(fill)

    @model_validator(mode="after")
    def _consistent(self) -> Style:
        if not re.fullmatch(r"[a-z_]+", self.slug):
            refuse(f"slug must be lower-case letters and underscores, got {quote_value(self.slug)}")
        if set(self.modes) - set(SCALES):
            refuse(f"modes must be among {', '.join(SCALES)}, got {list(self.modes)}")
        if self.meter not in METERS:
            refuse(f"meter must be {' or '.join(map(str, METERS))} beats a bar, got {quote_value(self.meter)}")
        if self.kit not in KITS:
            refuse(f"kit must be one of {', '.join(map(str, KITS))}, got {quote_value(self.kit)}")
        low, high = self.tempo
        if not 20 <= low < high <= 300:
            refuse(f"tempo must be a range low < high within 20-300, got {list(self.tempo)}")
        if any(not 0 <= degree < 7 for progression in self.progressions for degree in progression):
            refuse("progressions hold scale degrees 0-6")
        if not self.parts and not self.drums:
            refuse("a style needs parts or drums")
        drum_patterns = [hits for pattern in (*self.drums, self.fill) for hits in pattern.values()]
        if any(len(pattern) != 4 * self.meter for part in self.parts for pattern in part.rhythms) or \
                any(len(hits) != 4 * self.meter for hits in drum_patterns):
            refuse(f"every rhythm and drum pattern holds one bar of {self.meter}/4: {4 * self.meter} steps")
        if any(set(hits) - set(HIT_VELOCITY) - {"."} for hits in drum_patterns):
            refuse("drum patterns hold only 'X', 'x', 'o' (hits) and '.' (none)")
        return self


def load_styles(path: Path = STYLES_FILE) -> tuple[Style, ...]:
    """The style table in `path` (styles.yaml's layout), checked; raises SpectrodiffError naming the file, the style
    and what is wrong."""
    data, _ = load_yaml(path)
    fills = data.get("fills", {})
    styles = []
    for entry in data["styles"]:
        try:
            if "fill" in entry:
                if entry["fill"] not in fills:
                    raise SpectrodiffError(f"unknown fill {entry['fill']!r}; fills: {', '.join(fills)}")
                entry = {**entry, "fill": fills[entry["fill"]]}
            styles.append(Style.from_dict(entry))
        except SpectrodiffError as exc:
            raise SpectrodiffError(f"{path}: style {entry.get('name')!r}: {exc}") from None
    slugs = [style.slug for style in styles]
    shared = next((slug for slug in slugs if slugs.count(slug) > 1), None)
    if shared:
        raise SpectrodiffError(f"{path}: two styles share the slug {shared!r}")
    return tuple(styles)


STYLES = load_styles()


def style_by_name(style: str | Style) -> Style:
    """A style by its name or slug (or the style itself)."""
    if isinstance(style, Style):
        return style
    for entry in STYLES:
        if style in (entry.name, entry.slug):
            return entry
    raise SpectrodiffError(f"unknown style {style!r}; styles: {', '.join(s.name for s in STYLES)}")


# ---- harmony and timing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipFacts:
    """What a seed drew for one clip: tempo, key, progression, drum pattern, and a program per part."""

    tempo: float
    root: int
    mode: str
    progression: tuple[int, ...]
    drums: dict[int, str]
    programs: tuple[int, ...]
    beats: int = 4

    @property
    def labels(self) -> dict[str, str]:
        """The key and meter as the catalogue's labels spell them: "F dorian", "3/4"."""
        return {"key": f"{NOTE_NAMES[self.root]} {self.mode}", "meter": f"{self.beats}/4"}

    @property
    def bar_seconds(self) -> float:
        return self.beats * 60 / self.tempo


def draw_clip(style: Style, rng: np.random.Generator) -> ClipFacts:
    """Draw a clip's tempo, key, progression, drum pattern and instruments."""
    tempo = float(rng.integers(style.tempo[0], style.tempo[1] + 1))
    root = int(rng.integers(12))
    mode = style.modes[rng.integers(len(style.modes))]
    progression = style.progressions[rng.integers(len(style.progressions))]
    drums = style.drums[rng.integers(len(style.drums))] if style.drums else {}
    programs = tuple(int(part.programs[rng.integers(len(part.programs))]) for part in style.parts)
    return ClipFacts(tempo, root, mode, progression, drums, programs, style.meter)


def chord_pitches(style: Style, clip: ClipFacts, degree: int) -> list[int]:
    """Pitch classes (semitones above the key's root, may exceed 12) of the chord on a scale degree."""
    scale = SCALES[clip.mode]
    if style.dominant:
        base = scale[degree % 7]
        return [base, base + 4, base + 7, base + 10]
    steps = (0, 2, 4, 6) if style.sevenths else (0, 2, 4)
    return [scale[(degree + s) % 7] + 12 * ((degree + s) // 7) for s in steps]


def bar_chords(style: Style, clip: ClipFacts) -> list[tuple[int, ...]]:
    """The chord of each bar of the clip's progression (it repeats), as pitch classes 0-11, root first."""
    return [tuple(dict.fromkeys((clip.root + p) % 12 for p in chord_pitches(style, clip, degree)))
            for degree in clip.progression]


def step_time(step: int, clip: ClipFacts, swing: float) -> float:
    """Seconds from the bar's start to a 16th step, with the off-beat 8th moved to `swing` of the beat."""
    beat, sub = divmod(step, 4)
    position = (0.0, swing / 2, swing, swing + (1 - swing) / 2)[sub]
    return (beat + position) * clip.bar_seconds / clip.beats


def onsets(rhythm: str) -> list[int]:
    """The steps of a one-bar pattern (4 steps a beat) that hold a hit."""
    return [i for i, c in enumerate(rhythm) if c != "."]


def add_note(inst: pretty_midi.Instrument, pitch: int, velocity: int, start: float, end: float, limit: float) -> None:
    """Add a note, clipped to [0, limit] seconds and to the MIDI pitch and velocity ranges."""
    end = min(end, limit)
    if start >= limit or end - start < 0.02:
        return
    pitch = int(np.clip(pitch, 0, 127))
    inst.notes.append(pretty_midi.Note(int(np.clip(velocity, 1, 127)), pitch, max(start, 0.0), end))


# ---- parts ----------------------------------------------------------------------------------------------------


def bar_notes(part: Part, rhythm: str, clip: ClipFacts, swing: float) -> list[tuple[int, float, float]]:
    """(step, start, end) of each onset in one bar, relative to the bar's start, the end set by the gate."""
    steps = onsets(rhythm)
    times = [step_time(s, clip, swing) for s in steps] + [clip.bar_seconds]
    return [(s, times[i], times[i] + part.gate * (times[i + 1] - times[i])) for i, s in enumerate(steps)]


def play_part(part: Part, style: Style, clip: ClipFacts, program: int, rng: np.random.Generator,
              seconds: float) -> pretty_midi.Instrument:
    """Write one part for the whole clip, bar by bar, following the progression."""
    inst = pretty_midi.Instrument(program=program, name=part.role)
    base = 12 * (part.octave + 1) + clip.root
    melody = {"index": 3}  # the lead's position on its scale, carried from bar to bar
    for bar in range(math.ceil(seconds / clip.bar_seconds)):
        t0 = bar * clip.bar_seconds
        degree = clip.progression[bar % len(clip.progression)]
        following = clip.progression[(bar + 1) % len(clip.progression)]
        chord = chord_pitches(style, clip, degree)
        rhythm = part.rhythms[rng.integers(len(part.rhythms))]
        notes = bar_notes(part, rhythm, clip, style.swing)
        if part.role == "lead" and bar % 4 == 3 and rng.random() < 0.5:
            notes = notes[: max(1, len(notes) // 2)]  # phrases breathe
        pitches = part_pitches(part, style, clip, chord, following, len(notes), rng, melody)
        for (step, start, end), group in zip(notes, pitches, strict=True):
            accent = 10 if step % 4 == 0 else 0
            jitter = rng.uniform(-0.006, 0.006)
            for pitch in group:
                velocity = part.velocity + accent + int(rng.integers(-8, 9))
                add_note(inst, base + pitch, velocity, t0 + start + jitter, t0 + end, seconds)
    return inst


def part_pitches(part: Part, style: Style, clip: ClipFacts, chord: list[int], following: int, count: int,
                 rng: np.random.Generator, melody: dict) -> list[list[int]]:
    """The pitches (semitones above the part's base) of each of a bar's `count` onsets, by the part's role."""
    if part.role == "chords":
        return [chord] * count
    if part.role == "arp":
        return [[chord[i % len(chord)] + 12 * ((i // len(chord)) % 2)] for i in range(count)]
    if part.role == "bass":
        choices = [chord[0], chord[0] + 12, chord[2] if len(chord) > 2 else chord[0]]
        return [[chord[0]]] + [[choices[rng.integers(len(choices))]] for _ in range(count - 1)]
    if part.role == "walk":
        return [[p] for p in walking_line(style, clip, chord, following, count, rng)]
    return [[p] for p in melody_line(style, clip, chord, count, rng, melody)]


def walking_line(style: Style, clip: ClipFacts, chord: list[int], following: int, count: int,
                 rng: np.random.Generator) -> list[int]:
    """A walking bass bar: the root, chord tones, then a semitone approach to the next bar's root."""
    target = chord_pitches(style, clip, following)[0]
    line = [chord[0]] + [chord[rng.integers(1, len(chord))] for _ in range(max(count - 2, 0))]
    if count > 1:
        line.append(target + (1 if rng.random() < 0.5 else -1))
    return line[:count]


def melody_line(style: Style, clip: ClipFacts, chord: list[int], count: int, rng: np.random.Generator,
                melody: dict) -> list[int]:
    """A random-walk melody on the style's lead scale, pulled to a chord tone on each bar's first note."""
    scale = style.lead_scale or SCALES[clip.mode]
    span = 2 * len(scale)
    line = []
    for i in range(count):
        index = int(np.clip(melody["index"] + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 0, span - 1))
        pitch = scale[index % len(scale)] + 12 * (index // len(scale))
        if i == 0:
            pitch = min((c % 12 + 12 * o for c in chord for o in (0, 1)), key=lambda p, q=pitch: abs(p - q))
        melody["index"] = index
        line.append(pitch)
    return line


def play_drums(style: Style, clip: ClipFacts, rng: np.random.Generator, seconds: float) -> pretty_midi.Instrument:
    """The drum kit for the whole clip: the clip's pattern, a fill every fourth bar, a crash after each fill."""
    inst = pretty_midi.Instrument(program=0, is_drum=True, name="drums")
    for bar in range(math.ceil(seconds / clip.bar_seconds)):
        t0 = bar * clip.bar_seconds
        fill = style.fill and bar % 4 == 3 and rng.random() < 0.7
        pattern = {**clip.drums, **style.fill} if fill else clip.drums
        if fill:
            pattern = {note: hits for note, hits in pattern.items() if note not in (HAT, RIDE, OPEN_HAT, CRASH)}
        if style.fill and bar % 4 == 0 and bar > 0:
            pattern = {**pattern, CRASH: "X..............."}
        for note, hits in pattern.items():
            for step in onsets(hits):
                velocity = HIT_VELOCITY.get(hits[step], 90) + int(rng.integers(-6, 7))
                start = t0 + step_time(step, clip, style.swing) + rng.uniform(-0.004, 0.004)
                add_note(inst, note, velocity, start, start + 0.12, seconds)
    return inst


# ---- a clip ---------------------------------------------------------------------------------------------------


def style_rng(style: Style, seed: int) -> np.random.Generator:
    """The random generator of one clip: from the seed and the style's place in STYLES."""
    return np.random.default_rng([seed, STYLES.index(style) if style in STYLES else len(STYLES)])


def style_parts(style: str | Style, seed: int, seconds: float) -> list[pretty_midi.Instrument]:
    """The instruments of a `seconds`-long piece in `style` (name, slug or Style), drawn entirely from `seed`:
    one per part, then the drums (when the style has any), each instrument's `name` its role."""
    style = style_by_name(style)
    rng = style_rng(style, seed)
    clip = draw_clip(style, rng)
    parts = [play_part(part, style, clip, program, rng, seconds)
             for part, program in zip(style.parts, clip.programs, strict=True)]
    return parts + ([play_drums(style, clip, rng, seconds)] if clip.drums else [])


def style_midi(style: str | Style, seed: int, seconds: float) -> pretty_midi.PrettyMIDI:
    """A `seconds`-long piece in `style` (name, slug or Style), drawn entirely from `seed`."""
    clip = clip_facts(style, seed)
    midi = pretty_midi.PrettyMIDI(initial_tempo=clip.tempo)
    if clip.beats != 4:
        midi.time_signature_changes.append(pretty_midi.TimeSignature(clip.beats, 4, 0.0))
    midi.instruments += style_parts(style, seed, seconds)
    return midi


def clip_facts(style: str | Style, seed: int) -> ClipFacts:
    """The tempo, key, progression and programs that `style_midi(style, seed, ...)` uses."""
    style = style_by_name(style)
    return draw_clip(style, style_rng(style, seed))
