"""Where the package keeps what it bundles: models (`models/<name>/`, diffusers folders) and vocoders
(`models/vocoders/<name>/`). Only paths: nothing here imports torch or diffusers."""

from pathlib import Path

MODELS_DIR = Path(__file__).parent / "models"
VOCODERS_DIR = MODELS_DIR / "vocoders"


def bundled_models() -> list[str]:
    """Names of the bundled models (folders with a model_index.json)."""
    return sorted(p.parent.name for p in MODELS_DIR.glob("*/model_index.json"))
