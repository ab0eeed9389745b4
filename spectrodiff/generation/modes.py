"""The generation modes, one function a job (`spectrodiff.generation.jobs`): generate, morph, compose, remix,
extend, inpaint and riffuse. Each checks its input, denoises, and returns a `Take` (`takes`), which `make` writes as
the output triple (`output.write_result`) and `SpectrodiffPipeline.__call__` returns as audio."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ..codec.audio import AUDIO_SUFFIXES, load_audio
from ..codec.convert import audio_to_pixels
from ..codec.image import image_params, image_pixels, open_image
from ..codec.params import RIFFUSION_MAX_VALUE
from ..codec.retime import TempoMap, columns_per_clock_column
from ..codec.riff import LoopInfo, read_loop_info
from ..errors import SpectrodiffError
from ..settings import number_words
from ..vocoding.reconstruct import mel_to_waveform
from ..vocoding.registry import choose_vocoder
from ..vocoding.vocoder import NeuralVocoder
from .jobs import (
    MAX_SECONDS,
    AudioJob,
    ComposeJob,
    EncodingJob,
    ExtendJob,
    GenerateJob,
    InpaintJob,
    Job,
    MorphJob,
    RemixJob,
    RiffuseJob,
)
from .musical import bar_seconds, beats_per_bar, nearest_bars, parse_key
from .output import Output, Result, encode_steps, file_sha256, write_result
from .paths import output_paths
from .takes import Decoding, Take, WarpedDecoding, loop_blocks, streamed_blocks
from .timeline import Timeline

if TYPE_CHECKING:  # the pipeline calls `generate` (its __call__)
    from .pipeline import SpectrodiffPipeline

Progress = Callable[[str, int, int], None]  # hears (stage, done, total)

# Seconds of audio crossfaded where inpainted audio meets the original.
INPAINT_CROSSFADE = 0.02
# A warp changes the tempo by at most this factor (`codec.warp.nearest_octave`): a plain clip to be warped is made
# this much longer than its bars and one more, so that its bars from its first downbeat are all in it.
WARP_REACH = 2 ** 0.5


def _denoise(pipe: SpectrodiffPipeline, job: Job, timeline: Timeline, width: int, progress: Progress | None,
             **kwargs) -> torch.Tensor:
    if job.scheduler:
        pipe.set_scheduler(job.scheduler)
    callback = None if progress is None else lambda done, total: progress("denoising", done, total)
    return pipe.denoise(timeline, width, num_inference_steps=job.steps, callback=callback, **kwargs)


def _vocoder(pipe: SpectrodiffPipeline, job: Job) -> NeuralVocoder | None:
    """The job's vocoder for the model's mels (None: Griffin-Lim)."""
    params = pipe.spectrogram
    return choose_vocoder(job.vocoder, params.clock() if params.beat_time else params, getattr(pipe, "vocoder", None))


def _streamed(pipe: SpectrodiffPipeline, job: Job, latents: torch.Tensor, progress: Progress | None,
              max_value: float = RIFFUSION_MAX_VALUE, prefix: np.ndarray | None = None,
              tempo_map: TempoMap | None = None, **take) -> Take:
    """A plain clip's take, its tiles vocoded as they decode, after `prefix` `(C, N)` (the input it continues:
    its audio resumes after the frames the prefix covers, and the PNG still shows every column); a beat-time
    composition's sections each heard at its tempo (`tempo_map`); `take`: the rest of the Take's fields."""
    skip = 0 if prefix is None else prefix.shape[1]
    decoding = Decoding(pipe, latents, max_value=max_value, skip_samples=skip, report=progress, tempo_map=tempo_map)
    vocoder = _vocoder(pipe, job)
    return Take(job, decoding, streamed_blocks(decoding, vocoder, job.iters, prefix), vocoder, **take)


def _from_text(pipe: SpectrodiffPipeline, job: Job, progress: Progress | None, timeline: Timeline, seconds: float,
               loop: bool = False, loop_info: LoopInfo | None = None, bars: int | None = None) -> Take:
    """Denoise `timeline` into a clip of `seconds` (a loop: whole latent columns, circular throughout; with
    `loop_info`, resampled to exactly `seconds`), which keeps the music it followed. With `bars`, a clock-time
    model's clip is warped to that many bars at the music's tempo (`WarpedDecoding`); a plain one is made long
    enough for the warp to read its bars from its first downbeat at any tempo it may be brought from."""
    music = timeline.music
    warp = bars is not None and not pipe.spectrogram.beat_time
    source_seconds = WARP_REACH * (seconds + bar_seconds(music.bpm, music.meter)) if warp and not loop else seconds
    width = pipe.columns_for(source_seconds, loop)
    exact = not loop or loop_info is not None
    if music is not None and music.bpm is not None and loop and exact:
        # The loop is made on whole latent columns and then resampled to `seconds`: condition on the tempo that
        # its bars have before the resampling.
        made = width * pipe.seconds_per_column
        timeline = dataclasses.replace(timeline, music=dataclasses.replace(music, bpm=music.bpm * seconds / made))
    latents = _denoise(pipe, job, timeline, width, progress, loop=loop)
    vocoder = _vocoder(pipe, job)
    decoding = WarpedDecoding(pipe, latents, music, bars, vocoder, job.iters, loop, progress) if warp else \
        Decoding(pipe, latents, loop=loop, report=progress)
    if not loop:
        return Take(job, decoding, streamed_blocks(decoding, vocoder, job.iters), vocoder, seconds,
                    loop_info=loop_info, music=music)
    samples = round(seconds * pipe.spectrogram.sample_rate) if exact else None
    return Take(job, decoding, loop_blocks(decoding, vocoder, job.iters, samples), vocoder,
                seconds if exact else None, loop_info=loop_info, music=music)


def generate(pipe: SpectrodiffPipeline, job: GenerateJob, progress: Progress | None = None) -> Take:
    """Text -> a clip of `job.seconds`; by default a seamless loop. With a tempo (the job's, the prompt's words' or,
    for a loop, the model's pick) it is the whole bars nearest that, to the sample, and its WAV carries tempo and
    key; a plain clip whose tempo only the model picked keeps the exact length asked for."""
    music = pipe.resolve_music(job.prompt, job.seed, job.bpm, job.key, job.meter)
    seconds, loop_info = job.seconds, None
    if music is not None and music.bpm is not None and (job.loop or music.source != "model"):
        bars = job.bars or nearest_bars(job.seconds, music.bpm, music.meter)
        seconds = bars * bar_seconds(music.bpm, music.meter)
        if seconds > MAX_SECONDS:  # the nearest bars of a picked tempo may overshoot by part of a bar
            bars, seconds = bars - 1, seconds - bar_seconds(music.bpm, music.meter)
        music = pipe.with_chords(music, job.chords, bars, pipe.style_of(job.prompt), job.seed)
        loop_info = LoopInfo(music.bpm, bars * beats_per_bar(music.meter), music.meter, _root(music.key), job.loop)
    elif job.meter is not None and (music is None or music.bpm is None):
        raise SpectrodiffError(f"meter {job.meter} needs a tempo: give bpm, or name one in the prompt (this model "
                               "picks none)")
    elif job.chords is not None:
        raise SpectrodiffError("chords need a tempo: give bpm, or name one in the prompt (this model picks none)")
    return _from_text(pipe, job, progress, Timeline.single(job.keyframe, music), seconds, job.loop, loop_info,
                      None if loop_info is None else bars)


def _root(key: str | None) -> int | None:
    return None if key is None else parse_key(key).root_note


def morph(pipe: SpectrodiffPipeline, job: MorphJob, progress: Progress | None = None) -> Take:
    """Interpolate across keyframes over one clip: embeddings lerped, noise slerped, guidance lerped."""
    first = job.keyframes[0]
    music = pipe.resolve_music(first.prompt, first.seed)
    music = pipe.with_chords(music, None, None, pipe.style_of(first.prompt), first.seed)
    return _from_text(pipe, job, progress, Timeline.morph(list(job.keyframes), job.seconds, music), job.seconds)


def compose(pipe: SpectrodiffPipeline, job: ComposeJob, progress: Progress | None = None) -> Take:
    """A timeline of keyframes, each holding for its `seconds`, blended over `transition` at the boundaries. A
    beat-time model gives each section its own tempo (`_compose_in_beats`); a clock-time one makes one tempo for the
    whole clip (the plan's or the keyframes' own, else the first keyframe's)."""
    if pipe.spectrogram.beat_time:
        return _compose_in_beats(pipe, job, progress)
    tempi = {job.section_bpm(keyframe) for keyframe in job.keyframes}
    if len(tempi) > 1:
        asked = " and ".join("none" if bpm is None else f"{bpm:g} BPM" for bpm in sorted(tempi, key=lambda t: t or 0))
        raise SpectrodiffError(f"the keyframes ask for {asked}: this model's time axis is in seconds and makes one "
                               "tempo a clip (give the plan one bpm, or use a beat-time model)")
    bpm, first = tempi.pop(), job.keyframes[0]
    music = pipe.resolve_music(first.prompt, first.seed, bpm, meter=job.meter if bpm is not None else None)
    music = pipe.with_chords(music, None, None, pipe.style_of(first.prompt), first.seed)
    timeline = Timeline.compose(list(job.keyframes), job.transition, music)
    # With the plan's tempo the sections are whole bars, and so is the whole: its WAV says so.
    loop_info = None if bpm is None else LoopInfo(bpm, timeline.duration * bpm / 60, job.meter, _root(music.key),
                                                  loop=False)
    return _from_text(pipe, job, progress, timeline, timeline.duration, loop_info=loop_info)


def _compose_in_beats(pipe: SpectrodiffPipeline, job: ComposeJob, progress: Progress | None) -> Take:
    """A composition on a beat-time model bound to its first section's tempo (`make`): the canvas is in beats, a
    section of whole bars `bars x beats a bar x columns_per_beat` columns whatever its tempo, and each section is
    heard at its own tempo (`TempoMap`), the next following on its bar line with no gap; blends last their seconds
    at each side's tempo. The sidecar lists the sections; the WAV's acid tempo is written only where every section
    asked for the same one (a file holds one)."""
    tempi = _section_tempi(pipe, job)
    params, meter, first = pipe.spectrogram, job.meter, job.keyframes[0]
    canvas = params.config.tempo
    music = pipe.resolve_music(first.prompt, first.seed, job.section_bpm(first), meter=meter)
    music = pipe.with_chords(dataclasses.replace(music, bpm=canvas), None, None, pipe.style_of(first.prompt),
                             first.seed)
    keyframes = list(job.keyframes)
    timeline = Timeline.compose(keyframes, job.transition, music, [bpm / canvas for bpm in tempi])
    # Beats of each section: its bars exactly, else (a tempo the model picked) its seconds, kept as generate keeps them
    beats = [k.bars * beats_per_bar(meter) if k.bars is not None else k.seconds * bpm / 60
             for k, bpm in zip(keyframes, tempi, strict=True)]
    widths = [b * params.config.columns_per_beat for b in beats]
    latents = _denoise(pipe, job, timeline, math.ceil(sum(widths)) // pipe.vae_scale_factor + 1, progress)
    steps = tuple(columns_per_clock_column(params.at_tempo(bpm)) for bpm in tempi)
    asked = len(set(tempi)) == 1 and all(k.bars is not None for k in keyframes)
    loop_info = LoopInfo(canvas, sum(beats), meter, _root(music.key), loop=False) if asked else None
    starts = np.cumsum([0.0] + [k.seconds for k in keyframes[:-1]])
    sections = [{"start": round(float(start), 6), "seconds": round(k.seconds, 6),
                 "bars": k.bars if k.bars is not None else round(b / beats_per_bar(meter), 6), "bpm": bpm,
                 "prompt": k.prompt} for start, k, b, bpm in zip(starts, keyframes, beats, tempi, strict=True)]
    return _streamed(pipe, job, latents, progress, tempo_map=TempoMap(tuple(widths[:-1]), steps),
                     seconds=float(sum(k.seconds for k in keyframes)), loop_info=loop_info, music=music,
                     record={"sections": sections})


def _section_tempi(pipe: SpectrodiffPipeline, job: ComposeJob) -> list[float]:
    """Each section's tempo in a beat-time composition: its keyframe's, the plan's, else its prompt's pick.
    SpectrodiffError for a section with no tempo or one the model was not trained on."""
    tempi = []
    for n, keyframe in enumerate(job.keyframes, 1):
        bpm = job.section_bpm(keyframe)
        if bpm is None:
            music = pipe.resolve_music(keyframe.prompt, keyframe.seed)
            bpm = None if music is None else music.bpm
        if bpm is None:
            raise SpectrodiffError(f"keyframe {n} has no tempo and this model's time axis is in beats: give it or "
                                   "the plan a bpm")
        try:
            pipe.check_tempo(bpm)
        except SpectrodiffError as exc:
            raise SpectrodiffError(f"keyframe {n}: {exc}") from None
        tempi.append(bpm)
    return tempi


def _load_input(pipe: SpectrodiffPipeline, path: Path) -> np.ndarray:
    if Path(path).suffix.lower() not in AUDIO_SUFFIXES:
        raise SpectrodiffError(f"{path}: expected an audio file ({', '.join(AUDIO_SUFFIXES)})")
    params = pipe.spectrogram
    audio = load_audio(path, params.sample_rate, "stereo" if params.stereo else "mono")
    if audio.shape[1] < params.hop_length * pipe.vae_scale_factor:
        raise SpectrodiffError(f"{path} is too short ({audio.shape[1] / params.sample_rate:.3f} s)")
    return audio


def _encode_audio(pipe: SpectrodiffPipeline, audio: np.ndarray, width: int,
                  job: EncodingJob) -> tuple[torch.Tensor, float]:
    pixels, max_value = audio_to_pixels(audio, pipe.spectrogram, width * pipe.vae_scale_factor)
    return pipe.encode_image(pixels, encode_steps(pipe, job)), max_value


def _input_record(path: Path) -> dict:
    return {"input": {"path": str(path), "sha256": file_sha256(Path(path))}}


def _input_tempo(path: Path) -> LoopInfo | None:
    """The tempo, key and loop of an input WAV's acid and smpl chunks, which what is made of it keeps."""
    found = read_loop_info(path) if Path(path).suffix.lower() == ".wav" else None
    return None if found is None else found[0]


def remix(pipe: SpectrodiffPipeline, job: RemixJob, progress: Progress | None = None) -> Take:
    """Audio-to-audio over the whole input (img2img at `job.strength`), one shared latent, no seams."""
    audio = _load_input(pipe, job.audio)
    width = -(-pipe.spectrogram.width_for_samples(audio.shape[1]) // pipe.vae_scale_factor)
    init, max_value = _encode_audio(pipe, audio, width, job)
    latents = _denoise(pipe, job, Timeline.single(job.keyframe), width, progress, init_latents=init)
    return _streamed(pipe, job, latents, progress, max_value, seconds=audio.shape[1] / pipe.spectrogram.sample_rate,
                     loop_info=_input_tempo(job.audio), record=_input_record(job.audio))


def extend(pipe: SpectrodiffPipeline, job: ExtendJob, progress: Progress | None = None) -> Take:
    """Continue the input by `job.seconds`; the input's own samples open the output untouched."""
    audio = _load_input(pipe, job.audio)
    params, factor = pipe.spectrogram, pipe.vae_scale_factor
    known = params.width_for_samples(audio.shape[1]) // factor  # columns wholly inside the input
    total = audio.shape[1] / params.sample_rate + job.seconds
    width = max(pipe.columns_for(total), known + 1)
    init, max_value = _encode_audio(pipe, audio[:, : round(known * factor * params.hop_length)], width, job)
    keep = torch.zeros(width, dtype=torch.bool)
    keep[:known] = True
    latents = _denoise(pipe, job, Timeline.single(job.keyframe), width, progress, init_latents=init,
                       keep=keep.to(init.device))
    tempo = _input_tempo(job.audio)
    # The input must stay bit-exact, so no loudness gain: the continuation is already on the input's scale.
    return _streamed(pipe, job, latents, progress, max_value, prefix=audio, seconds=total, normalize=False,
                     loop_info=None if tempo is None else tempo.for_length(total), record=_input_record(job.audio))


def inpaint(pipe: SpectrodiffPipeline, job: InpaintJob, progress: Progress | None = None) -> Take:
    """Regenerate the span [start, end) seconds; outside it the audio is unchanged except a short crossfade."""
    audio = _load_input(pipe, job.audio)
    params, factor = pipe.spectrogram, pipe.vae_scale_factor
    duration = audio.shape[1] / params.sample_rate
    if job.end > duration:
        raise SpectrodiffError(f"inpaint span {number_words(job.start)}-{number_words(job.end)} s must lie inside "
                               f"the audio (0-{duration:.3f} s)")
    width = -(-params.width_for_samples(audio.shape[1]) // factor)
    init, max_value = _encode_audio(pipe, audio, width, job)
    seconds_per_column = pipe.seconds_per_column
    first, last = int(job.start / seconds_per_column), int(np.ceil(job.end / seconds_per_column))
    keep = torch.ones(width, dtype=torch.bool)
    keep[first:last] = False
    latents = _denoise(pipe, job, Timeline.single(job.keyframe), width, progress, init_latents=init,
                       keep=keep.to(init.device))
    a, b = round(job.start * params.sample_rate), round(job.end * params.sample_rate)
    fade = round(INPAINT_CROSSFADE * params.sample_rate)
    decoding, vocoder = Decoding(pipe, latents, max_value=max_value, report=progress), _vocoder(pipe, job)

    def splice() -> Iterator[np.ndarray]:
        mel = decoding.mel()
        if vocoder is not None:
            yield _crossfade_span(audio, vocoder.vocode(mel).numpy(), a, b, fade)
            return
        # Griffin-Lim starts from the original's phase outside the span, so the new audio meets it in phase.
        known = torch.from_numpy(audio.copy())
        known[:, a:b] = 0
        length = (mel.shape[-1] - 1) * params.hop_length
        known = torch.nn.functional.pad(known, (0, max(length - known.shape[1], 0)))[:, :length]
        fresh = mel_to_waveform(mel, params, n_iter=job.iters, init_audio=known).numpy()
        yield _crossfade_span(audio, fresh, a, b, fade)

    return Take(job, decoding, splice(), vocoder, seconds=duration, normalize=False,
                loop_info=_input_tempo(job.audio), record=_input_record(job.audio))


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


def riffuse(pipe: SpectrodiffPipeline, job: RiffuseJob, progress: Progress | None = None) -> Take:
    """Riffusion's inference: a clip grown from a seed spectrogram image (img2img at the keyframes' strength),
    conditioned on `job.start` and `job.end` blended at `job.alpha` (text lerped, noise slerped, strength and
    guidance lerped). A mask image's white pixels are regenerated and the seed image is kept under its black ones."""
    image = open_image(job.seed_image)
    params, max_value = image_params(image)
    if params != pipe.spectrogram:
        raise SpectrodiffError(f"seed image {job.seed_image.name} has spectrogram parameters {params.describe()}, "
                               f"the model {pipe.spectrogram.describe()}")
    factor = pipe.vae_scale_factor
    width = image.width // factor
    if image.height != params.num_frequencies or width == 0:
        raise SpectrodiffError(f"seed image {job.seed_image.name} is {image.width} x {image.height} pixels; the "
                               f"model needs {params.num_frequencies} high and at least {factor} wide")
    init = pipe.encode_image(image_pixels(image)[..., : width * factor], encode_steps(pipe, job))
    keep = None
    if job.mask_image is not None:
        mask = open_image(job.mask_image).convert("L").resize((width, pipe.latent_height), Image.Resampling.NEAREST)
        keep = torch.from_numpy(np.asarray(mask) < 128).to(init.device)
    timeline = Timeline((job.start, job.end), (0.0,), (job.alpha,))
    latents = _denoise(pipe, job, timeline, width, progress, init_latents=init, keep=keep)
    return _streamed(pipe, job, latents, progress, max_value, record=_input_record(job.seed_image))


MODES = {"generate": generate, "morph": morph, "compose": compose, "remix": remix, "extend": extend,
         "inpaint": inpaint, "riffuse": riffuse}


def tempo_of(pipe: SpectrodiffPipeline, job: Job) -> float | None:
    """The tempo a beat-time model makes `job` at (None for a clock-time model): the one its music follows, an
    input's (`--bpm`, else its WAV's acid chunk, else tracked) or a seed image's."""
    if not pipe.spectrogram.beat_time or pipe.spectrogram.tempo is not None:
        return None
    if isinstance(job, GenerateJob):
        music = pipe.resolve_music(job.prompt, job.seed, job.bpm, job.key, job.meter)
    elif isinstance(job, ComposeJob):  # the canvas is at the first section's tempo
        first = job.keyframes[0]
        music = pipe.resolve_music(first.prompt, first.seed, job.section_bpm(first))
    elif isinstance(job, MorphJob):
        first = job.keyframes[0]
        music = pipe.resolve_music(first.prompt, first.seed)
    elif isinstance(job, AudioJob):
        return input_tempo(job.audio, job.bpm)
    else:
        return image_params(open_image(job.seed_image))[0].config.get("tempo")
    return None if music is None else music.bpm


def input_tempo(audio: Path, bpm: float | None = None) -> float:
    """The tempo of input audio: `bpm` if given, else its WAV's acid chunk, else tracked; SpectrodiffError when it
    has no steady beat."""
    if bpm is not None:
        return bpm
    found = _input_tempo(audio)
    if found is not None and found.bpm:
        return found.bpm
    from ..codec.beats import track_beats

    grid = track_beats(load_audio(audio, 22050, "mono"), 22050)
    if not grid.steady:
        raise SpectrodiffError(f"{Path(audio).name} has no steady beat to follow (pulse clarity "
                               f"{grid.clarity:.2f}): give its tempo with --bpm")
    return grid.bpm


def make(pipe: SpectrodiffPipeline, job: Job, output: Output | None = None) -> Result:
    """Make any job (a command, a batch line, a sidecar's job, an API request) and write its output triple, its
    files' names checked before any work; a beat-time model makes it at its tempo (`tempo_of`)."""
    output = output or Output()
    paths = output_paths(output.out, job, output.overwrite)
    with pipe.at_tempo(tempo_of(pipe, job)):
        return write_result(pipe, MODES[job.mode](pipe, job, output.report), paths, output.overwrite)
