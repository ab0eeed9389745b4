"""One batch job (a dict, as in `spectrodiff batch` files and in every sidecar's "job") -> a result."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import SpectrodiffError
from .modes import Result, Settings, compose, extend, generate, inpaint, morph, remix, riffuse
from .pipeline import SpectrodiffPipeline
from .plans import keyframe_from_dict
from .timeline import Keyframe

SETTING_FIELDS = {"steps": int, "scheduler": str, "iters": int, "encode_steps": int, "vocoder": str,
                  "sample_rate": int, "out": str}


def _keyframe(job: dict, *names: str) -> Keyframe:
    return keyframe_from_dict({k: job[k] for k in ("prompt", "seed", "guidance", "negative", *names) if k in job},
                              "job")


def run_job(pipe: SpectrodiffPipeline, job: dict, defaults: Settings | None = None) -> Result:
    """Run one job. Keys: "mode" and that mode's fields, plus optional settings steps, scheduler, iters, encode_steps,
    vocoder, sample_rate and out, which override `defaults`."""
    job = dict(job)
    mode = job.pop("mode")
    settings = dataclasses.replace(defaults) if defaults else Settings()
    for name, kind in SETTING_FIELDS.items():
        if name in job:
            value = job.pop(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise SpectrodiffError(f"{name} must be a {kind.__name__}, got {value!r}")
            setattr(settings, {"iters": "griffin_lim_iters"}.get(name, name), Path(value) if name == "out" else value)
    if mode == "generate":
        return generate(pipe, _keyframe(job), job.get("seconds", 5.12), job.get("loop", True), settings)
    if mode in ("morph", "compose"):
        keyframes = [keyframe_from_dict(k, f"keyframe {i + 1}", require_seconds=mode == "compose")
                     for i, k in enumerate(job.get("keyframes", []))]
        if mode == "morph":
            return morph(pipe, keyframes, job.get("seconds", 20.0), settings)
        return compose(pipe, keyframes, job.get("transition", 2.0), settings)
    if mode in ("remix", "extend", "inpaint"):
        if "audio" not in job:
            raise SpectrodiffError(f"a {mode} job needs 'audio'")
        audio = Path(job["audio"])
        if mode == "remix":
            return remix(pipe, audio, _keyframe(job, "strength"), settings)
        if mode == "extend":
            return extend(pipe, audio, _keyframe(job), job.get("seconds", 5.12), settings)
        if "start" not in job or "end" not in job:
            raise SpectrodiffError("an inpaint job needs 'start' and 'end' (seconds)")
        return inpaint(pipe, audio, _keyframe(job), job["start"], job["end"], settings)
    if mode == "riffuse":
        for name in ("start", "end", "seed_image"):
            if name not in job:
                raise SpectrodiffError(f"a riffuse job needs {name!r}")
        start, end = (keyframe_from_dict(job[name], name) for name in ("start", "end"))
        mask = Path(job["mask_image"]) if job.get("mask_image") else None
        return riffuse(pipe, start, end, job.get("alpha", 0.5), Path(job["seed_image"]), mask, settings)
    raise SpectrodiffError(f"unknown mode {mode!r} (generate, morph, compose, remix, extend, inpaint, riffuse)")
