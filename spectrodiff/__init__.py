"""spectrodiff: Riffusion-style music generation, Stable Diffusion on mel-spectrogram images.

The package follows the data flow:
- `spectrodiff.codec`: audio <-> spectrogram images, no model (parameters, audio files, mel, the pixel codec);
- `spectrodiff.vocoding`: mel -> audio (Griffin-Lim, streaming reconstruction, the neural vocoder, refinement);
- `spectrodiff.generation`: the diffusers pipeline and the generation modes that write audio, PNG and sidecar;
- `spectrodiff.training`: the reference catalogue, datasets and training (the repository's `training/` folder);
- `spectrodiff.web` (the studio and HTTP API) and `spectrodiff.cli` (the `spectrodiff` command).

The names below import on first use, so that `import spectrodiff` costs nothing until one is needed (the codec
never imports diffusers).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from . import _legacy
from .errors import SpectrodiffError

try:
    __version__ = version("spectrodiff")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

_legacy.install()

# Public name -> the module that defines it.
_EXPORTS = {
    "SpectrogramParams": "codec.params",
    "audio_to_image": "codec.convert",
    "file_to_image": "codec.convert",
    "save_image": "codec.convert",
    "image_params": "codec.image",
    "image_to_mel": "codec.image",
    "mel_to_image": "codec.image",
    "waveform_to_mel": "codec.mel",
    "mel_to_linear": "vocoding.reconstruct",
    "mel_to_waveform": "vocoding.reconstruct",
    "image_to_audio": "vocoding.render",
    "NeuralVocoder": "vocoding.vocoder",
    "load_vocoder": "vocoding.vocoder",
    "resolve_vocoder": "vocoding.registry",
    "SpectrodiffPipeline": "generation.pipeline",
    **dict.fromkeys(("Keyframe", "GenerateJob", "MorphJob", "ComposeJob", "RemixJob", "ExtendJob", "InpaintJob",
                     "RiffuseJob", "job_from_dict"), "generation.jobs"),
    "Output": "generation.output",
    "make": "generation.modes",
}

__all__ = ["SpectrodiffError", "__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
