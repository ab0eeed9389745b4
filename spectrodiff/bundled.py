"""Where the package keeps what it bundles: models (`models/<name>/`, diffusers folders) and vocoders
(`models/vocoders/<name>/`), and where a model named by the user is. Only paths and configs: nothing here imports
torch or diffusers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SpectrodiffError

if TYPE_CHECKING:
    from .codec.params import SpectrogramParams

MODELS_DIR = Path(__file__).parent / "models"
VOCODERS_DIR = MODELS_DIR / "vocoders"


def bundled_models() -> list[str]:
    """Names of the bundled models (folders with a model_index.json)."""
    return sorted(p.parent.name for p in MODELS_DIR.glob("*/model_index.json"))


def resolve_model(model: str) -> Path:
    """A bundled short name, an existing folder, or a hub id (returned as a path that does not exist)."""
    bundled = MODELS_DIR / model
    if "/" not in model and "\\" not in model and not Path(model).exists():
        if (bundled / "model_index.json").is_file():
            return bundled
        raise SpectrodiffError(f"unknown model {model!r}: not a folder, not a bundled model "
                               f"({', '.join(bundled_models())}), not a hub id (owner/name)")
    path = Path(model).expanduser()
    if path.exists() and not path.is_dir():
        raise SpectrodiffError(f"model {model!r} is a file; expected a diffusers model folder")
    if not path.exists() and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise SpectrodiffError(f"unknown model {model!r}: no such folder, and not a hub id (owner/name)")
    return path


def model_params(model: str) -> SpectrogramParams:
    """The spectrogram parameters of a model (bundled name, folder or hub id), read from its `spectrogram/` config
    alone, without loading the model: Riffusion's for a model without that component, as loading it gives."""
    from .codec.params import SpectrogramParams

    path = resolve_model(model)
    try:
        index = json.loads(_model_file(model, path, "model_index.json").read_text())
        if "spectrogram" not in index:
            return SpectrogramParams()
        config = json.loads(_model_file(model, path, f"spectrogram/{SpectrogramParams.config_name}").read_text())
    except (OSError, ValueError, TypeError) as exc:
        raise SpectrodiffError(f"cannot read the spectrogram parameters of model {model!r}: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return SpectrogramParams.from_dict(config)


def _model_file(model: str, path: Path, name: str) -> Path:
    """A file of a model folder, or of a hub model (from the cache, else downloaded)."""
    if path.is_dir():
        return path / name
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(model, name))
