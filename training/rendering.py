"""How the reference catalogue sounds: MIDI rendered by General MIDI synthesisers, as a mix or part by part.

Renderers (Debian packages): `fluidsynth` with MuseScore General (musescore-general-soundfont) and avldrums'
recorded acoustic kits (avldrums.lv2-soundfont), the training material; `timidity` with freepats (timidity,
freepats), different samples, the held-out material. Every GM program and drum note the styles use exists in
freepats, so a timidity render is freepats throughout. Catalogue version 1 renders with FluidR3 GM
(fluid-soundfont-gm) instead.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile

from spectrodiff.errors import SpectrodiffError

SAMPLE_RATE = 44100
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # version 1
MUSESCORE_SOUNDFONT = Path("/usr/share/sounds/sf3/MuseScore_General_Full.sf3")
ACOUSTIC_KITS = tuple(Path(f"/usr/share/sounds/sf2/{kit}_4_LV2.sf2") for kit in ("Black_Pearl", "Red_Zeppelin"))
FREEPATS_CFG = Path("/etc/timidity/freepats.cfg")
RENDERERS = ("fluidsynth", "timidity")
APT_PACKAGES = {"fluidsynth": "fluidsynth fluid-soundfont-gm musescore-general-soundfont avldrums.lv2-soundfont",
                "timidity": "timidity freepats"}
GAP_SECONDS = 4.0
PEAK = 10 ** (-1 / 20)  # clips are normalised to a -1 dBFS peak
FADE_SECONDS = 0.05


def sound_banks(renderer: str, version: int = 2) -> tuple[Path, ...]:
    """The files a renderer plays from: for fluidsynth its soundfonts (version 1: FluidR3; 2: MuseScore General,
    then avldrums' two acoustic kits), for timidity its patch config."""
    if renderer not in RENDERERS:
        raise SpectrodiffError(f"unknown renderer {renderer!r}; choose one of {', '.join(RENDERERS)}")
    if renderer == "timidity":
        return (FREEPATS_CFG,)
    return (SOUNDFONT,) if version == 1 else (MUSESCORE_SOUNDFONT, *ACOUSTIC_KITS)


def acoustic_kit(seed: int) -> Path:
    """Which of avldrums' recorded kits a clip's "acoustic" drums play on fluidsynth: picked by the clip's seed."""
    return ACOUSTIC_KITS[seed % len(ACOUSTIC_KITS)]


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
        # Loading only the samples a clip plays from MuseScore's compressed soundfont is much faster than loading it
        # whole (docs/benchmarks.md).
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


def render_midi(midi: pretty_midi.PrettyMIDI, path: Path, renderer: str = "fluidsynth",
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


def render_stems(instruments: list[pretty_midi.Instrument], kit: str | int, seed: int, seconds: float,
                 renderer: str) -> list[np.ndarray]:
    """Each instrument rendered alone, `(N, 2)` float32 of `seconds` each (before any gain), in catalogue version
    2's sound: fluidsynth plays the pitched parts and electronic kits (`kit`, a General MIDI drum kit program) from
    MuseScore General and the "acoustic" kit from one of avldrums' recorded kits (picked by the seed); timidity
    plays everything from freepats.

    Stems are rendered one after another in a single synthesiser run, GAP_SECONDS apart so no tail reaches the next
    one, because loading the soundfont costs more than playing a clip."""
    recorded_kit = renderer == "fluidsynth" and kit == "acoustic"
    packed = pretty_midi.PrettyMIDI()
    kit_midi = pretty_midi.PrettyMIDI()
    slots: list[tuple[str, float]] = []  # per instrument: which run, and where in it
    for inst in instruments:
        if inst.is_drum and recorded_kit:
            target, program, is_drum = kit_midi, 0, False  # the avldrums kits are bank 0 presets, not GM bank 128
        else:
            target, program, is_drum = packed, (kit if inst.is_drum and isinstance(kit, int)
                                                 else inst.program), inst.is_drum
        offset = len(target.instruments) * (seconds + GAP_SECONDS)
        moved = pretty_midi.Instrument(program=program, is_drum=is_drum, name=inst.name)
        moved.notes = [pretty_midi.Note(n.velocity, n.pitch, n.start + offset, n.end + offset) for n in inst.notes]
        target.instruments.append(moved)
        slots.append(("kit" if target is kit_midi else "packed", offset))
    runs = {"packed": synthesise(packed, renderer, sound_banks(renderer)[0]) if packed.instruments else None,
            "kit": synthesise(kit_midi, renderer, acoustic_kit(seed)) if kit_midi.instruments else None}
    return [fit(runs[run][round(offset * SAMPLE_RATE):], seconds) for run, offset in slots]
