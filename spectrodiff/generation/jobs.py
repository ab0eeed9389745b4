"""One declaration per generation mode: each setting's name, type, default, range and help, written once.

The command line's options, `spectrodiff batch` lines, the web API's request schemas and the studio's controls are
made from these classes, and a sidecar's "job" is one of them serialised (`to_dict`), so that it redoes its result.
Every face checks values with the same `check` and words a bad one the same way, naming the setting as that face
does (`--seconds` on the command line, `seconds` elsewhere).

Light on purpose (no torch, no diffusers): the command line reads these to build its options and its `--help`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import SpectrodiffError
from .musical import (
    MAX_BARS,
    MAX_BPM,
    METERS,
    MIN_BPM,
    bar_seconds,
    nearest_bars,
    parse_key,
    whole_bars,
)

REQUIRED = dataclasses.MISSING
# The schedulers a job may name (spectrodiff.generation.pipeline.SCHEDULERS maps them to diffusers' classes).
SCHEDULER_NAMES = ("dpm", "ddim", "ddpm", "euler", "euler-a", "lms", "pndm", "unipc")
TILE_SECONDS = 5.12
MAX_SECONDS = 600.0  # the longest clip any mode makes
MAX_SEED = 2**32 - 1
MAX_KEYFRAMES = 64
MAX_PROMPT_CHARS = 1000
DEFAULT_GUIDANCE = 7.0
# A value in an error message is cut to this many characters (a pasted novel stays out of the one line).
SHOWN_CHARS = 60


@dataclass(frozen=True)
class Spec:
    """How one setting is checked and shown.

    Args:
        help: one line for `--help`, the API's docs and the studio.
        low, high: the inclusive range of a number (`above`: low itself excluded); `high` of text is its most
            characters, and text must not be empty where `low` is 1.
        choices: the values a string may take.
        cli: how the command line takes it: None, `--name` from the field's name; "argument", positional; a
            declaration such as "--loop/--no-loop" or "-p/--prompt"; "" not on the command line (a face of its own).
        max_items: the most items a list may hold.
    """

    help: str
    low: float | None = None
    high: float | None = None
    above: bool = False
    choices: tuple[str, ...] = ()
    cli: str | None = None
    max_items: int | None = None


def setting(default: Any = REQUIRED, help: str = "", **spec) -> Any:
    """A job field with its Spec."""
    return field(default=default, metadata={"spec": Spec(help, **spec)})


def flag(name: str) -> str:
    """The command line's name of a field: `--sample-rate` for `sample_rate`."""
    return "--" + name.replace("_", "-")


_SURROGATE = re.compile("[\ud800-\udfff]")
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 60, 60


def shown(value: Any) -> str:
    """A value as an error quotes it: short whatever its size (reprlib stops early; the rest is cut)."""
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def number(value: float) -> str:
    """A number as a person writes it: 4294967295, 0.5, 240.0001, 600, 1e+308, "a 400-digit number" (a whole number
    too large for a float stays an int)."""
    if isinstance(value, int) and abs(value) >= 10**15:
        return f"a {len(str(abs(value)))}-digit number"
    # repr: the shortest text that reads back as the same float (240.0001, not "240" as :g rounds it).
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def span(spec: Spec, high: float | None = None, text: bool = False) -> str:
    """A setting's range in words ("between 1 and 1000", "in (0, 600]", "at most 500 characters"), "" if none."""
    high = spec.high if high is None else min(high, spec.high if spec.high is not None else high)
    if text:
        return f"at most {number(high)} characters" if high is not None else ""
    if spec.low is not None and high is not None:
        return f"in ({number(spec.low)}, {number(high)}]" if spec.above else \
            f"between {number(spec.low)} and {number(high)}"
    if spec.low is not None:
        return f"above {number(spec.low)}" if spec.above else f"at least {number(spec.low)}"
    return f"at most {number(high)}" if high is not None else ""


def check(label: str, value: Any, kind: Any, spec: Spec, high: float | None = None) -> Any:
    """`value` as a `kind` (ints become floats where a float is wanted), or SpectrodiffError worded the same on every
    face: "<label> must be between 1 and 1000, got 5000". `high` overrides the declared upper bound (a server's
    tighter limit)."""
    optional = optional_kind(kind)
    if value is None:
        if optional is not None:
            return None
        raise SpectrodiffError(f"{label} is required")
    kind = optional or kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > sys.float_info.max:  # a whole number beyond any float: beyond every range too
            raise SpectrodiffError(f"{label} must be {span(spec, high) or 'a number'}, got {number(value)}")
        value = float(value)
    if kind is Path and isinstance(value, str):
        value = Path(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SpectrodiffError(f"{label} must be {_kind_name(kind)}, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpectrodiffError(f"{label} is not a number, got {shown(value)}")
    high = spec.high if high is None else min(high, spec.high if spec.high is not None else high)
    if isinstance(value, str):
        if _SURROGATE.search(value):  # JSON's "\ud800": no tokenizer or file takes it
            raise SpectrodiffError(f"{label} is not valid text (a lone surrogate), got {shown(value)}")
        if spec.low and not value.strip():
            raise SpectrodiffError(f"{label} is empty")
        if high is not None and len(value) > high:
            raise SpectrodiffError(f"{label} is {len(value)} characters; {span(spec, high, text=True)}")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        low_ok = spec.low is None or (value > spec.low if spec.above else value >= spec.low)
        if not low_ok or (high is not None and value > high):
            raise SpectrodiffError(f"{label} must be {span(spec, high)}, got {number(value)}")
    if spec.choices and value not in spec.choices:
        raise SpectrodiffError(f"{label} must be one of {', '.join(spec.choices)}, got {shown(value)}")
    return value


def optional_kind(kind: Any) -> Any:
    """`X` for `X | None`, else None."""
    if isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind):
        return next(k for k in typing.get_args(kind) if k is not type(None))
    return None


def _kind_name(kind: Any) -> str:
    return {int: "a whole number", float: "a number", str: "text", bool: "true or false", Path: "a file path"}.get(
        kind, f"a {getattr(kind, '__name__', kind)}")


# Settings several modes share, declared once.
def _prompt(cli: str | None = None) -> Any:
    return setting(REQUIRED, "What to hear, e.g. 'jazzy saxophone'.", low=1, high=MAX_PROMPT_CHARS, cli=cli)


def _seed() -> Any:
    return setting(0, "Noise seed (same seed, same audio).", low=0, high=MAX_SEED)


def _guidance() -> Any:
    return setting(DEFAULT_GUIDANCE, "Classifier-free guidance scale.", low=0, high=50)


def _negative() -> Any:
    return setting("", "What not to hear.", high=MAX_PROMPT_CHARS)


def _strength(default: float, what: str = "How far from the input: (0, 1], 1 ignores it.") -> Any:
    return setting(default, what, low=0, above=True, high=1)


def _seconds(default: float, what: str) -> Any:
    return setting(default, what, low=0, above=True, high=MAX_SECONDS)


@dataclass(frozen=True)
class Keyframe:
    """One point of a timeline: what plays there. `seconds` is the span it owns in a composition (unused by
    morphs); `strength` how far an image-to-image job moves from its input."""

    prompt: str = _prompt()
    seed: int = _seed()
    strength: float = _strength(1.0)
    guidance: float = _guidance()
    negative: str = _negative()
    seconds: float | None = _seconds(None, "The span it holds in a composition.")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check(f.name, getattr(self, f.name), KEYFRAME_TYPES[f.name],
                                                   f.metadata["spec"]))

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


KEYFRAME_TYPES = {"prompt": str, "seed": int, "strength": float, "guidance": float, "negative": str,
                  "seconds": float | None}


# ---- the jobs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Job:
    """The settings every mode shares: how its result is rendered."""

    mode: ClassVar[str] = ""

    steps: int = setting(25, "Denoising steps.", low=1, high=1000)
    scheduler: str | None = setting(None, "dpm, ddim, ddpm, euler, euler-a, lms, pndm or unipc (default: the "
                                    "model's).", choices=SCHEDULER_NAMES)
    iters: int = setting(32, "Griffin-Lim iterations, where Griffin-Lim renders.", low=0, high=1000)
    vocoder: str | None = setting(None, "griffin-lim, neural, a bundled vocoder (riffusion, mini) or a vocoder "
                                  "folder. Default: the model's own vocoder, else the bundled one for its "
                                  "parameters, else griffin-lim.")
    sample_rate: int | None = setting(None, "Resample the audio written (e.g. 48000).", low=8000, high=192000)

    def __post_init__(self) -> None:
        for name, value in self.values(flag=False).items():
            object.__setattr__(self, name, value)

    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        """The job's settings by name, in declaration order, those of how it renders (Job's, EncodingJob's) last."""
        hints = typing.get_type_hints(cls)
        found = {f.name: f for f in dataclasses.fields(cls)}
        for name, f in found.items():
            f.type = hints[name]
        shared = [name for name in found if name in {f.name for f in dataclasses.fields(EncodingJob)}]
        return {name: found[name] for name in [n for n in found if n not in shared] + shared}

    def values(self, flag: bool, highs: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Every field checked (see `check`), labelled as the command line (`flag`) or as a field names it."""
        return {name: _checked(name, f, getattr(self, name), flag, highs or {})
                for name, f in type(self).fields().items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], flag: bool = False, highs: Mapping[str, float] | None = None,
                  ignore: tuple[str, ...] = ()) -> Job:
        """A job from a mapping of its fields (a batch line, an API request, a sidecar's job, the command line's
        options); unknown fields are refused, missing ones take their defaults, every value is checked."""
        fields = cls.fields()
        unknown = sorted(set(data) - set(fields) - {"mode", *ignore})
        if unknown:
            raise SpectrodiffError(f"unknown field {shown(unknown[0])} for {cls.mode} (fields: mode, "
                                   f"{', '.join(fields)})")
        if data.get("mode", cls.mode) != cls.mode:
            raise SpectrodiffError(f"a {cls.mode} job, not {shown(data['mode'])}")
        missing = [name for name, f in fields.items() if f.default is REQUIRED and name not in data]
        if missing:
            raise SpectrodiffError(f"{_label(missing[0], fields[missing[0]].metadata['spec'], flag)} is required")
        values = {name: _checked(name, fields[name], data[name], flag, highs or {})
                  for name in fields if name in data}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data: its mode, then every field (a batch line that redoes the result)."""
        return {"mode": self.mode, **{name: _plain(getattr(self, name)) for name in type(self).fields()}}

    @property
    def keyframe(self) -> Keyframe:
        """The one keyframe of a single-prompt mode."""
        return Keyframe(self.prompt, seed=self.seed, strength=getattr(self, "strength", 1.0), guidance=self.guidance,
                        negative=self.negative)


def _label(name: str, spec: Spec, as_flag: bool) -> str:
    """How a face names a setting: the command line by its option (an argument by its name), others by the name."""
    return flag(name) if as_flag and spec.cli != "argument" else name


def _checked(name: str, f: dataclasses.Field, value: Any, as_flag: bool, highs: Mapping[str, float]) -> Any:
    spec: Spec = f.metadata["spec"]
    label = _label(name, spec, as_flag)
    if typing.get_origin(f.type) is tuple:  # keyframes
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise SpectrodiffError(f"{label} must be a list, got {shown(value)}")
        most = min(spec.max_items or MAX_KEYFRAMES, int(highs.get(name, MAX_KEYFRAMES)))
        if not spec.low <= len(value) <= most:
            raise SpectrodiffError(f"{label}: give between {spec.low:g} and {most} keyframes, got {len(value)}")
        return tuple(keyframe_from(item, f"keyframe {n}", highs) for n, item in enumerate(value, 1))
    if f.type is Keyframe:
        return keyframe_from(value, label, highs)
    return check(label, value, f.type, spec, highs.get(name))


def keyframe_from(data: Keyframe | Mapping[str, Any], where: str | Callable[[str | None], str],
                  highs: Mapping[str, float] | None = None) -> Keyframe:
    """A Keyframe from a mapping of its fields (or a Keyframe), every field checked. Errors begin with `where`, or
    with `where(field)` (e.g. a plan's line of that field; None: the keyframe's own line)."""
    at = where if callable(where) else (lambda name=None: where)
    if isinstance(data, Keyframe):
        data = data.to_dict()
    if not isinstance(data, Mapping):
        raise SpectrodiffError(f"{at(None)}: a keyframe is a mapping of {', '.join(KEYFRAME_TYPES)}, got "
                               f"{shown(data)}")
    unknown = sorted(set(data) - set(KEYFRAME_TYPES))
    if unknown:
        raise SpectrodiffError(f"{at(unknown[0])}: unknown field {shown(unknown[0])} (fields: "
                               f"{', '.join(KEYFRAME_TYPES)})")
    if "prompt" not in data:
        raise SpectrodiffError(f"{at(None)}: keyframe has no prompt")
    specs, values = {f.name: f.metadata["spec"] for f in dataclasses.fields(Keyframe)}, {}
    for name in KEYFRAME_TYPES:
        if name in data:
            try:
                values[name] = check(name, data[name], KEYFRAME_TYPES[name], specs[name], (highs or {}).get(name))
            except SpectrodiffError as exc:
                raise SpectrodiffError(f"{at(name)}: {exc}") from None
    return Keyframe(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Keyframe):
        return value.to_dict()
    return str(value) if isinstance(value, Path) else value


@dataclass(frozen=True, kw_only=True)
class EncodingJob(Job):
    """The modes that encode input audio or an image with the VAE."""

    encode_steps: int | None = setting(None, "Steps refining the encoding of the input (0: the VAE encoder alone; "
                                       "default: the model's, mini's 5).", low=0, high=1000)


@dataclass(frozen=True, kw_only=True)
class GenerateJob(Job):
    """Text -> a clip; by default a seamless loop."""

    mode: ClassVar[str] = "generate"
    prompt: str = _prompt(cli="argument")
    seed: int = _seed()
    guidance: float = _guidance()
    negative: str = _negative()
    seconds: float = _seconds(TILE_SECONDS, "Length. With a tempo (asked, named in the prompt or picked by the "
                              "model): the whole bars nearest it. Without one: a loop is whole latent columns (80 ms "
                              "at Riffusion's settings), a plain clip exactly this long.")
    loop: bool = setting(True, "A seamless loop, or a plain clip.", cli="--loop/--no-loop")
    bpm: float | None = setting(None, "Tempo in quarter notes a minute: the clip is whole bars, exactly, and a WAV "
                                "carries its tempo for DAWs (default: the prompt's, else the model's pick).",
                                low=MIN_BPM, high=MAX_BPM)
    bars: int | None = setting(None, "Length in bars, which then decides the length (needs --bpm; default: the "
                               "whole bars nearest --seconds).", low=1, high=MAX_BARS)
    key: str | None = setting(None, "Key, e.g. 'F minor', 'C# major', 'Bbm': recorded in the file name and the "
                              "WAV's loop root.", high=20)
    meter: str | None = setting(None, "Time signature of the bars (default: the style's where the model picks the "
                                "tempo, else 4/4).", choices=METERS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.key is not None:
            object.__setattr__(self, "key", parse_key(self.key).name)
        if self.bpm is None:
            if self.bars is not None:
                raise SpectrodiffError("bars needs a tempo: give bpm too")
            return
        meter = self.meter or "4/4"
        bars = self.bars if self.bars is not None else nearest_bars(self.seconds, self.bpm, meter)
        if bars > MAX_BARS:  # bars from seconds: checked here, before any work, as an asked number of bars is
            raise SpectrodiffError(f"{number(self.seconds)} s at {number(self.bpm)} BPM are {bars} bars of {meter}; "
                                   f"at most {MAX_BARS} (give fewer seconds, or bars)")
        seconds = bars * bar_seconds(self.bpm, meter)
        if seconds > MAX_SECONDS:
            raise SpectrodiffError(f"{bars} bars of {meter} at {number(self.bpm)} BPM are {seconds:g} s; at "
                                   f"most {MAX_SECONDS:g}")
        object.__setattr__(self, "meter", meter)
        object.__setattr__(self, "bars", bars)
        object.__setattr__(self, "seconds", seconds)


@dataclass(frozen=True, kw_only=True)
class MorphJob(Job):
    """Morph from one prompt to the next across one clip."""

    mode: ClassVar[str] = "morph"
    keyframes: tuple[Keyframe, ...] = setting(REQUIRED, "Two or more keyframes, in order.", low=2, cli="")
    seconds: float = _seconds(20.0, "Length of the whole morph.")


@dataclass(frozen=True, kw_only=True)
class ComposeJob(Job):
    """A timeline of keyframes, each holding its seconds, blended over `transition` at the boundaries."""

    mode: ClassVar[str] = "compose"
    keyframes: tuple[Keyframe, ...] = setting(REQUIRED, "Keyframes, each with its seconds.", low=1, cli="")
    transition: float = setting(2.0, "Seconds over which neighbouring keyframes blend.", low=0, high=MAX_SECONDS,
                                cli="")
    bpm: float | None = setting(None, "Tempo of the whole clip: every keyframe then holds whole bars, so every join "
                                "lands on a bar line.", low=MIN_BPM, high=MAX_BPM, cli="")
    meter: str = setting("4/4", "Time signature of the bars.", choices=METERS, cli="")

    def __post_init__(self) -> None:
        super().__post_init__()
        for n, keyframe in enumerate(self.keyframes, 1):
            if keyframe.seconds is None:
                raise SpectrodiffError(f"keyframe {n} has no seconds")
            if self.bpm is not None:
                whole_bars(keyframe.seconds, self.bpm, self.meter, f"keyframe {n}")
        total = sum(k.seconds for k in self.keyframes)
        if total > MAX_SECONDS:
            raise SpectrodiffError(f"the keyframes' seconds add up to {total:g}; at most {MAX_SECONDS:g}")


@dataclass(frozen=True, kw_only=True)
class AudioJob(EncodingJob):
    """The modes that rework the user's audio under a prompt."""

    audio: Path = setting(REQUIRED, "Your audio file (wav, flac, ogg, opus, mp3).", cli="argument")
    prompt: str = _prompt(cli="-p/--prompt")
    seed: int = _seed()
    guidance: float = _guidance()
    negative: str = _negative()


@dataclass(frozen=True, kw_only=True)
class RemixJob(AudioJob):
    """Audio-to-audio: re-imagine the input in the prompt's style."""

    mode: ClassVar[str] = "remix"
    strength: float = _strength(0.6)


@dataclass(frozen=True, kw_only=True)
class ExtendJob(AudioJob):
    """Continue the input; its own samples open the output untouched."""

    mode: ClassVar[str] = "extend"
    seconds: float = _seconds(REQUIRED, "Seconds to add after the input.")


@dataclass(frozen=True, kw_only=True)
class InpaintJob(AudioJob):
    """Regenerate a span of the input; outside it nothing changes but a 20 ms crossfade at each edge."""

    mode: ClassVar[str] = "inpaint"
    start: float = setting(REQUIRED, "Start of the span to regenerate, seconds.", low=0, high=MAX_SECONDS)
    end: float = setting(REQUIRED, "End of the span, seconds.", low=0, above=True, high=MAX_SECONDS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.end <= self.start:
            raise SpectrodiffError(f"the span's end ({number(self.end)} s) must come after its start "
                                   f"({number(self.start)} s)")


@dataclass(frozen=True, kw_only=True)
class RiffuseJob(EncodingJob):
    """Riffusion's inference: a clip grown from a seed spectrogram image between two keyframes."""

    mode: ClassVar[str] = "riffuse"
    start: Keyframe = setting(REQUIRED, "The keyframe at alpha 0.", cli="")
    end: Keyframe = setting(REQUIRED, "The keyframe at alpha 1.", cli="")
    alpha: float = setting(0.5, "0 is all start, 1 all end.", low=0, high=1)
    seed_image: Path = setting(REQUIRED, "The seed spectrogram PNG.")
    mask_image: Path | None = setting(None, "A mask PNG: white is regenerated, black kept from the seed image.")


JOBS: dict[str, type[Job]] = {job.mode: job for job in (GenerateJob, MorphJob, ComposeJob, RemixJob, ExtendJob,
                                                         InpaintJob, RiffuseJob)}


def job_from_dict(data: Mapping[str, Any], highs: Mapping[str, float] | None = None,
                  ignore: tuple[str, ...] = ()) -> Job:
    """The job a mapping describes, by its "mode"."""
    if not isinstance(data, Mapping):
        raise SpectrodiffError(f"a job is a mapping with a mode, got {shown(data)}")
    mode = data.get("mode")
    if not isinstance(mode, str) or mode not in JOBS:
        raise SpectrodiffError(f"unknown mode {shown(mode)} ({', '.join(JOBS)})")
    return JOBS[mode].from_dict(data, highs=highs, ignore=ignore)

