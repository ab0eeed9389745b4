"""Mel magnitude <-> Riffusion spectrogram image (PIL), with the parameters in the PNG's EXIF."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import SpectrodiffError
from .params import RIFFUSION_MAX_VALUE, ExifTag, SpectrogramParams, warn_default_params

# Modes whose pixels carry the spectrogram: 8-bit grey, palette and RGB (alpha, when present, is ignored).
_ACCEPTED_MODES = ("L", "P", "RGB", "RGBA")


def mel_to_image(mel: torch.Tensor, params: SpectrogramParams, max_value: float | None = None) -> Image.Image:
    """Encode a mel magnitude as Riffusion does, EXIF included.

    Divide by the maximum, raise to `power_for_image`, scale to 255, invert, truncate to uint8, flip so that low
    frequencies are at the bottom. Mono is grey (R = G = B); stereo puts left in G and right in B, R = 0.

    Args:
        mel: `(C, num_frequencies, T)` with C = params.channels, on Riffusion's scale.
        max_value: the value that maps to black; default the clip's own maximum (stored in EXIF tag 11080).
    Returns:
        RGB image of size `(T, num_frequencies)`.
    """
    if mel.shape[0] != params.channels or mel.shape[1] != params.num_frequencies:
        raise SpectrodiffError(f"mel of shape {tuple(mel.shape)} does not match {params.channels} channel(s) x "
                               f"{params.num_frequencies} bins")
    data = mel.detach().cpu().float().numpy()
    peak = float(data.max()) if data.size else 0.0
    if not np.isfinite(peak):
        raise SpectrodiffError("spectrogram has non-finite values (corrupt audio?)")
    max_value = peak if max_value is None else max_value
    # Same float32 operations, in the same order, as Riffusion's image_from_spectrogram.
    scaled = data / np.float32(max_value) if max_value > 0 else np.zeros_like(data)
    scaled = np.power(np.clip(scaled, 0, 1), params.power_for_image) * 255
    pixels = (255 - scaled).astype(np.uint8)
    if params.stereo:
        image = Image.fromarray(np.stack([np.zeros_like(pixels[0]), pixels[0], pixels[1]], axis=-1), mode="RGB")
    else:
        image = Image.fromarray(pixels[0], mode="L").convert("RGB")
    image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    exif = image.getexif()
    exif.update(params.to_exif())
    exif[int(ExifTag.MAX_VALUE)] = float(max_value)
    return image


def read_exif(image: Image.Image) -> dict[int, object]:
    """The image's EXIF tags; raises SpectrodiffError when the EXIF block cannot be parsed."""
    try:
        return dict(image.getexif())
    except Exception as exc:  # PIL raises several types (SyntaxError, struct.error, ...) for a broken block
        raise SpectrodiffError(f"corrupt EXIF block in image: {exc}") from None


def image_params(image: Image.Image) -> tuple[SpectrogramParams, float]:
    """Parameters and decoding scale of a spectrogram image.

    Returns:
        The params in its EXIF (Riffusion's defaults with a warning when it has none), and the max value to decode
        with: the clip maximum stored in EXIF when positive, else Riffusion's 30e6.
    """
    exif = read_exif(image)
    params = SpectrogramParams.from_exif(exif) or warn_default_params()
    max_value = exif.get(int(ExifTag.MAX_VALUE))
    try:
        max_value = float(max_value) if max_value is not None else RIFFUSION_MAX_VALUE
    except (TypeError, ValueError):
        raise SpectrodiffError(f"corrupt spectrogram EXIF: max value is {max_value!r}") from None
    if not np.isfinite(max_value) or max_value < 0:
        raise SpectrodiffError(f"corrupt spectrogram EXIF: max value is {max_value!r}")
    return params, (max_value if max_value > 0 else RIFFUSION_MAX_VALUE)


def image_to_mel(
    image: Image.Image, params: SpectrogramParams, max_value: float = RIFFUSION_MAX_VALUE
) -> torch.Tensor:
    """Decode a spectrogram image: undo the flip, inversion and power curve, scale by `max_value`.

    Mono reads R; stereo reads G (left) and B (right).

    Returns:
        `(C, num_frequencies, width)` float32.
    """
    if image.mode not in _ACCEPTED_MODES:
        raise SpectrodiffError(f"image mode {image.mode} is not a spectrogram (expected one of "
                               f"{', '.join(_ACCEPTED_MODES)})")
    if image.height != params.num_frequencies:
        raise SpectrodiffError(f"image is {image.height} pixels high; these spectrogram parameters need "
                               f"{params.num_frequencies}")
    rgb = np.asarray(image.convert("RGB").transpose(Image.Transpose.FLIP_TOP_BOTTOM)).transpose(2, 0, 1)
    data = rgb[[1, 2]] if params.stereo else rgb[:1]
    data = (255 - data.astype(np.float32)) / 255
    return torch.from_numpy(np.power(data, 1 / params.power_for_image) * np.float32(max_value))


def open_image(path) -> Image.Image:
    """Open an image file fully into memory; SpectrodiffError if it is missing or not an image."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except FileNotFoundError:
        raise SpectrodiffError(f"no such file: {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise SpectrodiffError(f"{path} is not a readable image ({exc})") from None
