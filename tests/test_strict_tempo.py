"""`prepare --strict-tempo` (issue 28 item 7): a private file whose tracked tempo is ambiguous is a one-line error
naming the file, both tempi and how to give the tempo, before anything is written; without it the file is listed
and tiled; a file whose tempo is clear (the control) passes either way."""

import json
import warnings

import numpy as np
import pytest
import soundfile

from spectrodiff.codec.beats import track_beats

from .test_bad_input import error_lines, run_main, tree
from .test_beats import RATE, band, note, place


def even_clicks(bpm: float, seconds: float) -> np.ndarray:
    """`(N,)` the same click on every beat, no accent: at 170 BPM as plausible a pulse at 85 (the tracker's prior
    centres on 120 BPM, half an octave from each)."""
    audio = np.zeros(int(seconds * RATE), dtype=np.float32)
    for at in np.arange(0, seconds, 60 / bpm):
        place(audio, note(84, 0.08), at, 0.8)
    return audio


def catalogue_of(root, **files) -> tuple:
    catalogue = root / "catalogue"
    catalogue.mkdir(parents=True)
    for name, audio in files.items():
        soundfile.write(catalogue / f"{name}.wav", audio, RATE, subtype="PCM_16")
        (catalogue / f"{name}.txt").write_text("a beat\n")
    return catalogue, root / "dataset"


def prepare(monkeypatch, capsys, catalogue, out, *flags):
    return run_main(monkeypatch, capsys, "prepare", catalogue, "-o", out, "--n-mels", "64", "--validation", "0",
                    "--columns-per-beat", "8", "--workers", "1", *flags)


def test_the_two_files_are_what_the_tests_say():
    ambiguous, clear = track_beats(even_clicks(170, 12), RATE), track_beats(band(90, 12), RATE)
    assert ambiguous.steady and ambiguous.ambiguous and {round(ambiguous.bpm), round(ambiguous.runner_up)} == {170, 85}
    assert clear.steady and not clear.ambiguous and clear.bpm == pytest.approx(90, rel=0.02)


def test_strict_tempo_refuses_an_ambiguous_file_before_writing_anything(tmp_path, monkeypatch, capsys):
    catalogue, out = catalogue_of(tmp_path, clicks=even_clicks(170, 12), band=band(90, 12))
    before = tree(tmp_path)
    status, stdout, err = prepare(monkeypatch, capsys, catalogue, out, "--strict-tempo")
    assert status != 0 and "Traceback" not in err and len(error_lines(err)) == 1, err
    line = error_lines(err)[0]
    for words in ("clicks.wav", "ambiguous", "169.9", "85.1", "tempo.csv", "clicks.tempo.json"):
        assert words in line, line
    assert tree(tmp_path) == before and not out.exists()


def test_an_existing_dataset_is_not_touched_by_a_strict_refusal(tmp_path, monkeypatch, capsys):
    catalogue, out = catalogue_of(tmp_path, band=band(90, 12))
    assert prepare(monkeypatch, capsys, catalogue, out, "--strict-tempo")[0] == 0  # the control: clear passes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["tiles"]["train"] > 0 and manifest["options"]["strict_tempo"] is True
    soundfile.write(catalogue / "clicks.wav", even_clicks(170, 12), RATE, subtype="PCM_16")
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    status, _, err = prepare(monkeypatch, capsys, catalogue, out, "--strict-tempo")
    assert status != 0 and "clicks.wav" in error_lines(err)[0]
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == before


def test_without_strict_tempo_an_ambiguous_file_is_listed_and_tiled(tmp_path):
    from training.prepare import prepare_dataset

    catalogue, out = catalogue_of(tmp_path, clicks=even_clicks(170, 12))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = prepare_dataset(catalogue, out, n_mels=64, validation=0, columns_per_beat=8)
    said = [str(w.message) for w in caught if "ambiguous" in str(w.message)]
    assert len(said) == 1 and "clicks.wav" in said[0] and "--strict-tempo" in said[0]
    assert manifest["counts"]["tiles"]["train"] > 0
