"""The reference catalogue recipe (training/catalogue.py): MIDI in code, fluidsynth and timidity renders, captions."""

import json
import re
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

import spectrodiff.training.catalogue as catalogue
from spectrodiff.errors import SpectrodiffError
from spectrodiff.training.catalogue import STYLES, build_catalogue, caption, main, plan, render, style_midi
from spectrodiff.training.prepare import prepare_dataset

SR = 44100
SECONDS = 4.0
REQUIRED = ("jazzy saxophone", "funky piano", "church organ and bells", "electronic beats", "blues guitar",
            "string ensemble", "acoustic drums", "ambient pad")  # version 1, in this order
VERSION_TWO = ("lo-fi hip hop", "house", "techno", "drum and bass", "trap", "reggae", "bossa nova", "rock", "metal",
               "country", "gospel", "baroque harpsichord", "ragtime", "big band swing", "synthwave", "chiptune",
               "cinematic orchestra", "flamenco guitar", "afrobeat", "waltz", "celtic")



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
    return {s.name: render(style_midi(s.name, 1, SECONDS), folder / f"{s.slug}.wav", "fluidsynth", SECONDS)
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
    facts = catalogue.clip_facts("waltz", 3)
    assert facts.meter == "3/4" and facts.bar_seconds == pytest.approx(3 * 60 / facts.tempo)
    bass = next(i for i in style_midi("waltz", 3, 12).instruments if i.name == "bass")
    phases = [(n.start / facts.bar_seconds) % 1 for n in bass.notes]
    assert all(min(p, 1 - p) < 0.01 for p in phases)  # within the timing jitter of a downbeat
    assert style_midi("waltz", 3, 4).time_signature_changes[0].numerator == 3


def test_version_one_is_the_first_eight_styles_and_its_sound_bank():
    assert {c["style"] for c in plan(30, 0, 20, version=1)} == set(REQUIRED)
    assert catalogue.sound_banks("fluidsynth", 1) == (catalogue.SOUNDFONT,)
    assert catalogue.sound_banks("fluidsynth", 2)[0] == catalogue.MUSESCORE_SOUNDFONT
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
    facts = [catalogue.clip_facts("funky piano", seed) for seed in range(12)]
    assert len({f.tempo for f in facts}) > 3
    assert len({f.key for f in facts}) > 3
    assert all(92 <= f.tempo <= 116 for f in facts)


def test_unknown_style_is_a_clear_error():
    with pytest.raises(SpectrodiffError, match="unknown style 'polka'.*jazzy saxophone"):
        style_midi("polka", 0, 4)


def test_every_program_and_drum_note_exists_in_freepats():
    """Otherwise timidity would fall back to the FluidR3 soundfont, and the held-out render share its samples."""
    text = catalogue.FREEPATS_CFG.read_text()
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
    a = mono(render(midi, tmp_path / "fluid.wav", "fluidsynth"))
    b = mono(render(midi, tmp_path / "timidity.wav", "timidity"))
    assert len(a) == len(b) == round(midi.get_end_time() * SR)

    def sounding(audio):  # seconds from the start to the last sample above -50 dB of the peak
        return np.flatnonzero(np.abs(audio) > 10 ** (-50 / 20) * np.abs(audio).max())[-1] / SR

    assert abs(sounding(a) - sounding(b)) < 0.5
    ma, mb = (np.abs(librosa.stft(x, n_fft=2048)) for x in (a, b))
    assert np.linalg.norm(ma - mb) / np.linalg.norm(ma) > 0.3  # different samples
    assert abs(centroid(a) - centroid(b)) > 50


def test_missing_renderer_names_the_apt_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(catalogue.shutil, "which", lambda name: None)
    with pytest.raises(SpectrodiffError, match="fluidsynth fluid-soundfont-gm"):
        render(style_midi("ambient pad", 0, 2), tmp_path / "x.wav", "fluidsynth")
    with pytest.raises(SpectrodiffError, match="timidity freepats"):
        build_catalogue(tmp_path / "cat", 0.1, renderer="timidity")
    assert main([str(tmp_path / "cat"), "--minutes", "0.1"]) == 1
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
    assert main([str(tmp_path / "a"), "--minutes", "0.1", "--seed", "7", "--clip-seconds", "3"]) == 0
    assert "2 clips" in capsys.readouterr().out
    build_catalogue(tmp_path / "b", minutes=0.1, seed=7, clip_seconds=3, workers=1)
    a, b = (json.loads((tmp_path / name / "catalogue.json").read_text()) for name in "ab")
    assert a == b
    for entry in a["files"]:
        assert (tmp_path / "a" / entry["file"]).read_bytes() == (tmp_path / "b" / entry["file"]).read_bytes()


def test_acoustic_kits_are_avldrums_recordings_and_timidity_keeps_to_freepats(tmp_path):
    entry = {"file": "rock/rock_000.wav", "style": "rock", "seed": 1, "seconds": 3.0}
    record = catalogue.build_clip(tmp_path / "fluid", entry, "fluidsynth", 2)
    assert record["instruments"][-1] == "drums: Red_Zeppelin_4_LV2"  # seed 1: the second kit
    held = catalogue.build_clip(tmp_path / "timidity", entry, "timidity", 2)
    drums = [soundfile.read(folder / held["stems"]["drums"], dtype="float32")[0].mean(axis=1)
             for folder in (tmp_path / "fluid", tmp_path / "timidity")]
    assert all(np.sqrt(np.mean(d ** 2)) > 0.01 for d in drums)
    a, b = (np.abs(librosa.stft(d, n_fft=2048)) for d in drums)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) > 0.3  # different recordings of the same hits
