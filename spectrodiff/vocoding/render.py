"""Mel or spectrogram image -> audio with the chosen vocoder: the functions behind `image-to-audio` and every mode's
in-memory rendering."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from ..codec.image import image_params, image_to_mel
from ..codec.params import SpectrogramParams
from ..codec.retime import columns_per_clock_column, retime_loop, retime_pieces
from ..errors import SpectrodiffError
from .reconstruct import mel_to_waveform
from .registry import choose_vocoder
from .vocoder import NeuralVocoder

# A loop's clock-time mel is vocoded whole round the loop. The neural network's own loop is seamless only when its
# columns are a multiple of this (its phase advance then wraps too: NeuralVocoder.vocode); its full-band refinement,
# Griffin-Lim-like round the loop, mends the wrap at any width (tones on 480-483 columns, mini's vocoder: wrap ratio
# 28 unrefined off the multiple, 1.0-1.6 refined, 1.0 on it), so a refining vocoder takes the nearest whole width,
# which moves the pitch four times less.
UNREFINED_LOOP_MULTIPLE = 4


def mel_to_audio(mel: torch.Tensor, params: SpectrogramParams, vocoder: NeuralVocoder | None, circular: bool = False,
                 n_iter: int = 32, seed: int | None = 0, on_iter: Callable[[int], None] | None = None,
                 chunk_frames: int | None = None) -> torch.Tensor:
    """`(..., n_mels, T)` mel -> `(..., L)` audio by `vocoder` (in pieces of `chunk_frames`, default the vocoder's:
    fewer bound memory tighter), or by Griffin-Lim (`n_iter`, `seed`, `on_iter`) when it is None;
    `L = (T - 1) * hop`, or `T * hop` for a loop (`circular`); in beat time rounded (`params.samples_for_width`,
    `samples_for_loop`).

    A beat-time mel (its params bound to a tempo) is rendered at the clock-time twin, `params.clock()`, which is what
    the vocoders and Griffin-Lim run at: see `beat_mel_to_audio`.
    """
    if params.beat_time:
        return beat_mel_to_audio(mel, params, vocoder, circular, n_iter, seed, on_iter, chunk_frames)
    if vocoder is not None:
        return vocoder.vocode(mel, circular=circular, chunk_frames=chunk_frames)
    return mel_to_waveform(mel, params, n_iter=n_iter, seed=seed, on_iter=on_iter, circular=circular)


def beat_mel_to_audio(mel: torch.Tensor, params: SpectrogramParams, vocoder: NeuralVocoder | None,
                      circular: bool = False, n_iter: int = 32, seed: int | None = 0,
                      on_iter: Callable[[int], None] | None = None, chunk_frames: int | None = None) -> torch.Tensor:
    """`mel_to_audio` of a beat-time mel `(..., n_mels, T)`: its columns re-timed to the clock hop
    (`spectrodiff.codec.retime`), rendered at `params.clock()`, and the audio brought to the beat-time length
    exactly.

    A clip's clock mel reaches a clock hop past its last column (held there), and the audio is cut to
    `params.samples_for_width(T)` samples: no pitch moves. A loop's clock mel is a whole number Tc of columns round
    the loop (`retime_loop`), vocoded circularly; its audio, `Tc * clock hop` samples, is resampled round the loop
    (`resample_period`) to `T * hop` samples, which moves the pitch by their ratio: at most half a column in Tc (two
    for a vocoder without refinement, `UNREFINED_LOOP_MULTIPLE`), e.g. 0.5 cents for 2 bars of 4/4 at 97 BPM
    (494.85 clock columns, 495 made) and at most 3.5 cents for 2 bars of 4/4 anywhere from 60 to 200 BPM (14
    without refinement).
    """
    clock = params.clock()
    if circular:
        multiple = UNREFINED_LOOP_MULTIPLE if vocoder is not None and not vocoder.config.refine_iterations else 1
        audio = mel_to_audio(retime_loop(mel, params, multiple), clock, vocoder, True, n_iter, seed, on_iter,
                             chunk_frames)
        return resample_period(audio, params.samples_for_loop(mel.shape[-1]))
    length = params.samples_for_width(mel.shape[-1])
    columns = -(-length // clock.hop_length) + 1  # their audio, (columns - 1) clock hops, covers the length
    held = mel[..., -1:].expand(*mel.shape[:-1], math.ceil(columns_per_clock_column(params)) + 1)
    clock_mel = torch.cat(list(retime_pieces([torch.cat([mel, held], dim=-1)], params)), dim=-1)[..., :columns]
    return mel_to_audio(clock_mel, clock, vocoder, False, n_iter, seed, on_iter, chunk_frames)[..., :length]


def resample_period(audio: torch.Tensor, length: int) -> torch.Tensor:
    """`(..., N)` one period of a loop -> `(..., length)`, the same period at another sample count: band-limited by
    the FFT, which treats the signal as periodic, so the wrap stays as seamless as it was (a resampler that pads
    the ends would not)."""
    count = audio.shape[-1]
    if count == length or count == 0:
        return audio
    spectrum = torch.fft.rfft(audio.double(), dim=-1)
    kept = min(count, length) // 2 + 1
    resized = spectrum.new_zeros(*spectrum.shape[:-1], length // 2 + 1)
    resized[..., :kept] = spectrum[..., :kept]
    return (torch.fft.irfft(resized, n=length, dim=-1) * (length / count)).to(audio.dtype)


def image_to_audio(
    image: Image.Image,
    params: SpectrogramParams | None = None,
    max_value: float | None = None,
    n_iter: int = 32,
    seed: int | None = 0,
    on_iter: Callable[[int], None] | None = None,
    vocoder: NeuralVocoder | str | None = None,
    chunk_frames: int | None = None,
) -> tuple[np.ndarray, SpectrogramParams]:
    """Spectrogram image -> `(C, (width - 1) * hop)` float audio (unnormalised) and the params used.

    Params and decoding scale come from the image's EXIF unless `params` and `max_value` are given (as
    `image_params` reads them: read once, a missing EXIF warns once). A beat-time image is heard at its params'
    tempo (`params.at_tempo(bpm)` re-times it: same columns, another length), `(width - 1) * hop` samples rounded up.

    Args:
        vocoder: a NeuralVocoder trained for those params, or a choice as `choose_vocoder` takes it: None (the
            default: the bundled vocoder for the params if there is one, else Griffin-Lim), "griffin-lim",
            "neural", or a vocoder's name or folder.
        n_iter, seed, on_iter: Griffin-Lim's iterations, initial phase and progress (unused by a neural vocoder).
        chunk_frames: a neural vocoder's piece length (`NeuralVocoder.vocode`).
    """
    if image.width < 2:  # audio spans the hops between columns: one column holds none
        raise SpectrodiffError(f"the image is {image.width} pixel wide: too narrow to hold audio (a spectrogram "
                               "needs at least 2 columns)")
    if params is None or max_value is None:
        exif_params, exif_max = image_params(image)
        params, max_value = params or exif_params, exif_max if max_value is None else max_value
    mel = image_to_mel(image, params, max_value)
    clock = params.clock()  # what the vocoders run at: a beat-time mel is resampled to it
    if not isinstance(vocoder, NeuralVocoder):
        vocoder = choose_vocoder(vocoder, clock)
    if vocoder is not None:
        vocoder.check_params(clock)
    return mel_to_audio(mel, params, vocoder, n_iter=n_iter, seed=seed, on_iter=on_iter,
                        chunk_frames=chunk_frames).numpy(), params
