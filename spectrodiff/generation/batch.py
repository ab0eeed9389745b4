"""`spectrodiff batch`: job lines (the "job" of any sidecar is one) run on one loaded model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import SpectrodiffError
from ..files import DEFAULT_OUTPUT_DIR
from .jobs import JOBS, Job, Spec, check, job_from_dict, shown
from .modes import run
from .output import Output, Result, output_paths, resolved, slug_and_seed, slugify
from .pipeline import SpectrodiffPipeline

# What a batch line may hold beside its job's fields: where its files go, and whether they may replace others.
LINE_FIELDS = ("out", "overwrite")


def line_job(line: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> Job:
    """The job of a batch line: a job's fields (`mode` first) and optionally `out` and `overwrite`; `defaults` (the
    batch command's own options) fill the shared settings the line leaves out."""
    mode = line.get("mode") if isinstance(line, Mapping) else None
    fields = JOBS[mode].fields() if mode in JOBS else {}
    if "out" in line and not isinstance(line["out"], str):
        raise SpectrodiffError(f"out must be a file or folder name, got {shown(line['out'])}")
    if "overwrite" in line:
        check("overwrite", line["overwrite"], bool, Spec("Replace this line's existing files."))
    return job_from_dict({k: v for k, v in (defaults or {}).items() if k in fields} | dict(line), ignore=LINE_FIELDS)


def line_target(job: Job, line: Mapping[str, Any], out: Path | None) -> Path:
    """Where a line's files go: its own `out`; else, in the batch's folder (`out`, default outputs/), a name made of
    its prompt and its job's digest, so that lines never collide and a rerun finds what a line made before."""
    if line.get("out"):
        return Path(line["out"])
    digest = hashlib.sha256(json.dumps(job.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]
    return (out or DEFAULT_OUTPUT_DIR) / f"{slugify(slug_and_seed(job)[0])}-{digest}.wav"


def made_before(pipe: SpectrodiffPipeline, job: Job, paths: tuple[Path, Path, Path]) -> bool:
    """Whether all three files exist and the sidecar's job is this job as it would run (the model's defaults filled
    in)."""
    if not all(path.is_file() for path in paths):
        return False
    try:
        recorded = json.loads(paths[2].read_text()).get("job")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == json.loads(json.dumps(resolved(pipe, job).to_dict(), default=str))


def run_line(pipe: SpectrodiffPipeline, line: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
             out: Path | None = None, progress: Callable[[str, int, int], None] | None = None,
             overwrite: bool = False) -> Result | None:
    """Run one batch line (`line_job`) into `line_target`; None, without running, when its files are there from the
    same job (unless `overwrite` or the line's own "overwrite" asks to make them again)."""
    job = line_job(line, defaults)
    target = line_target(job, line, out)
    overwrite = overwrite or bool(line.get("overwrite"))
    if not overwrite and made_before(pipe, job, output_paths(target, job, overwrite=True)):
        return None
    return run(pipe, job, Output(target, progress, overwrite))
