"""The output triple every mode writes: audio (streamed to disk, loudness-normalised, resampled), the spectrogram
PNG with its EXIF, and a JSON sidecar whose "job" redoes the result, with its provenance beside it."""

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

import numpy as np
import soundfile
import soxr
import torch
from PIL import Image

from .. import __version__
from ..codec.audio import DEFAULT_LOUDNESS_DBFS, PEAK_CEILING_DBFS, write_block
from ..codec.convert import save_image
from ..codec.image import layout, pixels_to_mel, to_uint8, with_exif
from ..codec.params import RIFFUSION_MAX_VALUE
from ..codec.riff import LoopInfo, append_chunks
from ..errors import SpectrodiffError
from ..files import check_writable, os_reason, temporary_path
from ..vocoding.reconstruct import CONTEXT_FRAMES, _crossfade, stream_mel_to_waveform, vocode_stream
from ..vocoding.registry import choose_vocoder, vocoder_name
from ..vocoding.render import mel_to_audio
from ..vocoding.vocoder import NeuralVocoder
from .jobs import EncodingJob, Job
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
    streamed pass (loudness gain, optional resampling), so memory does not grow with the clip's length. A write
    that fails (a full disk) names `path`, the file the user asked for, and the cause (soundfile says "System
    error")."""

    def __init__(self, channels: int, sample_rate: int, path: Path):
        self.sample_rate, self.channels, self.path = sample_rate, channels, path
        self._dir = tempfile.TemporaryDirectory(prefix="spectrodiff-")
        self._spool = soundfile.SoundFile(Path(self._dir.name) / "spool.wav", "w", sample_rate, channels,
                                          subtype="FLOAT")
        self.frames, self._sum_squares, self.peak = 0, 0.0, 0.0

    def write(self, block: np.ndarray) -> None:
        """`(C, n)` float audio."""
        block = np.asarray(block, dtype=np.float32)
        write_block(self._spool, block.T, f"{self.path} (its spool in {tempfile.gettempdir()})")
        self.frames += block.shape[1]
        self._sum_squares += float(np.square(block, dtype=np.float64).sum())
        self.peak = max(self.peak, float(np.abs(block).max(initial=0.0)))

    def gain(self, normalize: bool) -> float:
        if not normalize or self.peak == 0:
            return 1.0
        rms = np.sqrt(self._sum_squares / max(self.frames * self.channels, 1))
        return min(10 ** (DEFAULT_LOUDNESS_DBFS / 20) / rms, 10 ** (PEAK_CEILING_DBFS / 20) / self.peak)

    def finish(self, path: Path, out_rate: int | None, seconds: float, normalize: bool = True,
               loop_info: LoopInfo | None = None) -> None:
        """Write the file `path` (its format from its suffix): `seconds` long to the sample at `out_rate` (default
        the spool's rate), resampled by soxr, cut or padded with silence by the resampler's last few samples; a WAV
        with `loop_info` gets its acid and smpl chunks."""
        self._spool.close()
        gain, rate = self.gain(normalize), out_rate or self.sample_rate
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


# Loops up to this many frames are vocoded as one circular period; longer ones in pieces, as plain clips are, so that
# memory does not grow with their length (docs/generation.md: a 576 s loop peaked at 4.87 GB in one period).
LOOP_PERIOD_FRAMES = 8192
# Frames a long loop's Griffin-Lim streams at once: a Riffusion tile, as a plain clip's decoded tiles arrive.
LOOP_PIECE_FRAMES = 512


def loop_audio(mel: torch.Tensor, params, vocoder: NeuralVocoder | None, n_iter: int) -> np.ndarray:
    """`(C, n_mels, T)` one period of a loop -> `(C, T * hop)` audio that repeats without a seam.

    Up to LOOP_PERIOD_FRAMES frames, circular throughout (`mel_to_audio`). A longer loop is streamed as a plain clip
    is, over the period and then its first frames again: their audio continues the end in phase, and is crossfaded
    into the start (over more frames than the vocoder's context, so the start is reached where its audio no longer
    depends on having begun without the end before it)."""
    width, hop = mel.shape[-1], params.hop_length
    if width <= LOOP_PERIOD_FRAMES:
        return mel_to_audio(mel, params, vocoder, circular=True, n_iter=n_iter).numpy()
    wrap = max(CONTEXT_FRAMES, vocoder.context_frames + 1 if vocoder is not None else 0)
    ring = torch.cat([mel, mel[..., :wrap]], dim=-1)
    pieces = ring.split(LOOP_PIECE_FRAMES, dim=-1)
    blocks = vocode_stream(vocoder, pieces, params) if vocoder is not None else \
        stream_mel_to_waveform(pieces, params, n_iter=n_iter)
    audio = torch.cat([torch.as_tensor(block) for block in blocks], dim=-1)  # (C, (T + wrap - 1) * hop)
    return _crossfade(audio[..., width * hop:], audio[..., : width * hop]).numpy()


def resample_loop(audio: np.ndarray, samples: int, block: int = 1 << 16) -> Iterator[np.ndarray]:
    """`(C, N)` one period of a loop -> `(C, n)` blocks, `samples` in all, resampled as the periodic signal it is:
    soxr (band-limited) through the loop with its own end before its start and its start after its end, so that
    the wrap stays seamless, a block at a time (the Fourier transform of a whole 576 s loop in float64 took
    gigabytes). A loop of whole bars is a few hops off its latent grid, so the ratio is within a fraction of a
    percent (a few cents of pitch); the result may start a fraction of a sample later, which a loop does not
    hear."""
    channels, n = audio.shape
    if n == samples:
        yield audio
        return
    pad = min(n, 1 << 12)  # samples of context either side: more than soxr's filter reaches at any ratio near 1
    stream = soxr.ResampleStream(n, samples, channels, dtype="float32")
    pieces = [audio[:, n - pad:], *(audio[:, i: i + block] for i in range(0, n, block)), audio[:, :pad]]
    skip, left = round(pad * samples / n), samples
    for k, piece in enumerate(pieces):
        out = stream.resample_chunk(np.ascontiguousarray(piece.T), last=k == len(pieces) - 1).T
        cut = min(skip, out.shape[1])
        out, skip = out[:, cut:], skip - cut
        out = out[:, :left]
        left -= out.shape[1]
        if out.shape[1]:
            yield out
        if not left:
            return


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
        loop_info: tempo, key and whether it is a loop, for a WAV's acid and smpl chunks.
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

    sink = _AudioSink(params.channels, params.sample_rate, audio_path)
    if loop:
        audio = loop_audio(torch.cat(list(mel_pieces()), dim=-1), params, vocoder, job.iters)
        blocks = [audio] if seconds is None else resample_loop(audio, round(seconds * params.sample_rate))
    elif splice is not None:
        blocks = splice(torch.cat(list(mel_pieces()), dim=-1), vocoder)
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
    image = with_exif(Image.fromarray(np.concatenate(columns, axis=1), mode="RGB"), params, max_value)
    tempo = None if loop_info is None or audio_path.suffix.lower() != ".wav" else dataclasses.asdict(loop_info)
    record = {"job": resolved(pipe, job).to_dict(), "spectrodiff": __version__,
              "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "model": model_record(pipe),
              **(record or {}), "seconds": round(seconds, 6), "sample_rate": job.sample_rate or params.sample_rate,
              "vocoder": vocoder_name(vocoder), **({"tempo": tempo} if tempo else {}),
              "spectrogram": params.to_dict(), "files": {"audio": audio_path.name, "image": image_path.name}}
    with published(paths, output.overwrite) as (audio_tmp, image_tmp, json_tmp):
        sink.finish(audio_tmp, job.sample_rate, seconds, normalize=normalize, loop_info=loop_info)
        save_image(image_tmp, image, overwrite=True)
        json_tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return Result(audio_path, image_path, json_path, seconds, record)
