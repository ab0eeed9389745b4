"""Where a job's files go: the output triple's paths, named from the job's words. Light on purpose (no torch, no
diffusers): the command line checks them before it loads a model, so that a file in the way is reported at once."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from ..errors import SpectrodiffError
from ..files import DEFAULT_OUTPUT_DIR, check_writable
from ..settings import number_words
from .jobs import Job, Keyframe
from .musical import parse_key

OUTPUT_SUFFIXES = (".wav", ".flac")


def slugify(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "clip"


def output_paths(out: Path | None, job: Job, overwrite: bool = False) -> tuple[Path, Path, Path]:
    """(audio, png, json). `out` ending in .wav/.flac names the audio and the others sit beside it with its stem;
    any other `out` is a folder; the default is outputs/<date>-<slug>-<seed>/ (slug and seed of the job's first
    prompt). Nothing existing is overwritten unless `overwrite`."""
    slug, seed = slug_and_seed(job)
    if out is not None and out.suffix.lower() in OUTPUT_SUFFIXES:
        audio = out
    elif out is not None and (out.suffix or out.exists()) and not out.is_dir():  # e.g. -o /dev/full
        raise SpectrodiffError(f"-o {out}: expected a folder or a file ending in {', '.join(OUTPUT_SUFFIXES)}")
    else:
        folder = out if out is not None else DEFAULT_OUTPUT_DIR / f"{dt.date.today():%Y%m%d}-{slug}-{seed}"
        if out is None:
            base, n = folder, 2
            while folder.exists():
                folder, n = base.with_name(f"{base.name}-{n}"), n + 1
        audio = folder / f"{file_stem(job)}.wav"
    paths = (audio, audio.with_suffix(".png"), audio.with_suffix(".json"))
    for path in paths:
        check_writable(path, overwrite)
    return paths


def file_stem(job: Job) -> str:
    """A result's file name: its words; a clip with a tempo as sample packs name theirs,
    `lofi-hip-hop_84bpm_Fmin_s3`."""
    slug, seed = slug_and_seed(job)
    bpm, key = getattr(job, "bpm", None), getattr(job, "key", None)  # a compose plan has a tempo but no key
    if bpm is None:
        return slug
    key = f"_{parse_key(key).short}" if key else ""
    return f"{slug}_{number_words(bpm)}bpm{key}_s{seed}"


def slug_and_seed(job: Job) -> tuple[str, int]:
    """A file name's words for a job: its prompt (an input file's name first), or its first two keyframes'."""
    keyframes = getattr(job, "keyframes", None) or [k for k in (getattr(job, "start", None), getattr(job, "end", None))
                                                     if isinstance(k, Keyframe)]
    if keyframes:
        return slugify(" to ".join(k.prompt for k in keyframes[:2])), keyframes[0].seed
    audio = getattr(job, "audio", None)
    return slugify(f"{Path(audio).stem} {job.prompt}" if audio else job.prompt), job.seed
