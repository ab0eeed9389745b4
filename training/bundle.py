"""Copy a trained model (or vocoder) into the package as a bundled one: float16 safetensors, the model card kept.

    spectrodiff dev bundle runs/mini-decoder spectrodiff/models/mini --vocoder runs/vocoder-mini
    spectrodiff dev bundle runs/vocoder-riffusion spectrodiff/models/vocoders/riffusion --vocoder-only

(or `python -m spectrodiff.training.bundle ...`, the same command).

float16 halves the size in the repository (the loader casts to float32 on CPU); the weights replace the target's
components, and files that are not components (the model card README.md) stay. `--vocoder` makes a trained vocoder
the model's `vocoder/` component (its default instead of Griffin-Lim).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch

from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.components import VocoderComponent
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.vocoding.vocoder import load_vocoder

BUNDLE_LIMIT_MB = 80
VOCODER_LIMIT_MB = 30


def folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


def _replace_contents(target: Path, write) -> None:
    """Let `write(folder)` fill a temporary folder, then move what it wrote into `target`, replacing namesakes."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        write(tmp)
        for item in Path(tmp).iterdir():
            old = target / item.name
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
            shutil.move(str(item), old)


def _check_size(target: Path, limit: float) -> float:
    size = folder_megabytes(target)
    if size > limit:
        raise SpectrodiffError(f"{target} is {size:.1f} MB, over the {limit} MB a bundled one may take")
    return size


def bundle(source: Path, target: Path, vocoder: Path | None = None) -> float:
    """Write `source` (a trained diffusers folder), with `vocoder` as its vocoder component if given, into `target`
    in float16; returns the target's size in MB."""
    pipe = SpectrodiffPipeline.load(str(source))
    if vocoder is not None:
        load_vocoder(vocoder).check_params(pipe.spectrogram)  # a clear error for a wrong or broken folder
        # The pipeline saves components by their class: the diffusers-registered one, not the plain vocoder.
        pipe.register_modules(vocoder=VocoderComponent.from_pretrained(vocoder, use_safetensors=True))
    pipe.to(torch.float16)
    target = Path(target)
    pipe.register_to_config(_name_or_path=target.name)  # not the build machine's path
    _replace_contents(target, lambda tmp: pipe.save_pretrained(tmp, safe_serialization=True))
    if vocoder is not None:
        _check_size(target / "vocoder", VOCODER_LIMIT_MB)
    return _check_size(target, BUNDLE_LIMIT_MB)


def bundle_vocoder(source: Path, target: Path) -> float:
    """Write a trained vocoder folder into `target` in float16 (weights and config only)."""
    voice = load_vocoder(source).to(torch.float16)
    target = Path(target)
    _replace_contents(target, lambda tmp: voice.save_pretrained(tmp, safe_serialization=True))
    return _check_size(target, VOCODER_LIMIT_MB)


if __name__ == "__main__":
    from spectrodiff.cli import main

    sys.exit(main(["dev", "bundle", *sys.argv[1:]]))
