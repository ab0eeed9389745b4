"""`spectrodiff batch`: job lines (the "job" of any sidecar is one) run on one loaded model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .jobs import JOBS, Job, job_from_dict
from .modes import run
from .output import Output, Result
from .pipeline import SpectrodiffPipeline

# What a batch line may hold beside its job's fields.
LINE_FIELDS = ("out",)


def line_job(line: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> Job:
    """The job of a batch line: a job's fields (`mode` first) and optionally `out`; `defaults` (the batch command's
    own options) fill the shared settings the line leaves out."""
    mode = line.get("mode") if isinstance(line, Mapping) else None
    fields = JOBS[mode].fields() if mode in JOBS else {}
    return job_from_dict({k: v for k, v in (defaults or {}).items() if k in fields} | dict(line), ignore=LINE_FIELDS)


def run_line(pipe: SpectrodiffPipeline, line: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
             out: Path | None = None, progress: Callable[[str, int, int], None] | None = None) -> Result:
    """Run one batch line (`line_job`) into its own `out`, else into `out`."""
    target = Path(line["out"]) if line.get("out") else out
    return run(pipe, line_job(line, defaults), Output(target, progress))
