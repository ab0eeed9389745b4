"""The reference catalogue: which clips it holds, where they go, and their labels.

The music is written as MIDI in code (training/composition.py, from the style table training/styles.yaml) and
rendered with General MIDI synthesisers (training/rendering.py). The styles take turns, a clip each; every clip's
music comes from its seed, so a catalogue is a pure function of (minutes, seed, renderer, clip length, version).
Layout:

    OUT/<style-slug>/<style-slug>_<n>.wav    44.1 kHz, 16-bit stereo, peak -1 dBFS: the mix
    OUT/<style-slug>/<style-slug>_<n>.txt    its caption (what `spectrodiff.training.prepare` reads)
    OUT/.stems/<style-slug>/<style-slug>_<n>/<part>.flac   each part alone (version 2): the mix is their sum
    OUT/catalogue.json                       version, seed, renderer, sound banks, the styles, and per file: style,
                                             caption, tempo, key, meter, bar length, instruments, stems, duration
                                             (clips start on a downbeat)

Version 2 is every style with stems, rendered by fluidsynth (training) or timidity (held out); version 1 is the
first eight styles rendered whole with FluidR3 GM, what mini's first training stages used.

    spectrodiff dev catalogue OUT [--minutes 120] [--seed 0] [--renderer fluidsynth|timidity] [--clip-seconds 20]
        [--version 2]        (or python -m spectrodiff.training.catalogue OUT ...)
"""

from __future__ import annotations

import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile

from spectrodiff.errors import SpectrodiffError

from .composition import STYLES, Style, clip_facts, style_by_name, style_midi, style_parts
from .rendering import SAMPLE_RATE, acoustic_kit, check_renderer, peak_gain, render_midi, render_stems, stem_names

VERSIONS = (1, 2)
VERSION_ONE_STYLES = 8  # catalogue version 1 is the first eight styles of STYLES, in this order
STEMS = ".stems"  # hidden, so tools that read the catalogue's audio (prepare, train-vocoder) see only the mixes


def styles_of(version: int) -> tuple[Style, ...]:
    """The styles of a catalogue version: 1 is the first eight (what mini v1 trained on), 2 all of STYLES."""
    if version not in VERSIONS:
        raise SpectrodiffError(f"unknown catalogue version {version}; choose one of {', '.join(map(str, VERSIONS))}")
    return STYLES[:VERSION_ONE_STYLES] if version == 1 else STYLES


def caption(style: str | Style, seed: int) -> str:
    """One of the style's caption phrasings, picked by the seed."""
    style = style_by_name(style)
    return style.captions[np.random.default_rng([seed, 7]).integers(len(style.captions))]


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


def instrument_labels(instruments: list[pretty_midi.Instrument], style: Style, seed: int) -> list[str]:
    """What plays each part in version 2: the General MIDI instrument, or for the drums the kit."""
    kit = f"drums: {acoustic_kit(seed).stem}" if style.kit == "acoustic" else f"drums: GM kit {style.kit}"
    return [kit if inst.is_drum else pretty_midi.program_to_instrument_name(inst.program) for inst in instruments]


def write_stems_and_mix(out: Path, entry: dict, style: Style, renderer: str) -> dict:
    """Version 2: render each part alone into OUT/.stems/..., write the mix (their sum) at `entry["file"]`, both at
    the mix's -1 dBFS gain; returns the record's stems and instruments."""
    seed, seconds = entry["seed"], entry["seconds"]
    instruments = style_parts(style, seed, seconds)
    stems = render_stems(instruments, style.kit, seed, seconds, renderer)
    mix = sum(stems)
    gain = peak_gain(mix)
    folder = out / STEMS / Path(entry["file"]).with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, stem in zip(stem_names(instruments), stems, strict=True):
        soundfile.write(folder / f"{name}.flac", stem * gain, SAMPLE_RATE, subtype="PCM_16")
        paths[name] = (folder / f"{name}.flac").relative_to(out).as_posix()
    path = out / entry["file"]
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, mix * gain, SAMPLE_RATE, subtype="PCM_16")
    return {"stems": paths, "instruments": instrument_labels(instruments, style, seed)}


def build_clip(out: Path, entry: dict, renderer: str, version: int) -> dict:
    """Write one clip's WAV and caption (and for version 2 its stems); returns its catalogue.json record."""
    style, seed, seconds = style_by_name(entry["style"]), entry["seed"], entry["seconds"]
    facts = clip_facts(style, seed)
    path = out / entry["file"]
    record = {"file": entry["file"], "style": style.name, "caption": caption(style, seed), "seed": seed,
              "tempo": facts.tempo, **facts.labels, "programs": list(facts.programs)}
    if version == 1:
        render_midi(style_midi(style, seed, seconds), path, renderer, seconds)
    else:
        record |= write_stems_and_mix(out, entry, style, renderer) | {"bar_seconds": facts.bar_seconds}
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


def describe(catalogue: dict, out: Path) -> str:
    """One line on a built catalogue: its clips, minutes, folder and renderer."""
    seconds = sum(f["duration"] for f in catalogue["files"])
    return f"{len(catalogue['files'])} clips, {seconds / 60:.1f} minutes, in {out} ({catalogue['renderer']})"


if __name__ == "__main__":
    from spectrodiff.cli import main

    sys.exit(main(["dev", "catalogue", *sys.argv[1:]]))
