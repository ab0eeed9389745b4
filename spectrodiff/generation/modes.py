"""Generation modes (generate, morph, compose, remix, extend, inpaint, riffuse) and the output triple they all write:
audio, spectrogram PNG with EXIF, and a JSON sidecar holding everything needed to redo the result."""

from __future__ import annotations

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
from ..codec.audio import AUDIO_SUFFIXES, DEFAULT_LOUDNESS_DBFS, PEAK_CEILING_DBFS, load_audio
from ..codec.convert import audio_to_pixels, save_image
from ..codec.image import image_params, image_pixels, layout, open_image, pixels_to_mel, to_uint8, with_exif
from ..codec.params import RIFFUSION_MAX_VALUE
from ..errors import SpectrodiffError
from ..files import DEFAULT_OUTPUT_DIR, atomic_path, check_writable
from ..vocoding.reconstruct import mel_to_waveform, stream_mel_to_waveform, vocode_stream
from ..vocoding.registry import choose_vocoder
from ..vocoding.render import mel_to_audio
from ..vocoding.vocoder import NeuralVocoder
from .pipeline import MAX_SECONDS, TILE_SECONDS, SpectrodiffPipeline
from .timeline import Keyframe, Timeline

OUTPUT_SUFFIXES = (".wav", ".flac")
# Seconds of audio crossfaded where inpainted audio meets the original.
INPAINT_CROSSFADE = 0.02
ENCODING_MODES = ("remix", "extend", "inpaint", "riffuse")  # the modes that VAE-encode input audio or an image


@dataclass
class Settings:
    """What every mode shares: model, sampler and output options."""

    steps: int = 25
    scheduler: str | None = None
    griffin_lim_iters: int = 32
    # Adam steps refining the VAE encoder's latents of input audio (remix, extend, inpaint, riffuse); 0: the
    # encoder alone; None: the model's `encode_steps`.
    encode_steps: int | None = None
    # None: the model's default (its own vocoder if it has one, else Griffin-Lim); "griffin-lim", "neural", or a
    # vocoder's name or folder (spectrodiff.vocoding.registry.choose_vocoder).
    vocoder: str | None = None
    sample_rate: int | None = None
    out: Path | None = None
    window_batch: int = 4
    progress: Callable[[str, int, int], None] | None = None

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


def output_paths(out: Path | None, slug: str, seed: int) -> tuple[Path, Path, Path]:
    """(audio, png, json). `out` ending in .wav/.flac names the audio and the others sit beside it with its stem;
    any other `out` is a folder; the default is outputs/<date>-<slug>-<seed>/. Nothing existing is overwritten."""
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
        audio = folder / f"{slug}.wav"
    paths = (audio, audio.with_suffix(".png"), audio.with_suffix(".json"))
    for path in paths:
        check_writable(path, overwrite=False)
    return paths


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

    def finish(self, path: Path, out_rate: int | None, seconds: float, normalize: bool = True) -> None:
        """Write the file: `seconds` long to the sample at `out_rate` (default the spool's rate), resampled by soxr,
        cut or padded with silence by the resampler's last few samples."""
        self._spool.close()
        gain, rate = self.gain(normalize), out_rate or self.sample_rate
        stream = soxr.ResampleStream(self.sample_rate, rate, self.channels, dtype="float32") \
            if rate != self.sample_rate else None
        remaining = round(seconds * rate)
        with atomic_path(path) as tmp, soundfile.SoundFile(tmp, "w", rate, self.channels, subtype="PCM_16",
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
        self._dir.cleanup()


def render(
    pipe: SpectrodiffPipeline,
    latents: torch.Tensor,
    paths: tuple[Path, Path, Path],
    record: dict,
    settings: Settings,
    loop: bool = False,
    max_value: float = RIFFUSION_MAX_VALUE,
    prefix_audio: np.ndarray | None = None,
    splice: Callable[[torch.Tensor, NeuralVocoder | None], Iterator[np.ndarray]] | None = None,
    normalize: bool = True,
    seconds: float | None = None,
) -> Result:
    """Decode latents tile by tile into the PNG, and into audio written progressively; then write the sidecar.

    Args:
        prefix_audio: `(C, N)` known audio the result continues (extend); it is written first, untouched.
        splice: takes the full mel and the vocoder (None: Griffin-Lim) and yields the audio blocks (inpaint);
            default reconstructs the mel.
        seconds: the output's exact length (prefix included): round(seconds * rate) samples at the model's rate and
            at the output rate, cut or padded with silence; None: the mel's own length (loops).
    """
    params = pipe.spectrogram
    vocoder = choose_vocoder(settings.vocoder, params, getattr(pipe, "vocoder", None))
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
            settings.report("decoding", start + pixels.shape[-1], width)
            if mel.shape[-1]:
                yield mel

    sink = _AudioSink(params.channels, params.sample_rate)
    if loop or splice is not None:
        mel = torch.cat(list(mel_pieces()), dim=-1)
        if loop:
            blocks = [mel_to_audio(mel, params, vocoder, circular=True, n_iter=settings.griffin_lim_iters).numpy()]
        else:
            blocks = splice(mel, vocoder)
    else:
        if prefix_audio is not None:
            sink.write(prefix_audio)
        blocks = vocode_stream(vocoder, mel_pieces(), params, prefix_audio) if vocoder is not None else \
            stream_mel_to_waveform(mel_pieces(), params, n_iter=settings.griffin_lim_iters, prefix_audio=prefix_audio)
    total = None if seconds is None else round(seconds * params.sample_rate)
    for block in blocks:
        block = np.asarray(block)
        if total is not None:
            block = block[:, : max(total - sink.frames, 0)]
        sink.write(block)
    if total is not None and sink.frames < total:
        sink.write(np.zeros((params.channels, total - sink.frames), np.float32))
    seconds = sink.frames / params.sample_rate if seconds is None else seconds
    sink.finish(audio_path, settings.sample_rate, seconds, normalize=normalize)

    save_image(image_path, with_exif(Image.fromarray(np.concatenate(columns, axis=1), mode="RGB"), params, max_value))

    # The job alone redoes the result (with the same model): settings included.
    encoding = {"encode_steps": encode_steps(pipe, settings)} if record["job"]["mode"] in ENCODING_MODES else {}
    record["job"] = {**record["job"], "steps": settings.steps, "scheduler": pipe.scheduler_name,
                     "iters": settings.griffin_lim_iters, **encoding,
                     **({"vocoder": settings.vocoder} if settings.vocoder else {}),
                     **({"sample_rate": settings.sample_rate} if settings.sample_rate else {})}
    record = {"spectrodiff": __version__, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              **record, "model": model_record(pipe), "scheduler": pipe.scheduler_name, "steps": settings.steps,
              "griffin_lim_iters": settings.griffin_lim_iters, **encoding,
              "vocoder": "griffin-lim" if vocoder is None else getattr(vocoder, "source", "neural"), "loop": loop,
              "seconds": round(seconds, 6),
              "sample_rate": settings.sample_rate or params.sample_rate, "spectrogram": dict(params.to_exif()),
              "files": {"audio": audio_path.name, "image": image_path.name}}
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return Result(audio_path, image_path, json_path, seconds, record)


# ---- modes ---------------------------------------------------------------------------------------------------------

def _check_seconds(seconds: float) -> None:
    if not 0 < seconds <= MAX_SECONDS:
        raise SpectrodiffError(f"seconds must be in (0, {MAX_SECONDS:g}], got {seconds:g}")


def encode_steps(pipe: SpectrodiffPipeline, settings: Settings) -> int:
    """The refinement steps an encoding of input audio takes: the settings', else the model's."""
    return pipe.config.encode_steps if settings.encode_steps is None else settings.encode_steps


def _prepare(pipe: SpectrodiffPipeline, settings: Settings) -> None:
    if not 1 <= settings.steps <= 1000:
        raise SpectrodiffError(f"steps must be between 1 and 1000, got {settings.steps}")
    if settings.scheduler:
        pipe.set_scheduler(settings.scheduler)
    if settings.encode_steps is not None and not 0 <= settings.encode_steps <= 1000:
        raise SpectrodiffError(f"--encode-steps must be between 0 and 1000, got {settings.encode_steps}")
    if settings.sample_rate is not None and not 8000 <= settings.sample_rate <= 192000:
        raise SpectrodiffError(f"--sample-rate must be between 8000 and 192000, got {settings.sample_rate}")


def _denoise(pipe, timeline, width, settings, **kwargs) -> torch.Tensor:
    return pipe.denoise(timeline, width, num_inference_steps=settings.steps, window_batch=settings.window_batch,
                callback=lambda done, total: settings.report("denoising", done, total), **kwargs)


def _job(mode: str, **fields) -> dict:
    """The batch job that redoes this result (a line of `spectrodiff batch`)."""
    return {"mode": mode, **{k: v for k, v in fields.items() if v is not None}}


def generate(pipe: SpectrodiffPipeline, keyframe: Keyframe, seconds: float = TILE_SECONDS, loop: bool = True,
             settings: Settings | None = None) -> Result:
    """Text -> a clip of `seconds`; by default a seamless loop (the time axis is circular throughout)."""
    settings = settings or Settings()
    _prepare(pipe, settings)
    _check_seconds(seconds)
    width = pipe.columns_for(seconds, loop)
    paths = output_paths(settings.out, slugify(keyframe.prompt), keyframe.seed)
    latents = _denoise(pipe, Timeline.single(keyframe), width, settings, loop=loop)
    job = _job("generate", prompt=keyframe.prompt, seed=keyframe.seed, guidance=keyframe.guidance,
               negative=keyframe.negative or None, seconds=seconds, loop=loop)
    return render(pipe, latents, paths, {"mode": "generate", "job": job, "keyframes": [keyframe.to_dict()]},
                  settings, loop=loop, seconds=None if loop else seconds)


def morph(pipe: SpectrodiffPipeline, keyframes: list[Keyframe], seconds: float,
          settings: Settings | None = None) -> Result:
    """Interpolate across keyframes over one clip: embeddings lerped, noise slerped, guidance lerped."""
    settings = settings or Settings()
    _prepare(pipe, settings)
    _check_seconds(seconds)
    if len(keyframes) < 2:
        raise SpectrodiffError("morph needs at least two prompts")
    timeline = Timeline.morph(keyframes, seconds)
    paths = output_paths(settings.out, slugify(" to ".join(k.prompt for k in keyframes[:2])), keyframes[0].seed)
    latents = _denoise(pipe, timeline, pipe.columns_for(seconds), settings)
    job = _job("morph", keyframes=[k.to_dict() for k in keyframes], seconds=seconds)
    return render(pipe, latents, paths, {"mode": "morph", "job": job, "timeline": timeline.to_dict()}, settings,
                  seconds=seconds)


def compose(pipe: SpectrodiffPipeline, keyframes: list[Keyframe], transition: float = 2.0,
            settings: Settings | None = None) -> Result:
    """A timeline of keyframes, each holding for its `seconds`, blended over `transition` at the boundaries."""
    settings = settings or Settings()
    _prepare(pipe, settings)
    timeline = Timeline.compose(keyframes, transition)
    _check_seconds(timeline.duration)
    paths = output_paths(settings.out, slugify(keyframes[0].prompt), keyframes[0].seed)
    latents = _denoise(pipe, timeline, pipe.columns_for(timeline.duration), settings)
    job = _job("compose", keyframes=[k.to_dict() for k in keyframes], transition=transition)
    return render(pipe, latents, paths, {"mode": "compose", "job": job, "timeline": timeline.to_dict()}, settings,
                  seconds=timeline.duration)


def _load_input(pipe: SpectrodiffPipeline, path: Path) -> np.ndarray:
    if Path(path).suffix.lower() not in AUDIO_SUFFIXES:
        raise SpectrodiffError(f"{path}: expected an audio file ({', '.join(AUDIO_SUFFIXES)})")
    params = pipe.spectrogram
    audio = load_audio(path, params.sample_rate, "stereo" if params.stereo else "mono")
    if audio.shape[1] < params.hop_length * pipe.vae_scale_factor:
        raise SpectrodiffError(f"{path} is too short ({audio.shape[1] / params.sample_rate:.3f} s)")
    return audio


def _encode_audio(pipe: SpectrodiffPipeline, audio: np.ndarray, width: int,
                  settings: Settings) -> tuple[torch.Tensor, float]:
    pixels, max_value = audio_to_pixels(audio, pipe.spectrogram, width * pipe.vae_scale_factor)
    return pipe.encode_image(pixels, encode_steps(pipe, settings)), max_value


def _input_record(path: Path) -> dict:
    return {"path": str(path), "sha256": file_sha256(Path(path))}


def remix(pipe: SpectrodiffPipeline, path: Path, keyframe: Keyframe, settings: Settings | None = None) -> Result:
    """Audio-to-audio over the whole input (img2img at `keyframe.strength`), one shared latent, no seams."""
    settings = settings or Settings()
    _prepare(pipe, settings)
    audio = _load_input(pipe, path)
    width = -(-pipe.spectrogram.width_for_samples(audio.shape[1]) // pipe.vae_scale_factor)
    init, max_value = _encode_audio(pipe, audio, width, settings)
    paths = output_paths(settings.out, slugify(f"{Path(path).stem} {keyframe.prompt}"), keyframe.seed)
    latents = _denoise(pipe, Timeline.single(keyframe), width, settings, init_latents=init)
    job = _job("remix", audio=str(path), prompt=keyframe.prompt, seed=keyframe.seed, strength=keyframe.strength,
               guidance=keyframe.guidance, negative=keyframe.negative or None)
    record = {"mode": "remix", "job": job, "input": _input_record(path), "keyframes": [keyframe.to_dict()]}
    return render(pipe, latents, paths, record, settings, max_value=max_value,
                  seconds=audio.shape[1] / pipe.spectrogram.sample_rate)


def extend(pipe: SpectrodiffPipeline, path: Path, keyframe: Keyframe, seconds: float,
           settings: Settings | None = None) -> Result:
    """Continue the input by `seconds`; the input's own samples open the output untouched."""
    settings = settings or Settings()
    _prepare(pipe, settings)
    _check_seconds(seconds)
    audio = _load_input(pipe, path)
    factor, rate = pipe.vae_scale_factor, pipe.spectrogram.sample_rate
    known = pipe.spectrogram.width_for_samples(audio.shape[1]) // factor  # columns wholly inside the input
    total = audio.shape[1] / rate + seconds
    width = max(pipe.columns_for(total), known + 1)
    init, max_value = _encode_audio(pipe, audio[:, : known * factor * pipe.spectrogram.hop_length], width, settings)
    keep = torch.zeros(width, dtype=torch.bool)
    keep[:known] = True
    paths = output_paths(settings.out, slugify(f"{Path(path).stem} {keyframe.prompt}"), keyframe.seed)
    latents = _denoise(pipe, Timeline.single(keyframe), width, settings, init_latents=init, keep=keep.to(init.device))
    job = _job("extend", audio=str(path), prompt=keyframe.prompt, seed=keyframe.seed, seconds=seconds,
               guidance=keyframe.guidance, negative=keyframe.negative or None)
    record = {"mode": "extend", "job": job, "input": _input_record(path), "keyframes": [keyframe.to_dict()]}
    # The input must stay bit-exact, so no loudness gain: the continuation is already on the input's scale.
    return render(pipe, latents, paths, record, settings, max_value=max_value, prefix_audio=audio, normalize=False,
                  seconds=total)


def inpaint(pipe: SpectrodiffPipeline, path: Path, keyframe: Keyframe, start: float, end: float,
            settings: Settings | None = None) -> Result:
    """Regenerate the span [start, end) seconds; outside it the audio is unchanged except a short crossfade."""
    settings = settings or Settings()
    _prepare(pipe, settings)
    audio = _load_input(pipe, path)
    params, factor = pipe.spectrogram, pipe.vae_scale_factor
    duration = audio.shape[1] / params.sample_rate
    if not 0 <= start < end <= duration:
        raise SpectrodiffError(f"inpaint span {start:g}-{end:g} s must lie inside the audio (0-{duration:.3f} s)")
    width = -(-params.width_for_samples(audio.shape[1]) // factor)
    init, max_value = _encode_audio(pipe, audio, width, settings)
    seconds_per_column = factor * params.step_size_ms / 1000
    first, last = int(start / seconds_per_column), int(np.ceil(end / seconds_per_column))
    keep = torch.ones(width, dtype=torch.bool)
    keep[first:last] = False
    paths = output_paths(settings.out, slugify(f"{Path(path).stem} {keyframe.prompt}"), keyframe.seed)
    latents = _denoise(pipe, Timeline.single(keyframe), width, settings, init_latents=init, keep=keep.to(init.device))
    a, b = round(start * params.sample_rate), round(end * params.sample_rate)

    def splice(mel: torch.Tensor, vocoder: NeuralVocoder | None) -> Iterator[np.ndarray]:
        if vocoder is not None:
            fade = round(INPAINT_CROSSFADE * params.sample_rate)
            yield _crossfade_span(audio, vocoder.vocode(mel).numpy(), a, b, fade)
            return
        # Griffin-Lim starts from the original's phase outside the span, so the new audio meets it in phase.
        known = torch.from_numpy(audio.copy())
        known[:, a:b] = 0
        length = (mel.shape[-1] - 1) * params.hop_length
        known = torch.nn.functional.pad(known, (0, max(length - known.shape[1], 0)))[:, :length]
        fresh = mel_to_waveform(mel, params, n_iter=settings.griffin_lim_iters, init_audio=known).numpy()
        yield _crossfade_span(audio, fresh, a, b, round(INPAINT_CROSSFADE * params.sample_rate))

    job = _job("inpaint", audio=str(path), prompt=keyframe.prompt, seed=keyframe.seed, start=start, end=end,
               guidance=keyframe.guidance, negative=keyframe.negative or None)
    record = {"mode": "inpaint", "job": job, "input": _input_record(path), "keyframes": [keyframe.to_dict()]}
    return render(pipe, latents, paths, record, settings, max_value=max_value, splice=splice, normalize=False,
                  seconds=audio.shape[1] / params.sample_rate)


def _crossfade_span(original: np.ndarray, fresh: np.ndarray, a: int, b: int, fade: int) -> np.ndarray:
    """`original` with [a, b) taken from `fresh`, crossfading `fade` samples inside each edge of the span."""
    out = original.copy()
    fade = min(fade, (b - a) // 2)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out[:, a:b] = fresh[:, a:b]
    if fade:
        out[:, a: a + fade] = original[:, a: a + fade] * (1 - ramp) + fresh[:, a: a + fade] * ramp
        out[:, b - fade: b] = fresh[:, b - fade: b] * (1 - ramp) + original[:, b - fade: b] * ramp
    return out


def riffuse(pipe: SpectrodiffPipeline, start: Keyframe, end: Keyframe, alpha: float, seed_image: Path,
            mask_image: Path | None = None, settings: Settings | None = None) -> Result:
    """Riffusion's inference: a clip grown from a seed spectrogram image (img2img at the keyframes' strength),
    conditioned on `start` and `end` blended at `alpha` (text lerped, noise slerped, strength and guidance
    lerped). A mask image's white pixels are regenerated and the seed image is kept under its black ones."""
    settings = settings or Settings()
    _prepare(pipe, settings)
    if not 0 <= alpha <= 1:
        raise SpectrodiffError(f"alpha must be in [0, 1], got {alpha:g}")
    image = open_image(seed_image)
    params, max_value = image_params(image)
    if params != pipe.spectrogram:
        raise SpectrodiffError(f"seed image {Path(seed_image).name} has spectrogram parameters {params.to_exif()}, "
                               f"the model {pipe.spectrogram.to_exif()}")
    factor = pipe.vae_scale_factor
    width = image.width // factor
    if image.height != params.num_frequencies or width == 0:
        raise SpectrodiffError(f"seed image {Path(seed_image).name} is {image.width} x {image.height} pixels; the "
                               f"model needs {params.num_frequencies} high and at least {factor} wide")
    init = pipe.encode_image(image_pixels(image)[..., : width * factor], encode_steps(pipe, settings))
    keep = None
    if mask_image is not None:
        mask = open_image(mask_image).convert("L").resize((width, pipe.latent_height), Image.Resampling.NEAREST)
        keep = torch.from_numpy(np.asarray(mask) < 128).to(init.device)
    timeline = Timeline((start, end), (0.0,), (alpha,))
    paths = output_paths(settings.out, slugify(f"{start.prompt} to {end.prompt}"), start.seed)
    latents = _denoise(pipe, timeline, width, settings, init_latents=init, keep=keep)
    job = _job("riffuse", start=start.to_dict(), end=end.to_dict(), alpha=alpha, seed_image=str(seed_image),
               mask_image=str(mask_image) if mask_image is not None else None)
    record = {"mode": "riffuse", "job": job, "input": _input_record(seed_image), "timeline": timeline.to_dict()}
    return render(pipe, latents, paths, record, settings, max_value=max_value)
