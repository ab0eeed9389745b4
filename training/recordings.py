"""Real recordings for the vocoders, from Debian packages, split once into training and held-out sets.

    spectrodiff dev recordings data/recordings        (or python -m spectrodiff.training.recordings data/recordings)

Links (no copies) the samples of `sonic-pi-samples` and `lmms-common` into OUT/train/ and OUT/heldout/: one file in
five, chosen by a hash of its path, is held out, so the split is the same on every machine. The vocoder benchmark
also uses `hydrogen-drumkits`, which no training sees at all.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

from spectrodiff.codec.audio import find_audio
from spectrodiff.errors import SpectrodiffError

SOURCES = {"sonic-pi": Path("/usr/share/sonic-pi/samples"), "lmms": Path("/usr/share/lmms/samples")}
HYDROGEN = Path("/usr/share/hydrogen/data/drumkits")
HELDOUT_ONE_IN = 5


def is_heldout(relative: str) -> bool:
    return zlib.crc32(relative.encode()) % HELDOUT_ONE_IN == 0


def link_recordings(out: Path, sources: dict[str, Path] = SOURCES) -> dict[str, int]:
    """Symlink every audio file of `sources` into OUT/train or OUT/heldout; returns the counts."""
    counts = {"train": 0, "heldout": 0}
    for name, root in sources.items():
        if not root.is_dir():
            raise SpectrodiffError(f"{root} is missing: install the Debian packages sonic-pi-samples and lmms-common")
        for path in find_audio(root):
            relative = f"{name}/{path.relative_to(root)}"
            split = "heldout" if is_heldout(relative) else "train"
            link = out / split / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(path)
            counts[split] += 1
    return counts


if __name__ == "__main__":
    from spectrodiff.cli import main

    sys.exit(main(["dev", "recordings", *sys.argv[1:]]))
