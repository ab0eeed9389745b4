"""The pixel codec: mel magnitude <-> Riffusion spectrogram image, with the parameters in the PNG's EXIF.

One curve and one channel rule, with a tensor face (float pixels in [0, 1], as the VAE makes and takes them) and a
PIL face (8-bit images):
- curve: a pixel p stands for the magnitude `(1 - p) ** (1 / power_for_image) * max_value` (white is silence);
- channels: mono reads R, stereo reads G (left) and B (right), as Riffusion's decoder does; an image is laid out
  as grey (R = G = B) for mono and as R = 0, G, B for stereo;
- rows: low frequencies at the bottom (the mel's bin 0 is the image's last row).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image

from ..errors import SpectrodiffError
from .params import RIFFUSION_MAX_VALUE, ExifTag, SpectrogramParams, warn_default_params

# Modes whose pixels carry the spectrogram: 8-bit grey, palette and RGB (alpha, when present, is ignored).
_ACCEPTED_MODES = ("L", "P", "RGB", "RGBA")
# The largest image read: 600 s (the longest clip a mode makes) at Riffusion's 10 ms a column, and 2048 mel bins. An
# image is measured from its header before a pixel is decoded: a 100 KB PNG can unpack to gigabytes.
MAX_IMAGE_COLUMNS = 60_001
MAX_IMAGE_ROWS = 2048


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
    return with_exif(image.transpose(Image.Transpose.FLIP_TOP_BOTTOM), params, max_value)


def with_exif(image: Image.Image, params: SpectrogramParams, max_value: float) -> Image.Image:
    """`image` with the parameters' EXIF tags and the clip maximum `max_value` (tag 11080)."""
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


def magnitudes(pixels: torch.Tensor, power: float, max_value: float = 1.0) -> torch.Tensor:
    """The curve, elementwise: pixel values in [0, 1] (white = silence) -> magnitudes on the scale of `max_value`
    (differentiable: the VAE's losses use it)."""
    return (1 - pixels).clamp(0, 1) ** (1 / power) * max_value


def pixels_to_mel(pixels: torch.Tensor, params: SpectrogramParams, max_value: float = RIFFUSION_MAX_VALUE
                  ) -> torch.Tensor:
    """`(..., 3, H, W)` float pixels in [0, 1] -> `(..., C, H, W)` mel (C = params.channels): mono reads R,
    stereo G and B, rows flipped so that bin 0 is the lowest frequency."""
    channels = pixels[..., 1:3, :, :] if params.stereo else pixels[..., :1, :, :]
    return magnitudes(channels.flip(-2), params.power_for_image, max_value)


def layout(pixels: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """`(..., 3, H, W)` float pixels (e.g. a VAE's output, whose channels differ a little) -> the spectrogram
    image's layout: mono grey (the mean of the three), stereo R = 0."""
    if params.stereo:
        return torch.cat([torch.zeros_like(pixels[..., :1, :, :]), pixels[..., 1:3, :, :]], dim=-3)
    return pixels.mean(dim=-3, keepdim=True).expand_as(pixels)


def image_pixels(image: Image.Image) -> torch.Tensor:
    """A spectrogram image -> `(3, H, W)` float pixels in [0, 1]."""
    if image.mode not in _ACCEPTED_MODES:
        raise SpectrodiffError(f"image mode {image.mode} is not a spectrogram (expected one of "
                               f"{', '.join(_ACCEPTED_MODES)})")
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """`(3, H, W)` float pixels in [0, 1] -> `(H, W, 3)` uint8, rounded (an image's array)."""
    return (pixels * 255).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()


def pixels_to_image(pixels: torch.Tensor, params: SpectrogramParams, max_value: float) -> Image.Image:
    """`(3, H, W)` float pixels in [0, 1], laid out (`layout`) -> an RGB image rounded to 8 bits, EXIF included
    (`max_value` is what black stands for)."""
    return with_exif(Image.fromarray(to_uint8(pixels), mode="RGB"), params, max_value)


def image_to_mel(
    image: Image.Image, params: SpectrogramParams, max_value: float = RIFFUSION_MAX_VALUE
) -> torch.Tensor:
    """Decode a spectrogram image (`pixels_to_mel` of its pixels).

    Returns:
        `(C, num_frequencies, width)` float32.
    """
    if image.height != params.num_frequencies:
        raise SpectrodiffError(f"image is {image.height} pixels high; these spectrogram parameters need "
                               f"{params.num_frequencies}")
    return pixels_to_mel(image_pixels(image), params, max_value)


def check_image_size(width: int, height: int, max_columns: int = MAX_IMAGE_COLUMNS, name: str = "the image") -> None:
    """SpectrodiffError when an image is wider than `max_columns` or higher than MAX_IMAGE_ROWS."""
    if width > max_columns or height > MAX_IMAGE_ROWS:
        raise SpectrodiffError(f"{name} is {width} x {height} pixels; at most {max_columns} columns "
                               f"({(max_columns - 1) / 100:g} s at 10 ms a column) and {MAX_IMAGE_ROWS} rows")


def open_image(path, max_columns: int = MAX_IMAGE_COLUMNS) -> Image.Image:
    """Open an image file fully into memory, its size checked from the header first (`check_image_size`);
    SpectrodiffError if it is missing, too large or not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here, in words
            image = Image.open(path)
        with image:
            check_image_size(*image.size, max_columns, name=str(path))
            image.load()
            return image
    except FileNotFoundError:
        raise SpectrodiffError(f"no such file: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SpectrodiffError(f"{path} is not a readable image ({exc})") from None
