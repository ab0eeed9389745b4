"""spectrodiff: Riffusion-style music generation, Stable Diffusion on mel-spectrogram images."""

from importlib.metadata import PackageNotFoundError, version

from .convert import audio_to_image, file_to_image, image_to_audio, save_image
from .errors import SpectrodiffError
from .image import image_params, image_to_mel, mel_to_image
from .mel import waveform_to_mel
from .params import SpectrogramParams
from .reconstruct import mel_to_linear, mel_to_waveform
from .vocoder import NeuralVocoder, load_vocoder, resolve_vocoder

try:
    __version__ = version("spectrodiff")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "NeuralVocoder",
    "SpectrodiffError",
    "SpectrogramParams",
    "audio_to_image",
    "file_to_image",
    "image_params",
    "image_to_audio",
    "image_to_mel",
    "load_vocoder",
    "mel_to_image",
    "mel_to_linear",
    "mel_to_waveform",
    "resolve_vocoder",
    "save_image",
    "waveform_to_mel",
]
