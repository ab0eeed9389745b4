"""Audio -> spectrogram image, end to end: the functions behind `audio-to-image` and `slice`, and the pixels the
VAE encodes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..files import atomic_path
from .audio import audio_info, iter_audio_blocks, load_audio
from .image import image_params, image_pixels, mel_to_image
from .mel import waveform_to_mel, waveform_to_mel_streaming
from .params import SpectrogramParams

# Whole files longer than this are converted block by block rather than loaded at once.
STREAM_ABOVE_SECONDS = 120.0
# Audio in memory longer than this is transformed a block at a time (the same frames), which bounds the server's peak
# memory for long uploads (figures: docs/reliability.md, the largest accepted inputs).
STFT_BLOCK_SECONDS = 10.0


def audio_to_image(audio: np.ndarray | torch.Tensor, params: SpectrogramParams) -> Image.Image:
    """`(C, N)` float audio in [-1, 1] (C = params.channels) -> Riffusion spectrogram image, width 1 + N // hop."""
    audio = torch.as_tensor(audio)
    block = int(STFT_BLOCK_SECONDS * params.sample_rate)
    if audio.shape[-1] <= block:
        return mel_to_image(waveform_to_mel(audio, params), params)
    blocks = (audio[..., start: start + block] for start in range(0, audio.shape[-1], block))
    return mel_to_image(waveform_to_mel_streaming(blocks, params), params)


def file_to_image(
    path: Path,
    params: SpectrogramParams,
    start: float = 0.0,
    duration: float | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> Image.Image:
    """Spectrogram image of a file (or a span of it), streamed block by block when long.

    Mono parameters downmix every channel; stereo parameters take the first two (duplicating mono).
    """
    channels = "stereo" if params.stereo else "mono"
    info = audio_info(path)
    span = (info.duration - start) if duration is None else duration
    if span >= STREAM_ABOVE_SECONDS:
        blocks = iter_audio_blocks(path, params.sample_rate, channels, start=start, duration=duration)
        return mel_to_image(waveform_to_mel_streaming(map(torch.from_numpy, blocks), params, on_frames), params)
    return audio_to_image(load_audio(path, params.sample_rate, channels, start, duration), params)


def audio_to_pixels(audio: np.ndarray, params: SpectrogramParams, width: int) -> tuple[torch.Tensor, float]:
    """`(C, N)` audio -> its image as `(3, H, width)` float pixels in [0, 1] (padded with silence; what the VAE
    encodes) and the clip maximum they stand for."""
    image = audio_to_image(audio, params)
    _, max_value = image_params(image)
    pixels = image_pixels(image)
    return torch.nn.functional.pad(pixels, (0, width - pixels.shape[-1]), value=1.0), max_value


def save_image(path: Path, image: Image.Image, overwrite: bool = False) -> Path:
    """Write a spectrogram PNG with its EXIF, atomically."""
    with atomic_path(Path(path), overwrite) as tmp:
        image.save(tmp, format="PNG", exif=image.getexif())
    return Path(path)
