"""Which vocoder renders a mel: the bundled ones by name, folders, and the default choice."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..bundled import MODELS_DIR, VOCODERS_DIR
from ..codec.params import SpectrogramParams
from ..errors import SpectrodiffError
from .vocoder import NeuralVocoder, load_vocoder, mono_params

VOCODER_CHOICES = ("griffin-lim", "neural")


def _bundled() -> dict[str, Path]:
    """Bundled vocoders by name: the standalone ones in `models/vocoders/`, and each bundled model's `vocoder/`."""
    found = {p.name: p for p in sorted(VOCODERS_DIR.glob("*")) if (p / NeuralVocoder.config_name).is_file()}
    found |= {p.parent.name: p for p in sorted(MODELS_DIR.glob("*/vocoder"))
              if (p / NeuralVocoder.config_name).is_file()}
    return found


@functools.lru_cache(maxsize=4)
def _load_bundled(folder: Path) -> NeuralVocoder:
    """A bundled vocoder, loaded once per process (they are read-only; the studio renders with them often)."""
    return load_vocoder(folder)


def resolve_vocoder(name: str | Path) -> NeuralVocoder:
    """A vocoder folder, a model folder with a `vocoder/` component, or a bundled vocoder's name (`riffusion`, or
    a bundled model's name such as `mini`)."""
    path = Path(name).expanduser()
    for folder in (path, path / "vocoder"):
        if (folder / NeuralVocoder.config_name).is_file():
            return load_vocoder(folder)
    bundled = _bundled()
    if str(name) in bundled:
        return _load_bundled(bundled[str(name)])
    raise SpectrodiffError(f"unknown vocoder {str(name)!r}: not a vocoder folder, not a model folder with a vocoder/, "
                           f"not a bundled vocoder ({', '.join(bundled) or 'none'}); or use griffin-lim / neural")


def bundled_vocoder_for(params: SpectrogramParams) -> NeuralVocoder | None:
    """The bundled vocoder trained for `params` (channels aside), if there is one."""
    mono = mono_params(params.config)
    for folder in _bundled().values():
        try:
            if mono_params(json.loads((folder / NeuralVocoder.config_name).read_text())["spectrogram"]) == mono:
                return _load_bundled(folder)
        except (OSError, KeyError, TypeError, json.JSONDecodeError, SpectrodiffError):
            continue
    return None


def choose_vocoder(choice: str | None, params: SpectrogramParams,
                   own: NeuralVocoder | None = None) -> NeuralVocoder | None:
    """The vocoder that renders mels of `params` (None: Griffin-Lim).

    Args:
        choice: None, the default: the model's own vocoder, else the bundled one for these parameters, else
            Griffin-Lim (on real music the bundled Riffusion vocoder is closer to the mel than Riffusion's own
            Griffin-Lim, and ten times faster: docs/reconstruction.md); "griffin-lim"; "neural" (as the default, but
            an error where no vocoder fits); or a vocoder's name or folder (see `resolve_vocoder`).
        own: the model's `vocoder` component, if any.
    """
    if choice == "griffin-lim":
        return None
    if choice in (None, "neural"):
        vocoder = own or bundled_vocoder_for(params)
        if vocoder is None:
            if choice is None:
                return None
            raise SpectrodiffError(f"no neural vocoder for {params.describe()}: train one with `spectrodiff "
                                   "train-vocoder` and pass --vocoder FOLDER, or use --vocoder griffin-lim")
    else:
        vocoder = resolve_vocoder(choice)
    vocoder.check_params(params)
    return vocoder


def vocoder_name(vocoder: NeuralVocoder | None) -> str:
    """How sidecars and messages name the vocoder that rendered (None: Griffin-Lim): its folder."""
    return "griffin-lim" if vocoder is None else getattr(vocoder, "source", "neural")
