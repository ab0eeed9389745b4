"""Prompt plans (`compose PLAN.yaml`) and batch job files (`batch JOBS.jsonl`), with errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..errors import SpectrodiffError
from .timeline import Keyframe

KEYFRAME_FIELDS = {"prompt": str, "seed": int, "seconds": (int, float), "strength": (int, float),
                   "guidance": (int, float), "negative": str}
PLAN_FIELDS = {"keyframes", "transition"}


class _LineLoader(yaml.SafeLoader):
    """Records, in every mapping, its own 1-based line (`__line__`) and each key's (`__lines__`)."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        mapping["__lines__"] = {self.construct_object(k): k.start_mark.line + 1 for k, _ in node.value}
        return mapping


def keyframe_from_dict(data: dict, where: str, require_seconds: bool = False) -> Keyframe:
    """Validate one keyframe mapping; `where` (e.g. "plan.yaml") prefixes every error, with the line when known."""
    lines, start = data.get("__lines__", {}), data.get("__line__")

    def at(key: str | None = None) -> str:
        line = lines.get(key, start)
        return f"{where} line {line}" if line else where

    data = {k: v for k, v in data.items() if k not in ("__line__", "__lines__")}
    unknown = sorted(set(data) - set(KEYFRAME_FIELDS))
    if unknown:
        raise SpectrodiffError(f"{at(unknown[0])}: unknown field {unknown[0]!r} "
                               f"(fields: {', '.join(KEYFRAME_FIELDS)})")
    for name, kinds in KEYFRAME_FIELDS.items():
        if name in data and (not isinstance(data[name], kinds) or isinstance(data[name], bool)):
            raise SpectrodiffError(f"{at(name)}: {name} must be a {getattr(kinds, '__name__', 'number')}, "
                                   f"got {data[name]!r}")
    if "prompt" not in data:
        raise SpectrodiffError(f"{at()}: keyframe has no prompt")
    if require_seconds and "seconds" not in data:
        raise SpectrodiffError(f"{at()}: keyframe has no seconds")
    try:
        return Keyframe(**data)
    except SpectrodiffError as exc:
        raise SpectrodiffError(f"{at()}: {exc}") from None


def load_plan(path: Path) -> tuple[list[Keyframe], float]:
    """A compose plan: `keyframes` (each prompt, seconds, and optionally seed, strength, guidance, negative) and
    `transition` seconds (default 2). Returns the keyframes and the transition."""
    path = Path(path)
    if not path.is_file():
        raise SpectrodiffError(f"no such file: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_LineLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpectrodiffError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not data:
        raise SpectrodiffError(f"{path}: the plan is empty")
    if not isinstance(data, dict) or not isinstance(data.get("keyframes"), list) or not data["keyframes"]:
        raise SpectrodiffError(f"{path}: a plan needs a non-empty 'keyframes' list")
    unknown = sorted(set(data) - PLAN_FIELDS - {"__line__", "__lines__"})
    if unknown:
        raise SpectrodiffError(f"{path}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(PLAN_FIELDS))})")
    keyframes = []
    for item in data["keyframes"]:
        if not isinstance(item, dict):
            raise SpectrodiffError(f"{path}: each keyframe must be a mapping, got {item!r}")
        keyframes.append(keyframe_from_dict(item, str(path), require_seconds=True))
    transition = data.get("transition", 2.0)
    if isinstance(transition, bool) or not isinstance(transition, (int, float)) or transition < 0:
        raise SpectrodiffError(f"{path}: transition must be a number of seconds >= 0, got {transition!r}")
    return keyframes, float(transition)


def load_jobs(path: Path) -> list[tuple[int, dict]]:
    """Batch jobs, one JSON object a line (blank lines and lines starting with # are skipped): (line, job)."""
    path = Path(path)
    if not path.is_file():
        raise SpectrodiffError(f"no such file: {path}")
    jobs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            job = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpectrodiffError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(job, dict) or "mode" not in job:
            raise SpectrodiffError(f"{path} line {number}: a job is a JSON object with a 'mode'")
        jobs.append((number, job))
    if not jobs:
        raise SpectrodiffError(f"{path}: no jobs")
    return jobs
