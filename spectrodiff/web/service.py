"""The studio's engine: one loaded pipeline that the web page and the HTTP API share, a queue so that concurrent
requests wait their turn, and a temporary folder for uploads and results that is removed on shutdown."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from .. import signals
from ..codec.audio import AUDIO_SUFFIXES, audio_info, check_readable, load_audio, normalize_loudness, save_audio
from ..codec.convert import audio_to_image, save_image
from ..codec.image import image_params, open_image
from ..errors import SpectrodiffError
from ..generation.jobs import JOBS, Job, Keyframe
from ..generation.modes import run
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
# The image tool's vocoder pieces (10 s at 10 ms): a 60 s upload raised the server's peak by 0.69 GB in one piece,
# by 0.45 GB in these (and took 6.4 s instead of 4.7).
TOOL_CHUNK_FRAMES = 1024
IMAGE_SUFFIXES = (".png",)
# Results kept on disk (oldest removed first), and requests allowed to wait for the model at once.
MAX_RESULTS = 200
MAX_WAITING = 32
RESULT_FILES = ("audio", "image", "sidecar")
# Riffusion's app names its seed images; ours are synthesised in the model's own spectrogram format at start-up.
SEED_SIGNALS: dict[str, Callable[[], np.ndarray]] = {
    "og_beat": lambda: signals.drums(bpm=120.0, seed=0),
    "agile": lambda: signals.drums(bpm=140.0, seed=1),
    "marim": lambda: signals.chord(root_hz=440.0, seed=2),
    "motorway": lambda: signals.mix(seed=3),
    "vibes": lambda: signals.chord(root_hz=220.0, seed=4),
}


class Busy(SpectrodiffError):
    """Too many requests are already waiting for the model."""


class TooLarge(SpectrodiffError):
    """An upload over MAX_UPLOAD_BYTES."""


class Abandoned(SpectrodiffError):
    """The client left before its job was done: the job stops (or never starts) and its files are removed."""


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

    def _make_seed_images(self, folder: Path | None) -> dict[str, Path]:
        params = self.pipe.spectrogram
        seeds = self.root / "seed_images"
        seeds.mkdir()
        found = {}
        for name, make in SEED_SIGNALS.items():
            audio = make()
            found[name] = save_image(seeds / f"{name}.png",
                                     audio_to_image(np.stack([audio] * params.channels), params))
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
        return self.pipe.tile_columns * self.pipe.vae_scale_factor * self.pipe.spectrogram.step_size_ms / 1000

    def result(self, result_id: str) -> StoredResult:
        if result_id not in self._results:
            raise KeyError(result_id)
        return self._results[result_id]

    # ---- uploads -------------------------------------------------------------------------------------------------

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
            raise SpectrodiffError(f"{refused[0]} is the server's choice, not a request's")
        try:
            job = job_class.from_dict(values, highs=SERVER_HIGHS)
        except SpectrodiffError as exc:
            raise InvalidRequest(str(exc)) from None
        seconds = getattr(job, "seconds", None)  # a length made of bars and a tempo is held to the same limit
        if seconds is not None and seconds > SERVER_HIGHS["seconds"]:
            raise InvalidRequest(f"the clip would be {seconds:g} s; at most {SERVER_HIGHS['seconds']:g} s here")
        return dataclasses.replace(job, vocoder=self.vocoder)

    def run(self, job: Job, progress: Callable[[str, int, int], None] | None = None,
            gone: Callable[[], bool] | None = None) -> StoredResult:
        """Wait for the model (at most MAX_WAITING requests wait), run `job` into a fresh result folder. `gone` says
        whether the client has left: checked when the model is free and at every step, so that an abandoned burst of
        requests does not hold up the next user."""
        if gone is not None:
            progress = _abandonable(progress, gone)
        with self._count_lock:
            if self._waiting >= MAX_WAITING:
                raise Busy(f"{self._waiting} requests are already waiting; try again shortly")
            self._waiting += 1
        try:
            with self._lock:
                if gone is not None and gone():
                    raise Abandoned("the client left before its job started")
                result_id = uuid.uuid4().hex
                folder = self.root / "results" / result_id
                folder.mkdir()
                try:
                    result = run(self.pipe, job, Output(folder, progress))
                except SpectrodiffError as exc:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise self._public(exc) from None
                except BaseException:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
        finally:
            with self._count_lock:
                self._waiting -= 1
        stored = StoredResult(result_id, folder, {"audio": result.audio.name, "image": result.image.name,
                                                  "sidecar": result.sidecar.name}, result.seconds,
                              _public_record(result))
        self._remember(stored)
        return stored

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
        seed = self._seed_image(seed_image_id)
        mask = self._seed_image(mask_image_id) if mask_image_id else None
        job = self.job("riffuse", {"start": start, "end": end, "alpha": alpha, "seed_image": seed,
                                   "mask_image": mask, "steps": steps})
        return self.run(job, progress, gone)

    def _seed_image(self, name: str) -> Path:
        if name not in self.seed_images:
            raise SpectrodiffError(f"unknown seed image {name!r}; known: {', '.join(sorted(self.seed_images))}")
        return self.seed_images[name]

    # ---- spectrogram tools (no model, no queue) -------------------------------------------------------------------

    def audio_to_image(self, audio: Path) -> Path:
        """An uploaded audio file -> its spectrogram PNG (the model's parameters) in a fresh result folder."""
        params = self.pipe.spectrogram
        samples = load_audio(audio, params.sample_rate, "stereo" if params.stereo else "mono")
        return save_image(self._tool_folder("image", f"{audio.stem}.png"), audio_to_image(samples, params))

    def image_to_audio(self, image: Path) -> Path:
        """An uploaded spectrogram PNG (its own EXIF parameters) -> WAV in a fresh result folder."""
        audio, params = image_to_audio(open_image(image, MAX_UPLOAD_COLUMNS), chunk_frames=TOOL_CHUNK_FRAMES)
        return save_audio(self._tool_folder("audio", f"{image.stem}.wav"), normalize_loudness(audio),
                          params.sample_rate)

    def _tool_folder(self, kind: str, name: str) -> Path:
        """The path of a spectrogram tool's output, in a fresh result folder counted against MAX_RESULTS."""
        result_id = uuid.uuid4().hex
        stored = StoredResult(result_id, self.root / "results" / result_id, {kind: name}, 0.0, {})
        stored.folder.mkdir()
        self._remember(stored)
        return stored.path(kind)


def _abandonable(progress: Callable[[str, int, int], None] | None, gone: Callable[[], bool]
                 ) -> Callable[[str, int, int], None]:
    """`progress` that first stops the job (Abandoned) when its client has gone."""

    def report(stage: str, done: int, total: int) -> None:
        if gone():
            raise Abandoned(f"the client left during {stage}")
        if progress is not None:
            progress(stage, done, total)

    return report


def _public_record(result: Result) -> dict:
    """The sidecar as clients see it: an uploaded input is named by its file name, not its server path."""
    record = json.loads(result.sidecar.read_text())
    for holder, key in ((record.get("job", {}), "audio"), (record.get("job", {}), "seed_image"),
                        (record.get("job", {}), "mask_image"), (record.get("input", {}), "path")):
        if holder.get(key):
            holder[key] = Path(holder[key]).name
    result.sidecar.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return record
