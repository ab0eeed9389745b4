"""The reference catalogue: music written as MIDI in code, rendered with General MIDI synthesisers.

Eight styles (STYLES), each with its instruments, tempo range, modes, chord progressions, rhythm and drum patterns
and several caption phrasings. Every clip draws its tempo, key, progression, patterns and instruments from a seed,
so a catalogue is a pure function of (minutes, seed, renderer, clip length). Layout:

    OUT/<style-slug>/<style-slug>_<n>.wav    44.1 kHz, 16-bit stereo, peak-normalised
    OUT/<style-slug>/<style-slug>_<n>.txt    its caption (what `spectrodiff.training.prepare` reads)
    OUT/catalogue.json                       seed, renderer, sound bank, and per file: style, tempo, key, meter,
                                             duration (clips start on a downbeat)

Renderers (Debian packages): `fluidsynth` with the FluidR3 GM soundfont (fluidsynth, fluid-soundfont-gm), the
training material; `timidity` with freepats (timidity, freepats), different samples, the held-out material. Every
GM program and drum note used here exists in freepats, so a timidity render is freepats throughout.

    python -m spectrodiff.training.catalogue OUT [--minutes 30] [--seed 0] [--renderer fluidsynth|timidity]
        [--clip-seconds 20]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile

from spectrodiff.errors import SpectrodiffError

SAMPLE_RATE = 44100
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
FREEPATS_CFG = Path("/etc/timidity/freepats.cfg")
RENDERERS = ("fluidsynth", "timidity")
APT_PACKAGES = {"fluidsynth": "fluidsynth fluid-soundfont-gm", "timidity": "timidity freepats"}
PEAK = 10 ** (-1 / 20)  # clips are normalised to a -1 dBFS peak
FADE_SECONDS = 0.05
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}
BLUES_SCALE = (0, 3, 5, 6, 7, 10)
# Drum pattern letters: velocity of a hit on that 16th step ('.' is no hit).
HIT_VELOCITY = {"X": 118, "x": 92, "o": 52}
KICK, SNARE, CLAP, HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE, TAMBOURINE, SHAKER = 36, 38, 39, 42, 44, 46, 49, 51, 54, 82
LOW_TOM, MID_TOM, HIGH_TOM = 41, 45, 48


# ---- the style table ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One pitched instrument of a style.

    role: "chords" (all chord tones at each onset), "arp" (chord tones in turn), "bass" (root, fifth, octave),
    "walk" (a walking bass line) or "lead" (a melody). programs: GM programs, one picked per clip. octave: MIDI
    octave of the part's lowest notes (4 = middle C). rhythms: 16-step patterns of one bar ('x' onset, '.' not),
    one picked per bar. gate: sounding fraction of the time to the next onset. velocity: base MIDI velocity.
    """

    role: str
    programs: tuple[int, ...]
    octave: int
    rhythms: tuple[str, ...]
    gate: float = 0.9
    velocity: int = 90


@dataclass(frozen=True)
class Style:
    """A style: what it is called and captioned, its tempo range, modes, progressions, parts and drum patterns.

    progressions hold 0-based scale degrees, one chord per bar. dominant: every chord is a dominant seventh (blues).
    sevenths: chords get their scale seventh. swing: where the off-beat 8th falls within the beat (0.5 straight,
    0.67 triplet). drums: patterns of GM drum note -> 16-step hit string (see HIT_VELOCITY), one picked per clip;
    fill: a last-bar-of-four drum fill.
    """

    name: str
    slug: str
    captions: tuple[str, ...]
    tempo: tuple[int, int]
    modes: tuple[str, ...]
    progressions: tuple[tuple[int, ...], ...]
    parts: tuple[Part, ...]
    drums: tuple[dict[int, str], ...] = ()
    fill: dict[int, str] = field(default_factory=dict)
    swing: float = 0.5
    dominant: bool = False
    sevenths: bool = False
    lead_scale: tuple[int, ...] | None = None


ROCK_FILL = {SNARE: "....x.x.xxx.....", HIGH_TOM: "........xx......", MID_TOM: "..........xx....",
             LOW_TOM: "............xxxx", KICK: "x.......x......."}

STYLES: tuple[Style, ...] = (
    Style(
        name="jazzy saxophone", slug="jazzy_saxophone",
        captions=("jazzy saxophone solo over walking bass", "smooth jazz sax with piano and brushes",
                  "a saxophone improvising in a late night jazz club", "swinging jazz saxophone quartet",
                  "mellow jazz sax, upright bass and ride cymbal"),
        tempo=(96, 160), modes=("dorian", "major"), sevenths=True, swing=0.64,
        progressions=((1, 4, 0, 0), (1, 4, 0, 5), (0, 5, 1, 4), (2, 5, 1, 4)),
        parts=(
            Part("lead", (65, 66), 4, ("x.x.x.x.x...x.x.", "x...x.x.x.x.x...", "..x.x.x.x.x.x.x.", "x.....x.x.x.x..."),
                 gate=0.85, velocity=96),
            Part("chords", (0, 4), 4, ("...x......x.....", "......x.....x...", "x.......x.x....."), gate=0.5,
                 velocity=62),
            Part("walk", (32,), 2, ("x...x...x...x...",), gate=0.9, velocity=92),
        ),
        drums=({RIDE: "x...x.x.x...x.x.", PEDAL_HAT: "....x.......x...", KICK: "x..............."},
               {RIDE: "x...x.x.x...x.x.", PEDAL_HAT: "....x.......x...", SNARE: "..........o....o"}),
    ),
    Style(
        name="funky piano", slug="funky_piano",
        captions=("funky piano groove with slap bass", "syncopated funk keys and tight drums",
                  "a funky electric piano riff over a groovy beat", "upbeat funk with syncopated keyboard stabs",
                  "groovy seventies funk piano jam"),
        tempo=(92, 116), modes=("dorian", "minor", "mixolydian"), sevenths=True,
        progressions=((0, 3), (0, 0, 3, 3), (0, 6, 5, 4), (0, 3, 0, 4)),
        parts=(
            Part("chords", (0, 4, 7), 4,
                 ("x..x..x...x..x..", ".x.x..x.x..x.x..", "x.x...x.x..xx...", "..x..x...x.x..x."),
                 gate=0.45, velocity=94),
            Part("lead", (0, 4), 5, ("x.xx..x.....x.x.", "......x.x.xx.x..", "x...x..x..x....."), gate=0.6,
                 velocity=86),
            Part("bass", (36, 37, 33), 2, ("x..x..x.x.x..x..", "x.....xx..x.x...", "x..x...x.xx...x."), gate=0.55,
                 velocity=104),
        ),
        drums=({KICK: "X..x..x...x..x..", SNARE: "....X..o.o..X...", HAT: "xoxoxoxoxoxoxoxo"},
               {KICK: "X.x....x..x.....", SNARE: "....X.o.....X..o", HAT: "x.x.x.x.x.x.x.x.",
                OPEN_HAT: "..............x."}),
        fill=ROCK_FILL,
    ),
    Style(
        name="church organ and bells", slug="church_organ_and_bells",
        captions=("church organ chords with ringing bells", "a solemn pipe organ hymn and tubular bells",
                  "cathedral organ and church bells", "sacred organ music with chimes",
                  "slow majestic church organ and bells"),
        tempo=(56, 84), modes=("major", "minor"),
        progressions=((0, 3, 4, 0), (0, 5, 3, 4), (0, 4, 5, 3), (0, 3, 0, 4)),
        parts=(
            Part("chords", (19,), 3, ("x.......x.......", "x..............."), gate=0.98, velocity=84),
            Part("bass", (19,), 2, ("x...............", "x.......x......."), gate=0.98, velocity=78),
            Part("arp", (14,), 5, ("x...x...x...x...", "x.......x.......", "x...........x..."), gate=1.0,
                 velocity=92),
        ),
    ),
    Style(
        name="electronic beats", slug="electronic_beats",
        captions=("electronic dance beat with synth bass", "four on the floor techno groove",
                  "energetic electronic music with a pulsing synth", "club house beat with claps and hi-hats",
                  "driving electronic beats and arpeggiated synth"),
        tempo=(118, 134), modes=("minor", "dorian"),
        progressions=((0, 0, 5, 6), (0, 5, 2, 6), (0, 3, 0, 4), (0, 0, 0, 0)),
        parts=(
            Part("bass", (38,), 2, ("x.xxx.xxx.xxx.xx", "..x...x...x...x.", "x..x..x..x..x.x."), gate=0.5,
                 velocity=104),
            Part("arp", (80, 84), 5, ("xxxxxxxxxxxxxxxx", "x.xxx.xxx.xxx.xx", "x.x.x.x.x.x.x.x."), gate=0.55,
                 velocity=74),
            Part("chords", (88, 95), 4, ("x...............",), gate=1.0, velocity=58),
        ),
        drums=({KICK: "X...X...X...X...", CLAP: "....x.......x...", HAT: "..x...x...x...x.",
                OPEN_HAT: "......x......x.."},
               {KICK: "X...X...X...X...", CLAP: "....x.......x...", HAT: "xxxxxxxxxxxxxxxx"},
               {KICK: "X...X...X...X..x", SNARE: "....x.......x...", HAT: "x.xxx.xxx.xxx.xx",
                SHAKER: "x.x.x.x.x.x.x.x."}),
    ),
    Style(
        name="blues guitar", slug="blues_guitar",
        captions=("electric blues guitar solo with a shuffle rhythm", "a twelve bar blues with bluesy guitar licks",
                  "gritty blues guitar over bass and drums", "slow blues with an overdriven guitar",
                  "Chicago style blues guitar shuffle"),
        tempo=(68, 112), modes=("mixolydian",), dominant=True, swing=0.66, lead_scale=BLUES_SCALE,
        progressions=((0, 0, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4), (0, 3, 0, 0, 3, 3, 0, 0, 4, 3, 0, 4)),
        parts=(
            Part("lead", (29, 27, 30), 4,
                 ("x.x.x...x.x.x...", "..x.x.x.x.......", "x...x.x.....x.x.", "x.....x.x.x.x.x."),
                 gate=0.85, velocity=98),
            Part("chords", (16, 26), 3, ("x.x.x.x.x.x.x.x.", "x.......x......."), gate=0.6, velocity=58),
            Part("walk", (33, 34), 2, ("x...x...x...x...",), gate=0.85, velocity=94),
        ),
        drums=({KICK: "x.......x.....x.", SNARE: "....x.......x...", HAT: "x.x.x.x.x.x.x.x."},
               {KICK: "x.....x.x.......", SNARE: "....x.......x..o", RIDE: "x.x.x.x.x.x.x.x."}),
        fill=ROCK_FILL,
    ),
    Style(
        name="string ensemble", slug="string_ensemble",
        captions=("lush string ensemble playing a slow melody", "orchestral strings with cello and violin",
                  "a cinematic string orchestra", "romantic classical strings",
                  "warm string quartet harmony"),
        tempo=(64, 108), modes=("major", "minor"),
        progressions=((0, 5, 3, 4), (0, 4, 5, 2, 3, 0, 3, 4), (5, 3, 0, 4), (0, 3, 4, 0)),
        parts=(
            Part("chords", (48, 44), 4, ("x...............", "x.......x......."), gate=0.98, velocity=72),
            Part("lead", (40,), 5, ("x.......x.......", "x...x...x.......", "x.....x.x...x...", "x..............."),
                 gate=0.97, velocity=84),
            Part("bass", (42,), 2, ("x.......x.......", "x..............."), gate=0.97, velocity=80),
        ),
    ),
    Style(
        name="acoustic drums", slug="acoustic_drums",
        captions=("acoustic drum kit groove", "a live drummer playing a rock beat",
                  "solo drums with toms and cymbals", "punchy acoustic drums, kick snare and hi-hat",
                  "energetic drum kit performance"),
        tempo=(80, 150), modes=("major",), progressions=((0,),),
        parts=(),
        drums=({KICK: "X.....x.X.......", SNARE: "....X.......X...", HAT: "x.x.x.x.x.x.x.x.",
                CRASH: "X..............."},
               {KICK: "X..x..x...x.....", SNARE: "....X..o.o..X..o", HAT: "xxxxxxxxxxxxxxxx"},
               {KICK: "X.......X.x.....", SNARE: "....X.......X...", RIDE: "x.x.x.x.x.x.x.x.",
                PEDAL_HAT: "....x.......x..."},
               {KICK: "X.x...x.X.x.....", SNARE: "....X.......X...", HAT: "x.xxx.xxx.xxx.xx",
                TAMBOURINE: "....x.......x..."}),
        fill=ROCK_FILL,
    ),
    Style(
        name="ambient pad", slug="ambient_pad",
        captions=("ambient synth pad, slow and dreamy", "atmospheric pad drone with soft textures",
                  "calm ambient soundscape", "ethereal evolving synth pads",
                  "relaxing ambient music with shimmering pads"),
        tempo=(56, 76), modes=("major", "minor", "dorian"),
        progressions=((0, 0, 5, 5), (0, 3), (0, 5, 3, 3), (0, 2)),
        parts=(
            Part("chords", (94, 95, 88), 3, ("x...............",), gate=1.0, velocity=80),
            Part("arp", (98, 88), 5, ("x...............", "........x.......", "x.......x......."), gate=1.0,
                 velocity=54),
            Part("bass", (94, 95), 2, ("x...............",), gate=1.0, velocity=64),
        ),
    ),
)


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
class Clip:
    """What a seed drew for one clip: tempo, key, progression, drum pattern, and a program per part."""

    tempo: float
    root: int
    mode: str
    progression: tuple[int, ...]
    drums: dict[int, str]
    programs: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"{NOTE_NAMES[self.root]} {self.mode}"

    @property
    def bar_seconds(self) -> float:
        return 4 * 60 / self.tempo


def draw_clip(style: Style, rng: np.random.Generator) -> Clip:
    """Draw a clip's tempo, key, progression, drum pattern and instruments."""
    tempo = float(rng.integers(style.tempo[0], style.tempo[1] + 1))
    root = int(rng.integers(12))
    mode = style.modes[rng.integers(len(style.modes))]
    progression = style.progressions[rng.integers(len(style.progressions))]
    drums = style.drums[rng.integers(len(style.drums))] if style.drums else {}
    programs = tuple(int(part.programs[rng.integers(len(part.programs))]) for part in style.parts)
    return Clip(tempo, root, mode, progression, drums, programs)


def chord_pitches(style: Style, clip: Clip, degree: int) -> list[int]:
    """Pitch classes (semitones above the key's root, may exceed 12) of the chord on a scale degree."""
    scale = SCALES[clip.mode]
    if style.dominant:
        base = scale[degree % 7]
        return [base, base + 4, base + 7, base + 10]
    steps = (0, 2, 4, 6) if style.sevenths else (0, 2, 4)
    return [scale[(degree + s) % 7] + 12 * ((degree + s) // 7) for s in steps]


def step_time(step: int, clip: Clip, swing: float) -> float:
    """Seconds from the bar's start to a 16th step, with the off-beat 8th moved to `swing` of the beat."""
    beat, sub = divmod(step, 4)
    position = (0.0, swing / 2, swing, swing + (1 - swing) / 2)[sub]
    return (beat + position) * clip.bar_seconds / 4


def onsets(rhythm: str) -> list[int]:
    """The steps of a 16-step pattern that hold a hit."""
    return [i for i, c in enumerate(rhythm) if c != "."]


def add_note(inst: pretty_midi.Instrument, pitch: int, velocity: int, start: float, end: float, limit: float) -> None:
    """Add a note, clipped to [0, limit] seconds and to the MIDI pitch and velocity ranges."""
    end = min(end, limit)
    if start >= limit or end - start < 0.02:
        return
    pitch = int(np.clip(pitch, 0, 127))
    inst.notes.append(pretty_midi.Note(int(np.clip(velocity, 1, 127)), pitch, max(start, 0.0), end))


# ---- parts ----------------------------------------------------------------------------------------------------


def bar_notes(part: Part, rhythm: str, clip: Clip, swing: float) -> list[tuple[int, float, float]]:
    """(step, start, end) of each onset in one bar, relative to the bar's start, the end set by the gate."""
    steps = onsets(rhythm)
    times = [step_time(s, clip, swing) for s in steps] + [clip.bar_seconds]
    return [(s, times[i], times[i] + part.gate * (times[i + 1] - times[i])) for i, s in enumerate(steps)]


def play_part(part: Part, style: Style, clip: Clip, program: int, rng: np.random.Generator,
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


def part_pitches(part: Part, style: Style, clip: Clip, chord: list[int], following: int, count: int,
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


def walking_line(style: Style, clip: Clip, chord: list[int], following: int, count: int,
                 rng: np.random.Generator) -> list[int]:
    """A walking bass bar: the root, chord tones, then a semitone approach to the next bar's root."""
    target = chord_pitches(style, clip, following)[0]
    line = [chord[0]] + [chord[rng.integers(1, len(chord))] for _ in range(max(count - 2, 0))]
    if count > 1:
        line.append(target + (1 if rng.random() < 0.5 else -1))
    return line[:count]


def melody_line(style: Style, clip: Clip, chord: list[int], count: int, rng: np.random.Generator,
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


def play_drums(style: Style, clip: Clip, rng: np.random.Generator, seconds: float) -> pretty_midi.Instrument:
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


def style_rng(style: Style, seed: int) -> np.random.Generator:
    """The random generator of one clip: from the seed and the style's place in STYLES."""
    return np.random.default_rng([seed, STYLES.index(style) if style in STYLES else len(STYLES)])


def style_midi(style: str | Style, seed: int, seconds: float) -> pretty_midi.PrettyMIDI:
    """A `seconds`-long piece in `style` (name, slug or Style), drawn entirely from `seed`."""
    style = style_by_name(style)
    rng = style_rng(style, seed)
    clip = draw_clip(style, rng)
    midi = pretty_midi.PrettyMIDI(initial_tempo=clip.tempo)
    for part, program in zip(style.parts, clip.programs, strict=True):
        midi.instruments.append(play_part(part, style, clip, program, rng, seconds))
    if clip.drums:
        midi.instruments.append(play_drums(style, clip, rng, seconds))
    return midi


def clip_facts(style: str | Style, seed: int) -> Clip:
    """The tempo, key, progression and programs that `style_midi(style, seed, ...)` uses."""
    style = style_by_name(style)
    return draw_clip(style, style_rng(style, seed))


def caption(style: str | Style, seed: int) -> str:
    """One of the style's caption phrasings, picked by the seed."""
    style = style_by_name(style)
    return style.captions[np.random.default_rng([seed, 7]).integers(len(style.captions))]


# ---- rendering ------------------------------------------------------------------------------------------------


def sound_bank(renderer: str) -> Path:
    """The soundfont (fluidsynth) or patch config (timidity) a renderer uses."""
    if renderer not in RENDERERS:
        raise SpectrodiffError(f"unknown renderer {renderer!r}; choose one of {', '.join(RENDERERS)}")
    return SOUNDFONT if renderer == "fluidsynth" else FREEPATS_CFG


def check_renderer(renderer: str) -> Path:
    """Raise SpectrodiffError naming the apt packages when the renderer or its sound bank is missing."""
    bank = sound_bank(renderer)
    if shutil.which(renderer) is None or not bank.is_file():
        missing = renderer if shutil.which(renderer) is None else str(bank)
        raise SpectrodiffError(f"{missing} not found: the {renderer} renderer needs the Debian packages "
                               f"{APT_PACKAGES[renderer]} (sudo apt-get install {APT_PACKAGES[renderer]}, "
                               "or `make system-deps`)")
    return bank


def synth_command(renderer: str, midi_path: Path, wav_path: Path) -> list[str]:
    """The command line that renders a MIDI file to a 44.1 kHz 16-bit stereo WAV."""
    bank = check_renderer(renderer)
    if renderer == "fluidsynth":
        return ["fluidsynth", "-ni", "-q", "-F", str(wav_path), "-r", str(SAMPLE_RATE), "-g", "0.7", str(bank),
                str(midi_path)]
    return ["timidity", "-c", str(bank), "-Ow", "-s", str(SAMPLE_RATE), "-o", str(wav_path), str(midi_path)]


def finish(audio: np.ndarray, seconds: float) -> np.ndarray:
    """Cut or pad `(N, C)` audio to `seconds`, fade its last 50 ms, normalise its peak to -1 dBFS."""
    frames = round(seconds * SAMPLE_RATE)
    audio = np.pad(audio[:frames], ((0, max(0, frames - len(audio))), (0, 0)))
    fade = min(round(FADE_SECONDS * SAMPLE_RATE), frames)
    audio[frames - fade:] *= np.linspace(1, 0, fade)[:, None]
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return audio * (PEAK / peak) if peak > 0 else audio


def render(midi: pretty_midi.PrettyMIDI, path: Path, renderer: str = "fluidsynth",
           seconds: float | None = None) -> Path:
    """Render `midi` to `path` (44.1 kHz 16-bit WAV) with fluidsynth or timidity; `seconds` (default: the MIDI's
    end) sets the exact length. Raises SpectrodiffError when the renderer is missing or fails."""
    path = Path(path)
    seconds = midi.get_end_time() if seconds is None else seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="catalogue-") as tmp:
        midi_path, wav_path = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        midi.write(str(midi_path))
        command = synth_command(renderer, midi_path, wav_path)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not wav_path.is_file():
            raise SpectrodiffError(f"{renderer} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
        audio, rate = soundfile.read(wav_path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise SpectrodiffError(f"{renderer} wrote {rate} Hz audio, expected {SAMPLE_RATE}")
    soundfile.write(path, finish(audio, seconds), SAMPLE_RATE, subtype="PCM_16")
    return path


# ---- the catalogue --------------------------------------------------------------------------------------------


def clip_seed(seed: int, index: int) -> int:
    """The seed of the catalogue's `index`-th clip."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def plan(minutes: float, seed: int, clip_seconds: float) -> list[dict]:
    """The clips of a catalogue: the styles in turn, `clip_seconds` each (the last one shorter), `minutes` in all."""
    total = minutes * 60
    count = math.ceil(total / clip_seconds - 1e-9)
    clips = []
    for index in range(count):
        style = STYLES[index % len(STYLES)]
        number = index // len(STYLES)
        seconds = round(min(clip_seconds, total - index * clip_seconds), 3)
        clips.append({"file": f"{style.slug}/{style.slug}_{number:03d}.wav", "style": style.name,
                      "seed": clip_seed(seed, index), "seconds": seconds})
    return clips


def build_clip(out: Path, entry: dict, renderer: str) -> dict:
    """Write one clip's WAV and caption; returns its catalogue.json record."""
    facts = clip_facts(entry["style"], entry["seed"])
    midi = style_midi(entry["style"], entry["seed"], entry["seconds"])
    path = render(midi, out / entry["file"], renderer, entry["seconds"])
    text = caption(entry["style"], entry["seed"])
    path.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    return {"file": entry["file"], "style": entry["style"], "caption": text, "seed": entry["seed"],
            "tempo": facts.tempo, "key": facts.key, "meter": "4/4", "programs": list(facts.programs),
            "duration": soundfile.info(path).duration}


def build_catalogue(out: Path, minutes: float = 30, seed: int = 0, renderer: str = "fluidsynth",
                    clip_seconds: float = 20, workers: int | None = None) -> dict:
    """Render the catalogue into `out` (layout in the module docstring); returns what catalogue.json holds.

    Clips are rendered `workers` at a time (default: one per CPU core); the result depends only on the arguments.
    """
    if minutes <= 0 or clip_seconds < 1:
        raise SpectrodiffError(f"--minutes must be positive and --clip-seconds at least 1 "
                               f"(got {minutes:g} and {clip_seconds:g})")
    out = Path(out)
    bank = check_renderer(renderer)
    out.mkdir(parents=True, exist_ok=True)
    clips = plan(minutes, seed, clip_seconds)
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        files = list(pool.map(lambda entry: build_clip(out, entry, renderer), clips))
    catalogue = {"seed": seed, "renderer": renderer, "soundfont": str(bank), "minutes": minutes,
                 "clip_seconds": clip_seconds, "sample_rate": SAMPLE_RATE,
                 "styles": {s.name: {"slug": s.slug, "captions": list(s.captions)} for s in STYLES}, "files": files}
    (out / "catalogue.json").write_text(json.dumps(catalogue, indent=1) + "\n", encoding="utf-8")
    return catalogue


def main(argv: list[str] | None = None) -> int:
    """`python -m spectrodiff.training.catalogue OUT [--minutes 30] [--seed 0] [--renderer ...]
    [--clip-seconds 20]`."""
    parser = argparse.ArgumentParser(prog="python -m spectrodiff.training.catalogue",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the catalogue into")
    parser.add_argument("--minutes", type=float, default=30, help="total audio, in minutes (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every musical choice (default 0)")
    parser.add_argument("--renderer", choices=RENDERERS, default="fluidsynth",
                        help="fluidsynth + FluidR3 GM (training) or timidity + freepats (held out)")
    parser.add_argument("--clip-seconds", type=float, default=20, help="length of each clip (default 20)")
    parser.add_argument("--workers", type=int, default=None, help="clips rendered at once (default: CPU cores)")
    args = parser.parse_args(argv)
    try:
        catalogue = build_catalogue(args.out, args.minutes, args.seed, args.renderer, args.clip_seconds,
                                    args.workers)
    except SpectrodiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    seconds = sum(f["duration"] for f in catalogue["files"])
    print(f"{len(catalogue['files'])} clips, {seconds / 60:.1f} minutes, in {args.out} ({args.renderer})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
