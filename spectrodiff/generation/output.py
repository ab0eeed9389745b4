"""The output triple a mode's take (`takes.Take`) is written to: audio (streamed to disk, loudness-normalised,
resampled), the spectrogram PNG with its EXIF, and a JSON sidecar whose "job" redoes the result, with its provenance
beside it."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile
import soxr
import torch

from .. import __version__
from ..codec.audio import write_block
from ..codec.convert import save_image
from ..codec.riff import LoopInfo, append_chunks
from ..errors import SpectrodiffError
from ..files import check_writable, os_reason, temporary_path
from ..vocoding.registry import vocoder_name
from .jobs import EncodingJob, Job
from .takes import Level, Take

if TYPE_CHECKING:  # the pipeline runs the modes, which write here
    from .pipeline import SpectrodiffPipeline


@dataclass
class Output:
    """Where a job's files go (`out`: a .wav/.flac file, a folder, or None for outputs/<date>-<slug>-<seed>/),
    who hears of its progress (`progress(stage, done, total)`), and whether existing files may be replaced."""

    out: Path | None = None
    progress: Callable[[str, int, int], None] | None = None
    overwrite: bool = False

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress:
            self.progress(stage, done, total)


@dataclass
class Result:
    audio: Path
    image: Path
    sidecar: Path
    seconds: float
    record: dict = field(default_factory=dict)


# ---- model identity ------------------------------------------------------------------------------------------------

def model_record(pipe: SpectrodiffPipeline) -> dict:
    """Model id and content hash (sha256 over the weights and configs), computed once per pipeline."""
    cached = getattr(pipe, "_spectrodiff_model_record", None)
    if cached is None:
        digest = hashlib.sha256()
        for name, module in sorted(pipe.components.items()):
            digest.update(name.encode())
            if isinstance(module, torch.nn.Module):
                for key, tensor in sorted(module.state_dict().items()):
                    digest.update(key.encode())
                    digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            config = getattr(module, "config", None)
            if config is not None:
                items = config.to_dict() if hasattr(config, "to_dict") else dict(config)
                # Content only: diffusers' own keys (_class_name, _diffusers_version, _name_or_path) name the
                # class, library version and folder, none of which changes what the model makes.
                items = {k: v for k, v in items.items() if not k.startswith("_")}
                digest.update(json.dumps(items, sort_keys=True, default=str).encode())
        cached = {"id": getattr(pipe, "model_id", None) or pipe.name_or_path or "in-memory",
                  "sha256": digest.hexdigest()}
        pipe._spectrodiff_model_record = cached
    return cached


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- writing ------------------------------------------------------------------------------------------------------

class _AudioSink:
    """Receives audio blocks, spools them to a float file and tracks their level, then writes the final file in one
    streamed pass (loudness gain, optional resampling), so memory does not grow with the clip's length. A write
    that fails (a full disk) names `path`, the file the user asked for, and the cause (soundfile says "System
    error")."""

    def __init__(self, channels: int, sample_rate: int, path: Path):
        self.sample_rate, self.channels, self.path = sample_rate, channels, path
        self._dir = tempfile.TemporaryDirectory(prefix="spectrodiff-")
        self._spool = soundfile.SoundFile(Path(self._dir.name) / "spool.wav", "w", sample_rate, channels,
                                          subtype="FLOAT")
        self.level = Level(channels)

    def write(self, block: np.ndarray) -> None:
        """`(C, n)` float audio."""
        block = self.level.add(block)
        write_block(self._spool, block.T, f"{self.path} (its spool in {tempfile.gettempdir()})")

    def finish(self, path: Path, out_rate: int | None, seconds: float, normalize: bool = True,
               loop_info: LoopInfo | None = None) -> None:
        """Write the file `path` (its format from its suffix): `seconds` long to the sample at `out_rate` (default
        the spool's rate), resampled by soxr, cut or padded with silence by the resampler's last few samples; a WAV
        with `loop_info` gets its acid and smpl chunks."""
        self._spool.close()
        gain, rate = self.level.gain(normalize), out_rate or self.sample_rate
        stream = soxr.ResampleStream(self.sample_rate, rate, self.channels, dtype="float32") \
            if rate != self.sample_rate else None
        remaining = total = round(seconds * rate)
        with soundfile.SoundFile(path, "w", rate, self.channels, subtype="PCM_16",
                                 format=path.suffix[1:].upper()) as f:
            spool = Path(self._dir.name) / "spool.wav"
            with soundfile.SoundFile(spool) as source:
                while True:
                    block = source.read(1 << 16, dtype="float32", always_2d=True)
                    last = source.tell() >= source.frames
                    if stream is not None:
                        block = stream.resample_chunk(block, last=last)
                    block = block[:remaining]
                    remaining -= len(block)
                    write_block(f, np.clip(block * gain, -1, 1), self.path)
                    if last:
                        break
            write_block(f, np.zeros((remaining, self.channels), np.float32), self.path)
        if loop_info is not None and path.suffix.lower() == ".wav":
            append_chunks(path, loop_info.chunks(total, rate))
        self._dir.cleanup()


@contextlib.contextmanager
def published(paths: tuple[Path, ...], overwrite: bool = False) -> Iterator[tuple[Path, ...]]:
    """Temporary names beside `paths` for files that make one result: once the body has written them all they are
    renamed into place together; if the body or a rename fails (SIGTERM, a full disk), the temporary files and any
    already renamed are removed, so that no part of a result is left looking complete and a rerun starts clean."""
    for path in paths:
        check_writable(path, overwrite)
    temporary = tuple(temporary_path(path) for path in paths)
    done: list[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
        yield temporary
        for tmp, path in zip(temporary, paths, strict=True):
            os.replace(tmp, path)
            done.append(path)
    except OSError as exc:
        names = {str(tmp): path for tmp, path in zip(temporary, paths, strict=True)}
        raise SpectrodiffError(f"cannot write {names.get(str(exc.filename), paths[0])}: "
                               f"{os_reason(exc, names)}") from None
    finally:
        if len(done) < len(paths):
            for path in (*temporary, *done):
                with contextlib.suppress(OSError):  # e.g. the folder is a file: there is nothing to remove
                    path.unlink(missing_ok=True)


def encode_steps(pipe: SpectrodiffPipeline, job: EncodingJob) -> int:
    """The refinement steps an encoding of input audio takes: the job's, else the model's."""
    return pipe.config.encode_steps if job.encode_steps is None else job.encode_steps


def resolved(pipe: SpectrodiffPipeline, job: Job) -> Job:
    """The job as it ran: the model's defaults it left open (scheduler, encode steps) filled in, so that it alone
    redoes the result with the same model."""
    filled = {"scheduler": pipe.scheduler_name}
    if isinstance(job, EncodingJob):
        filled["encode_steps"] = encode_steps(pipe, job)
    return job.replace(**filled)


def write_result(pipe: SpectrodiffPipeline, take: Take, paths: tuple[Path, Path, Path],
                 overwrite: bool = False) -> Result:
    """Write `take` to `paths` (audio, PNG, sidecar), all three or none (`published`): its audio streamed to disk as
    it is made, at the job's sample rate; the PNG of its spectrogram; the sidecar whose job redoes it."""
    params, job = pipe.spectrogram, take.job
    audio_path, image_path, json_path = paths
    sink = _AudioSink(params.channels, params.sample_rate, audio_path)
    for block in take.exact_blocks():
        sink.write(block)
    seconds = sink.level.frames / params.sample_rate if take.seconds is None else take.seconds
    image = take.decoding.image()
    music = {"music": take.music.to_dict()} if take.music is not None else {}
    tempo = None if take.loop_info is None or audio_path.suffix.lower() != ".wav" else \
        dataclasses.asdict(take.loop_info)
    record = {"job": resolved(pipe, job).to_dict(), "spectrodiff": __version__,
              "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "model": model_record(pipe),
              **take.record, **music, "seconds": round(seconds, 6),
              "sample_rate": job.sample_rate or params.sample_rate, "vocoder": vocoder_name(take.vocoder),
              **({"tempo": tempo} if tempo else {}),
              **({"tempo_made": take.tempo_made} if take.tempo_made else {}),
              "spectrogram": params.to_dict(), "files": {"audio": audio_path.name, "image": image_path.name}}
    with published(paths, overwrite) as (audio_tmp, image_tmp, json_tmp):
        sink.finish(audio_tmp, job.sample_rate, seconds, normalize=take.normalize, loop_info=take.loop_info)
        save_image(image_tmp, image, overwrite=True)
        json_tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return Result(audio_path, image_path, json_path, seconds, record)
