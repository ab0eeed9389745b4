"""Dataset preparation (training/prepare.py and `spectrodiff prepare`): captions, tiles, splits, resuming, errors."""

import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image
from typer.testing import CliRunner

from spectrodiff.cli import app
from spectrodiff.errors import SpectrodiffError
from spectrodiff.signals import chord, drums, mix, noise
from spectrodiff.training import prepare as prepare_module
from spectrodiff.training.prepare import assign_splits, caption_for, load_caption_table, prepare_dataset, record_path

SR = 44100
TILE = 511 * 441 / SR  # a 512-column tile spans 511 hops: 5.11 s
HOP = TILE / 2  # the default hop
METADATA_KEYS = {"file_name", "text", "source", "start_ms", "tags"}


@pytest.fixture(autouse=True)
def _no_debug_tracebacks(monkeypatch):
    monkeypatch.delenv("SPECTRODIFF_DEBUG", raising=False)


def write(path: Path, data: np.ndarray, rate: int = SR) -> Path:
    """`data` is `(N,)` or `(N, C)`; 16-bit PCM, format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, data, rate, subtype="PCM_16")
    return path


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def metadata(dataset: Path, split: str) -> list[dict]:
    path = dataset / split / "metadata.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def all_lines(dataset: Path) -> list[dict]:
    return metadata(dataset, "train") + metadata(dataset, "validation")


def expected_tiles(seconds: float) -> int:
    return int((seconds - TILE) // HOP) + 1


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_error(result, fragment: str = "") -> None:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment.lower() in errors[0].lower(), errors[0]


# --- a catalogue prepared once for most tests ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    """Five usable tracks (8-12 s), one silent file, one too short, one unreadable; captions of every kind."""
    root = tmp_path_factory.mktemp("catalogue")
    write(root / "jazz" / "piano_trio.wav", chord(8.0))
    (root / "jazz" / "piano_trio.txt").write_text("late night jazz piano trio\n")
    write(root / "Rock" / "drum-loop.wav", drums(8.0, seed=1))
    write(root / "ambient" / "pads" / "noise_wash.flac", noise(8.0, 48000, seed=2), rate=48000)
    write(root / "field_recording-01.wav", np.stack([mix(8.0, seed=3), mix(8.0, seed=4)], axis=1))  # stereo
    quiet = 0.001 * np.random.default_rng(5).standard_normal(8 * SR).astype(np.float32)  # -60 dBFS
    write(root / "half_silent.wav", np.concatenate([mix(4.0, seed=6), quiet]))  # 12 s: last tile quiet
    write(root / "silence.wav", np.zeros(6 * SR, np.float32))
    write(root / "short.wav", chord(2.0))
    (root / "broken.wav").write_text("this is not a wave file")
    (root / "captions.csv").write_text("file,caption,tags\n"
                                       "jazz/piano_trio.wav,loses to the txt file,\n"
                                       "Rock/drum-loop.wav,driving rock drums,energetic; Live\n")
    return root


@pytest.fixture(scope="module")
def prepared(catalogue, tmp_path_factory):
    """(dataset folder, manifest, warning messages, catalogue hashes before the run)."""
    before = hashes(catalogue)
    dataset = tmp_path_factory.mktemp("prepared") / "dataset"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = prepare_dataset(catalogue, dataset, workers=1)
    return dataset, manifest, [str(w.message) for w in caught], before


def by_source(lines: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for line in lines:
        out.setdefault(line["source"], []).append(line)
    return out


def test_captions_in_order_of_precedence(prepared):
    dataset, _, messages, _ = prepared
    first = {source: lines[0] for source, lines in by_source(all_lines(dataset)).items()}
    assert first["jazz/piano_trio.wav"]["text"] == "late night jazz piano trio"  # .txt beats the csv
    assert first["jazz/piano_trio.wav"]["tags"] == ["jazz"]
    assert first["Rock/drum-loop.wav"]["text"] == "driving rock drums"  # csv beats folder names
    assert first["Rock/drum-loop.wav"]["tags"] == ["rock", "energetic", "live"]
    assert first["ambient/pads/noise_wash.flac"]["text"] == "ambient, pads"  # folder names beat the file name
    assert first["ambient/pads/noise_wash.flac"]["tags"] == ["ambient", "pads"]
    assert first["field_recording-01.wav"]["text"] == "field recording 01"
    assert first["field_recording-01.wav"]["tags"] == []
    named = [m for m in messages if m.startswith("no caption for")]
    assert any("field_recording-01.wav" in m for m in named), messages
    assert not any("piano_trio" in m or "drum-loop" in m or "noise_wash" in m for m in named)


def test_caption_table_sources_and_fallbacks(tmp_path):
    """Unit test of caption_for: csv and jsonl tables, bare file names, empty .txt, tags without a caption."""
    for name in ("a/b/song.wav", "a/other.wav", "a/tagged.wav", "c/plain.wav", "My_Song-Title.wav", "x/y.mp3"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    (tmp_path / "a" / "b" / "song.txt").write_text("  a  song \n with words ")
    (tmp_path / "c" / "plain.txt").write_text("\n")  # empty: falls through
    (tmp_path / "captions.csv").write_text("file,caption,tags\na/b/song.wav,from csv,\nother.wav,other caption,X\n"
                                           "a/tagged.wav,,Deep House; lo-fi\n")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "x/y.mp3", "text": "from jsonl",
                                                         "tags": ["Tape"]}) + "\n"
                                             + json.dumps({"file": "other.wav", "caption": "loses to csv"}) + "\n")
    table = load_caption_table(tmp_path)

    def caption(source):
        found = caption_for(tmp_path, source, table)
        return found.text, list(found.tags), found.origin

    assert caption("a/b/song.wav") == ("a song with words", ["a", "b"], "txt")
    assert caption("a/other.wav") == ("other caption", ["a", "x"], "table")  # bare file name matches
    assert caption("a/tagged.wav") == ("a, deep house, lo-fi", ["a", "deep house", "lo-fi"], "tags")
    assert caption("x/y.mp3") == ("from jsonl", ["x", "tape"], "table")
    assert caption("c/plain.wav") == ("c", ["c"], "tags")
    assert caption("My_Song-Title.wav") == ("My Song Title", [], "file name")


def test_tile_counts_sizes_and_exif(prepared):
    dataset, manifest, _, _ = prepared
    tiles = {source: len(lines) for source, lines in by_source(all_lines(dataset)).items()}
    for source in ("jazz/piano_trio.wav", "Rock/drum-loop.wav", "ambient/pads/noise_wash.flac",
                   "field_recording-01.wav"):
        assert tiles[source] == expected_tiles(8.0) == 2, source
    for split in ("train", "validation"):
        for line in metadata(dataset, split):
            with Image.open(dataset / split / line["file_name"]) as image:
                assert image.size == (512, 512) and image.mode == "RGB"
                exif = dict(image.getexif())
            assert exif[11000] == SR and exif[11040] == 512 and exif[11005] == 0
    starts = sorted(line["start_ms"] for line in by_source(all_lines(dataset))["jazz/piano_trio.wav"])
    assert starts == [0, round(HOP * 1000)]
    assert manifest["options"]["tile_width"] == 512 and manifest["options"]["hop"] == pytest.approx(HOP)


def test_silent_tiles_are_dropped(prepared):
    dataset, manifest, _, _ = prepared
    half = by_source(all_lines(dataset))["half_silent.wav"]
    assert expected_tiles(12.0) == 3
    assert sorted(line["start_ms"] for line in half) == [0, round(HOP * 1000)]  # the third tile is all -60 dBFS
    assert "silence.wav" not in by_source(all_lines(dataset))
    assert manifest["counts"]["dropped_silent"] == 2  # one from half_silent.wav, one from silence.wav
    assert manifest["counts"]["silent_files"] == 1


def test_split_by_track_and_metadata_valid(prepared):
    dataset, manifest, _, _ = prepared
    train, validation = metadata(dataset, "train"), metadata(dataset, "validation")
    assert train and validation
    train_sources, validation_sources = {x["source"] for x in train}, {x["source"] for x in validation}
    assert not train_sources & validation_sources
    assert len(train_sources | validation_sources) == 5 and len(validation_sources) == 1  # 10 % of 5, at least 1
    for split, lines in (("train", train), ("validation", validation)):
        for line in lines:
            assert set(line) == METADATA_KEYS
            assert isinstance(line["text"], str) and line["text"] and isinstance(line["start_ms"], int)
            assert (dataset / split / line["file_name"]).is_file()
            assert not Path(line["file_name"]).is_absolute() and ".." not in line["file_name"]
    pngs = sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*.png"))
    listed = sorted(f"{split}/{x['file_name']}" for split in ("train", "validation") for x in metadata(dataset, split))
    assert pngs == listed  # every tile listed once, nothing else left
    counts = manifest["counts"]
    assert counts["tiles"] == {"train": len(train), "validation": len(validation)}
    assert counts["tracks"] == {"train": 4, "validation": 1} and counts["files"] == 8
    assert manifest["seconds"]["train"] + manifest["seconds"]["validation"] == pytest.approx(4 * 8 + 12)
    assert manifest["params"]["sample_rate"] == SR and manifest["options"]["seed"] == 0
    assert json.loads((dataset / "manifest.json").read_text()) == manifest


def test_split_assignment_is_deterministic():
    tracks = [f"artist{k}/track{k}.wav" for k in range(20)]
    first = assign_splits(tracks, 0.2, seed=3)
    assert first == assign_splits(list(reversed(tracks)), 0.2, seed=3)
    assert sum(v == "validation" for v in first.values()) == 4
    assert len({tuple(sorted(assign_splits(tracks, 0.2, seed=s).items())) for s in range(5)}) > 1
    assert list(assign_splits(["a.wav", "b.wav"], 0.1).values()).count("validation") == 1
    assert assign_splits(["a.wav"], 0.5) == {"a.wav": "train"}
    assert set(assign_splits(tracks, 0.0).values()) == {"train"}


def test_unreadable_and_short_files_are_listed_and_catalogue_unchanged(prepared, catalogue):
    _, manifest, messages, before = prepared
    skipped = {entry["source"]: entry["reason"] for entry in manifest["skipped"]}
    assert set(skipped) == {"broken.wav", "short.wav"}
    assert "not a readable audio file" in skipped["broken.wav"]
    assert "shorter than one tile" in skipped["short.wav"]
    assert sum(m.startswith("skipped") for m in messages) == 2
    assert manifest["counts"]["skipped"] == 2
    assert hashes(catalogue) == before


# --- resuming and parallel runs --------------------------------------------------------------------------------------


@pytest.fixture
def small_catalogue(tmp_path) -> Path:
    root = tmp_path / "music"
    write(root / "a" / "one.wav", chord(6.0))
    write(root / "a" / "two.wav", drums(6.0))
    write(root / "b" / "three.wav", noise(6.0))
    return root


OPTIONS = {"seconds": 2.56, "hop": 1.28, "validation": 0.34}


def test_resume_tiles_only_the_unfinished_file(small_catalogue, tmp_path):
    dataset = tmp_path / "dataset"
    first = prepare_dataset(small_catalogue, dataset, **OPTIONS)
    assert first["run"] == {"tiled": 3, "reused": 0}
    lines = {split: metadata(dataset, split) for split in ("train", "validation")}
    tiles = {p: p.stat().st_mtime_ns for p in dataset.rglob("*.png")}
    record_path(dataset, "a/two.wav").unlink()  # as if the run had been killed before this file was finished
    again = prepare_dataset(small_catalogue, dataset, **OPTIONS)
    assert again["run"] == {"tiled": 1, "reused": 2}
    for path, mtime in tiles.items():
        if "two_wav" not in path.name:
            assert path.stat().st_mtime_ns == mtime, path
    assert {split: metadata(dataset, split) for split in ("train", "validation")} == lines
    third = prepare_dataset(small_catalogue, dataset, **OPTIONS)
    assert third["run"] == {"tiled": 0, "reused": 3}
    # A clean run in two worker processes writes the same metadata, line for line.
    clean = tmp_path / "clean"
    assert prepare_dataset(small_catalogue, clean, workers=2, **OPTIONS)["counts"] == first["counts"]
    for split in ("train", "validation"):
        assert (clean / split / "metadata.jsonl").read_text() == (dataset / split / "metadata.jsonl").read_text()


def test_interrupted_run_lists_nothing_then_resumes(small_catalogue, tmp_path, monkeypatch):
    dataset, real, calls = tmp_path / "dataset", prepare_module.tile_file, []

    def interrupted(job):
        calls.append(job.source)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(prepare_module, "tile_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(small_catalogue, dataset, **OPTIONS)
    assert not list(dataset.rglob("metadata.jsonl")) and not (dataset / "manifest.json").exists()
    assert len(list((dataset / ".prepare").glob("*.json"))) == 1
    monkeypatch.setattr(prepare_module, "tile_file", real)
    assert prepare_dataset(small_catalogue, dataset, **OPTIONS)["run"] == {"tiled": 2, "reused": 1}
    assert len(all_lines(dataset)) == 9


def test_bad_options_are_errors(small_catalogue, tmp_path):
    for options, fragment in (({"validation": 1.0}, "--validation"), ({"seconds": 0.0}, "--seconds"),
                              ({"min_rms_db": float("nan")}, "--min-rms"), ({"workers": 0}, "--workers"),
                              ({"n_mels": 100}, "--n-mels"), ({"n_mels": 4096}, "--n-mels")):
        with pytest.raises(SpectrodiffError, match=fragment):
            prepare_dataset(small_catalogue, tmp_path / "d", **options)
    assert not (tmp_path / "d").exists()


def test_n_mels_sets_the_tile_height_and_travels_in_the_manifest(small_catalogue, tmp_path):
    manifest = prepare_dataset(small_catalogue, tmp_path / "d", **{**OPTIONS, "n_mels": 128})
    assert manifest["params"]["num_frequencies"] == 128
    tile = next((tmp_path / "d" / "train").rglob("*.png"))
    with Image.open(tile) as image:
        assert image.height == 128


def tiny_model(folder: Path, **params) -> str:
    """A tiny model saved to `folder` with these spectrogram parameters (spectrodiff.testing)."""
    from spectrodiff.codec.params import SpectrogramParams
    from spectrodiff.testing import build_tiny_pipeline

    build_tiny_pipeline(SpectrogramParams(**params)).save_pretrained(folder)
    return str(folder)


def test_cli_prepare_takes_the_base_models_parameters(small_catalogue, tmp_path):
    """A beat-time base makes beat-time tiles of its height: the manifest holds the model's own parameters."""
    from spectrodiff.bundled import model_params

    base = tiny_model(tmp_path / "base", num_frequencies=64, columns_per_beat=8)
    (small_catalogue / "tempo.csv").write_text("file,bpm,downbeat\na/one.wav,120,0\na/two.wav,120,0\n"
                                               "b/three.wav,120,0\n")
    dataset = tmp_path / "dataset"
    result = invoke("prepare", small_catalogue, "-o", dataset, "--base", base, "--beats", 4, "--validation", 0,
                    "--workers", 1)
    assert result.exit_code == 0, result.output
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["params"] == model_params(base).to_dict() == {**manifest["params"], "num_frequencies": 64,
                                                                   "columns_per_beat": 8}
    tiles = list((dataset / "train").rglob("*.png"))
    assert len(tiles) == 9  # three 2 s tiles (4 beats at 120 BPM) of each 6 s file
    with Image.open(tiles[0]) as image:
        assert image.size == (32, 64)  # 4 beats x 8 columns, 64 mel bins
    # Options that contradict the base are one line naming both values, before anything is written.
    for flags, words in ((("--n-mels", 128), ("--n-mels 128", "64")),
                         (("--columns-per-beat", 16), ("--columns-per-beat 16", "8")),
                         (("--stereo",), ("--stereo True", "False"))):
        result = invoke("prepare", small_catalogue, "-o", tmp_path / "refused", "--base", base, *flags)
        assert_one_error(result, words[0])
        assert words[1] in result.stderr and base in result.stderr, result.stderr
    assert not (tmp_path / "refused").exists()


def test_fit_base_sets_only_what_the_base_decides(tmp_path):
    from spectrodiff.training.options import PrepareOptions
    from spectrodiff.training.prepare import fit_base

    clock = tiny_model(tmp_path / "clock", num_frequencies=128)
    opts = fit_base(PrepareOptions(catalogue=tmp_path, out=tmp_path / "d", base=clock, n_mels=128, hop=1.0))
    assert (opts.n_mels, opts.stereo, opts.columns_per_beat, opts.hop) == (128, False, None, 1.0)
    # The control: without a base the options stand (Riffusion's parameters for the rest).
    assert fit_base(PrepareOptions(catalogue=tmp_path, out=tmp_path / "d", n_mels=64)).n_mels == 64
    other_rate = tiny_model(tmp_path / "rate", num_frequencies=64, sample_rate=22050)
    with pytest.raises(SpectrodiffError, match="prepare cannot make tiles for .*sample_rate 44100 vs 22050"):
        fit_base(PrepareOptions(catalogue=tmp_path, out=tmp_path / "d", base=other_rate))
    with pytest.raises(SpectrodiffError, match="unknown model"):
        fit_base(PrepareOptions(catalogue=tmp_path, out=tmp_path / "d", base="no-such-model"))


def test_changed_options_and_removed_files_update_the_dataset(small_catalogue, tmp_path):
    dataset = tmp_path / "dataset"
    prepare_dataset(small_catalogue, dataset, **OPTIONS)
    copy = shutil.copytree(small_catalogue, tmp_path / "copy")  # the catalogue is never modified: change a copy
    (copy / "b" / "three.wav").unlink()
    manifest = prepare_dataset(copy, dataset, **{**OPTIONS, "hop": 2.56})
    assert manifest["run"] == {"tiled": 2, "reused": 0}  # new options make every record stale
    lines = all_lines(dataset)
    assert {x["source"] for x in lines} == {"a/one.wav", "a/two.wav"}
    assert sorted({x["start_ms"] for x in lines}) == [0, 2560]
    assert len(list(dataset.rglob("*.png"))) == len(lines) == 4  # old tiles and records swept away
    assert len(list((dataset / ".prepare").iterdir())) == 2


# --- command line ------------------------------------------------------------------------------------------------


def test_cli_prepare(small_catalogue, tmp_path):
    dataset = tmp_path / "dataset"
    (small_catalogue / "broken.wav").write_text("not audio")
    result = invoke("prepare", small_catalogue, "-o", dataset, "--seconds", 2.56, "--hop", 2.56, "--workers", 1,
                    "--validation", 0.34, "--seed", 7)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"6 tiles in .*: train 4 from 2 track\(s\), validation 2 from 1 track\(s\); "
                        r"0 silent tiles dropped; 1 file\(s\) skipped", result.stdout.strip()), result.stdout
    assert [line for line in result.stderr.splitlines() if line.startswith("warning: skipped")]
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["options"]["seed"] == 7 and manifest["options"]["min_rms_db"] == -50.0
    assert len(all_lines(dataset)) == 6


def test_cli_prepare_help_has_an_example():
    result = invoke("prepare", "--help")
    assert result.exit_code == 0
    assert re.search(r"^\s*Example: spectrodiff prepare ", result.stdout, re.MULTILINE), result.stdout


def test_cli_prepare_bad_input(tmp_path):
    assert_one_error(invoke("prepare", tmp_path / "missing", "-o", tmp_path / "d"), "no such folder")
    (tmp_path / "empty").mkdir()
    assert_one_error(invoke("prepare", tmp_path / "empty", "-o", tmp_path / "d"), "no audio files")
    music = tmp_path / "music"
    write(music / "x.wav", chord(6.0))
    (tmp_path / "file.txt").write_text("x")
    assert_one_error(invoke("prepare", music, "-o", tmp_path / "file.txt"), "not a folder")
    assert_one_error(invoke("prepare", music, "-o", music / "dataset"), "must not contain")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.md").write_text("mine")
    assert_one_error(invoke("prepare", music, "-o", tmp_path / "busy"), "not a dataset made by prepare")
    assert_one_error(invoke("prepare", music, "-o", tmp_path / "d", "--validation", 1), "--validation")
    assert not (tmp_path / "d").exists()


def test_cli_prepare_nothing_readable(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    (music / "a.wav").write_text("not audio")
    (music / "b.mp3").write_bytes(b"\0" * 100)
    result = invoke("prepare", music, "-o", tmp_path / "d")
    assert result.exit_code != 0 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not be read" in errors[0], result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("warning: skipped")]) == 2


def test_tiles_of_the_reference_catalogue_carry_its_music(small_catalogue, tmp_path):
    """Where catalogue.json (spectrodiff.training.catalogue) says a file's tempo, key and meter, every tile of it
    carries them and where it starts in its bar and beat; the control: files it does not list carry none."""
    (small_catalogue / "catalogue.json").write_text(json.dumps({"files": [
        {"file": "a/one.wav", "tempo": 100.0, "key": "D dorian", "meter": "4/4"},
        {"file": "a/two.wav", "tempo": 90.0, "key": "C major"}]}))  # no meter: the catalogue's 4/4
    dataset = tmp_path / "dataset"
    prepare_dataset(small_catalogue, dataset, **{**OPTIONS, "validation": 0.0})
    rows = {(row["source"], row["start_ms"]): row for row in metadata(dataset, "train")}
    one = rows[("a/one.wav", 1280)]  # a 4/4 bar at 100 BPM is 2.4 s, a beat 0.6 s: 1.28 s is 0.5333 bar, 0.1333 beat
    assert (one["tempo"], one["key"], one["meter"], one["bar_phase"], one["beat_phase"]) == \
        (100.0, "D dorian", "4/4", 0.5333, 0.1333)
    assert rows[("a/two.wav", 2560)]["bar_phase"] == pytest.approx(2.56 / (4 * 60 / 90) % 1, abs=1e-4)
    assert rows[("a/one.wav", 0)]["bar_phase"] == 0.0
    assert not {"tempo", "key", "bar_phase"} & set(rows[("b/three.wav", 0)])
    (small_catalogue / "catalogue.json").write_text("{}")
    with pytest.raises(SpectrodiffError, match="not a catalogue made by"):
        prepare_dataset(small_catalogue, tmp_path / "other", **OPTIONS)
