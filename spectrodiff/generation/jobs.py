"""One declaration per generation mode: each setting's name, type, default, range and help, written once (as
spectrodiff.settings models).

The command line's options, `spectrodiff batch` lines, the web API's requests and the studio's controls are made
from these classes, and a sidecar's "job" is one of them serialised (`to_dict`), so that it redoes its result.

Light on purpose (no torch, no diffusers): the command line reads these to build its options and its `--help`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import model_validator
from pydantic.fields import FieldInfo

from ..errors import SpectrodiffError
from ..settings import REQUIRED, Settings, number_words, quote_value, refuse, setting
from .harmony import fit_chords, parse_chords
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

# The schedulers a job may name (spectrodiff.generation.pipeline.SCHEDULERS maps them to diffusers' classes).
SCHEDULER_NAMES = ("dpm", "ddim", "ddpm", "euler", "euler-a", "lms", "pndm", "unipc")
TILE_SECONDS = 5.12
MAX_SECONDS = 600.0  # the longest clip any mode makes
MAX_SEED = 2**32 - 1
MAX_KEYFRAMES = 64
MAX_PROMPT_CHARS = 1000
DEFAULT_GUIDANCE = 7.0


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


class Keyframe(Settings):
    """One point of a timeline: what plays there. `seconds` (or `bars` at `bpm`) is the span it owns in a composition
    (unused by morphs); `strength` how far an image-to-image job moves from its input."""

    prompt: str = _prompt()
    seed: int = _seed()
    strength: float = _strength(1.0)
    guidance: float = _guidance()
    negative: str = _negative()
    seconds: float | None = _seconds(None, "The span it holds in a composition.")
    bars: int | None = setting(None, "The span it holds in a composition, in bars (instead of seconds; needs a "
                               "tempo: its bpm or the plan's).", low=1, high=MAX_BARS)
    bpm: float | None = setting(None, "Its section's tempo in a composition (default: the plan's bpm, else its "
                                "prompt's). A beat-time model changes tempo on the bar line; a clock-time model "
                                "makes one tempo.", low=MIN_BPM, high=MAX_BPM)

    positional: ClassVar[tuple[str, ...]] = ("prompt",)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in type(self).model_fields if getattr(self, name) is not None}


# ---- the jobs ------------------------------------------------------------------------------------------------------


class Job(Settings):
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

    @classmethod
    def fields_in_order(cls) -> dict[str, FieldInfo]:
        """The job's settings by name, in declaration order, those of how it renders (Job's, EncodingJob's) last:
        the order of its options and of its record in a sidecar."""
        rendering = EncodingJob.model_fields
        return {name: f for name, f in cls.model_fields.items() if name not in rendering} | {
            name: f for name, f in cls.model_fields.items() if name in rendering}

    @classmethod
    def subject(cls) -> str:
        return cls.mode

    @classmethod
    def field_names(cls) -> list[str]:
        return ["mode", *cls.fields_in_order()]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, flag: bool = False,
                  highs: Mapping[str, float] | None = None) -> Job:
        """A job from a mapping of its fields, "mode" (its own) optionally among them (see Settings.from_dict)."""
        if isinstance(data, Mapping) and "mode" in data:
            if data["mode"] != cls.mode:
                raise SpectrodiffError(f"a {cls.mode} job, not {quote_value(data['mode'])}")
            data = {k: v for k, v in data.items() if k != "mode"}
        return super().from_dict(data, flag=flag, highs=highs)

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data: its mode, then every field (a batch line that redoes the result)."""
        return {"mode": self.mode, **{name: _plain(getattr(self, name)) for name in type(self).fields_in_order()}}

    @property
    def keyframe(self) -> Keyframe:
        """The one keyframe of a single-prompt mode."""
        return Keyframe(self.prompt, seed=self.seed, strength=getattr(self, "strength", 1.0), guidance=self.guidance,
                        negative=self.negative)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Keyframe):
        return value.to_dict()
    return str(value) if isinstance(value, Path) else value


class EncodingJob(Job):
    """The modes that encode input audio or an image with the VAE."""

    encode_steps: int | None = setting(None, "Steps refining the encoding of the input (0: the VAE encoder alone; "
                                       "default: the model's, mini's 5).", low=0, high=1000)


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
    chords: str | None = setting(None, "Chords, one a bar, repeated to fill the loop, e.g. 'Fm Db Ab Eb' (they imply "
                                 "the key; default: a progression typical of the style). Models with aligned chords "
                                 "(mini v3).", high=200)

    @model_validator(mode="after")
    def _length_in_bars(self) -> GenerateJob:
        """The key in its standard spelling and the chords checked; with a tempo, the length made whole bars (bars
        from seconds where not given), each held to its limit."""
        try:
            if self.key is not None:
                object.__setattr__(self, "key", parse_key(self.key).name)
            chords = None if self.chords is None else parse_chords(self.chords)
            if chords is not None and self.bars is not None:
                fit_chords(chords, self.bars)
        except SpectrodiffError as exc:
            refuse(str(exc))
        if self.bpm is None:
            if self.bars is not None:
                refuse("bars needs a tempo: give bpm too")
            return self
        meter = self.meter or "4/4"
        bars = self.bars if self.bars is not None else nearest_bars(self.seconds, self.bpm, meter)
        if bars > MAX_BARS:  # bars from seconds: checked here, before any work, as an asked number of bars is
            refuse(f"{number_words(self.seconds)} s at {number_words(self.bpm)} BPM are {bars} bars of {meter}; at "
                   f"most {MAX_BARS} (give fewer seconds, or bars)")
        seconds = bars * bar_seconds(self.bpm, meter)
        if seconds > MAX_SECONDS:
            refuse(f"{bars} bars of {meter} at {number_words(self.bpm)} BPM are {seconds:g} s; at most "
                   f"{MAX_SECONDS:g}")
        object.__setattr__(self, "meter", meter)  # worked out from the settings given (Settings.replace redoes it)
        object.__setattr__(self, "bars", bars)
        object.__setattr__(self, "seconds", seconds)
        return self


class MorphJob(Job):
    """Morph from one prompt to the next across one clip."""

    mode: ClassVar[str] = "morph"
    keyframes: tuple[Keyframe, ...] = setting(REQUIRED, "Two or more keyframes, in order.", low=2,
                                              max_items=MAX_KEYFRAMES, cli="")
    seconds: float = _seconds(20.0, "Length of the whole morph.")


class ComposeJob(Job):
    """A timeline of keyframes, each holding its seconds, blended over `transition` at the boundaries."""

    mode: ClassVar[str] = "compose"
    keyframes: tuple[Keyframe, ...] = setting(REQUIRED, "Keyframes, each with its seconds or bars.", low=1,
                                              max_items=MAX_KEYFRAMES, cli="")
    transition: float = setting(2.0, "Seconds over which neighbouring keyframes blend (in beat time, the half "
                                "before a join at its section's tempo, the half after at the next one's).", low=0,
                                high=MAX_SECONDS, cli="")
    bpm: float | None = setting(None, "Tempo of the whole clip (a keyframe's own bpm overrides it for its section): "
                                "every keyframe then holds whole bars, so every join lands on a bar line.",
                                low=MIN_BPM, high=MAX_BPM, cli="")
    meter: str = setting("4/4", "Time signature of the bars.", choices=METERS, cli="")

    @model_validator(mode="after")
    def _keyframes_fill_the_clip(self) -> ComposeJob:
        """Each keyframe's span: bars at its tempo (its bpm, else the plan's) worked out in seconds, or seconds that
        are whole bars where a tempo is given; the sum held to MAX_SECONDS."""
        keyframes = []
        for n, keyframe in enumerate(self.keyframes, 1):
            bpm = self.section_bpm(keyframe)
            if keyframe.seconds is None and keyframe.bars is None:
                refuse(f"keyframe {n} has no seconds or bars")
            if bpm is None:
                if keyframe.bars is not None:
                    refuse(f"keyframe {n}: bars needs a tempo: give the keyframe or the plan a bpm")
            elif keyframe.bars is not None:  # bars decide, as a generate job's do
                keyframe = keyframe.model_copy(update={"seconds": keyframe.bars * bar_seconds(bpm, self.meter)})
            else:
                try:
                    bars = whole_bars(keyframe.seconds, bpm, self.meter, f"keyframe {n}")
                except SpectrodiffError as exc:
                    refuse(str(exc))
                keyframe = keyframe.model_copy(update={"bars": bars})
            keyframes.append(keyframe)
        total = sum(k.seconds for k in keyframes)
        if total > MAX_SECONDS:
            refuse(f"the keyframes' seconds add up to {total:g}; at most {MAX_SECONDS:g}")
        object.__setattr__(self, "keyframes", tuple(keyframes))  # worked out from the settings given
        return self

    def section_bpm(self, keyframe: Keyframe) -> float | None:
        """The tempo a keyframe's section asks for: its own, else the plan's (None: the model's pick, if any)."""
        return keyframe.bpm if keyframe.bpm is not None else self.bpm


class AudioJob(EncodingJob):
    """The modes that rework the user's audio under a prompt."""

    audio: Path = setting(REQUIRED, "Your audio file (wav, flac, ogg, opus, mp3).", cli="argument")
    prompt: str = _prompt(cli="-p/--prompt")
    seed: int = _seed()
    guidance: float = _guidance()
    negative: str = _negative()
    bpm: float | None = setting(None, "The input's tempo, for a beat-time model (default: its WAV's acid chunk, else "
                                "tracked).", low=MIN_BPM, high=MAX_BPM)


class RemixJob(AudioJob):
    """Audio-to-audio: re-imagine the input in the prompt's style."""

    mode: ClassVar[str] = "remix"
    strength: float = _strength(0.6)


class ExtendJob(AudioJob):
    """Continue the input; its own samples open the output untouched."""

    mode: ClassVar[str] = "extend"
    seconds: float = _seconds(REQUIRED, "Seconds to add after the input.")


class InpaintJob(AudioJob):
    """Regenerate a span of the input; outside it nothing changes but a 20 ms crossfade at each edge."""

    mode: ClassVar[str] = "inpaint"
    start: float = setting(REQUIRED, "Start of the span to regenerate, seconds.", low=0, high=MAX_SECONDS)
    end: float = setting(REQUIRED, "End of the span, seconds.", low=0, above=True, high=MAX_SECONDS)

    @model_validator(mode="after")
    def _span_in_order(self) -> InpaintJob:
        if self.end <= self.start:
            refuse(f"the span's end ({number_words(self.end)} s) must come after its start "
                   f"({number_words(self.start)} s)")
        return self


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


def job_from_dict(data: Mapping[str, Any], highs: Mapping[str, float] | None = None) -> Job:
    """The job a mapping describes, by its "mode"."""
    if not isinstance(data, Mapping):
        raise SpectrodiffError(f"a job is a mapping with a mode, got {quote_value(data)}")
    mode = data.get("mode")
    if not isinstance(mode, str) or mode not in JOBS:
        raise SpectrodiffError(f"unknown mode {quote_value(mode)} ({', '.join(JOBS)})")
    return JOBS[mode].from_dict(data, highs=highs)
