"""Mel or spectrogram image -> audio with the chosen vocoder: the functions behind `image-to-audio` and every mode's
in-memory rendering."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from ..codec.image import image_params, image_to_mel
from ..codec.params import SpectrogramParams
from ..errors import SpectrodiffError
from .reconstruct import mel_to_waveform
from .registry import choose_vocoder
from .vocoder import NeuralVocoder


def mel_to_audio(mel: torch.Tensor, params: SpectrogramParams, vocoder: NeuralVocoder | None, circular: bool = False,
                 n_iter: int = 32, seed: int | None = 0, on_iter: Callable[[int], None] | None = None,
                 chunk_frames: int | None = None) -> torch.Tensor:
    """`(..., n_mels, T)` mel -> `(..., L)` audio by `vocoder` (in pieces of `chunk_frames`, default the vocoder's:
    fewer bound memory tighter), or by Griffin-Lim (`n_iter`, `seed`, `on_iter`) when it is None;
    `L = (T - 1) * hop`, or `T * hop` for a loop (`circular`)."""
    if vocoder is not None:
        return vocoder.vocode(mel, circular=circular, chunk_frames=chunk_frames)
    return mel_to_waveform(mel, params, n_iter=n_iter, seed=seed, on_iter=on_iter, circular=circular)


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
    `image_params` reads them: read once, a missing EXIF warns once).

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
    if not isinstance(vocoder, NeuralVocoder):
        vocoder = choose_vocoder(vocoder, params)
    if vocoder is not None:
        vocoder.check_params(params)
    return mel_to_audio(mel, params, vocoder, n_iter=n_iter, seed=seed, on_iter=on_iter,
                        chunk_frames=chunk_frames).numpy(), params
