"""The reference catalogue recipe: the style table (training/styles.yaml) and its MIDI (training/composition.py),
fluidsynth and timidity renders (training/rendering.py), the catalogue's clips and labels (training/catalogue.py),
and the `spectrodiff dev` commands that build the project's own data."""

import copy
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
import yaml
from typer.testing import CliRunner

from spectrodiff.cli import app
from spectrodiff.cli import main as cli_main
from spectrodiff.errors import SpectrodiffError
from spectrodiff.testing import heavy_imports
from spectrodiff.training import rendering
from spectrodiff.training.catalogue import build_catalogue, build_clip, caption, plan
from spectrodiff.training.composition import STYLES, STYLES_FILE, clip_facts, load_styles, style_midi
from spectrodiff.training.prepare import prepare_dataset
from spectrodiff.training.rendering import render_midi

SR = 44100
SECONDS = 4.0
REQUIRED = ("jazzy saxophone", "funky piano", "church organ and bells", "electronic beats", "blues guitar",
            "string ensemble", "acoustic drums", "ambient pad")  # version 1, in this order
VERSION_TWO = ("lo-fi hip hop", "house", "techno", "drum and bass", "trap", "reggae", "bossa nova", "rock", "metal",
               "country", "gospel", "baroque harpsichord", "ragtime", "big band swing", "synthwave", "chiptune",
               "cinematic orchestra", "flamenco guitar", "afrobeat", "waltz", "celtic")
# What the style table wrote when it was Python (before it moved to styles.yaml): see music_digest.
MUSIC_DIGEST = "ccb21f1195c37e20854462d31e0fc0ad896a70cb9d1f8619c8b7ecc4698aad77"


def notes(midi) -> list[tuple]:
    return sorted((i.program, i.is_drum, n.pitch, n.velocity, round(n.start, 6), round(n.end, 6))
                  for i in midi.instruments for n in i.notes)


def mono(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    assert rate == SR
    return audio.mean(axis=1)


def onset_rate(audio: np.ndarray) -> float:
    """Attacks per second: times the RMS level (23 ms frames, 5.8 ms hop) rises by over 6 dB within 3 frames."""
    db = 20 * np.log10(librosa.feature.rms(y=audio, frame_length=1024, hop_length=256)[0] + 1e-6)
    rising = (db[3:] - db[:-3] > 6).astype(int)
    return int(np.sum(np.diff(rising, prepend=0) == 1)) / (len(audio) / SR)


def centroid(audio: np.ndarray) -> float:
    return float(librosa.feature.spectral_centroid(y=audio, sr=SR).mean())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """Every style, seed 1, rendered with fluidsynth for a few seconds."""
    folder = tmp_path_factory.mktemp("styles")
    return {s.name: render_midi(style_midi(s.name, 1, SECONDS), folder / f"{s.slug}.wav", "fluidsynth", SECONDS)
            for s in STYLES}


# ---- the table and the MIDI -----------------------------------------------------------------------------------


def test_styles_table_has_the_required_styles_and_several_captions_each():
    assert {s.name for s in STYLES} >= set(REQUIRED)
    assert len({s.slug for s in STYLES}) == len(STYLES)
    assert tuple(s.name for s in STYLES[:8]) == REQUIRED and tuple(s.name for s in STYLES[8:]) == VERSION_TWO
    assert len(STYLES) >= 24
    for style in STYLES:
        assert re.fullmatch(r"[a-z_]+", style.slug)
        assert len(set(style.captions)) >= 5, style.name
        assert style.parts or style.drums
        assert style.tempo[0] < style.tempo[1] and style.modes


def test_every_pattern_holds_one_bar_of_its_meter():
    for style in STYLES:
        steps = 4 * style.meter
        for part in style.parts:
            assert {len(r) for r in part.rhythms} == {steps}, (style.name, part.role)
        for pattern in (*style.drums, style.fill):
            assert {len(hits) for hits in pattern.values()} <= {steps}, style.name
        assert style.kit == "acoustic" or style.kit in (0, 24, 25, 32, 40), style.name


def test_a_waltz_is_in_three_and_its_bass_falls_on_each_downbeat():
    facts = clip_facts("waltz", 3)
    assert facts.labels["meter"] == "3/4" and facts.bar_seconds == pytest.approx(3 * 60 / facts.tempo)
    bass = next(i for i in style_midi("waltz", 3, 12).instruments if i.name == "bass")
    phases = [(n.start / facts.bar_seconds) % 1 for n in bass.notes]
    assert all(min(p, 1 - p) < 0.01 for p in phases)  # within the timing jitter of a downbeat
    assert style_midi("waltz", 3, 4).time_signature_changes[0].numerator == 3


def test_version_one_is_the_first_eight_styles_and_its_sound_bank():
    assert {c["style"] for c in plan(30, 0, 20, version=1)} == set(REQUIRED)
    assert rendering.sound_banks("fluidsynth", 1) == (rendering.SOUNDFONT,)
    assert rendering.sound_banks("fluidsynth", 2)[0] == rendering.MUSESCORE_SOUNDFONT
    with pytest.raises(SpectrodiffError, match="unknown catalogue version 3"):
        plan(1, 0, 20, version=3)


def test_captions_are_picked_deterministically_among_the_phrasings():
    for style in STYLES:
        picked = {caption(style.name, seed) for seed in range(40)}
        assert picked <= set(style.captions)
        assert len(picked) >= 3
        assert caption(style.name, 5) == caption(style.slug, 5)


def test_same_seed_gives_the_same_midi_and_other_seeds_differ():
    for style in STYLES:
        a, b, c = style_midi(style.name, 4, 8), style_midi(style.name, 4, 8), style_midi(style.name, 5, 8)
        assert notes(a) and notes(a) == notes(b)
        assert notes(a) != notes(c)
        assert max(n[5] for n in notes(a)) <= 8


def test_seeds_vary_tempo_and_key():
    facts = [clip_facts("funky piano", seed) for seed in range(12)]
    assert len({f.tempo for f in facts}) > 3
    assert len({f.labels["key"] for f in facts}) > 3
    assert all(92 <= f.tempo <= 116 for f in facts)


def music_digest() -> str:
    """A digest of the table's names, captions, tempo ranges, modes and meters, and of every style's MIDI, tempo,
    key, programs and caption for seeds 0 and 1 (8 s each)."""
    digest = hashlib.sha256()
    for style in STYLES:
        digest.update(repr((style.name, style.slug, style.captions, style.tempo, style.modes, style.meter)).encode())
        for seed in (0, 1):
            facts = clip_facts(style.name, seed)
            key = facts.labels["key"]
            digest.update(repr((notes(style_midi(style.name, seed, 8)), facts.tempo, key, facts.programs,
                                caption(style.name, seed))).encode())
    return digest.hexdigest()


def test_the_style_table_in_yaml_writes_the_music_it_wrote_as_python():
    """The bundled model trained on this music: moving the table to styles.yaml changed no note, tempo, key,
    instrument or caption (the digest was taken with the table written in Python)."""
    assert music_digest() == MUSIC_DIGEST


def table_with(change) -> dict:
    data = copy.deepcopy(yaml.safe_load(STYLES_FILE.read_text(encoding="utf-8")))
    change(data["styles"][3])  # electronic beats
    return data


@pytest.mark.parametrize(("change", "words"), [
    (lambda style: style["parts"][0].update(velocity=200), "part 1: velocity must be between 1 and 127, got 200"),
    (lambda style: style["drums"][0].update(cowbel="x" * 16), "drums: unknown drum 'cowbel'; drums: kick,"),
    (lambda style: style.update(fill="jazz"), "unknown fill 'jazz'; fills: rock"),
    (lambda style: style.update(modes=["lydian"]), "modes must be among major, minor, dorian"),
    (lambda style: style.update(kit=7), "kit must be one of acoustic, 0, 24, 25, 32, 40, got 7"),
    (lambda style: style["parts"][1].update(rhythms=["x..."]), "one bar of 4/4: 16 steps"),
    (lambda style: style.update(colour="red"), "unknown field 'colour'"),
    (lambda style: style.pop("slug"), "slug is required"),
])
def test_a_broken_style_table_is_one_line_naming_the_file_style_and_setting(tmp_path, change, words):
    path = tmp_path / "styles.yaml"
    path.write_text(yaml.safe_dump(table_with(lambda style: None)), encoding="utf-8")
    assert load_styles(path) == STYLES  # control: the table as read and written back loads as it is
    path.write_text(yaml.safe_dump(table_with(change)), encoding="utf-8")
    with pytest.raises(SpectrodiffError) as error:
        load_styles(path)
    assert str(error.value).startswith(f"{path}: style 'electronic beats': ")
    assert words in str(error.value) and "\n" not in str(error.value)


def test_unknown_style_is_a_clear_error():
    with pytest.raises(SpectrodiffError, match="unknown style 'polka'.*jazzy saxophone"):
        style_midi("polka", 0, 4)


def test_every_program_and_drum_note_exists_in_freepats():
    """Otherwise timidity would fall back to the FluidR3 soundfont, and the held-out render share its samples."""
    text = rendering.FREEPATS_CFG.read_text()
    drumset, bank = text.split("drumset 0")[1].split("bank 0")
    available = {section: {int(m) for m in re.findall(r"^\s*(\d+)\s+\S+\.pat", body, re.M)}
                 for section, body in (("drums", drumset), ("bank", bank))}
    for style in STYLES:
        for part in style.parts:
            assert set(part.programs) <= available["bank"], (style.name, part.role)
        for pattern in (*style.drums, style.fill):
            assert set(pattern) <= available["drums"], style.name


def test_plan_of_the_full_recipe_covers_every_style_for_thirty_minutes():
    clips = plan(30, 0, 20)
    assert sum(c["seconds"] for c in clips) == pytest.approx(1800)
    assert {c["style"] for c in clips} == {s.name for s in STYLES}
    assert len({c["file"] for c in clips}) == len(clips) == 90
    assert plan(30, 0, 20) == clips and plan(30, 1, 20) != clips


# ---- rendering ------------------------------------------------------------------------------------------------


def test_every_style_renders_to_non_silent_44k_16_bit_audio(rendered):
    for name, path in rendered.items():
        info = soundfile.info(path)
        assert (info.samplerate, info.subtype, info.channels) == (SR, "PCM_16", 2), name
        assert info.frames == round(SECONDS * SR), name
        audio = mono(path)
        assert np.sqrt(np.mean(audio ** 2)) > 0.01, name
        assert np.abs(audio).max() <= 10 ** (-1 / 20) + 1e-3, name


def test_styles_differ_measurably(rendered):
    drums, pad = mono(rendered["acoustic drums"]), mono(rendered["ambient pad"])
    assert centroid(drums) > 2 * centroid(pad)
    assert onset_rate(drums) > 2 * onset_rate(pad)
    church, electronic = mono(rendered["church organ and bells"]), mono(rendered["electronic beats"])
    assert onset_rate(electronic) > 2 * onset_rate(church) + 0.5


def test_timidity_render_differs_but_lasts_as_long(tmp_path):
    midi = style_midi("jazzy saxophone", 2, SECONDS)
    a = mono(render_midi(midi, tmp_path / "fluid.wav", "fluidsynth"))
    b = mono(render_midi(midi, tmp_path / "timidity.wav", "timidity"))
    assert len(a) == len(b) == round(midi.get_end_time() * SR)

    def sounding(audio):  # seconds from the start to the last sample above -50 dB of the peak
        return np.flatnonzero(np.abs(audio) > 10 ** (-50 / 20) * np.abs(audio).max())[-1] / SR

    assert abs(sounding(a) - sounding(b)) < 0.5
    ma, mb = (np.abs(librosa.stft(x, n_fft=2048)) for x in (a, b))
    assert np.linalg.norm(ma - mb) / np.linalg.norm(ma) > 0.3  # different samples
    assert abs(centroid(a) - centroid(b)) > 50


def test_missing_renderer_names_the_apt_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(rendering.shutil, "which", lambda name: None)
    with pytest.raises(SpectrodiffError, match="fluidsynth fluid-soundfont-gm"):
        render_midi(style_midi("ambient pad", 0, 2), tmp_path / "x.wav", "fluidsynth")
    with pytest.raises(SpectrodiffError, match="timidity freepats"):
        build_catalogue(tmp_path / "cat", 0.1, renderer="timidity")
    assert cli_main(["dev", "catalogue", str(tmp_path / "cat"), "--minutes", "0.1"]) == 1
    assert not (tmp_path / "cat").exists()


def test_unknown_renderer_is_refused(tmp_path):
    with pytest.raises(SpectrodiffError, match="unknown renderer"):
        build_catalogue(tmp_path, 0.1, renderer="sox")


# ---- the catalogue --------------------------------------------------------------------------------------------


def test_small_catalogue_has_captions_json_and_prepares_into_captioned_tiles(tmp_path):
    out = tmp_path / "catalogue"
    result = build_catalogue(out, minutes=0.5, seed=3, clip_seconds=6)
    files = result["files"]
    assert len(files) == 5 and sum(f["duration"] for f in files) == pytest.approx(30)
    assert json.loads((out / "catalogue.json").read_text()) == result
    assert result["seed"] == 3 and result["renderer"] == "fluidsynth" and result["soundfont"].endswith(".sf3")
    assert result["version"] == 2 and len(result["sound_banks"]) == 3
    by_name = {s.name: s for s in STYLES}
    for entry in files:
        style = by_name[entry["style"]]
        assert entry["file"].startswith(f"{style.slug}/{style.slug}_")
        assert (out / entry["file"]).with_suffix(".txt").read_text().strip() == entry["caption"]
        assert entry["caption"] in style.captions
        assert {"tempo", "key", "duration", "seed", "meter", "instruments", "bar_seconds"} <= set(entry)
        assert entry["meter"] == f"{style.meter}/4"
        assert result["styles"][style.name]["tempo"] == list(style.tempo)
        # The mix is the sum of its stems (each rounded to 16 bits), which lie in the hidden .stems folder.
        mix = soundfile.read(out / entry["file"], dtype="float32")[0]
        stems = [soundfile.read(out / path, dtype="float32")[0] for path in entry["stems"].values()]
        assert len(stems) == len(entry["instruments"]) >= 1
        assert all(path.startswith(".stems/") for path in entry["stems"].values())
        assert np.abs(sum(stems) - mix).max() <= (len(stems) + 1) / 32768
        assert min(np.sqrt(np.mean(stem ** 2)) for stem in stems) > 1e-4  # every stem sounds

    manifest = prepare_dataset(out, tmp_path / "dataset", validation=0)
    lines = [json.loads(line) for line in (tmp_path / "dataset/train/metadata.jsonl").read_text().splitlines()]
    assert manifest["counts"]["tiles"]["train"] == len(lines) >= 5
    assert manifest["counts"]["files"] == 5  # the stems are not tiled
    assert set(manifest["music_styles"]) == set(result["styles"])
    captions = {entry["file"]: entry["caption"] for entry in files}
    for line in lines:
        assert line["text"] == captions[line["source"]]
        assert line["tags"] == [by_name[next(f["style"] for f in files if f["file"] == line["source"])].name]


def test_catalogue_is_deterministic_and_the_cli_writes_it(tmp_path, capsys):
    assert cli_main(["dev", "catalogue", str(tmp_path / "a"), "--minutes", "0.1", "--seed", "7",
                     "--clip-seconds", "3"]) == 0
    assert "2 clips" in capsys.readouterr().out
    build_catalogue(tmp_path / "b", minutes=0.1, seed=7, clip_seconds=3, workers=1)
    a, b = (json.loads((tmp_path / name / "catalogue.json").read_text()) for name in "ab")
    assert a == b
    for entry in a["files"]:
        assert (tmp_path / "a" / entry["file"]).read_bytes() == (tmp_path / "b" / entry["file"]).read_bytes()


def test_acoustic_kits_are_avldrums_recordings_and_timidity_keeps_to_freepats(tmp_path):
    entry = {"file": "rock/rock_000.wav", "style": "rock", "seed": 1, "seconds": 3.0}
    record = build_clip(tmp_path / "fluid", entry, "fluidsynth", 2)
    assert record["instruments"][-1] == "drums: Red_Zeppelin_4_LV2"  # seed 1: the second kit
    held = build_clip(tmp_path / "timidity", entry, "timidity", 2)
    drums = [soundfile.read(folder / held["stems"]["drums"], dtype="float32")[0].mean(axis=1)
             for folder in (tmp_path / "fluid", tmp_path / "timidity")]
    assert all(np.sqrt(np.mean(d ** 2)) > 0.01 for d in drums)
    a, b = (np.abs(librosa.stft(d, n_fft=2048)) for d in drums)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) > 0.3  # different recordings of the same hits


# ---- `spectrodiff dev` and the `python -m` entry points ---------------------------------------------------------


DEV_COMMANDS = ("catalogue", "decoder", "bundle", "recordings", "signal")


def test_dev_lists_its_commands_each_with_an_example():
    result = CliRunner().invoke(app, ["dev", "--help"])
    assert result.exit_code == 0 and all(name in result.stdout for name in DEV_COMMANDS)
    assert "dev" in CliRunner().invoke(app, ["--help"]).stdout
    for name in DEV_COMMANDS:
        result = CliRunner().invoke(app, ["dev", name, "--help"])
        assert result.exit_code == 0 and f"Example: spectrodiff dev {name} " in result.stdout, name


def test_dev_signal_writes_a_test_signal_and_refuses_an_unknown_kind(tmp_path):
    out = tmp_path / "drums.wav"
    assert cli_main(["dev", "signal", str(out), "--kind", "drums", "--seconds", "0.5"]) == 0
    info = soundfile.info(out)
    assert (info.samplerate, info.frames, info.subtype) == (SR, SR // 2, "PCM_16")
    result = CliRunner().invoke(app, ["dev", "signal", str(tmp_path / "x.wav"), "--kind", "polka"])
    assert result.exit_code == 1 and "error: unknown signal 'polka'; choose one of chord, drums, mix, noise" in \
        result.stderr
    assert not (tmp_path / "x.wav").exists()


def run_module(module: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_python_m_entry_points_run_the_dev_commands(tmp_path):
    done = run_module("spectrodiff.signals", "noise.wav", "--kind", "noise", "--seconds", "0.25", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert soundfile.info(tmp_path / "noise.wav").frames == SR // 4
    done = run_module("spectrodiff.training.catalogue", "cat", "--minutes", "0", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == ["error: --minutes must be positive and --clip-seconds at least 1 "
                                        "(got 0 and 20)"]
    assert not (tmp_path / "cat").exists()
    done = run_module("spectrodiff.training.catalogue", "cat", "--minutes", "x", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: Invalid value for '--minutes'")


@pytest.mark.slow
def test_dev_help_imports_no_torch():
    for command in ([], *([name] for name in DEV_COMMANDS)):
        assert heavy_imports("dev", *command, "--help") == [], command
