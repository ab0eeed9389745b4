"""`spectrodiff batch`: job lines (the "job" of any sidecar is one) run on one loaded model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SpectrodiffError
from ..files import DEFAULT_OUTPUT_DIR
from ..settings import Spec, check_value, quote_value
from .jobs import JOBS, Job, job_from_dict
from .paths import file_stem, output_paths

if TYPE_CHECKING:  # the lines are checked before a model loads, without torch (`line_job`, `line_target`)
    from .output import Result
    from .pipeline import SpectrodiffPipeline

# What a batch line may hold beside its job's fields: where its files go, and whether they may replace others.
LINE_FIELDS = ("out", "overwrite")


def line_job(line: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> Job:
    """The job of a batch line: a job's fields (`mode` first) and optionally `out` and `overwrite`; `defaults` (the
    batch command's own options) fill the shared settings the line leaves out."""
    mode = line.get("mode") if isinstance(line, Mapping) else None
    fields = JOBS[mode].model_fields if isinstance(mode, str) and mode in JOBS else {}
    if "out" in line and not isinstance(line["out"], str):
        raise SpectrodiffError(f"out must be a file or folder name, got {quote_value(line['out'])}")
    if "overwrite" in line:
        check_value("overwrite", line["overwrite"], bool, Spec("Replace this line's existing files."))
    job = {k: v for k, v in line.items() if k not in LINE_FIELDS}
    return job_from_dict({k: v for k, v in (defaults or {}).items() if k in fields} | job)


def line_target(job: Job, line: Mapping[str, Any], out: Path | None, claimed: frozenset[Path] = frozenset()) -> Path:
    """Where a line's files go: its own `out`; else, in the batch's folder (`out`, default outputs/), the name
    `generate` gives (`funk_100bpm_Fmin_s3.wav`), and where an earlier line of the batch has `claimed` that name or
    its files are there from another job (another batch's) the same name with the job's digest, so that lines never
    collide, not even in processes running side by side, and a rerun finds what each line made before."""
    if line.get("out"):
        return Path(line["out"])
    folder = out or DEFAULT_OUTPUT_DIR
    plain = folder / f"{file_stem(job)}.wav"
    triple = (plain, plain.with_suffix(".png"), plain.with_suffix(".json"))
    if plain not in claimed and (not any(path.exists() for path in triple) or made_before(None, job, triple)):
        return plain
    digest = hashlib.sha256(json.dumps(job.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]
    return folder / f"{file_stem(job)}-{digest}.wav"


def made_before(pipe: SpectrodiffPipeline | None, job: Job, paths: tuple[Path, Path, Path]) -> bool:
    """Whether all three files exist and the sidecar's job is this job as it would run (the model's defaults filled
    in; before the model loads, `pipe` None, the settings the job leaves open are not compared)."""
    if not all(path.is_file() for path in paths):
        return False
    try:
        recorded = json.loads(paths[2].read_text()).get("job")
    except (OSError, ValueError, AttributeError):
        return False
    if pipe is not None:
        from .output import resolved

        job = resolved(pipe, job)
    expected = json.loads(json.dumps(job.to_dict(), default=str))
    if pipe is None and isinstance(recorded, dict):
        recorded = {k: v for k, v in recorded.items() if expected.get(k, v) is not None}
        expected = {k: v for k, v in expected.items() if v is not None}
    return recorded == expected


def plan_lines(lines: list[tuple[int, Mapping[str, Any]]], defaults: Mapping[str, Any] | None = None,
               out: Path | None = None, overwrite: bool = False,
               check: Callable[[Job], None] | None = None) -> list[tuple[Job, Path]]:
    """Each (line number, line)'s job and target (`line_target`, names claimed in line order), checked before the
    model loads: SpectrodiffError naming the line when its job is bad (or `check(job)` finds its inputs are), or its
    files are in the way (there, and not from this job) and neither `overwrite` nor the line's own "overwrite" lets
    it replace them. Every process of a batch plans alike from the same lines."""
    planned, claimed = [], set()
    for number, line in lines:
        try:
            job = line_job(line, defaults)
            if check is not None:
                check(job)
            target = line_target(job, line, out, frozenset(claimed))
            if not (overwrite or line.get("overwrite")) and not made_before(None, job, output_paths(
                    target, job, overwrite=True)):
                output_paths(target, job, overwrite=False)
        except SpectrodiffError as exc:
            raise SpectrodiffError(f"line {number}: {exc}") from None
        claimed.add(target)
        planned.append((job, target))
    return planned


def run_line(pipe: SpectrodiffPipeline, line: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
             out: Path | None = None, progress: Callable[[str, int, int], None] | None = None,
             overwrite: bool = False, target: Path | None = None) -> Result | None:
    """Run one batch line (`line_job`) into `target` (default `line_target`); None, without running, when its files
    are there from the same job (unless `overwrite` or the line's own "overwrite" asks to make them again)."""
    from .modes import make
    from .output import Output

    job = line_job(line, defaults)
    target = target or line_target(job, line, out)
    overwrite = overwrite or bool(line.get("overwrite"))
    if not overwrite and made_before(pipe, job, output_paths(target, job, overwrite=True)):
        return None
    return make(pipe, job, Output(target, progress, overwrite))
