"""What a mode makes before any file is written: a `Take`, its audio as blocks that the decoder and vocoder make on
demand, the spectrogram they come from, and what the files record about it. `output.write_result` streams a take
to disk; `SpectrodiffPipeline.__call__` holds one in memory (`Take.audio`): both read the same blocks, to the same
length, at the same gain, so the command line and Python give the same samples."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import soxr
import torch
from PIL import Image

from ..codec.audio import DEFAULT_LOUDNESS_DBFS, PEAK_CEILING_DBFS
from ..codec.beats import BeatGrid
from ..codec.image import layout, pixels_to_mel, to_uint8, with_exif
from ..codec.params import RIFFUSION_MAX_VALUE
from ..codec.retime import TempoMap, retime_pieces
from ..codec.riff import LoopInfo
from ..codec.warp import plan_warp, warp_columns
from ..vocoding.reconstruct import CONTEXT_FRAMES, _crossfade, stream_mel_to_waveform, vocode_stream
from ..vocoding.render import mel_to_audio
from ..vocoding.vocoder import NeuralVocoder
from .conditions import Music
from .jobs import Job
from .musical import bar_seconds, beats_per_bar

if TYPE_CHECKING:  # the pipeline runs the modes, which make takes
    from .pipeline import SpectrodiffPipeline

# Loops up to this many frames are vocoded as one circular period; longer ones in pieces, as plain clips are, so that
# memory does not grow with their length (docs/benchmarks.md).
LOOP_PERIOD_FRAMES = 8192
# Frames a long loop's Griffin-Lim streams at once: a Riffusion tile, as a plain clip's decoded tiles arrive.
LOOP_PIECE_FRAMES = 512
# Griffin-Lim iterations at most of the render whose beat is tracked before a clock-time clip is warped: onsets
# need magnitudes, not clean phase.
TRACK_ITERS = 4


class Decoding:
    """`(1, C, h, W)` latents decoded tile by tile on demand into mel pieces; the 8-bit columns of each tile are kept
    for the PNG.

    Args:
        loop: the latents are a loop's (decoded circular in time).
        max_value: the magnitude black stands for (an input's own; Riffusion's for generated audio).
        skip_samples: samples of audio the take already has (a prefix): the mel frames they cover are left out of
            the pieces, still in the PNG.
        report: hears the progress, `report("decoding", pixel columns done, of all)`.
        tempo_map: a beat-time composition's sections, each heard at its own tempo (default: all at `params`').

    `params` are the image's (a beat-time model's at its tempo); the mel it yields is at `audio_params`, the clock-time
    twin the vocoders run at (`codec.retime`; the same params in clock time).
    """

    def __init__(self, pipe: SpectrodiffPipeline, latents: torch.Tensor, loop: bool = False,
                 max_value: float = RIFFUSION_MAX_VALUE, skip_samples: int = 0,
                 report: Callable[[str, int, int], None] | None = None, tempo_map: TempoMap | None = None):
        self.pipe, self.latents, self.loop, self.max_value = pipe, latents, loop, max_value
        self.report, self.tempo_map = report, tempo_map
        self.params = pipe.spectrogram
        self.audio_params = self.params.clock() if self.params.beat_time else self.params
        self.skip_frames = self.audio_params.width_for_samples(skip_samples) if skip_samples else 0
        self.columns: list[np.ndarray] = []
        # how the tempo was made, for the sidecar (`Take.tempo_made`): a subclass that warps says once it has
        self.tempo_made: dict | None = {"how": "beat time"} if self.params.beat_time else None

    def mel_pieces(self) -> Iterator[torch.Tensor]:
        """`(C, n_mels, t)` mel pieces at `audio_params`, in order, as their tiles decode (`skip_frames` of them
        left out)."""
        pieces = self._image_mel_pieces()
        done = 0
        for mel in retime_pieces(pieces, self.params, self.tempo_map) if self.params.beat_time else pieces:
            mel, done = mel[..., max(self.skip_frames - done, 0):], done + mel.shape[-1]
            if mel.shape[-1]:
                yield mel

    def _pixel_pieces(self) -> Iterator[torch.Tensor]:
        """`(3, H, t)` float pixels of the image, laid out (`layout`), in order as their tiles decode."""
        width = self.latents.shape[-1] * self.pipe.vae_scale_factor
        for start, pixels in self.pipe.decode_latents(self.latents, loop=self.loop):
            if self.report:
                self.report("decoding", start + pixels.shape[-1], width)
            yield layout(pixels, self.params)

    def _image_mel_pieces(self) -> Iterator[torch.Tensor]:
        """`(C, n_mels, t)` mel pieces at the image's columns; the PNG's columns kept as they pass."""
        for pixels in self._pixel_pieces():
            self.columns.append(to_uint8(pixels))
            yield pixels_to_mel(pixels, self.params, self.max_value)

    def mel(self) -> torch.Tensor:
        """`(C, n_mels, T)` the whole mel at once, at `audio_params`."""
        return torch.cat(list(self.mel_pieces()), dim=-1)

    def image_mel(self) -> torch.Tensor:
        """`(C, n_mels, W)` the whole mel at the image's columns (`params`)."""
        return torch.cat(list(self._image_mel_pieces()), dim=-1)

    def image(self) -> Image.Image:
        """The spectrogram PNG's image, its parameters in EXIF: whole once the mel has been read."""
        pixels = np.concatenate(self.columns, axis=1)
        return with_exif(Image.fromarray(pixels, mode="RGB"), self.params, self.max_value)


class WarpedDecoding(Decoding):
    """A clock-time clip's decoding warped to its asked tempo and `bars` whole bars before anything is vocoded
    (`codec.warp`): the whole image is decoded, rendered (by `vocoder`, else TRACK_ITERS of Griffin-Lim at most) for
    its beat to be tracked, and its columns resampled, so that the PNG, the audio and the WAV's chunks are all of the
    warped clip. With no steady beat the clip is left as made (a plain one cut to its bars), and `tempo_made` says
    so. `music`: the asked tempo and meter; the rest as Decoding's."""

    def __init__(self, pipe: SpectrodiffPipeline, latents: torch.Tensor, music: Music, bars: int,
                 vocoder: NeuralVocoder | None, iters: int, loop: bool = False,
                 report: Callable[[str, int, int], None] | None = None):
        super().__init__(pipe, latents, loop=loop, report=report)
        self.music, self.bars, self.vocoder, self.iters = music, bars, vocoder, min(iters, TRACK_ITERS)

    def _pixel_pieces(self) -> Iterator[torch.Tensor]:
        pixels = torch.cat(list(super()._pixel_pieces()), dim=-1)
        params, rate = self.params, self.params.sample_rate
        heard = mel_to_audio(pixels_to_mel(pixels, params, self.max_value), params, self.vocoder,
                             circular=self.loop, n_iter=self.iters).numpy()
        seconds = self.bars * bar_seconds(self.music.bpm, self.music.meter)
        width = round(seconds * rate / params.hop_length) if self.loop else \
            math.ceil(round(seconds * rate) / params.hop_length) + 1  # a plain clip's (T - 1) hops cover it
        planned = plan_warp(heard, rate, self.music.bpm, self.bars, beats_per_bar(self.music.meter),
                            heard.shape[-1] / rate if self.loop else None)
        if isinstance(planned, BeatGrid):
            self.tempo_made = {"how": "asked only", "why": f"no steady beat (pulse clarity {planned.clarity:.2f})"}
            yield pixels if self.loop else pixels[..., :width]
            return
        self.tempo_made = planned.record()
        yield warp_columns(pixels, params.hop_length / rate, planned, width)


class Level:
    """The loudness of audio that passes a block at a time, and the gain that brings it to Riffusion's level."""

    def __init__(self, channels: int):
        self.channels, self.frames, self.sum_squares, self.peak = channels, 0, 0.0, 0.0

    def add(self, block: np.ndarray) -> np.ndarray:
        """`(C, n)` audio -> the same as float32, counted."""
        block = np.asarray(block, dtype=np.float32)
        self.frames += block.shape[1]
        self.sum_squares += float(np.square(block, dtype=np.float64).sum())
        self.peak = max(self.peak, float(np.abs(block).max(initial=0.0)))
        return block

    def gain(self, normalize: bool) -> float:
        """To DEFAULT_LOUDNESS_DBFS RMS, the peak kept under PEAK_CEILING_DBFS; 1 for silence, or without
        `normalize`."""
        if not normalize or self.peak == 0:
            return 1.0
        rms = np.sqrt(self.sum_squares / max(self.frames * self.channels, 1))
        return min(10 ** (DEFAULT_LOUDNESS_DBFS / 20) / rms, 10 ** (PEAK_CEILING_DBFS / 20) / self.peak)


@dataclass
class Take:
    """One result of a mode, before any file is written.

    Args:
        job: the job that made it.
        decoding: its spectrogram, decoded as `blocks` are read.
        blocks: `(C, n)` float audio blocks at the model's rate, in order (a prefix included); read once.
        vocoder: what renders the mel (None: Griffin-Lim).
        seconds: the exact length, `round(seconds * rate)` samples at any rate (cut, or padded with silence); None:
            as long as the blocks.
        normalize: gain to Riffusion's loudness; off where the input's own samples must stay exact.
        loop_info: tempo, key and loop points, for a WAV's acid and smpl chunks.
        music: the tempo and key it followed (text modes).
        record: more for the sidecar (the input's hash).
    """

    job: Job
    decoding: Decoding
    blocks: Iterable[np.ndarray]
    vocoder: NeuralVocoder | None
    seconds: float | None = None
    normalize: bool = True
    loop_info: LoopInfo | None = None
    music: Music | None = None
    record: dict = field(default_factory=dict)

    @property
    def tempo_made(self) -> dict | None:
        """How the tempo its files claim was made, for the sidecar, once its audio has been read: {"how": "beat
        time"} (a beat-time model), "warped" (`codec.warp.Warp.record`) or "asked only" (a clock-time clip left as
        made, with why where it was not warped); None where the files claim no tempo or an input's."""
        if self.loop_info is None or self.music is None:
            return None
        return self.decoding.tempo_made or {"how": "asked only"}

    def exact_blocks(self) -> Iterator[np.ndarray]:
        """The blocks, cut or padded with silence to `seconds` at the model's rate."""
        params = self.decoding.params
        total = None if self.seconds is None else round(self.seconds * params.sample_rate)
        done = 0
        for block in self.blocks:
            block = np.asarray(block)
            if total is not None:
                block = block[:, : max(total - done, 0)]
            done += block.shape[1]
            yield block
        if total is not None and done < total:
            yield np.zeros((params.channels, total - done), np.float32)

    def audio(self) -> np.ndarray:
        """`(C, N)` float32 audio in [-1, 1] at the model's rate: the samples `write_result` writes (before the file's
        own rounding and resampling)."""
        level = Level(self.decoding.params.channels)
        blocks = [level.add(block) for block in self.exact_blocks()]
        return np.clip(np.concatenate(blocks, axis=1) * level.gain(self.normalize), -1, 1)


def streamed_blocks(decoding: Decoding, vocoder: NeuralVocoder | None, iters: int,
                    prefix: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """A plain clip's audio as its tiles decode (`vocode_stream`, else Griffin-Lim of `iters` iterations), after
    `prefix` `(C, N)`, the known audio it continues, which comes first and untouched."""
    params = decoding.audio_params
    if prefix is not None:
        yield prefix
    pieces = decoding.mel_pieces()
    yield from (vocode_stream(vocoder, pieces, params, prefix) if vocoder is not None else
                stream_mel_to_waveform(pieces, params, n_iter=iters, prefix_audio=prefix))


def loop_blocks(decoding: Decoding, vocoder: NeuralVocoder | None, iters: int,
                samples: int | None = None) -> Iterator[np.ndarray]:
    """A loop's audio: one period (`loop_audio`; a beat-time loop's as `mel_to_audio` renders it, re-timed round
    the loop, whole), resampled to `samples` (`resample_loop`; None: as made)."""
    if decoding.params.beat_time:
        audio = mel_to_audio(decoding.image_mel(), decoding.params, vocoder, circular=True, n_iter=iters).numpy()
    else:
        audio = loop_audio(decoding.mel(), decoding.params, vocoder, iters)
    yield from ([audio] if samples is None else resample_loop(audio, samples))


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
    the wrap stays seamless, a block at a time (a Fourier transform of a whole long loop in float64 would take
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
