"""The output triple every mode writes: audio (streamed to disk, loudness-normalised, resampled), the spectrogram
PNG with its EXIF, and a JSON sidecar whose "job" redoes the result, with its provenance beside it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch
from PIL import Image

from .. import __version__
from ..codec.audio import DEFAULT_LOUDNESS_DBFS, PEAK_CEILING_DBFS
from ..codec.convert import save_image
from ..codec.image import layout, pixels_to_mel, to_uint8, with_exif
from ..codec.params import RIFFUSION_MAX_VALUE
from ..codec.riff import LoopInfo, append_chunks
from ..errors import SpectrodiffError
from ..files import DEFAULT_OUTPUT_DIR, atomic_path, check_writable
from ..vocoding.reconstruct import stream_mel_to_waveform, vocode_stream
from ..vocoding.registry import choose_vocoder
from ..vocoding.render import mel_to_audio
from ..vocoding.vocoder import NeuralVocoder
from .jobs import EncodingJob, Job, Keyframe, number
from .musical import parse_key
from .pipeline import SpectrodiffPipeline

OUTPUT_SUFFIXES = (".wav", ".flac")


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


# ---- output paths ------------------------------------------------------------------------------------------------

def slugify(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "clip"


def output_paths(out: Path | None, job: Job, overwrite: bool = False) -> tuple[Path, Path, Path]:
    """(audio, png, json). `out` ending in .wav/.flac names the audio and the others sit beside it with its stem;
    any other `out` is a folder; the default is outputs/<date>-<slug>-<seed>/ (slug and seed of the job's first
    prompt). Nothing existing is overwritten unless `overwrite`."""
    slug, seed = slug_and_seed(job)
    if out is not None and out.suffix.lower() in OUTPUT_SUFFIXES:
        audio = out
    elif out is not None and out.suffix and not out.is_dir():
        raise SpectrodiffError(f"-o {out}: expected a folder or a file ending in {', '.join(OUTPUT_SUFFIXES)}")
    else:
        folder = out if out is not None else DEFAULT_OUTPUT_DIR / f"{dt.date.today():%Y%m%d}-{slug}-{seed}"
        if out is None:
            base, n = folder, 2
            while folder.exists():
                folder, n = base.with_name(f"{base.name}-{n}"), n + 1
        audio = folder / f"{file_stem(job)}.wav"
    paths = (audio, audio.with_suffix(".png"), audio.with_suffix(".json"))
    for path in paths:
        check_writable(path, overwrite)
    return paths


def file_stem(job: Job) -> str:
    """A result's file name: its words; a clip with a tempo as sample packs name theirs,
    `lofi-hip-hop_84bpm_Fmin_s3`."""
    slug, seed = slug_and_seed(job)
    bpm = getattr(job, "bpm", None)
    if bpm is None:
        return slug
    key = f"_{parse_key(job.key).short}" if job.key else ""
    return f"{slug}_{number(bpm)}bpm{key}_s{seed}"


def slug_and_seed(job: Job) -> tuple[str, int]:
    """A file name's words for a job: its prompt (an input file's name first), or its first two keyframes'."""
    keyframes = getattr(job, "keyframes", None) or [k for k in (getattr(job, "start", None), getattr(job, "end", None))
                                                     if isinstance(k, Keyframe)]
    if keyframes:
        return slugify(" to ".join(k.prompt for k in keyframes[:2])), keyframes[0].seed
    audio = getattr(job, "audio", None)
    return slugify(f"{Path(audio).stem} {job.prompt}" if audio else job.prompt), job.seed


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


# ---- rendering -----------------------------------------------------------------------------------------------------

class _AudioSink:
    """Receives audio blocks, spools them to a float file and tracks level, then writes the final file in one
    streamed pass (loudness gain, optional resampling), so memory does not grow with the clip's length."""

    def __init__(self, channels: int, sample_rate: int):
        self.sample_rate, self.channels = sample_rate, channels
        self._dir = tempfile.TemporaryDirectory(prefix="spectrodiff-")
        self._spool = soundfile.SoundFile(Path(self._dir.name) / "spool.wav", "w", sample_rate, channels,
                                          subtype="FLOAT")
        self.frames, self._sum_squares, self.peak = 0, 0.0, 0.0

    def write(self, block: np.ndarray) -> None:
        """`(C, n)` float audio."""
        block = np.asarray(block, dtype=np.float32)
        self._spool.write(block.T)
        self.frames += block.shape[1]
        self._sum_squares += float(np.square(block, dtype=np.float64).sum())
        self.peak = max(self.peak, float(np.abs(block).max(initial=0.0)))

    def gain(self, normalize: bool) -> float:
        if not normalize or self.peak == 0:
            return 1.0
        rms = np.sqrt(self._sum_squares / max(self.frames * self.channels, 1))
        return min(10 ** (DEFAULT_LOUDNESS_DBFS / 20) / rms, 10 ** (PEAK_CEILING_DBFS / 20) / self.peak)

    def finish(self, path: Path, out_rate: int | None, seconds: float, normalize: bool = True,
               overwrite: bool = False, loop_info: LoopInfo | None = None) -> None:
        """Write the file: `seconds` long to the sample at `out_rate` (default the spool's rate), resampled by soxr,
        cut or padded with silence by the resampler's last few samples; a WAV loop with `loop_info` gets its acid
        and smpl chunks."""
        self._spool.close()
        gain, rate = self.gain(normalize), out_rate or self.sample_rate
        stream = soxr.ResampleStream(self.sample_rate, rate, self.channels, dtype="float32") \
            if rate != self.sample_rate else None
        remaining = total = round(seconds * rate)
        with atomic_path(path, overwrite) as tmp:
            with soundfile.SoundFile(tmp, "w", rate, self.channels, subtype="PCM_16",
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
                        f.write(np.clip(block * gain, -1, 1))
                        if last:
                            break
                f.write(np.zeros((remaining, self.channels), np.float32))
            if loop_info is not None and path.suffix.lower() == ".wav":
                append_chunks(tmp, loop_info.chunks(total, rate))
        self._dir.cleanup()


def resample_loop(audio: np.ndarray, samples: int) -> np.ndarray:
    """`(C, N)` one period of a loop -> `(C, samples)`, resampled as the periodic signal it is (band-limited, in
    the Fourier domain), so that the wrap stays seamless; a loop of whole bars is a few hops off its latent grid,
    so the ratio is within a fraction of a percent (a few cents of pitch)."""
    n = audio.shape[-1]
    if n == samples:
        return audio
    spectrum = np.fft.rfft(audio, axis=-1)
    kept = min(spectrum.shape[-1], samples // 2 + 1)
    resized = np.zeros((*audio.shape[:-1], samples // 2 + 1), spectrum.dtype)
    resized[..., :kept] = spectrum[..., :kept]
    return (np.fft.irfft(resized, samples, axis=-1) * (samples / n)).astype(np.float32)


def encode_steps(pipe: SpectrodiffPipeline, job: EncodingJob) -> int:
    """The refinement steps an encoding of input audio takes: the job's, else the model's."""
    return pipe.config.encode_steps if job.encode_steps is None else job.encode_steps


def resolved(pipe: SpectrodiffPipeline, job: Job) -> Job:
    """The job as it ran: the model's defaults it left open (scheduler, encode steps) filled in, so that it alone
    redoes the result with the same model."""
    filled = {"scheduler": pipe.scheduler_name}
    if isinstance(job, EncodingJob):
        filled["encode_steps"] = encode_steps(pipe, job)
    return dataclasses.replace(job, **filled)


def render(
    pipe: SpectrodiffPipeline,
    job: Job,
    latents: torch.Tensor,
    paths: tuple[Path, Path, Path],
    output: Output,
    loop: bool = False,
    max_value: float = RIFFUSION_MAX_VALUE,
    prefix_audio: np.ndarray | None = None,
    splice: Callable[[torch.Tensor, NeuralVocoder | None], Iterator[np.ndarray]] | None = None,
    normalize: bool = True,
    seconds: float | None = None,
    record: dict | None = None,
    loop_info: LoopInfo | None = None,
) -> Result:
    """Decode latents tile by tile into the PNG, and into audio written progressively; then write the sidecar.

    Args:
        prefix_audio: `(C, N)` known audio the result continues (extend); it is written first, untouched.
        splice: takes the full mel and the vocoder (None: Griffin-Lim) and yields the audio blocks (inpaint);
            default reconstructs the mel.
        seconds: the output's exact length (prefix included): round(seconds * rate) samples at the model's rate and
            at the output rate, cut or padded with silence (a loop is resampled to it, `resample_loop`); None: the
            mel's own length (loops).
        loop_info: tempo and key for a WAV loop's acid and smpl chunks.
        record: more for the sidecar (e.g. the input's hash).
    """
    params = pipe.spectrogram
    vocoder = choose_vocoder(job.vocoder, params, getattr(pipe, "vocoder", None))
    audio_path, image_path, json_path = paths
    width = latents.shape[-1] * pipe.vae_scale_factor
    columns: list[np.ndarray] = []

    # With a prefix, audio resumes after the frames the prefix already covers (the PNG still shows every column).
    skip = params.width_for_samples(prefix_audio.shape[1]) if prefix_audio is not None else 0

    def mel_pieces() -> Iterator[torch.Tensor]:
        for start, pixels in pipe.decode_latents(latents, loop=loop):
            pixels = layout(pixels, params)
            columns.append(to_uint8(pixels))
            mel = pixels_to_mel(pixels, params, max_value)[..., max(skip - start, 0):]
            output.report("decoding", start + pixels.shape[-1], width)
            if mel.shape[-1]:
                yield mel

    sink = _AudioSink(params.channels, params.sample_rate)
    if loop or splice is not None:
        mel = torch.cat(list(mel_pieces()), dim=-1)
        if loop:
            blocks = [mel_to_audio(mel, params, vocoder, circular=True, n_iter=job.iters).numpy()]
            if seconds is not None:
                blocks = [resample_loop(blocks[0], round(seconds * params.sample_rate))]
        else:
            blocks = splice(mel, vocoder)
    else:
        if prefix_audio is not None:
            sink.write(prefix_audio)
        blocks = vocode_stream(vocoder, mel_pieces(), params, prefix_audio) if vocoder is not None else \
            stream_mel_to_waveform(mel_pieces(), params, n_iter=job.iters, prefix_audio=prefix_audio)
    total = None if seconds is None else round(seconds * params.sample_rate)
    for block in blocks:
        block = np.asarray(block)
        if total is not None:
            block = block[:, : max(total - sink.frames, 0)]
        sink.write(block)
    if total is not None and sink.frames < total:
        sink.write(np.zeros((params.channels, total - sink.frames), np.float32))
    seconds = sink.frames / params.sample_rate if seconds is None else seconds
    sink.finish(audio_path, job.sample_rate, seconds, normalize=normalize, overwrite=output.overwrite,
                loop_info=loop_info if loop else None)

    save_image(image_path, with_exif(Image.fromarray(np.concatenate(columns, axis=1), mode="RGB"), params, max_value),
               output.overwrite)

    record = {"job": resolved(pipe, job).to_dict(), "spectrodiff": __version__,
              "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "model": model_record(pipe),
              **(record or {}), "seconds": round(seconds, 6), "sample_rate": job.sample_rate or params.sample_rate,
              "vocoder": "griffin-lim" if vocoder is None else getattr(vocoder, "source", "neural"),
              "spectrogram": params.to_dict(), "files": {"audio": audio_path.name, "image": image_path.name}}
    with atomic_path(json_path, output.overwrite) as tmp:
        tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return Result(audio_path, image_path, json_path, seconds, record)
