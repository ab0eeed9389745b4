"""Dataset preparation: a catalogue of audio -> spectrogram tiles with captions, as a Hugging Face imagefolder.

What a dataset folder holds:

    DATASET/train/<folders>/<stem>_<suffix>_<start>ms.png   tiles: RGB, 512 high, parameters in EXIF
    DATASET/train/metadata.jsonl                          a line per tile: file_name, text, source, start_ms, tags;
                                                          for a catalogue made by spectrodiff.training.catalogue
                                                          also its music: tempo, key, meter, instruments, and
                                                          where the tile starts in its bar and beat (bar_phase,
                                                          beat_phase: 0-1)
    DATASET/validation/...                                the same for the validation tracks
    DATASET/manifest.json                                 counts, durations, parameters, skipped files, and the
                                                          catalogue's style table (music_styles), if it has one
    DATASET/.prepare/<sha1 of the source path>.json       a record per finished file (its tiles), for resuming

A file's record is written, atomically, once all its tiles are. The metadata files and the manifest are rewritten
from the records at the end of every run, so a killed run never leaves a half-listed file and a re-run only tiles
the files that have no current record (a record goes stale when the file or the tiling options change). Captions
and the train/validation split are recomputed on every run, which is cheap: editing a caption needs no re-tiling.
The catalogue itself is only ever read.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import re
import signal
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from spectrodiff import __version__
from spectrodiff.bundled import model_params
from spectrodiff.codec.audio import audio_info, find_audio, load_audio
from spectrodiff.codec.convert import audio_to_image, save_image
from spectrodiff.codec.params import SpectrogramParams
from spectrodiff.codec.tiles import Tiling, tile_name
from spectrodiff.errors import SpectrodiffError
from spectrodiff.files import atomic_path
from spectrodiff.generation.musical import bar_seconds, beats_per_bar
from spectrodiff.process import end_with_parent

from .options import PrepareOptions

SPLITS = ("train", "validation")
RECORDS = ".prepare"
MANIFEST = "manifest.json"
METADATA = "metadata.jsonl"
CAPTION_CSV = "captions.csv"
CAPTION_JSONL = "metadata.jsonl"
# Files captioned from their names are each named in a warning up to this many, then counted in one more line.
NAMED_WARNINGS = 10


# ---- tiling ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetTiling(Tiling):
    """`slice`'s tiling (`spectrodiff.codec.tiles.Tiling`) with tiles every half a tile by default, and tiles whose
    RMS is below `min_rms_db` dBFS dropped as silent.

    In beat time (`columns_per_beat`) a tile is `beats` beats wide at its file's own tempo, starts on a bar line and
    the next starts half a tile later in whole bars; `seconds` and `hop` then apply only to files tiled in clock
    time (no steady beat, `unsteady="clock"`)."""

    min_rms_db: float = -50.0
    columns_per_beat: int | None = None
    beats: int = 16

    @property
    def beat_params(self) -> SpectrogramParams | None:
        """The beat-time parameters (no tempo yet), or None in clock time."""
        if self.columns_per_beat is None:
            return None
        return SpectrogramParams.from_dict(self.params.to_dict() | {"columns_per_beat": self.columns_per_beat})

    @property
    def hop_seconds(self) -> float:
        return self.hop or self.tile_seconds / 2

    def config(self) -> dict:
        """Everything that decides the tiles' pixels and names (a record made with other values is stale)."""
        beat = {"columns_per_beat": self.columns_per_beat, "beats": self.beats} if self.columns_per_beat else {}
        return {"params": self.params.to_dict(), "seconds": self.seconds, "tile_width": self.width,
                "tile_seconds": self.tile_seconds, "hop": self.hop_seconds, "min_rms_db": self.min_rms_db} | beat

    def bar_starts(self, grid: BeatGrid, duration: float) -> tuple[SpectrogramParams, list[tuple[int, float]]]:
        """A file's beat-time tiles: the parameters at its tempo and (bar number, start seconds) of each whole tile,
        every half a tile in whole bars from its first downbeat."""
        params = self.beat_params.at_tempo(grid.bpm)
        seconds = params.samples_for_width(self.beats * self.columns_per_beat) / params.sample_rate
        bar = bar_seconds(grid.bpm, grid.meter)
        step = max(1, int(self.beats / 2 // beats_per_bar(grid.meter)))
        count = int((duration - grid.downbeat - seconds) // (step * bar)) + 1 if duration >= seconds else 0
        return params, [(k * step, grid.downbeat + k * step * bar) for k in range(max(count, 0))]


@dataclass(frozen=True)
class BeatGrid:
    """Where a file's bars are: tempo (quarter notes a minute), the first downbeat (seconds) and the meter, and
    where they came from ("labels", "given" or "tracked")."""

    bpm: float
    downbeat: float
    meter: str = "4/4"
    source: str = "labels"


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level of `(C, N)` float audio over all channels, in dB relative to full scale; -inf for silence."""
    rms = math.sqrt(float(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


@dataclass(frozen=True)
class TileJob:
    """One file to tile: `source` is its posix path relative to `catalogue`; tiles go to `out/split/`."""

    catalogue: Path
    source: str
    out: Path
    split: str
    tiling: DatasetTiling
    grid: BeatGrid | None = None  # beat time: the file's bars (None: tiled in clock time)


def fingerprint(path: Path, tiling: DatasetTiling, grid: BeatGrid | None = None) -> dict:
    """What a record must match to be reused: the file's size and modification time, the tiling and its bars."""
    stat = path.stat()
    beat = {"grid": dataclasses.asdict(grid)} if grid else {}
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "tiling": tiling.config()} | beat


def file_tiles(job: TileJob, duration: float) -> Iterator[tuple[float, np.ndarray, SpectrogramParams, dict]]:
    """(start seconds, `(C, samples)` audio, parameters, what the record keeps) of each tile of a job's file: whole
    bars at its tempo in beat time, else the clock-time tiling."""
    tiling, path = job.tiling, job.catalogue.joinpath(*PurePosixPath(job.source).parts)
    if job.grid is None:
        for start in tiling.starts(duration):
            yield start, tiling.read(path, start), tiling.params, {}
        return
    params, starts = tiling.bar_starts(job.grid, duration)
    samples = params.samples_for_width(tiling.beats * tiling.columns_per_beat)
    channels = "stereo" if tiling.stereo else "mono"
    for bar, start in starts:
        clip = load_audio(path, params.sample_rate, channels, start, samples / params.sample_rate)[:, :samples]
        yield start, np.pad(clip, ((0, 0), (0, samples - clip.shape[1]))), params, {"bar": bar}


def tile_file(job: TileJob) -> dict:
    """Cut one file into tiles, write the non-silent ones as PNGs, then the file's record; returns the record.

    Each tile is read from disk on its own as `(C, tiling.samples)` float32 audio (C = 1, or 2 with stereo) and
    becomes a `width x num_frequencies` RGB image with its EXIF. Raises SpectrodiffError when the file cannot be
    read or decoded (no record is written then, so a re-run tries it again).
    """
    tiling = job.tiling
    path = job.catalogue.joinpath(*PurePosixPath(job.source).parts)
    stamp = fingerprint(path, tiling, job.grid)  # taken before reading: a file changed meanwhile is redone next time
    duration = audio_info(path).duration
    tiles, dropped = [], 0
    for start, clip, params, extra in file_tiles(job, duration):
        if rms_dbfs(clip) < tiling.min_rms_db:
            dropped += 1
            continue
        start_ms = round(start * 1000)
        file = f"{job.split}/{tile_name(job.source, start, 'png')}"
        save_image(job.out / file, audio_to_image(clip, params), overwrite=True)
        tiles.append({"file": file, "start_ms": start_ms} | extra)
    record = {"source": job.source, "fingerprint": stamp, "duration": duration, "tiles": tiles,
              "dropped_silent": dropped}
    write_record(job.out, record)
    return record


# ---- records --------------------------------------------------------------------------------------------------


def record_path(out: Path, source: str) -> Path:
    """Where the record of `source` (a posix path relative to the catalogue) is kept."""
    return Path(out) / RECORDS / f"{hashlib.sha1(source.encode()).hexdigest()}.json"


def write_record(out: Path, record: dict) -> None:
    with atomic_path(record_path(out, record["source"]), overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def reusable_record(out: Path, source: str, expected: dict) -> dict | None:
    """The record of `source` when it matches `expected` (see `fingerprint`) and all its tiles exist, else None."""
    try:
        record = json.loads(record_path(out, source).read_text())
    except (OSError, ValueError):
        return None
    try:
        valid = record["source"] == source and record["fingerprint"] == expected
        return record if valid and all((out / tile["file"]).is_file() for tile in record["tiles"]) else None
    except (KeyError, TypeError):  # a record from another version, or damaged
        return None


# ---- captions -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableEntry:
    """A row of the catalogue's caption table: a caption (or None) and tags."""

    caption: str | None
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Caption:
    """A file's caption and tags; `origin` says where the caption came from: txt, table, tags or file name."""

    text: str
    tags: tuple[str, ...]
    origin: str


def _clean(text: str) -> str:
    return " ".join(text.split())


def _tag(text: str) -> str:
    return _clean(text.replace("_", " ")).lower()


def _split_tags(value) -> tuple[str, ...]:
    """Tags from a list, or from a string separated by commas, semicolons or bars; lower-case."""
    items = value if isinstance(value, list) else re.split(r"[,;|]", str(value or ""))
    return tuple(t for t in (_tag(str(item)) for item in items) if t)


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _table_key(file: str) -> str:
    key = file.strip().replace("\\", "/")
    return key[2:] if key.startswith("./") else key


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {name.strip().lower() for name in reader.fieldnames or []}
        if "file" not in columns or not columns & {"caption", "text", "tags"}:
            raise SpectrodiffError(f"{path}: needs a header with a 'file' column and a 'caption' (or 'tags') column")
        for row in reader:
            yield reader.line_num, {(k or "").strip().lower(): v for k, v in row.items()}


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise SpectrodiffError(f"{path} line {number}: not valid JSON") from None
            if not isinstance(row, dict):
                raise SpectrodiffError(f"{path} line {number}: expected a JSON object")
            yield number, row


def load_caption_table(catalogue: Path) -> dict[str, TableEntry]:
    """The caption table at the catalogue's root: `captions.csv` (columns file, caption, optional tags) and/or
    `metadata.jsonl` (keys file, caption or text, optional tags: a list or a comma-separated string).

    Returns file -> entry, where file is a path relative to the catalogue or a bare file name (which then applies
    to every file of that name). A file named in both tables takes the csv's entry.
    """
    table: dict[str, TableEntry] = {}
    for name, rows in ((CAPTION_JSONL, _jsonl_rows), (CAPTION_CSV, _csv_rows)):
        path = Path(catalogue) / name
        if not path.is_file():
            continue
        for number, row in rows(path):
            file = row.get("file") or row.get("file_name")
            if not isinstance(file, str) or not file.strip():
                raise SpectrodiffError(f"{path} line {number}: no file named")
            caption = _clean(str(row.get("caption") or row.get("text") or ""))
            table[_table_key(file)] = TableEntry(caption or None, _split_tags(row.get("tags")))
    return table


def file_name_caption(source: str) -> str:
    """The last resort: the file's name, underscores and dashes turned into spaces."""
    stem = PurePosixPath(source).stem
    return _clean(re.sub(r"[_-]+", " ", stem)) or stem


def caption_for(catalogue: Path, source: str, table: dict[str, TableEntry]) -> Caption:
    """Caption and tags of one audio file (`source`: its posix path relative to the catalogue).

    The caption is, in order of precedence: the text of `<stem>.txt` beside the file; the caption table's entry
    (by path, else by file name); the tags joined by commas; the file name (see `file_name_caption`).
    Tags are the names of the folders the file is in (lower-case, underscores as spaces), then the table's tags.
    """
    rel = PurePosixPath(source)
    entry = table.get(source) or table.get(rel.name) or TableEntry(None, ())
    tags = _unique([_tag(part) for part in rel.parent.parts] + list(entry.tags))
    txt = Path(catalogue).joinpath(*rel.parts).with_suffix(".txt")
    try:
        text = _clean(txt.read_text(encoding="utf-8", errors="replace")) if txt.is_file() else ""
    except OSError as exc:
        warnings.warn(f"cannot read {txt} ({exc}); ignoring it", stacklevel=2)
        text = ""
    if text:
        return Caption(text, tags, "txt")
    if entry.caption:
        return Caption(entry.caption, tags, "table")
    if tags:
        return Caption(", ".join(tags), tags, "tags")
    return Caption(file_name_caption(source), tags, "file name")


def _warn_file_name_captions(captions: dict[str, Caption]) -> None:
    named = [source for source, caption in captions.items() if caption.origin == "file name"]
    for source in named[:NAMED_WARNINGS]:
        warnings.warn(f"no caption for {source}: using its file name {captions[source].text!r} (add a .txt beside "
                      f"it, or a row in {CAPTION_CSV})", stacklevel=4)
    if len(named) > NAMED_WARNINGS:
        warnings.warn(f"{len(named) - NAMED_WARNINGS} more file(s) captioned from their file names", stacklevel=4)


def _warn_unmatched(table: dict[str, TableEntry], sources: list[str]) -> None:
    known = set(sources) | {PurePosixPath(s).name for s in sources}
    unmatched = sorted(key for key in table if key not in known)
    if unmatched:
        warnings.warn(f"{len(unmatched)} caption table entr{'y' if len(unmatched) == 1 else 'ies'} name no audio "
                      f"file in the catalogue (first: {unmatched[0]})", stacklevel=4)


# ---- files and splits -----------------------------------------------------------------------------------------


def load_music_labels(catalogue: Path) -> dict[str, dict]:
    """What the reference catalogue's catalogue.json knows of each file, by its path in the catalogue: tempo
    (quarter notes a minute), key, meter and (version 2) instruments; {} for a catalogue without one. Its clips start
    on a downbeat."""
    path = catalogue / "catalogue.json"
    if not path.is_file():
        return {}
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
        return {f["file"]: {"tempo": float(f["tempo"]), "key": str(f["key"]), "meter": str(f.get("meter", "4/4"))}
                | ({"instruments": list(f["instruments"])} if "instruments" in f else {})
                | ({"chords": clip_chords(f["style"], int(f["seed"]))} if "stems" in f else {}) for f in files}
    except (ValueError, KeyError, TypeError) as exc:
        raise SpectrodiffError(f"{path}: not a catalogue made by spectrodiff.training.catalogue ({exc})") from None


def clip_chords(style: str, seed: int) -> list[list[int]]:
    """The chord of each bar of a catalogue clip's progression (it repeats from the first downbeat), as pitch
    classes: its MIDI's own, drawn again from the style and seed."""
    from .composition import bar_chords, clip_facts, style_by_name  # pretty_midi: only for the reference catalogue

    style_entry = style_by_name(style)
    return [list(chord) for chord in bar_chords(style_entry, clip_facts(style_entry, seed))]


def load_music_styles(catalogue: Path) -> dict:
    """The reference catalogue's styles (captions, tempo range, meter, modes), {} without one; catalogues before
    version 2 have no tempo ranges, and give {}."""
    path = catalogue / "catalogue.json"
    if not path.is_file():
        return {}
    styles = json.loads(path.read_text(encoding="utf-8")).get("styles") or {}
    if not all("tempo" in entry for entry in styles.values()):
        return {}
    return {name: entry | {"progressions": style_progressions(name)} for name, entry in styles.items()}


def style_progressions(style: str) -> dict[str, list[list[list[int]]]]:
    """A reference style's chord progressions in each of its modes, as a model's table keeps them
    (`conditions.MusicTable.progression`): per mode, per progression, a chord a bar as pitch classes above the
    tonic, root first."""
    from .composition import bar_chords, clip_facts, style_by_name

    entry = style_by_name(style)
    facts = clip_facts(entry, 0)
    return {mode: [[list(chord) for chord in bar_chords(entry, dataclasses.replace(facts, root=0, mode=mode,
                                                                                   progression=progression))]
                   for progression in entry.progressions] for mode in entry.modes}


def tile_music(labels: dict, tile: dict) -> dict:
    """A tile's musical labels: its file's tempo, key and meter, the phase (0-1) of its first sample in the bar and
    in the beat, and for a tile that starts on bar `tile["bar"]` the progression from that bar on."""
    numerator, denominator = (int(part) for part in labels["meter"].split("/"))
    beat = 60.0 / labels["tempo"]
    if "bar" in tile:
        chords = labels.get("chords")
        rotated = {"chords": chords[tile["bar"] % len(chords):] + chords[:tile["bar"] % len(chords)]} if chords else {}
        return {**labels, "bar_phase": 0.0, "beat_phase": 0.0} | rotated
    start = tile["start_ms"] / 1000
    return {**labels, "bar_phase": round(start / (beat * numerator * 4 / denominator) % 1.0, 4),
            "beat_phase": round(start / beat % 1.0, 4)}


def assign_splits(sources: Iterable[str], validation: float = 0.1, seed: int = 0) -> dict[str, str]:
    """Each source track -> "train" or "validation", so that no track is in both.

    The tracks are ranked by a hash of (seed, path); the first round(validation x count) go to validation, at
    least one (and at most all but one) when there are two tracks or more and `validation` > 0. Deterministic
    for a seed whatever the order of `sources`, and adding a track moves at most one other.
    """
    if not 0 <= validation < 1:
        raise SpectrodiffError(f"--validation must be a fraction in [0, 1), got {validation:g}")
    ranked = sorted(set(sources), key=lambda s: hashlib.sha256(f"{seed}\0{s}".encode()).hexdigest())
    count = round(validation * len(ranked))
    if validation > 0 and len(ranked) >= 2:
        count = min(max(count, 1), len(ranked) - 1)
    return {source: ("validation" if rank < count else "train") for rank, source in enumerate(ranked)}


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def _check_folders(catalogue: Path, out: Path) -> None:
    if not catalogue.exists():
        raise SpectrodiffError(f"no such folder: {catalogue}")
    if not catalogue.is_dir():
        raise SpectrodiffError(f"{catalogue} is not a folder; prepare needs a folder of audio files")
    if out.exists() and not out.is_dir():
        raise SpectrodiffError(f"{out} exists and is not a folder")
    a, b = catalogue.resolve(), out.resolve()
    if a == b or b.is_relative_to(a) or a.is_relative_to(b):
        raise SpectrodiffError(f"the dataset folder {out} and the catalogue {catalogue} must not contain each other "
                               "(the catalogue is never written to)")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORDS).is_dir():
        raise SpectrodiffError(f"{out} is not empty and is not a dataset made by prepare; choose a new folder")


# ---- running --------------------------------------------------------------------------------------------------


def _init_worker(parent: int) -> None:
    """A worker ends when its parent does, however the parent ends (SIGTERM, SIGKILL, a crash): SIGTERM from the
    kernel (Linux), which ends the worker after its half-written tile is removed."""
    import torch

    signal.signal(signal.SIGTERM, _leave)
    end_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request above took effect
        os._exit(128 + signal.SIGTERM)
    torch.set_num_threads(1)  # one core per worker process; the processes are the parallelism


def _leave(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _run_job(job: TileJob) -> tuple[str, dict | None, str | None]:
    """(source, record, None) on success, (source, None, reason) when the file cannot be read."""
    try:
        return job.source, tile_file(job), None
    except SpectrodiffError as exc:
        return job.source, None, str(exc)


def _run_job_in_worker(job: TileJob) -> tuple[str, dict | None, str | None]:
    """`_run_job` in a worker process: a SIGTERM there (`_leave`) ends the process once the files it was writing are
    removed, rather than returning to the pool as a failed job."""
    try:
        return _run_job(job)
    except SystemExit as exc:
        os._exit(exc.code)


def _run_jobs(jobs: list[TileJob], workers: int) -> Iterator[tuple[str, dict | None, str | None]]:
    """Results of `_run_job`, in this process (one worker) or in `workers` spawned processes, as they finish."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_run_job, jobs)
        return
    # spawn, not fork: forking a process whose torch thread pools are running can deadlock the children.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=_init_worker,
                               initargs=(os.getpid(),))
    finished = False
    try:
        futures = [pool.submit(_run_job_in_worker, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
        finished = True
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)
        if not finished:  # stopped early: the workers remove the files they are on and end (_init_worker)
            for worker in multiprocessing.active_children():
                worker.terminate()


def _move_to_split(out: Path, record: dict, split: str) -> dict:
    """Move a record's tiles into `split` (when the split changed since they were written) and save the record."""
    moved = []
    for tile in record["tiles"]:
        old, (_, inner) = tile["file"], tile["file"].split("/", 1)
        new = f"{split}/{inner}"
        if new != old:
            (out / new).parent.mkdir(parents=True, exist_ok=True)
            os.replace(out / old, out / new)
        moved.append({**tile, "file": new})
    if moved != record["tiles"]:
        record = {**record, "tiles": moved}
        write_record(out, record)
    return record


def _write_metadata(out: Path, split: str, lines: list[dict]) -> None:
    path = out / split / METADATA
    if not lines:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")


def _sweep(out: Path, records: dict[str, dict]) -> None:
    """Remove what no current record lists: tiles of files since removed, changed or re-split, leftovers of a
    killed run (temporary files), stale records; then empty folders."""
    keep = {out / tile["file"] for record in records.values() for tile in record["tiles"]}
    for split in SPLITS:
        for folder, _, files in os.walk(out / split, topdown=False):
            for name in files:
                path = Path(folder) / name
                temporary = name.startswith(".") and ".tmp" in name
                if temporary or (name.endswith(".png") and path not in keep):
                    path.unlink()
            if not any(Path(folder).iterdir()):
                Path(folder).rmdir()
    current = {record_path(out, source).name for source in records}
    for path in (out / RECORDS).iterdir():
        if path.name not in current:
            path.unlink()


@dataclass
class Scan:
    """The audio files of a catalogue (posix paths relative to it): all of them, the ones long enough to tile, and
    why each of the others is skipped."""

    sources: list[str]
    candidates: list[str]
    skipped: dict[str, str]


def scan_catalogue(catalogue: Path, tiling: DatasetTiling, table: dict[str, TableEntry]) -> Scan:
    """Find the audio; warn about caption table entries that name none of it, and about the files that cannot be
    read or are shorter than a tile. SpectrodiffError when no file is left."""
    sources = [path.relative_to(catalogue).as_posix() for path in find_audio(catalogue)]
    _warn_unmatched(table, sources)
    skipped: dict[str, str] = {}
    for source in sources:
        try:
            duration = audio_info(catalogue / source).duration
        except SpectrodiffError as exc:
            skipped[source] = str(exc)
            continue
        if duration < tiling.tile_seconds:
            skipped[source] = f"{source} is shorter than one tile ({duration:.2f} s < {tiling.tile_seconds:.2f} s)"
    for reason in skipped.values():
        warnings.warn(f"skipped {reason}", stacklevel=3)
    candidates = [source for source in sources if source not in skipped]
    if not candidates:
        unreadable = sum("shorter than one tile" not in reason for reason in skipped.values())
        raise SpectrodiffError(f"nothing to prepare in {catalogue}: of {len(sources)} audio file(s), {unreadable} "
                               f"could not be read and {len(sources) - unreadable} are shorter than one tile "
                               f"({tiling.tile_seconds:.2f} s)")
    return Scan(sources, candidates, skipped)


def tile_catalogue(catalogue: Path, out: Path, scan: Scan, tiling: DatasetTiling, likely: dict[str, str],
                   workers: int, progress: Callable[[int, int], None] | None,
                   grids: dict[str, BeatGrid] | None = None) -> tuple[dict[str, dict], int]:
    """Tile every candidate without a current record into the split `likely` gives it (in beat time by its grid in
    `grids`, if it has one); a file that fails joins `scan.skipped` with a warning. Returns (the records of the tiled
    and reused files by source, files tiled)."""
    records: dict[str, dict] = {}
    jobs = []
    for source in scan.candidates:
        grid = (grids or {}).get(source)
        record = reusable_record(out, source, fingerprint(catalogue / source, tiling, grid))
        if record is not None:
            records[source] = record
        else:
            jobs.append(TileJob(catalogue, source, out, likely[source], tiling, grid))
    done = len(records)
    if progress:
        progress(done, len(scan.candidates))
    for source, record, reason in _run_jobs(jobs, workers):
        if record is None:
            scan.skipped[source] = reason
            warnings.warn(f"skipped {reason}", stacklevel=3)
        else:
            records[source] = record
        done += 1
        if progress:
            progress(done, len(scan.candidates))
    return records, len(jobs)


def split_tracks(catalogue: Path, out: Path, records: dict[str, dict], table: dict[str, TableEntry],
                 validation: float, seed: int) -> tuple[dict[str, str], dict[str, list[dict]]]:
    """Split the tracks that have tiles, move tiles whose split changed, caption them, write each split's
    metadata.jsonl and sweep what no record lists. Returns (track -> split, split -> its metadata lines)."""
    tracks = sorted(source for source, record in records.items() if record["tiles"])
    splits = assign_splits(tracks, validation, seed)
    captions = {source: caption_for(catalogue, source, table) for source in tracks}
    _warn_file_name_captions(captions)
    music = load_music_labels(catalogue)
    lines: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for source in tracks:
        records[source] = _move_to_split(out, records[source], splits[source])
        caption = captions[source]
        for tile in records[source]["tiles"]:
            split, file_name = tile["file"].split("/", 1)
            line = {"file_name": file_name, "text": caption.text, "source": source, "start_ms": tile["start_ms"],
                    "tags": list(caption.tags)}
            if source in music:
                line |= tile_music(music[source], tile)
            lines[split].append(line)
    for split in SPLITS:
        _write_metadata(out, split, lines[split])
    _sweep(out, records)
    return splits, lines


def write_manifest(catalogue: Path, out: Path, scan: Scan, records: dict[str, dict], splits: dict[str, str],
                   lines: dict[str, list[dict]], tiling: DatasetTiling, options: dict, tiled: int) -> dict:
    """The dataset's manifest (counts, durations, parameters, options, skipped files, the catalogue's styles),
    written to OUT/manifest.json and returned. `splits` holds the tracks with tiles."""
    manifest = {
        "spectrodiff_version": __version__,
        "catalogue": str(catalogue.resolve()),
        "counts": {
            "files": len(scan.sources),
            "tracks": {split: sum(side == split for side in splits.values()) for split in SPLITS},
            "tiles": {split: len(lines[split]) for split in SPLITS},
            "dropped_silent": sum(record["dropped_silent"] for record in records.values()),
            "silent_files": len(records) - len(splits),
            "skipped": len(scan.skipped),
        },
        "seconds": {split: round(sum(records[s]["duration"] for s, side in splits.items() if side == split), 3)
                    for split in SPLITS},
        "params": (tiling.beat_params or tiling.params).to_dict(),
        "options": {"seconds": tiling.seconds, "hop": tiling.hop_seconds, "tile_width": tiling.width,
                    "tile_seconds": tiling.tile_seconds, "min_rms_db": tiling.min_rms_db} | options,
        "skipped": [{"source": source, "reason": reason} for source, reason in sorted(scan.skipped.items())],
        "run": {"tiled": tiled, "reused": len(scan.candidates) - tiled},
    }
    styles = load_music_styles(catalogue)
    if styles:
        manifest["music_styles"] = styles  # what a model trained on it picks tempos and keys from
    with atomic_path(out / MANIFEST, overwrite=True) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def beat_grids(catalogue: Path, scan: Scan, tiling: DatasetTiling, unsteady: str,
               strict_tempo: bool = False) -> dict[str, BeatGrid]:
    """Each candidate's bars for beat-time tiles: the reference catalogue's labels (exact; its clips start on a
    downbeat), else what the user gives (a tempo.csv or per-file sidecar), else tracked. A file with no steady
    beat is tiled in clock time (`unsteady="clock"`) or skipped ("skip"), listed either way: never mis-tiled. A
    tracked tempo the tracker found ambiguous (half or double nearly as likely) is listed, and with `strict_tempo`
    is a SpectrodiffError naming the file, both tempi and how to give the tempo."""
    from spectrodiff.codec.beats import TEMPO_CSV, TEMPO_SIDECAR, load_known_tempi, track_beats

    labels, known = load_music_labels(catalogue), load_known_tempi(catalogue)
    grids: dict[str, BeatGrid] = {}
    for source in list(scan.candidates):
        if source in labels:
            grids[source] = BeatGrid(labels[source]["tempo"], 0.0, labels[source]["meter"])
            continue
        if source in known:
            grids[source] = BeatGrid(*known[source], source="given")
            continue
        params = tiling.params
        audio = load_audio(catalogue / source, params.sample_rate, "mono")
        tracked = track_beats(audio, params.sample_rate)
        if tracked.steady and tracked.ambiguous:
            other = "" if tracked.runner_up is None else f" or {tracked.runner_up:.1f}"
            said = (f"{source}: its tempo is ambiguous ({tracked.bpm:.1f}{other} BPM); give it in {TEMPO_CSV} "
                    f"(columns file, bpm, downbeat) or {PurePosixPath(source).stem}{TEMPO_SIDECAR}")
            if strict_tempo:
                raise SpectrodiffError(said)
            warnings.warn(f"{said}; tiled at {tracked.bpm:.1f} BPM (--strict-tempo refuses it)", stacklevel=3)
        if tracked.steady:
            grids[source] = BeatGrid(round(tracked.bpm, 2), round(tracked.first_downbeat, 4),
                                     f"{tracked.beats_per_bar}/4", "tracked")
            continue
        reason = f"{source} has no steady beat (pulse clarity {tracked.clarity:.2f})"
        if unsteady == "skip":
            scan.skipped[source] = reason + "; skipped (--unsteady clock tiles such files in clock time)"
            scan.candidates.remove(source)
        warnings.warn(reason + ("; tiled in clock time" if unsteady == "clock" else "; skipped"), stacklevel=3)
    return grids


# The options of `prepare` that a base model's spectrogram parameters decide, and the parameter each sets.
BASE_OPTIONS = {"n_mels": "num_frequencies", "stereo": "stereo", "columns_per_beat": "columns_per_beat"}


def fit_base(opts: PrepareOptions) -> PrepareOptions:
    """`opts` with the tile parameters of its `base` model, if it names one (read from the model's config alone).
    SpectrodiffError in one line, before any work, when an option given contradicts the base (naming both values)
    or the base's parameters are not ones `prepare` makes."""
    if opts.base is None:
        return opts
    params = model_params(opts.base)
    values = {option: params.config.get(name) for option, name in BASE_OPTIONS.items()}
    for option, wanted in values.items():
        given = getattr(opts, option)
        if option in opts.model_fields_set and given != wanted:
            name = option.replace("_", "-")
            have = "none (clock time)" if wanted is None else wanted
            raise SpectrodiffError(f"--{name} {given} contradicts --base {opts.base}, whose tiles have {name} {have}")
    tiling = DatasetTiling(stereo=values["stereo"], n_mels=values["n_mels"],
                           columns_per_beat=values["columns_per_beat"])
    made = tiling.beat_params or tiling.params
    if made.to_dict() != params.to_dict():
        raise SpectrodiffError(f"prepare cannot make tiles for {opts.base}: its spectrogram parameters differ from "
                               f"Riffusion's in more than mel bins, stereo and columns per beat "
                               f"({made.differences(params)})")
    return opts.replace(**values)


def prepare_dataset(
    catalogue: Path,
    out: Path,
    seconds: float = 5.12,
    hop: float | None = None,
    min_rms_db: float = -50.0,
    workers: int = 1,
    validation: float = 0.1,
    seed: int = 0,
    stereo: bool = False,
    n_mels: int = 512,
    progress: Callable[[int, int], None] | None = None,
    columns_per_beat: int | None = None,
    beats: int = 16,
    unsteady: str = "skip",
    strict_tempo: bool = False,
) -> dict:
    """Turn a folder of audio into a training dataset (see the module's docstring for the layout); resumable.

    Scan the catalogue, tile its files (reusing current records), split the tracks and write their metadata, then
    the manifest.

    Args:
        catalogue: folder of audio files, searched recursively; only read.
        out: dataset folder: new, empty, or made by an earlier run (which is then resumed and brought up to date).
        seconds, hop: tile length (5.12 s = 512 columns) and seconds between tile starts (default half a tile).
        min_rms_db: tiles quieter than this (RMS, dBFS) are dropped as silent.
        workers: processes tiling files in parallel.
        validation: fraction of the tracks held out for validation; seed: which ones.
        stereo: stereo tiles (G = left, B = right) instead of mono.
        n_mels: image height (mel bins); Riffusion's is 512, smaller models may use fewer.
        progress: called as `progress(files_done, files_total)`.
        columns_per_beat, beats, unsteady, strict_tempo: beat-time tiles (`beat_grids`, `DatasetTiling`): columns
            a beat, a tile's beats, what becomes of files with no steady beat ("skip" or "clock"), and whether a
            file whose tracked tempo is ambiguous stops the run before anything is written.
    Returns:
        The manifest, also written to `out/manifest.json`. Unreadable files are skipped with a warning each and
        listed there. Raises SpectrodiffError when there is no audio at all, or no tile could be made.
    """
    PrepareOptions.from_dict({"catalogue": catalogue, "out": out, "seconds": seconds, "hop": hop,
                              "min_rms": min_rms_db, "workers": workers, "validation": validation, "seed": seed,
                              "stereo": stereo, "n_mels": n_mels, "columns_per_beat": columns_per_beat,
                              "beats": beats, "unsteady": unsteady, "strict_tempo": strict_tempo},
                             flag=True)  # before any work
    catalogue, out = Path(catalogue), Path(out)
    tiling = DatasetTiling(seconds, hop, stereo, n_mels, min_rms_db, columns_per_beat, beats)
    _check_folders(catalogue, out)
    table = load_caption_table(catalogue)  # read first: a malformed table stops the run before any work
    scan = scan_catalogue(catalogue, tiling, table)
    # tempi before anything is written: --strict-tempo stops at an ambiguous one
    grids = beat_grids(catalogue, scan, tiling, unsteady, strict_tempo) if columns_per_beat else None
    out.mkdir(parents=True, exist_ok=True)
    (out / RECORDS).mkdir(exist_ok=True)
    # Tiles are written straight into the split their track will most likely end in; if tracks drop out (silent
    # or undecodable) and the split changes, the finished tiles are moved at the end.
    likely = assign_splits(scan.candidates, validation, seed)
    records, tiled = tile_catalogue(catalogue, out, scan, tiling, likely, workers, progress, grids)
    if not any(record["tiles"] for record in records.values()):
        raise SpectrodiffError(f"no tiles: every tile of the {len(records)} readable file(s) is quieter than "
                               f"--min-rms {min_rms_db:g} dBFS")
    splits, lines = split_tracks(catalogue, out, records, table, validation, seed)
    options = {"validation": validation, "seed": seed, "stereo": stereo} | (
        {"columns_per_beat": columns_per_beat, "beats": beats, "unsteady": unsteady, "strict_tempo": strict_tempo}
        if columns_per_beat else {})
    return write_manifest(catalogue, out, scan, records, splits, lines, tiling, options, tiled)
