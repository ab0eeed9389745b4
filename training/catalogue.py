"""The reference catalogue: music written as MIDI in code, rendered with General MIDI synthesisers.

29 styles (STYLES), each with its instruments, tempo range, meter, modes, chord progressions, rhythm and drum
patterns, drum kit and five caption phrasings. Every clip draws its tempo, key, progression, patterns and
instruments from a seed, so a catalogue is a pure function of (minutes, seed, renderer, clip length, version).
Layout:

    OUT/<style-slug>/<style-slug>_<n>.wav    44.1 kHz, 16-bit stereo, peak -1 dBFS: the mix
    OUT/<style-slug>/<style-slug>_<n>.txt    its caption (what `spectrodiff.training.prepare` reads)
    OUT/.stems/<style-slug>/<style-slug>_<n>/<part>.flac   each part alone (version 2): the mix is their sum
    OUT/catalogue.json                       version, seed, renderer, sound banks, the styles, and per file: style,
                                             caption, tempo, key, meter, bar length, instruments, stems, duration
                                             (clips start on a downbeat)

Renderers (Debian packages): `fluidsynth` with MuseScore General (musescore-general-soundfont) and avldrums'
recorded acoustic kits (avldrums.lv2-soundfont), the training material; `timidity` with freepats (timidity,
freepats), different samples, the held-out material. Every GM program and drum note used here exists in freepats,
so a timidity render is freepats throughout. Version 1 is the first eight styles rendered whole with FluidR3 GM
(fluid-soundfont-gm), what mini's first training stages used.

    python -m spectrodiff.training.catalogue OUT [--minutes 120] [--seed 0] [--renderer fluidsynth|timidity]
        [--clip-seconds 20] [--version 2]
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
from spectrodiff.generation.musical import NOTE_NAMES

SAMPLE_RATE = 44100
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # version 1
MUSESCORE_SOUNDFONT = Path("/usr/share/sounds/sf3/MuseScore_General_Full.sf3")
ACOUSTIC_KITS = tuple(Path(f"/usr/share/sounds/sf2/{kit}_4_LV2.sf2") for kit in ("Black_Pearl", "Red_Zeppelin"))
FREEPATS_CFG = Path("/etc/timidity/freepats.cfg")
RENDERERS = ("fluidsynth", "timidity")
APT_PACKAGES = {"fluidsynth": "fluidsynth fluid-soundfont-gm musescore-general-soundfont avldrums.lv2-soundfont",
                "timidity": "timidity freepats"}
VERSIONS = (1, 2)
VERSION_ONE_STYLES = 8  # catalogue version 1 is the first eight styles of STYLES, in this order
STEMS = ".stems"  # hidden, so tools that read the catalogue's audio (prepare, train-vocoder) see only the mixes
GAP_SECONDS = 4.0
PEAK = 10 ** (-1 / 20)  # clips are normalised to a -1 dBFS peak
FADE_SECONDS = 0.05
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
}
BLUES_SCALE = (0, 3, 5, 6, 7, 10)
# Drum pattern letters: velocity of a hit on that 16th step ('.' is no hit).
HIT_VELOCITY = {"X": 118, "x": 92, "o": 52}
KICK, SNARE, CLAP, HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE, TAMBOURINE, SHAKER = 36, 38, 39, 42, 44, 46, 49, 51, 54, 82
LOW_TOM, MID_TOM, HIGH_TOM = 41, 45, 48
SIDE_STICK, COWBELL, LOW_CONGA, CLAVES = 37, 56, 64, 75


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
    0.67 triplet). drums: patterns of GM drum note -> hit string of one bar (see HIT_VELOCITY), one picked per
    clip; fill: a last-bar-of-four drum fill. meter: quarter-note beats in a bar (3 or 4; patterns hold 4 steps a
    beat). kit: the drum sound in catalogue v2, "acoustic" (one of avldrums' two recorded kits, picked per clip) or
    a General MIDI drum kit program of the MuseScore soundfont (0 standard, 24 electronic, 25 TR-808, 32 jazz,
    40 brush).
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
    meter: int = 4
    kit: str | int = 0


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
    # ---- catalogue v2: the styles after the first eight ----
    Style(
        name="lo-fi hip hop", slug="lofi_hip_hop",
        captions=("lo-fi hip hop beat with dusty keys", "chill lofi beats to study to",
                  "mellow lo-fi hip hop with a lazy swing", "jazzy lofi chords over a boom bap beat",
                  "relaxed lo-fi beat with electric piano and soft drums"),
        tempo=(70, 90), modes=("dorian", "minor"), sevenths=True, swing=0.6, kit="acoustic",
        progressions=((1, 4, 0, 0), (0, 3), (5, 4, 0, 0), (3, 2, 1, 0)),
        parts=(
            Part("chords", (4, 5), 4, ("x.......x.......", "x.....x.........", "x..........x...."), gate=0.9,
                 velocity=70),
            Part("bass", (33, 32), 2, ("x.......x..x....", "x......x..x.....", "x.........x....."), gate=0.7,
                 velocity=92),
            Part("lead", (13, 9), 5, ("x.....x.........", "....x.....x.....", "........x..x...."), gate=0.8,
                 velocity=60),
        ),
        drums=({KICK: "X......x..X.....", SNARE: "....X.......X...", HAT: "x.x.x.x.x.x.x.x."},
               {KICK: "X.........X..x..", SNARE: "....X.......X...", HAT: "x.xxx.x.x.xxx.x."}),
    ),
    Style(
        name="house", slug="house",
        captions=("deep house groove with piano stabs", "classic house music, four to the floor",
                  "soulful house beat with offbeat hi-hats", "a chicago house track with a rolling bassline",
                  "uplifting house piano and claps"),
        tempo=(120, 128), modes=("minor", "major"), sevenths=True, kit=25,
        progressions=((0, 5, 3, 4), (0, 3), (5, 3, 0, 4), (1, 4, 0, 0)),
        parts=(
            Part("chords", (0, 1), 4, ("..x...x...x...x.", "x..x..x...x..x..", "..x..x....x..x.."), gate=0.4,
                 velocity=90),
            Part("bass", (38, 36), 2, ("..x...x...x...x.", "..xx..x...xx..x."), gate=0.45, velocity=100),
        ),
        drums=({KICK: "X...X...X...X...", CLAP: "....x.......x...", OPEN_HAT: "..x...x...x...x.",
                HAT: "x.x.x.x.x.x.x.x."},
               {KICK: "X...X...X...X...", CLAP: "....x.......x...", OPEN_HAT: "..x...x...x...x.",
                SHAKER: "xxxxxxxxxxxxxxxx"}),
    ),
    Style(
        name="techno", slug="techno",
        captions=("dark driving techno with a pounding kick", "hypnotic berlin techno loop",
                  "minimal techno with a rolling synth bass", "industrial warehouse techno",
                  "relentless techno beat with sixteenth hi-hats"),
        tempo=(128, 140), modes=("minor",), kit=24,
        progressions=((0, 0, 0, 0), (0, 0, 5, 0), (0, 1)),
        parts=(
            Part("bass", (38,), 1, ("x.xx.xx.x.xx.xx.", ".xx.xx.xx.xx.xx.", "xxxxxxxxxxxxxxxx"), gate=0.4,
                 velocity=106),
            Part("arp", (80, 84), 4, ("x..x..x..x..x...", "x.x..x.x..x.x..x"), gate=0.3, velocity=70),
        ),
        drums=({KICK: "X...X...X...X...", HAT: "xxxxxxxxxxxxxxxx", OPEN_HAT: "..x...x...x...x.",
                CLAP: "....x.......x..."},
               {KICK: "X...X...X...X...", RIDE: "..x...x...x...x.", HAT: "x.xxx.xxx.xxx.xx"}),
    ),
    Style(
        name="drum and bass", slug="drum_and_bass",
        captions=("fast drum and bass breakbeat with a deep bassline", "liquid drum and bass with pads",
                  "jungle breaks and rolling sub bass", "energetic dnb at 174 bpm",
                  "drum n bass with chopped breakbeats"),
        tempo=(165, 178), modes=("minor", "dorian"), kit="acoustic",
        progressions=((0, 0, 5, 6), (0, 5), (0, 3, 5, 4)),
        parts=(
            Part("bass", (38, 35), 1, ("x.........x.....", "x.....x...x.....", "x..........x...."), gate=0.95,
                 velocity=108),
            Part("chords", (88, 94), 4, ("x...............",), gate=1.0, velocity=56),
        ),
        drums=({KICK: "X.........X.....", SNARE: "....X.......X...", HAT: "x.xxx.xxx.xxx.xx"},
               {KICK: "X.x.......X.....", SNARE: "....X..x.x..X...", RIDE: "x.x.x.x.x.x.x.x."}),
    ),
    Style(
        name="trap", slug="trap",
        captions=("hard trap beat with booming 808s", "dark trap instrumental with rolling hi-hats",
                  "atlanta trap beat with a bell melody", "trap drums with fast hi-hat rolls and claps",
                  "menacing trap beat, heavy 808 bass"),
        tempo=(130, 150), modes=("minor",), kit=25,
        progressions=((0, 0, 5, 6), (0, 5, 3, 4), (0, 1, 0, 6)),
        parts=(
            Part("bass", (38,), 1, ("x.........x.....", "x.....x.........", "x.......x..x...."), gate=0.98,
                 velocity=112),
            Part("lead", (14, 9, 8), 5, ("x..x..x.........", "x...x...x..x....", "x.x...x...x....."), gate=0.7,
                 velocity=78),
        ),
        drums=({KICK: "X.........X.....", CLAP: "........X.......", HAT: "xxxxxxxxxxxxxxxx"},
               {KICK: "X.....X...X.....", CLAP: "........X.......", HAT: "x.x.xxxxx.x.xxxx",
                OPEN_HAT: "..............x."}),
    ),
    Style(
        name="reggae", slug="reggae",
        captions=("roots reggae with an offbeat guitar skank", "laid back reggae one drop rhythm",
                  "jamaican reggae with organ bubble and deep bass", "sunny reggae groove",
                  "dub reggae with a heavy bassline"),
        tempo=(70, 90), modes=("major", "minor"), kit="acoustic",
        progressions=((0, 3), (0, 3, 4, 3), (0, 5, 3, 4), (0, 0, 6, 6)),
        parts=(
            Part("chords", (27, 28), 4, ("....x.......x...", "..x...x...x...x."), gate=0.3, velocity=86),
            Part("arp", (16,), 4, (".x.x.x.x.x.x.x.x", "..xx..xx..xx..xx"), gate=0.4, velocity=58),
            Part("bass", (33, 34), 1, ("x..x..x.....x...", "x.....x.x...x..."), gate=0.8, velocity=108),
        ),
        drums=({KICK: "........X.......", SIDE_STICK: "........x.......", HAT: "x.x.x.x.x.x.x.x."},
               {KICK: "X.......X.......", SNARE: "........X.......", HAT: "..x...x...x...x."}),
    ),
    Style(
        name="bossa nova", slug="bossa_nova",
        captions=("bossa nova with nylon guitar and soft percussion", "brazilian bossa nova groove",
                  "gentle bossa nova with flute melody", "a relaxed bossa nova from rio",
                  "smooth latin bossa nova guitar"),
        tempo=(120, 144), modes=("major", "dorian"), sevenths=True, kit=40,
        progressions=((0, 0, 1, 4), (1, 4, 0, 0), (0, 3, 1, 4)),
        parts=(
            Part("chords", (24,), 4, ("x..x..x...x..x..", "x..x...x..x..x.."), gate=0.6, velocity=74),
            Part("bass", (32,), 2, ("x......xx......x", "x.......x......."), gate=0.8, velocity=88),
            Part("lead", (73, 71), 5, ("x.....x.x.......", "x...x.....x.....", "..x...x...x....."), gate=0.9,
                 velocity=76),
        ),
        drums=({SIDE_STICK: "x..x..x...x..x..", KICK: "x..xx..xx..xx..x", HAT: "xxxxxxxxxxxxxxxx"},),
    ),
    Style(
        name="rock", slug="rock",
        captions=("rock band with distorted guitars and drums", "classic rock riff with power chords",
                  "driving rock anthem", "garage rock with crunchy guitars",
                  "energetic rock song with bass and drums"),
        tempo=(100, 140), modes=("major", "mixolydian", "minor"), kit="acoustic",
        progressions=((0, 4, 5, 3), (0, 6, 3, 0), (0, 3, 4, 4), (5, 3, 0, 4)),
        parts=(
            Part("chords", (29, 30), 3, ("x.x.x.x.x.x.x.x.", "x..x..x.x..x..x.", "x.......x.x.x..."), gate=0.8,
                 velocity=100),
            Part("bass", (34, 33), 2, ("x.x.x.x.x.x.x.x.",), gate=0.8, velocity=100),
        ),
        drums=({KICK: "X.......X.x.....", SNARE: "....X.......X...", HAT: "x.x.x.x.x.x.x.x."},
               {KICK: "X.x.....X.x.....", SNARE: "....X.......X...", RIDE: "x.x.x.x.x.x.x.x."}),
        fill=ROCK_FILL,
    ),
    Style(
        name="metal", slug="metal",
        captions=("heavy metal with chugging guitars and double kick", "aggressive thrash metal riff",
                  "dark heavy metal with palm muted riffs", "fast metal with blast beats",
                  "crushing metal guitars and pounding drums"),
        tempo=(150, 190), modes=("minor",), kit="acoustic",
        progressions=((0, 0, 5, 6), (0, 1, 0, 6), (0, 0, 0, 5)),
        parts=(
            Part("chords", (30,), 2, ("xxxxxxxxxxxxxxxx", "x.xxx.xxx.xxx.xx", "xx.xx.xx.xx.x.x."), gate=0.6,
                 velocity=110),
            Part("bass", (34,), 1, ("xxxxxxxxxxxxxxxx", "x.x.x.x.x.x.x.x."), gate=0.6, velocity=104),
        ),
        drums=({KICK: "XxXxXxXxXxXxXxXx", SNARE: "....X.......X...", CRASH: "x.......x......."},
               {KICK: "XxXxXxXxXxXxXxXx", SNARE: "....X.......X...", RIDE: "x.x.x.x.x.x.x.x."}),
        fill=ROCK_FILL,
    ),
    Style(
        name="country", slug="country",
        captions=("country music with steel guitar and fiddle", "upbeat country with a train beat",
                  "nashville country band with acoustic guitar", "honky tonk country groove",
                  "bluegrass flavoured country with strummed guitar"),
        tempo=(96, 132), modes=("major",), kit="acoustic",
        progressions=((0, 3, 4, 0), (0, 0, 3, 4), (0, 4, 0, 3)),
        parts=(
            Part("chords", (25,), 3, ("x.x.x.x.x.x.x.x.", "x...x.x.x...x.x."), gate=0.5, velocity=80),
            Part("lead", (40, 21), 5, ("x.x.x.x.x...x...", "x...x.x.x.x.x.x.", "..x.x.x.x......."), gate=0.85,
                 velocity=90),
            Part("bass", (32,), 2, ("x.......x.......",), gate=0.7, velocity=96),
        ),
        drums=({KICK: "x.......x.......", SNARE: "xoxoxoxoxoxoxoxo"},
               {KICK: "x.......x.......", SNARE: "....x.......x...", HAT: "x.x.x.x.x.x.x.x."}),
    ),
    Style(
        name="gospel", slug="gospel",
        captions=("gospel choir with hammond organ", "uplifting church gospel with claps",
                  "soulful gospel piano and organ", "joyful gospel worship music",
                  "a gospel choir singing over organ and bass"),
        tempo=(66, 96), modes=("major",), sevenths=True, swing=0.62, kit="acoustic",
        progressions=((0, 3, 0, 4), (3, 0, 1, 4), (0, 5, 1, 4), (0, 2, 3, 4)),
        parts=(
            Part("chords", (16,), 4, ("x.......x.......", "x...........x..."), gate=0.95, velocity=80),
            Part("chords", (53,), 4, ("x...............", "x.......x......."), gate=0.95, velocity=76),
            Part("arp", (0,), 4, ("x.x.x.x.x.x.x.x.", "x..x..x.x..x..x."), gate=0.6, velocity=70),
            Part("walk", (33,), 2, ("x...x...x...x...",), gate=0.85, velocity=92),
        ),
        drums=({KICK: "x.......x.......", CLAP: "....x.......x...", HAT: "x.x.x.x.x.x.x.x."},),
    ),
    Style(
        name="baroque harpsichord", slug="baroque_harpsichord",
        captions=("baroque harpsichord in the style of bach", "an ornate baroque harpsichord piece",
                  "harpsichord counterpoint with a walking bass", "classical baroque keyboard music",
                  "a harpsichord invention with running sixteenths"),
        tempo=(80, 120), modes=("major", "minor"),
        progressions=((0, 3, 4, 0), (0, 5, 1, 4), (0, 4, 5, 2, 3, 0, 1, 4)),
        parts=(
            Part("lead", (6,), 5, ("xxxxxxxxxxxxxxxx", "x.xxx.xxx.xxx.xx"), gate=0.8, velocity=84),
            Part("arp", (6,), 4, ("x.x.x.x.x.x.x.x.",), gate=0.8, velocity=72),
            Part("walk", (6, 42), 2, ("x...x...x...x...", "x.x.x.x.x.x.x.x."), gate=0.8, velocity=80),
        ),
    ),
    Style(
        name="ragtime", slug="ragtime",
        captions=("ragtime piano in the style of scott joplin", "a bouncy ragtime piano rag",
                  "old time ragtime with stride left hand", "syncopated ragtime piano",
                  "honky tonk ragtime piano"),
        tempo=(84, 112), modes=("major",),
        progressions=((0, 0, 3, 3, 0, 4, 0, 4), (0, 5, 1, 4), (0, 3, 0, 4)),
        parts=(
            Part("bass", (0, 2), 2, ("x.......x.......",), gate=0.5, velocity=84),
            Part("chords", (0, 2), 3, ("....x.......x...",), gate=0.45, velocity=72),
            Part("lead", (0, 2), 5, ("x.xx.x.xx.x.x...", "x..x..x.x.xx.x..", "xx.x.xx.x.x.x.x."), gate=0.7,
                 velocity=90),
        ),
    ),
    Style(
        name="big band swing", slug="big_band_swing",
        captions=("big band swing with brass section", "a swinging jazz big band",
                  "roaring twenties swing orchestra", "energetic big band with trumpets and saxophones",
                  "dance hall swing music with horns"),
        tempo=(140, 200), modes=("major",), sevenths=True, swing=0.66, kit=32,
        progressions=((0, 5, 1, 4), (1, 4, 0, 0), (0, 3, 1, 4)),
        parts=(
            Part("chords", (61, 57), 4, ("x.....x.....x...", "..x.......x.....", "x..........x...."), gate=0.5,
                 velocity=96),
            Part("lead", (56, 66), 5, ("x.x.x.x.x...x.x.", "x...x.x.x.x.....", "..x.x.x.x.x.x.x."), gate=0.8,
                 velocity=96),
            Part("walk", (32,), 2, ("x...x...x...x...",), gate=0.9, velocity=92),
        ),
        drums=({RIDE: "x...x.x.x...x.x.", PEDAL_HAT: "....x.......x...", KICK: "x...x...x...x..."},
               {RIDE: "x...x.x.x...x.x.", PEDAL_HAT: "....x.......x...", SNARE: "......o.....o..o"}),
    ),
    Style(
        name="synthwave", slug="synthwave",
        captions=("retro synthwave with gated drums and analog synths", "eighties outrun synthwave",
                  "neon synthwave with a pulsing bass", "nostalgic retrowave synth music",
                  "dreamy synthwave with arpeggios"),
        tempo=(84, 118), modes=("minor",), kit=24,
        progressions=((0, 5, 2, 6), (0, 5, 3, 4), (5, 3, 0, 4)),
        parts=(
            Part("chords", (88, 94), 4, ("x...............", "x.......x......."), gate=1.0, velocity=68),
            Part("arp", (80, 84), 5, ("xxxxxxxxxxxxxxxx", "x.x.x.x.x.x.x.x."), gate=0.5, velocity=66),
            Part("bass", (38,), 2, ("x.x.x.x.x.x.x.x.",), gate=0.5, velocity=100),
        ),
        drums=({KICK: "X.......X.......", SNARE: "....X.......X...", HAT: "x.x.x.x.x.x.x.x."},),
    ),
    Style(
        name="chiptune", slug="chiptune",
        captions=("8-bit chiptune video game music", "retro game soundtrack with square waves",
                  "nes style chiptune melody", "a bleepy chiptune level theme",
                  "fast 8 bit arcade music"),
        tempo=(130, 160), modes=("major", "minor"), kit=24,
        progressions=((0, 5, 3, 4), (0, 3, 4, 0), (0, 6, 5, 4)),
        parts=(
            Part("lead", (80,), 5, ("x.x.x.xxx.x.x.x.", "x.xxx.x.x.xxx...", "xxxxx.x.x.x.xxx."), gate=0.7,
                 velocity=86),
            Part("arp", (80,), 4, ("xxxxxxxxxxxxxxxx",), gate=0.5, velocity=60),
            Part("bass", (80,), 2, ("x.x.x.x.x.x.x.x.",), gate=0.5, velocity=90),
        ),
        drums=({KICK: "x.......x.......", SNARE: "....x.......x...", HAT: "x.x.x.x.x.x.x.x."},),
    ),
    Style(
        name="cinematic orchestra", slug="cinematic_orchestra",
        captions=("epic cinematic orchestra with brass and timpani", "a dramatic film score",
                  "heroic orchestral trailer music", "dark cinematic strings and horns",
                  "sweeping orchestral soundtrack"),
        tempo=(64, 96), modes=("minor",),
        progressions=((0, 5, 2, 6), (0, 3, 5, 4), (0, 5, 3, 4)),
        parts=(
            Part("chords", (48,), 3, ("x.x.x.x.x.x.x.x.", "x...............", "x.......x......."), gate=0.9,
                 velocity=84),
            Part("lead", (60, 61), 4, ("x.......x.......", "x.....x.x.......", "x..............."), gate=0.95,
                 velocity=92),
            Part("bass", (47,), 2, ("x.......x.......", "x...x...x...x..."), gate=0.6, velocity=100),
            Part("chords", (53,), 4, ("x...............",), gate=1.0, velocity=60),
        ),
    ),
    Style(
        name="flamenco guitar", slug="flamenco_guitar",
        captions=("flamenco guitar with hand claps", "spanish flamenco guitar rasgueado",
                  "passionate flamenco from andalusia", "a sevillanas rhythm on nylon guitar",
                  "fiery spanish guitar with palmas"),
        tempo=(120, 160), modes=("phrygian",), meter=3, kit=0,
        progressions=((3, 2, 1, 0), (0, 1, 0, 1), (3, 2, 1, 0, 1, 0, 1, 0)),
        parts=(
            Part("chords", (24,), 3, ("x.xxx.x.x.x.", "x...xxx.x...", "xxx.x...x.x."), gate=0.5, velocity=96),
            Part("lead", (24,), 4, ("x.xxxxxxx...", "xxxxx.x.x.x.", "x.x.xxxx..x."), gate=0.7, velocity=90),
        ),
        drums=({CLAP: "x...x...x...", CLAVES: "..x...x...x."}, {CLAP: "x.x.x...x..."}),
    ),
    Style(
        name="afrobeat", slug="afrobeat",
        captions=("afrobeat groove with horns and percussion", "fela kuti style afrobeat jam",
                  "funky west african afrobeat", "afrobeat with interlocking guitars and congas",
                  "hypnotic afrobeat rhythm section"),
        tempo=(100, 124), modes=("dorian", "minor"), kit=0,
        progressions=((0, 0, 3, 3), (0, 3), (0, 0, 0, 6)),
        parts=(
            Part("arp", (27, 28), 4, ("x.xxx.x.xx.x.xx.", "xx.x.xx.x.xx.x.x"), gate=0.35, velocity=78),
            Part("chords", (61, 16), 4, ("..x...x.....x...", "......x.x.......", "x.......x..x...."), gate=0.5,
                 velocity=88),
            Part("bass", (33,), 2, ("x..x..x...x.x...", "x.x...x..x..x..."), gate=0.6, velocity=104),
        ),
        drums=({KICK: "X.....x...X.....", SNARE: "....x..x....x..x", HAT: "x.xxx.xxx.xxx.xx",
                COWBELL: "x.x.x.x.x.x.x.x.", LOW_CONGA: "..x...xx..x...x."},
               {KICK: "X...X.....X.....", SNARE: "....x.......x.x.", SHAKER: "xxxxxxxxxxxxxxxx",
                COWBELL: "x..x..x...x.x...", LOW_CONGA: "x..x..x.x..x.x.."}),
    ),
    Style(
        name="waltz", slug="waltz",
        captions=("a viennese waltz in three four time", "elegant ballroom waltz with strings",
                  "romantic waltz with oom pah pah accompaniment", "a french accordion waltz",
                  "classical waltz for orchestra"),
        tempo=(90, 180), modes=("major", "minor"), meter=3,
        progressions=((0, 0, 4, 4, 4, 4, 0, 0), (0, 3, 4, 0), (0, 5, 1, 4)),
        parts=(
            Part("bass", (42, 0), 2, ("x...........",), gate=0.8, velocity=92),
            Part("chords", (48, 0), 3, ("....x...x...",), gate=0.6, velocity=70),
            Part("lead", (40, 21, 73), 5, ("x.......x...", "x.....x.x...", "x...........", "x...x...x..."),
                 gate=0.95, velocity=90),
        ),
    ),
    Style(
        name="celtic", slug="celtic",
        captions=("celtic folk with fiddle and tin whistle", "an irish reel on fiddle and flute",
                  "traditional scottish folk music", "lively celtic dance tune with bodhran",
                  "celtic harp and whistle melody"),
        tempo=(100, 124), modes=("major", "mixolydian", "dorian"), kit="acoustic",
        progressions=((0, 0, 6, 6), (0, 3, 0, 4), (0, 6, 0, 4)),
        parts=(
            Part("lead", (40, 72, 75), 5, ("x.x.x.x.x.x.x.x.", "xxx.x.x.xxx.x.x.", "x.xxx.x.x.xxx.x."), gate=0.85,
                 velocity=92),
            Part("arp", (46, 24), 4, ("x.x.x.x.x.x.x.x.", "x..x..x.x..x..x."), gate=0.9, velocity=70),
            Part("bass", (32,), 2, ("x.......x.......",), gate=0.8, velocity=84),
        ),
        drums=({LOW_TOM: "X..x..x.X..x..x.", MID_TOM: "....x.......x..."},),
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
    beats: int = 4

    @property
    def key(self) -> str:
        return f"{NOTE_NAMES[self.root]} {self.mode}"

    @property
    def meter(self) -> str:
        return f"{self.beats}/4"

    @property
    def bar_seconds(self) -> float:
        return self.beats * 60 / self.tempo


def draw_clip(style: Style, rng: np.random.Generator) -> Clip:
    """Draw a clip's tempo, key, progression, drum pattern and instruments."""
    tempo = float(rng.integers(style.tempo[0], style.tempo[1] + 1))
    root = int(rng.integers(12))
    mode = style.modes[rng.integers(len(style.modes))]
    progression = style.progressions[rng.integers(len(style.progressions))]
    drums = style.drums[rng.integers(len(style.drums))] if style.drums else {}
    programs = tuple(int(part.programs[rng.integers(len(part.programs))]) for part in style.parts)
    return Clip(tempo, root, mode, progression, drums, programs, style.meter)


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


def clip_facts(style: str | Style, seed: int) -> Clip:
    """The tempo, key, progression and programs that `style_midi(style, seed, ...)` uses."""
    style = style_by_name(style)
    return draw_clip(style, style_rng(style, seed))


def caption(style: str | Style, seed: int) -> str:
    """One of the style's caption phrasings, picked by the seed."""
    style = style_by_name(style)
    return style.captions[np.random.default_rng([seed, 7]).integers(len(style.captions))]


# ---- rendering ------------------------------------------------------------------------------------------------


def styles_of(version: int) -> tuple[Style, ...]:
    """The styles of a catalogue version: 1 is the first eight (what mini v1 trained on), 2 all of STYLES."""
    if version not in VERSIONS:
        raise SpectrodiffError(f"unknown catalogue version {version}; choose one of {', '.join(map(str, VERSIONS))}")
    return STYLES[:VERSION_ONE_STYLES] if version == 1 else STYLES


def sound_banks(renderer: str, version: int = 2) -> tuple[Path, ...]:
    """The files a renderer plays from: for fluidsynth its soundfonts (version 1: FluidR3; 2: MuseScore General,
    then avldrums' two acoustic kits), for timidity its patch config."""
    if renderer not in RENDERERS:
        raise SpectrodiffError(f"unknown renderer {renderer!r}; choose one of {', '.join(RENDERERS)}")
    if renderer == "timidity":
        return (FREEPATS_CFG,)
    return (SOUNDFONT,) if version == 1 else (MUSESCORE_SOUNDFONT, *ACOUSTIC_KITS)


def check_renderer(renderer: str, version: int = 2) -> tuple[Path, ...]:
    """Raise SpectrodiffError naming the apt packages when the renderer or one of its sound banks is missing."""
    banks = sound_banks(renderer, version)
    missing = [renderer] if shutil.which(renderer) is None else [str(b) for b in banks if not b.is_file()]
    if missing:
        raise SpectrodiffError(f"{missing[0]} not found: the {renderer} renderer needs the Debian packages "
                               f"{APT_PACKAGES[renderer]} (sudo apt-get install {APT_PACKAGES[renderer]}, "
                               "or `make system-deps`)")
    return banks


def synth_command(renderer: str, bank: Path, midi_path: Path, wav_path: Path) -> list[str]:
    """The command line that renders a MIDI file to a 44.1 kHz 16-bit stereo WAV from one sound bank."""
    if renderer == "fluidsynth":
        # MuseScore's compressed soundfont takes 3 s to load whole; loading only the samples played takes 1 s.
        lazy = ["-o", "synth.dynamic-sample-loading=1"] if bank.suffix == ".sf3" else []
        return ["fluidsynth", "-ni", "-q", *lazy, "-F", str(wav_path), "-r", str(SAMPLE_RATE), "-g", "0.7",
                str(bank), str(midi_path)]
    return ["timidity", "-c", str(bank), "-Ow", "-s", str(SAMPLE_RATE), "-o", str(wav_path), str(midi_path)]


def synthesise(midi: pretty_midi.PrettyMIDI, renderer: str, bank: Path) -> np.ndarray:
    """Render `midi` with one sound bank; returns `(N, 2)` float32 audio at 44.1 kHz."""
    with tempfile.TemporaryDirectory(prefix="catalogue-") as tmp:
        midi_path, wav_path = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        midi.write(str(midi_path))
        result = subprocess.run(synth_command(renderer, bank, midi_path, wav_path), capture_output=True, text=True,
                                check=False)
        if result.returncode != 0 or not wav_path.is_file():
            raise SpectrodiffError(f"{renderer} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
        audio, rate = soundfile.read(wav_path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise SpectrodiffError(f"{renderer} wrote {rate} Hz audio, expected {SAMPLE_RATE}")
    return audio


def fit(audio: np.ndarray, seconds: float) -> np.ndarray:
    """Cut or pad `(N, C)` audio to `seconds` and fade its last 50 ms."""
    frames = round(seconds * SAMPLE_RATE)
    audio = np.pad(audio[:frames], ((0, max(0, frames - len(audio))), (0, 0)))
    fade = min(round(FADE_SECONDS * SAMPLE_RATE), frames)
    audio[frames - fade:] *= np.linspace(1, 0, fade)[:, None]
    return audio


def peak_gain(audio: np.ndarray) -> float:
    """The gain that brings `audio`'s peak to -1 dBFS (1 for silence)."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    return PEAK / peak if peak > 0 else 1.0


def render(midi: pretty_midi.PrettyMIDI, path: Path, renderer: str = "fluidsynth",
           seconds: float | None = None) -> Path:
    """Render `midi` to `path` (44.1 kHz 16-bit WAV, peak -1 dBFS) in one piece with catalogue version 1's sound
    banks (fluidsynth + FluidR3, or timidity + freepats); `seconds` (default: the MIDI's end) sets the exact
    length. Raises SpectrodiffError when the renderer is missing or fails."""
    path = Path(path)
    seconds = midi.get_end_time() if seconds is None else seconds
    (bank,) = check_renderer(renderer, version=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = fit(synthesise(midi, renderer, bank), seconds)
    soundfile.write(path, audio * peak_gain(audio), SAMPLE_RATE, subtype="PCM_16")
    return path


def stem_names(instruments: list[pretty_midi.Instrument]) -> list[str]:
    """One name per instrument, its role ("lead", "chords", "drums"...), numbered from the second of a role on."""
    names = []
    for inst in instruments:
        count = sum(1 for name in names if name.split("-")[0] == inst.name)
        names.append(inst.name if count == 0 else f"{inst.name}-{count + 1}")
    return names


def render_stems(instruments: list[pretty_midi.Instrument], style: Style, seed: int, seconds: float,
                 renderer: str) -> list[np.ndarray]:
    """Each instrument rendered alone, `(N, 2)` float32 of `seconds` each (before any gain), in catalogue version
    2's sound: fluidsynth plays the pitched parts and electronic kits from MuseScore General and the "acoustic" kit
    from one of avldrums' recorded kits (picked by the seed); timidity plays everything from freepats.

    Stems are rendered one after another in a single synthesiser run, GAP_SECONDS apart so no tail reaches the next
    one, because loading the soundfont costs more than playing a clip."""
    acoustic_kit = renderer == "fluidsynth" and style.kit == "acoustic"
    banks = sound_banks(renderer)
    packed = pretty_midi.PrettyMIDI()
    kit_midi = pretty_midi.PrettyMIDI()
    slots: list[tuple[str, float]] = []  # per instrument: which run, and where in it
    for inst in instruments:
        if inst.is_drum and acoustic_kit:
            target, program, is_drum = kit_midi, 0, False  # the avldrums kits are bank 0 presets, not GM bank 128
        else:
            target, program, is_drum = packed, (style.kit if inst.is_drum and isinstance(style.kit, int)
                                                 else inst.program), inst.is_drum
        offset = len(target.instruments) * (seconds + GAP_SECONDS)
        moved = pretty_midi.Instrument(program=program, is_drum=is_drum, name=inst.name)
        moved.notes = [pretty_midi.Note(n.velocity, n.pitch, n.start + offset, n.end + offset) for n in inst.notes]
        target.instruments.append(moved)
        slots.append(("kit" if target is kit_midi else "packed", offset))
    runs = {"packed": synthesise(packed, renderer, banks[0]) if packed.instruments else None,
            "kit": synthesise(kit_midi, renderer, banks[1 + seed % 2]) if kit_midi.instruments else None}
    return [fit(runs[run][round(offset * SAMPLE_RATE):], seconds) for run, offset in slots]


# ---- the catalogue --------------------------------------------------------------------------------------------


def clip_seed(seed: int, index: int) -> int:
    """The seed of the catalogue's `index`-th clip."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def plan(minutes: float, seed: int, clip_seconds: float, version: int = 2) -> list[dict]:
    """The clips of a catalogue: its version's styles in turn, `clip_seconds` each (the last one shorter), `minutes`
    in all."""
    styles = styles_of(version)
    total = minutes * 60
    count = math.ceil(total / clip_seconds - 1e-9)
    clips = []
    for index in range(count):
        style = styles[index % len(styles)]
        number = index // len(styles)
        seconds = round(min(clip_seconds, total - index * clip_seconds), 3)
        clips.append({"file": f"{style.slug}/{style.slug}_{number:03d}.wav", "style": style.name,
                      "seed": clip_seed(seed, index), "seconds": seconds})
    return clips


def build_clip(out: Path, entry: dict, renderer: str, version: int) -> dict:
    """Write one clip's WAV and caption (and for version 2 its stems); returns its catalogue.json record."""
    style, seed, seconds = style_by_name(entry["style"]), entry["seed"], entry["seconds"]
    facts = clip_facts(style, seed)
    path = out / entry["file"]
    record = {"file": entry["file"], "style": style.name, "caption": caption(style, seed), "seed": seed,
              "tempo": facts.tempo, "key": facts.key, "meter": facts.meter, "programs": list(facts.programs)}
    if version == 1:
        render(style_midi(style, seed, seconds), path, renderer, seconds)
    else:
        instruments = style_parts(style, seed, seconds)
        stems = render_stems(instruments, style, seed, seconds, renderer)
        gain = peak_gain(sum(stems))
        folder = out / STEMS / Path(entry["file"]).with_suffix("")
        folder.mkdir(parents=True, exist_ok=True)
        record["stems"] = {}
        for name, stem in zip(stem_names(instruments), stems, strict=True):
            soundfile.write(folder / f"{name}.flac", stem * gain, SAMPLE_RATE, subtype="PCM_16")
            record["stems"][name] = (folder / f"{name}.flac").relative_to(out).as_posix()
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, sum(stems) * gain, SAMPLE_RATE, subtype="PCM_16")
        record["instruments"] = [("drums: " + (str(Path(ACOUSTIC_KITS[seed % 2]).stem) if style.kit == "acoustic"
                                               else f"GM kit {style.kit}")) if inst.is_drum
                                 else pretty_midi.program_to_instrument_name(inst.program) for inst in instruments]
        record["bar_seconds"] = facts.bar_seconds
    path.with_suffix(".txt").write_text(record["caption"] + "\n", encoding="utf-8")
    return {**record, "duration": soundfile.info(path).duration}


def build_catalogue(out: Path, minutes: float = 30, seed: int = 0, renderer: str = "fluidsynth",
                    clip_seconds: float = 20, workers: int | None = None, version: int = 2) -> dict:
    """Render the catalogue into `out` (layout in the module docstring); returns what catalogue.json holds.

    Clips are rendered `workers` at a time (default: one per CPU core); the result depends only on the arguments.
    """
    if minutes <= 0 or clip_seconds < 1:
        raise SpectrodiffError(f"--minutes must be positive and --clip-seconds at least 1 "
                               f"(got {minutes:g} and {clip_seconds:g})")
    out = Path(out)
    styles = styles_of(version)
    banks = check_renderer(renderer, version)
    out.mkdir(parents=True, exist_ok=True)
    clips = plan(minutes, seed, clip_seconds, version)
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        files = list(pool.map(lambda entry: build_clip(out, entry, renderer, version), clips))
    catalogue = {"version": version, "seed": seed, "renderer": renderer, "soundfont": str(banks[0]),
                 "sound_banks": [str(b) for b in banks], "minutes": minutes, "clip_seconds": clip_seconds,
                 "sample_rate": SAMPLE_RATE,
                 "styles": {s.name: {"slug": s.slug, "captions": list(s.captions), "tempo": list(s.tempo),
                                     "meter": f"{s.meter}/4", "modes": list(s.modes)} for s in styles},
                 "files": files}
    (out / "catalogue.json").write_text(json.dumps(catalogue, indent=1) + "\n", encoding="utf-8")
    return catalogue


def main(argv: list[str] | None = None) -> int:
    """`python -m spectrodiff.training.catalogue OUT [--minutes 120] [--seed 0] [--renderer ...]
    [--clip-seconds 20] [--version 2]`."""
    parser = argparse.ArgumentParser(prog="python -m spectrodiff.training.catalogue",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the catalogue into")
    parser.add_argument("--minutes", type=float, default=120, help="total audio, in minutes (default 120)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every musical choice (default 0)")
    parser.add_argument("--renderer", choices=RENDERERS, default="fluidsynth",
                        help="fluidsynth (training: MuseScore General + avldrums; version 1: FluidR3) or "
                             "timidity + freepats (held out)")
    parser.add_argument("--clip-seconds", type=float, default=20, help="length of each clip (default 20)")
    parser.add_argument("--workers", type=int, default=None, help="clips rendered at once (default: CPU cores)")
    parser.add_argument("--version", type=int, choices=VERSIONS, default=2,
                        help="2: every style, stems, the new sound banks (default); 1: what mini v1 trained on")
    args = parser.parse_args(argv)
    try:
        catalogue = build_catalogue(args.out, args.minutes, args.seed, args.renderer, args.clip_seconds,
                                    args.workers, args.version)
    except SpectrodiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    seconds = sum(f["duration"] for f in catalogue["files"])
    print(f"{len(catalogue['files'])} clips, {seconds / 60:.1f} minutes, in {args.out} ({args.renderer})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
