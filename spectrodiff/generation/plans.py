"""Prompt plans (`compose PLAN.yaml`) and batch job files (`batch JOBS.jsonl`), with errors that name the line."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..errors import SpectrodiffError
from .jobs import ComposeJob, Keyframe, Spec, check, keyframe_from, shown
from .musical import MAX_BARS, bar_seconds, whole_bars

PLAN_FIELDS = {"keyframes", "transition", "bpm", "meter"}
# A plan is three levels deep (plan, keyframes, keyframe); deeper nesting is refused before Python's stack runs out.
MAX_PLAN_DEPTH = 16


class _LineLoader(yaml.SafeLoader):
    """Records, in every mapping, its own 1-based line (`__line__`) and each key's (`__lines__`). Aliases are refused
    (a few bytes of them expand to gigabytes), and so is nesting deeper than MAX_PLAN_DEPTH."""

    depth = 0

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a plan", mark)
        if self.depth >= MAX_PLAN_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_PLAN_DEPTH} levels", mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        mapping["__lines__"] = {self.construct_object(k): k.start_mark.line + 1 for k, _ in node.value}
        return mapping


def keyframe_from_lines(data: dict, path: Path, tempo: tuple[float, str] | None = None) -> Keyframe:
    """A plan's keyframe mapping (with the lines `_LineLoader` recorded) -> a Keyframe; errors name the line of the
    field at fault. With the plan's `tempo` (bpm, meter) a keyframe may give its length in `bars`, and one given in
    seconds must be whole bars."""
    lines, start = data.get("__lines__", {}), data.get("__line__")
    fields = {k: v for k, v in data.items() if k not in ("__line__", "__lines__")}
    at = lambda name: f"{path} line {lines.get(name, start)}"  # noqa: E731
    if "bars" in fields:
        if tempo is None:
            raise SpectrodiffError(f"{at('bars')}: bars needs the plan's bpm")
        if "seconds" in fields:
            raise SpectrodiffError(f"{at('bars')}: give bars or seconds, not both")
        bars = check(f"{at('bars')}: bars", fields.pop("bars"), int, Spec("", low=1, high=MAX_BARS))
        fields["seconds"] = bars * bar_seconds(*tempo)
    keyframe = keyframe_from(fields, at)
    if tempo is not None and keyframe.seconds is not None:
        whole_bars(keyframe.seconds, *tempo, at("seconds"))
    return keyframe


def load_plan(path: Path) -> dict:
    """A compose plan: `keyframes` (each prompt, seconds or, with the plan's `bpm`, bars, and optionally seed,
    strength, guidance, negative), `transition` seconds (default 2), and optionally `bpm` and `meter` (4/4) so that
    sections are whole bars. Returns them as the fields of a ComposeJob."""
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
        raise SpectrodiffError(f"{path}: unknown field {shown(unknown[0])} (fields: {', '.join(sorted(PLAN_FIELDS))})")
    plan = {}
    for name in ("transition", "bpm", "meter"):
        if name in data:
            f = ComposeJob.fields()[name]
            label = f"{path} line {data['__lines__'][name]}: {name}"
            plan[name] = check(label, data[name], f.type, f.metadata["spec"])
    tempo = (plan["bpm"], plan.get("meter", "4/4")) if plan.get("bpm") is not None else None
    keyframes = []
    for item in data["keyframes"]:
        if not isinstance(item, dict):
            raise SpectrodiffError(f"{path}: each keyframe must be a mapping, got {shown(item)}")
        keyframe = keyframe_from_lines(item, path, tempo)
        if keyframe.seconds is None:
            raise SpectrodiffError(f"{path} line {item['__line__']}: keyframe has no seconds")
        keyframes.append(keyframe)
    return {"keyframes": keyframes, **plan}


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
