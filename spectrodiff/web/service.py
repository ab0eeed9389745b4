"""The studio's engine: one loaded pipeline that the web page and the HTTP API share, a queue so that concurrent
requests wait their turn, and a temporary folder for uploads and results that is removed on shutdown."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from .. import process, signals
from ..codec.audio import AUDIO_SUFFIXES, audio_info, check_readable, load_audio, normalize_loudness, save_audio
from ..codec.convert import audio_to_image, save_image
from ..codec.image import image_params, open_image
from ..errors import SpectrodiffError
from ..generation import modes
from ..generation.jobs import JOBS, Job, Keyframe
from ..generation.output import Output, Result
from ..generation.pipeline import SpectrodiffPipeline
from ..vocoding.render import image_to_audio

# What one request may ask for, tighter than the command line's ranges (spectrodiff.generation.jobs): the server is
# meant for one machine's users, so the limits keep one request from holding the queue for long or filling the
# disk. A client never names the vocoder (an operator's choice, and a server path).
SERVER_HIGHS = {"prompt": 500, "negative": 500, "steps": 100, "seconds": 60.0, "keyframes": 12, "iters": 100,
                "encode_steps": 20, "transition": 60.0, "start": 60.0, "end": 60.0}
SERVER_CONTROLLED = ("vocoder",)
MAX_UPLOAD_BYTES = 25 * 2**20
MAX_UPLOAD_SECONDS = 60.0
MAX_UPLOAD_COLUMNS = int(MAX_UPLOAD_SECONDS * 100) + 1  # an uploaded image's width: 60 s at 10 ms a column
# The image tool's vocoder pieces (10 s at 10 ms): a 60 s upload vocoded in one piece raised the server's peak
# memory more, and took longer (docs/benchmarks.md, "Figures behind design choices").
TOOL_CHUNK_FRAMES = 1024
IMAGE_SUFFIXES = (".png",)
# Results kept on disk (oldest removed first), and requests allowed to wait for the model at once.
MAX_RESULTS = 200
MAX_WAITING = 32
RESULT_FILES = ("audio", "image", "sidecar")
# Riffusion's app names its seed images and masks (the files of riffusion-hobby's seed_images/); ours are made at
# start-up from their names: seeds synthesised in the model's own spectrogram format, a tile long (a beat-time
# model's at og_beat's tempo), masks drawn by MASKS.
SEED_SIGNALS: dict[str, Callable[[float], np.ndarray]] = {
    "og_beat": lambda seconds: signals.drums(seconds, bpm=120.0, seed=0),
    "agile": lambda seconds: signals.drums(seconds, bpm=140.0, seed=1),
    "marim": lambda seconds: signals.chord(seconds, root_hz=440.0, seed=2),
    "motorway": lambda seconds: signals.mix(seconds, seed=3),
    "vibes": lambda seconds: signals.chord(seconds, root_hz=220.0, seed=4),
    "chill_soul_1": lambda seconds: signals.chord(seconds, root_hz=196.0, seed=5),
    "0": lambda seconds: signals.noise(seconds, seed=6),
}
MASK_BEAT_BPM = 120.0  # og_beat's tempo, whose beats mask_beat_lines_80 keeps


def top_band(rows: int, columns: int, fraction: float, level: float, fade: bool) -> np.ndarray:
    """`(rows, columns)` mask in [0, 1]: the top `fraction` of the rows (the highest frequencies) at `level`, fading
    to 0 at its lower edge where `fade`; the rest 0."""
    band = round(rows * fraction)
    mask = np.zeros((rows, columns))
    mask[:band] = (np.linspace(level, 0, band) if fade else np.full(band, level))[:, None]
    return mask


def beat_lines(rows: int, columns: int, beat_columns: int, level: float) -> np.ndarray:
    """`(rows, columns)` mask at `level` with a black line (one latent column, 8 pixels) on every beat."""
    mask = np.full((rows, columns), level)
    for start in range(0, columns, beat_columns):
        mask[:, start: start + 8] = 0
    return mask


# Riffusion's masks by name: white (1) is repainted, black (0) keeps the seed image; the number is the grey level in
# percent. Riffusion blends by grey level; the riffuse mode repaints a pixel at least half white and keeps the rest.
MASKS: dict[str, Callable[[int, int, int], np.ndarray]] = {
    "mask_beat_lines_80": lambda rows, columns, beat: beat_lines(rows, columns, beat, 0.8),
    "mask_gradient_dark": lambda rows, columns, _: top_band(rows, columns, 1.0, 0.6, fade=True),
    "mask_gradient_top_70": lambda rows, columns, _: top_band(rows, columns, 1.0, 0.7, fade=True),
    "mask_gradient_top_fifth_75": lambda rows, columns, _: top_band(rows, columns, 0.2, 0.75, fade=True),
    "mask_top_third_75": lambda rows, columns, _: top_band(rows, columns, 1 / 3, 0.75, fade=False),
    "mask_top_third_95": lambda rows, columns, _: top_band(rows, columns, 1 / 3, 0.95, fade=False),
}


class Busy(SpectrodiffError):
    """Too many requests are already waiting for the model."""


class TooLarge(SpectrodiffError):
    """An upload over MAX_UPLOAD_BYTES."""


class Abandoned(SpectrodiffError):
    """The client left before its job was done: the job stops (or never starts) and its files are removed."""


class Stopping(Busy):
    """The server is stopping: a running job stops at its next step, a waiting one never starts."""


class InvalidRequest(SpectrodiffError):
    """A request's settings break its job's declaration or the server's limits."""


@dataclass(frozen=True)
class StoredResult:
    """A finished job in the result store: `id` names its folder; `files` maps audio/image/sidecar to file names."""

    id: str
    folder: Path
    files: dict[str, str]
    seconds: float
    record: dict

    def path(self, kind: str) -> Path:
        return self.folder / self.files[kind]

    def data_url(self, kind: str, fmt: str) -> str:
        """The result's image ("JPEG"/"PNG") or audio ("MP3"/"WAV") as a base64 data URL."""
        buffer = io.BytesIO()
        if kind == "image":
            with Image.open(self.path("image")) as image:
                image.convert("RGB").save(buffer, format=fmt)
            mime = f"image/{fmt.lower()}"
        else:
            audio, rate = soundfile.read(self.path("audio"), dtype="float32")
            soundfile.write(buffer, audio, rate, format=fmt)
            mime = {"MP3": "audio/mpeg", "WAV": "audio/wav"}[fmt]
        return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


class Studio:
    """A pipeline behind a queue, with a private working folder.

    Args:
        pipe: the loaded model.
        vocoder: the vocoder choice for every result (None: the model's default).
        seed_images: an operator's folder of extra seed/mask spectrogram PNGs for `riffuse` (id = file stem).
    """

    def __init__(self, pipe: SpectrodiffPipeline, vocoder: str | None = None, seed_images: Path | None = None):
        self.pipe, self.vocoder = pipe, vocoder
        self.root = Path(tempfile.mkdtemp(prefix="spectrodiff-serve-"))
        (self.root / "uploads").mkdir()
        (self.root / "results").mkdir()
        self._lock = threading.Lock()
        self._waiting = 0
        self._stopping = threading.Event()
        self._count_lock = threading.Lock()
        self._results: OrderedDict[str, StoredResult] = OrderedDict()
        try:
            self.seed_images = self._make_seed_images(seed_images)
        except BaseException:
            self.close()
            raise

    # ---- housekeeping ------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Remove every upload and result."""
        shutil.rmtree(self.root, ignore_errors=True)

    def stop(self) -> None:
        """The server is stopping (SIGTERM): the running job stops at its next step, waiting ones never start."""
        self._stopping.set()

    def _make_seed_images(self, folder: Path | None) -> dict[str, Path]:
        with self.pipe.at_tempo(MASK_BEAT_BPM):  # a beat-time model's seed images are at og_beat's tempo
            params = self.pipe.spectrogram
            columns = self.pipe.tile_columns * self.pipe.vae_scale_factor
        seeds = self.root / "seed_images"
        seeds.mkdir()
        found = {}
        for name, make in SEED_SIGNALS.items():
            audio = make(params.samples_for_width(columns) / params.sample_rate)
            found[name] = save_image(seeds / f"{name}.png",
                                     audio_to_image(np.stack([audio] * params.channels), params))
        beat = round(60 * params.sample_rate / MASK_BEAT_BPM / params.hop_length)
        for name, draw in MASKS.items():
            found[name] = seeds / f"{name}.png"
            Image.fromarray(np.round(draw(params.num_frequencies, columns, beat) * 255).astype(np.uint8)).save(
                found[name])
        for path in sorted(Path(folder).glob("*.png")) if folder else []:
            found[path.stem] = path
        return found

    def model_info(self) -> dict:
        params = self.pipe.spectrogram
        return {"model": getattr(self.pipe, "model_id", None) or self.pipe.name_or_path,
                "spectrogram": params.to_dict(),
                "tile_seconds": self.tile_seconds,
                "seed_images": sorted(self.seed_images),
                "limits": {**SERVER_HIGHS, "upload_bytes": MAX_UPLOAD_BYTES, "upload_seconds": MAX_UPLOAD_SECONDS,
                           "upload_image_columns": MAX_UPLOAD_COLUMNS}}

    @property
    def tile_seconds(self) -> float:
        """A tile's seconds (a beat-time model's at og_beat's tempo)."""
        with self.pipe.at_tempo(MASK_BEAT_BPM):
            return self.pipe.tile_columns * self.pipe.seconds_per_column

    def result(self, result_id: str) -> StoredResult:
        if result_id not in self._results:
            raise KeyError(result_id)
        return self._results[result_id]

    # ---- uploads -------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def upload(self, name: str, data: bytes, kinds: tuple[str, ...] = AUDIO_SUFFIXES) -> Iterator[Path]:
        """`save_upload` for the length of one request: the file is deleted when the request ends, answered or
        refused (its results stay)."""
        path = self.save_upload(name, data, kinds)
        try:
            yield path
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)

    def save_upload(self, name: str, data: bytes, kinds: tuple[str, ...] = AUDIO_SUFFIXES) -> Path:
        """Keep an uploaded file (checked for type, size and, for audio, duration) under a fresh name."""
        suffix = Path(name or "").suffix.lower()
        if suffix not in kinds:
            raise SpectrodiffError(f"file type {suffix or '(none)'} is not accepted; use {', '.join(kinds)}")
        if not data:
            raise SpectrodiffError("the uploaded file is empty")
        if len(data) > MAX_UPLOAD_BYTES:
            raise TooLarge(f"the upload is larger than allowed: at most {MAX_UPLOAD_BYTES // 2**20} MiB")
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(name).stem)[:40] or "upload"
        path = self.root / "uploads" / uuid.uuid4().hex / f"{stem}{suffix}"
        path.parent.mkdir()
        path.write_bytes(data)
        try:
            self.check_upload(path)
        except SpectrodiffError as exc:
            shutil.rmtree(path.parent)
            raise self._public(exc) from None
        return path

    def _public(self, exc: SpectrodiffError) -> SpectrodiffError:
        """The error with this server's private paths cut down to file names (clients never see server paths)."""
        private = re.escape(str(self.root)) + r"/(?:[^/\s']+/)*([^/\s']+)"
        return type(exc)(re.sub(private, r"\1", str(exc)))

    @staticmethod
    def check_upload(path: Path) -> None:
        """SpectrodiffError unless `path` is a readable audio file of at most MAX_UPLOAD_SECONDS or a PNG."""
        if path.suffix.lower() in IMAGE_SUFFIXES:
            image_params(open_image(path, MAX_UPLOAD_COLUMNS))
            return
        seconds = check_readable(audio_info(path)).duration
        if seconds > MAX_UPLOAD_SECONDS:
            raise SpectrodiffError(f"the audio is {seconds:.1f} s long; at most {MAX_UPLOAD_SECONDS:g} s")

    # ---- running jobs ----------------------------------------------------------------------------------------------

    def job(self, mode: str, values: dict) -> Job:
        """A request's job: `values` checked against the mode's declaration and SERVER_HIGHS, the vocoder the
        operator's."""
        job_class = JOBS.get(mode)
        if job_class is None:
            raise SpectrodiffError(f"unknown mode {mode!r}")
        refused = sorted(set(values) & set(SERVER_CONTROLLED))
        if refused:
            raise InvalidRequest(f"{refused[0]} is the server's choice, not a request's")
        try:
            job = job_class.from_dict(values, highs=SERVER_HIGHS)
        except SpectrodiffError as exc:
            raise InvalidRequest(str(exc)) from None
        seconds = getattr(job, "seconds", None)  # a length made of bars and a tempo is held to the same limit
        if seconds is not None and seconds > SERVER_HIGHS["seconds"]:
            raise InvalidRequest(f"the clip would be {seconds:g} s; at most {SERVER_HIGHS['seconds']:g} s here")
        return job.replace(vocoder=self.vocoder)

    def perform(self, job: Job, progress: Callable[[str, int, int], None] | None = None,
                gone: Callable[[], bool] | None = None) -> StoredResult:
        """Wait for the model (at most MAX_WAITING requests wait), then make `job`'s result in a fresh folder.
        `gone` says whether the client has left: checked when the model is free and at every step, so that an
        abandoned burst of requests does not hold up the next user."""
        with self._turn(gone):
            result_id = uuid.uuid4().hex
            folder = self.root / "results" / result_id
            folder.mkdir()
            try:
                result = modes.make(self.pipe, job, Output(folder, self._abandonable(progress, gone)))
            except SpectrodiffError as exc:
                shutil.rmtree(folder, ignore_errors=True)
                raise self._public(exc) from None
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        stored = StoredResult(result_id, folder, {"audio": result.audio.name, "image": result.image.name,
                                                  "sidecar": result.sidecar.name}, result.seconds,
                              _public_record(result))
        self._remember(stored)
        return stored

    @contextlib.contextmanager
    def _turn(self, gone: Callable[[], bool] | None = None) -> Iterator[None]:
        """Hold the model (one job at a time, generation and spectrogram tools alike; at most MAX_WAITING wait): Busy
        when too many wait, Abandoned when the client left while it waited, Stopping when the server stops."""
        with self._count_lock:
            if self._waiting >= MAX_WAITING:
                raise Busy(f"{self._waiting} requests are already waiting; try again shortly")
            self._waiting += 1
        try:
            with self._lock:
                try:
                    self._abandonable(None, gone)("the wait", 0, 0)
                    yield
                finally:  # glibc keeps what a job freed: without this the server grew with every job
                    process.release_freed_memory()
        finally:
            with self._count_lock:
                self._waiting -= 1

    def _abandonable(self, progress: Callable[[str, int, int], None] | None, gone: Callable[[], bool] | None
                     ) -> Callable[[str, int, int], None]:
        """`progress` that first stops the job when the server stops (Stopping) or its client has gone (Abandoned)."""

        def report(stage: str, done: int, total: int) -> None:
            if self._stopping.is_set():
                raise Stopping(f"the server is stopping (during {stage})")
            if gone is not None and gone():
                raise Abandoned(f"the client left during {stage}")
            if progress is not None:
                progress(stage, done, total)

        return report

    def _remember(self, stored: StoredResult) -> None:
        """Keep a result findable by id; past MAX_RESULTS, the oldest is deleted."""
        with self._count_lock:
            self._results[stored.id] = stored
            while len(self._results) > MAX_RESULTS:
                _, old = self._results.popitem(last=False)
                shutil.rmtree(old.folder, ignore_errors=True)

    def riffuse(self, start: Keyframe | dict, end: Keyframe | dict, alpha: float, seed_image_id: str,
                mask_image_id: str | None = None, steps: int = 50, progress: Callable | None = None,
                gone: Callable[[], bool] | None = None) -> StoredResult:
        """Riffusion's `/run_inference/`: seed and mask images are named by id, never by path."""
        seed = self._seed_image(seed_image_id, "seed image")
        mask = self._seed_image(mask_image_id, "mask image") if mask_image_id else None  # "" or None: no mask
        job = self.job("riffuse", {"start": start, "end": end, "alpha": alpha, "seed_image": seed,
                                   "mask_image": mask, "steps": steps})
        return self.perform(job, progress, gone)

    def _seed_image(self, name: str, what: str) -> Path:
        if name not in self.seed_images:
            raise SpectrodiffError(f"unknown {what} {name!r}; known: {', '.join(sorted(self.seed_images))}")
        return self.seed_images[name]

    # ---- spectrogram tools (no model, but queued like jobs: each holds up to a few hundred MB) ---------------------

    def audio_to_image(self, audio: Path, bpm: float | None = None, gone: Callable[[], bool] | None = None) -> Path:
        """An uploaded audio file -> its spectrogram PNG (the model's parameters) in a fresh result folder; a
        beat-time model's at the audio's tempo (`bpm`, else its WAV's acid chunk, else tracked)."""
        params = self.pipe.spectrogram
        with self._turn(gone):
            try:
                if params.beat_time and params.tempo is None:
                    params = params.at_tempo(modes.input_tempo(audio, bpm))
                samples = load_audio(audio, params.sample_rate, "stereo" if params.stereo else "mono")
            except SpectrodiffError as exc:
                raise self._public(exc) from None
            return save_image(self._tool_folder("image", f"{audio.stem}.png"), audio_to_image(samples, params))

    def image_to_audio(self, image: Path, gone: Callable[[], bool] | None = None) -> Path:
        """An uploaded spectrogram PNG (its own EXIF parameters) -> WAV in a fresh result folder."""
        with self._turn(gone):
            try:
                audio, params = image_to_audio(open_image(image, MAX_UPLOAD_COLUMNS), chunk_frames=TOOL_CHUNK_FRAMES)
            except SpectrodiffError as exc:
                raise self._public(exc) from None
            return save_audio(self._tool_folder("audio", f"{image.stem}.wav"), normalize_loudness(audio),
                              params.sample_rate)

    def _tool_folder(self, kind: str, name: str) -> Path:
        """The path of a spectrogram tool's output, in a fresh result folder counted against MAX_RESULTS."""
        result_id = uuid.uuid4().hex
        stored = StoredResult(result_id, self.root / "results" / result_id, {kind: name}, 0.0, {})
        stored.folder.mkdir()
        self._remember(stored)
        return stored.path(kind)


def _public_record(result: Result) -> dict:
    """The sidecar as clients see it: an uploaded input is named by its file name, not its server path."""
    record = json.loads(result.sidecar.read_text())
    for holder, key in ((record.get("job", {}), "audio"), (record.get("job", {}), "seed_image"),
                        (record.get("job", {}), "mask_image"), (record.get("input", {}), "path")):
        if holder.get(key):
            holder[key] = Path(holder[key]).name
    result.sidecar.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return record
