"""Copy a trained model into the package as a bundled model: float16 safetensors, the model card kept.

    python -m training.bundle runs/mini spectrodiff/models/mini

float16 halves the size in the repository (the loader casts to float32 on CPU); the weights replace the target's
components, and files that are not components (the model card README.md) stay.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

from spectrodiff.errors import SpectrodiffError
from spectrodiff.pipeline import SpectrodiffPipeline

BUNDLE_LIMIT_MB = 80


def folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


def bundle(source: Path, target: Path) -> float:
    """Write `source` (a trained diffusers folder) into `target` in float16; returns the target's size in MB."""
    pipe = SpectrodiffPipeline.load(str(source))
    pipe.to(torch.float16)
    target = Path(target)
    pipe.register_to_config(_name_or_path=target.name)  # not the build machine's path
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        for item in Path(tmp).iterdir():
            old = target / item.name
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
            shutil.move(str(item), old)
    size = folder_megabytes(target)
    if size > BUNDLE_LIMIT_MB:
        raise SpectrodiffError(f"{target} is {size:.1f} MB, over the {BUNDLE_LIMIT_MB} MB a bundled model may take")
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    try:
        size = bundle(args.source, args.target)
    except SpectrodiffError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{args.target}: {size:.1f} MB")


if __name__ == "__main__":
    main()
