"""Prompt plans (`compose PLAN.yaml`) and batch job files (`batch JOBS.jsonl`), with errors that name the line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..errors import SpectrodiffError
from ..settings import check_value, error_words, first_error, quote_value, spec_of
from .jobs import ComposeJob, Keyframe
from .musical import whole_bars

PLAN_FIELDS = {"keyframes", "transition", "bpm", "meter"}
# A plan is three levels deep (plan, keyframes, keyframe), a training config four; deeper nesting is refused before
# Python's stack runs out.
MAX_YAML_DEPTH = 16


class SafeLoader(yaml.SafeLoader):
    """YAML without aliases (a few bytes of them expand to gigabytes) or nesting deeper than MAX_YAML_DEPTH, that
    records the 1-based line of every mapping and of each of its keys: `lines[id(mapping)] = (line, {key: line})`.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0
        self.lines: dict[int, tuple[int, dict]] = {}

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        if self.depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_yaml_map(self, node):
        data: dict = {}
        yield data
        data.update(self.construct_mapping(node))
        self.lines[id(data)] = (node.start_mark.line + 1,
                                {self.construct_object(k): k.start_mark.line + 1 for k, _ in node.value})

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python reads at most sys.get_int_max_str_digits() digits
            raise yaml.constructor.ConstructorError(None, None, "a whole number too long to read",
                                                    node.start_mark) from None


SafeLoader.add_constructor("tag:yaml.org,2002:map", SafeLoader.construct_yaml_map)
SafeLoader.add_constructor("tag:yaml.org,2002:int", SafeLoader.construct_yaml_int)


def load_yaml(path: Path) -> tuple[object, dict[int, tuple[int, dict]]]:
    """A YAML file (a plan, a training config) read with `SafeLoader`: its data and the lines of its mappings.
    SpectrodiffError, naming the line, when it is missing or not valid YAML."""
    path = Path(path)
    if not path.is_file():
        raise SpectrodiffError(f"no such file: {path}")
    try:
        loader = SafeLoader(path.read_text())
        try:
            return loader.get_single_data(), loader.lines
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpectrodiffError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except (UnicodeDecodeError, ValueError) as exc:  # e.g. a date that is none (2024-13-45)
        raise SpectrodiffError(f"{path}: not valid YAML ({exc})") from None


def keyframe_from_lines(data: dict, lines: tuple[int, dict], path: Path, bpm: float | None = None,
                        meter: str = "4/4") -> Keyframe:
    """A plan's keyframe mapping and its lines (`SafeLoader.lines`) -> a Keyframe; errors name the line of the
    field at fault. With a tempo (the keyframe's bpm, else the plan's `bpm`) a keyframe may give its length in
    `bars`, and one given in seconds must be whole bars of `meter`."""
    start, key_lines = lines
    at = lambda name: f"{path} line {key_lines.get(name, start)}"  # noqa: E731
    unknown = sorted(set(data) - set(Keyframe.model_fields), key=str)
    if unknown:
        raise SpectrodiffError(f"{at(unknown[0])}: unknown field {quote_value(unknown[0])} (fields: "
                               f"{', '.join(Keyframe.model_fields)})")
    if "bars" in data and "seconds" in data:
        raise SpectrodiffError(f"{at('bars')}: give bars or seconds, not both")
    try:
        keyframe = Keyframe.model_validate(data)
    except ValidationError as exc:  # named by the line of the field at fault
        error = first_error(exc, Keyframe)
        where = at(error["loc"][0] if error["loc"] else None)
        raise SpectrodiffError(f"{where}: {error_words(error, Keyframe)}") from None
    bpm = keyframe.bpm if keyframe.bpm is not None else bpm
    if keyframe.seconds is None and keyframe.bars is None:
        raise SpectrodiffError(f"{path} line {start}: keyframe has no seconds or bars")
    if keyframe.bars is not None and bpm is None:
        raise SpectrodiffError(f"{at('bars')}: bars needs a tempo: give the keyframe or the plan a bpm")
    if bpm is not None and keyframe.seconds is not None:
        whole_bars(keyframe.seconds, bpm, meter, at("seconds"))
    return keyframe


def load_plan(path: Path) -> dict:
    """A compose plan: `keyframes` (each prompt, seconds or bars, and optionally bpm, seed, strength, guidance,
    negative), `transition` seconds (default 2), and optionally `bpm` and `meter` (4/4) so that sections are whole
    bars. Returns them as the fields of a ComposeJob."""
    data, lines = load_yaml(path)
    if not data:
        raise SpectrodiffError(f"{path}: the plan is empty")
    if not isinstance(data, dict) or not isinstance(data.get("keyframes"), list) or not data["keyframes"]:
        raise SpectrodiffError(f"{path}: a plan needs a non-empty 'keyframes' list")
    unknown = sorted(set(data) - PLAN_FIELDS, key=str)
    if unknown:
        raise SpectrodiffError(f"{path}: unknown field {quote_value(unknown[0])} (fields: "
                               f"{', '.join(sorted(PLAN_FIELDS))})")
    plan = {}
    for name in ("transition", "bpm", "meter"):
        if name in data:
            f = ComposeJob.model_fields[name]
            label = f"{path} line {lines[id(data)][1][name]}: {name}"
            plan[name] = check_value(label, data[name], f.annotation, spec_of(f))
    keyframes = []
    for item in data["keyframes"]:
        if not isinstance(item, dict):
            raise SpectrodiffError(f"{path}: each keyframe must be a mapping, got {quote_value(item)}")
        keyframes.append(keyframe_from_lines(item, lines[id(item)], path, plan.get("bpm"), plan.get("meter", "4/4")))
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
            job = json.loads(line, parse_float=_finite_float, parse_int=_whole_number)
        except json.JSONDecodeError as exc:
            raise SpectrodiffError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
        except ValueError as exc:  # a number too long or too large to read
            raise SpectrodiffError(f"{path} line {number}: not valid JSON ({exc})") from None
        except RecursionError:
            raise SpectrodiffError(f"{path} line {number}: not valid JSON (nested too deeply)") from None
        if not isinstance(job, dict) or "mode" not in job:
            raise SpectrodiffError(f"{path} line {number}: a job is a JSON object with a 'mode'")
        jobs.append((number, job))
    if not jobs:
        raise SpectrodiffError(f"{path}: no jobs")
    return jobs


def _finite_float(text: str) -> float:
    """A JSON number as a float; ValueError for one beyond the float range (1e400), which would read as infinity."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{quote_value(text)} is beyond the range of numbers")
    return value


def _whole_number(text: str) -> int:
    """A JSON whole number; ValueError, in words, for one of more digits than Python reads (4300)."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"a whole number of {len(text)} digits is too long to read") from None
