"""Spectrogram parameters: Riffusion's defaults, their one dict form, and PNG EXIF tags.

Plain Python on purpose: the codec commands never import diffusers, whose import costs seconds (docs/benchmarks.md).
A model folder carries them as its `spectrogram/` component through
`spectrodiff.generation.components.SpectrogramComponent`, this class with diffusers' config loading and saving.
"""

from __future__ import annotations

import inspect
import math
import warnings
from enum import IntEnum
from typing import Any

from pydantic import ConfigDict, field_validator, model_validator

from ..errors import SpectrodiffError
from ..settings import Settings, refuse, setting

# Decoding scale Riffusion uses for images whose clip maximum is unknown (model output).
RIFFUSION_MAX_VALUE = 30e6


class ExifTag(IntEnum):
    """Riffusion's EXIF tag numbers."""

    SAMPLE_RATE = 11000
    STEREO = 11005
    STEP_SIZE_MS = 11010
    WINDOW_DURATION_MS = 11020
    PADDED_DURATION_MS = 11030
    NUM_FREQUENCIES = 11040
    MIN_FREQUENCY = 11050
    MAX_FREQUENCY = 11060
    POWER_FOR_IMAGE = 11070
    MAX_VALUE = 11080
    # Ours, for beat-time images only (a clock-time image carries Riffusion's tags alone).
    COLUMNS_PER_BEAT = 11090
    TEMPO = 11100


# Field name and type of each tag that describes the format (MAX_VALUE describes one clip).
_EXIF_FIELDS = {
    ExifTag.SAMPLE_RATE: ("sample_rate", int),
    ExifTag.STEREO: ("stereo", bool),
    ExifTag.STEP_SIZE_MS: ("step_size_ms", int),
    ExifTag.WINDOW_DURATION_MS: ("window_duration_ms", int),
    ExifTag.PADDED_DURATION_MS: ("padded_duration_ms", int),
    ExifTag.NUM_FREQUENCIES: ("num_frequencies", int),
    ExifTag.MIN_FREQUENCY: ("min_frequency", int),
    ExifTag.MAX_FREQUENCY: ("max_frequency", int),
    ExifTag.POWER_FOR_IMAGE: ("power_for_image", float),
    ExifTag.COLUMNS_PER_BEAT: ("columns_per_beat", int),
    ExifTag.TEMPO: ("tempo", float),
}
# The fields of a beat-time spectrogram; None (clock time) leaves them out of dicts, keys and EXIF, so that clock-time
# parameters, their sidecars and images stay as they always were.
BEAT_FIELDS = ("columns_per_beat", "tempo")


class Config(dict):
    """A read-only dict whose keys are also attributes (`config.sample_rate`), as diffusers' configs are."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def _readonly(self, *args, **kwargs):
        raise TypeError("a config is read-only")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _readonly


class SpectrogramSettings(Settings):
    """The spectrogram parameters' declaration: type, default, range and help of each, checked once. SpectrogramParams
    (a diffusers component's base, with its own constructor) validates its values with it, and keeps them as given;
    lax, as that constructor always was (numpy numbers, 44100.0 for 44100)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    sample_rate: int = setting(44100, "Audio sample rate in Hz.", low=1000, high=384000)
    stereo: bool = setting(False, "Two channels per image (G = left, B = right) instead of one mono channel.")
    step_size_ms: int = setting(10, "Hop between frames; one image column per step.", low=0, above=True)
    window_duration_ms: int = setting(100, "Hann window length.", low=0, above=True)
    padded_duration_ms: int = setting(400, "FFT size (the window is zero-padded to it).", low=0, above=True)
    num_frequencies: int = setting(512, "Number of mel bins, the image height.", low=0, above=True)
    min_frequency: int = setting(0, "Lowest mel frequency in Hz.", low=0)
    max_frequency: int = setting(10000, "Highest mel frequency in Hz.", low=0, above=True)
    power_for_image: float = setting(0.25, "Exponent applied to normalised magnitudes before quantising to 8 bits.",
                                     low=0, above=True)
    columns_per_beat: int | None = setting(None, "Beat time: image columns per quarter-note beat, so that the hop is "
                                           "60 / (tempo x columns_per_beat) s (None: clock time, one column per "
                                           "step_size_ms).", low=1, high=256)
    tempo: float | None = setting(None, "The tempo (BPM) a beat-time image was made at.", low=20, high=400)

    @model_validator(mode="after")
    def _consistent(self) -> SpectrogramSettings:
        if self.padded_duration_ms < self.window_duration_ms:
            refuse(f"padded_duration_ms ({self.padded_duration_ms}) must be >= window_duration_ms "
                   f"({self.window_duration_ms})")
        if self.tempo is not None and self.columns_per_beat is None:
            refuse("a tempo needs columns_per_beat: only beat-time spectrograms have one")
        if not self.min_frequency < self.max_frequency <= self.sample_rate / 2:
            refuse(f"need min_frequency < max_frequency <= sample_rate / 2, got {self.min_frequency}, "
                   f"{self.max_frequency} at {self.sample_rate} Hz")
        return self


RIFFUSION = SpectrogramSettings()  # the declared defaults: Riffusion's parameters


class TileSettings(Settings):
    """How audio is cut into tiles, as `slice` and `prepare` both take it (spectrodiff.codec.tiles.Tiling)."""

    seconds: float = setting(5.12, "Tile length; 5.12 s is a 512-column tile.", low=0.02, high=600)
    hop: float | None = setting(None, "Seconds between tile starts (default: a whole tile; prepare: half a tile).",
                                low=0.01, high=600)
    stereo: bool = setting(False, "Stereo tiles (G = left, B = right).", cli="--stereo")
    n_mels: int = setting(512, "Mel bins = tile height (Riffusion: 512), a multiple of 8.", low=8, high=2048)

    @field_validator("n_mels")
    @classmethod
    def _whole_bytes(cls, value: int) -> int:
        if value % 8:
            refuse(f"must be a multiple of 8 between 8 and 2048, got {value}")
        return value


class SpectrogramParams:
    """How audio becomes a spectrogram image; defaults are Riffusion's. The arguments, their defaults and ranges are
    SpectrogramSettings' (sample_rate, stereo, step_size_ms, window_duration_ms, padded_duration_ms,
    num_frequencies, min_frequency, max_frequency, power_for_image); a value out of range is a SpectrodiffError.
    """

    config_name = "spectrogram_config.json"

    def __init__(
        self,
        sample_rate: int = RIFFUSION.sample_rate,
        stereo: bool = RIFFUSION.stereo,
        step_size_ms: int = RIFFUSION.step_size_ms,
        window_duration_ms: int = RIFFUSION.window_duration_ms,
        padded_duration_ms: int = RIFFUSION.padded_duration_ms,
        num_frequencies: int = RIFFUSION.num_frequencies,
        min_frequency: int = RIFFUSION.min_frequency,
        max_frequency: int = RIFFUSION.max_frequency,
        power_for_image: float = RIFFUSION.power_for_image,
        columns_per_beat: int | None = None,
        tempo: float | None = None,
    ):
        fields = dict(sample_rate=sample_rate, stereo=stereo, step_size_ms=step_size_ms,
                      window_duration_ms=window_duration_ms, padded_duration_ms=padded_duration_ms,
                      num_frequencies=num_frequencies, min_frequency=min_frequency, max_frequency=max_frequency,
                      power_for_image=power_for_image, columns_per_beat=columns_per_beat, tempo=tempo)
        try:
            SpectrogramSettings(**fields)
        except SpectrodiffError as exc:
            raise SpectrodiffError(f"invalid spectrogram parameters: {exc}") from None
        if "_internal_dict" not in self.__dict__:  # the diffusers component has registered them already
            self._internal_dict = Config(fields)

    @property
    def config(self) -> Config:
        return self._internal_dict

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a plain dict (the form configs, manifests and sidecars store); a clock-time
        spectrogram's has no beat fields."""
        return {k: v for k, v in self.config.items()
                if not k.startswith("_") and not (k in BEAT_FIELDS and v is None)}

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> SpectrogramParams:
        """Parameters from a dict such as `to_dict` gives, or a saved config (its `_` entries are ignored);
        SpectrodiffError for anything else."""
        if not isinstance(fields, dict):
            raise SpectrodiffError(f"spectrogram parameters must be a mapping, got {fields!r}"[:200])
        known = inspect.signature(cls.__init__).parameters
        unknown = sorted(k for k in fields if not k.startswith("_") and k not in known)
        if unknown:
            raise SpectrodiffError(f"unknown spectrogram parameter(s) {', '.join(unknown)}"[:200])
        return cls(**{k: v for k, v in fields.items() if not k.startswith("_")})

    def describe(self) -> str:
        """One line for messages, e.g. "512 mel bins 0-10000 Hz at 44100 Hz, hop 10 ms, window 100 ms, FFT 400 ms"."""
        c = self.config
        hop = f"hop {c.step_size_ms} ms"
        if self.beat_time:
            hop = f"{c.columns_per_beat} columns a beat" + (f" at {c.tempo:g} BPM" if c.tempo else "")
        return (f"{c.num_frequencies} mel bins {c.min_frequency}-{c.max_frequency} Hz at {c.sample_rate} Hz, "
                f"{hop}, window {c.window_duration_ms} ms, FFT {c.padded_duration_ms} ms")

    def differences(self, other: SpectrogramParams) -> str:
        """Where `other` differs, for messages, e.g. "num_frequencies 512 vs 128, columns_per_beat None vs 32" ("" when
        it does not)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return ", ".join(f"{name} {mine.get(name)} vs {theirs.get(name)}" for name in SpectrogramSettings.model_fields
                         if mine.get(name) != theirs.get(name))

    @property
    def beat_time(self) -> bool:
        """Whether the time axis is in beats (`columns_per_beat`) rather than in clock time."""
        return self.config.get("columns_per_beat") is not None

    def at_tempo(self, bpm: float) -> SpectrogramParams:
        """These beat-time parameters bound to a tempo (what an image made at `bpm` carries)."""
        if not self.beat_time:
            raise SpectrodiffError("only beat-time spectrogram parameters take a tempo")
        return type(self).from_dict(self.to_dict() | {"tempo": float(bpm)})

    def clock(self) -> SpectrogramParams:
        """The clock-time parameters beside these (same STFT and bands, one column per `step_size_ms`): what the
        vocoders and Griffin-Lim run at."""
        return SpectrogramParams.from_dict({k: v for k, v in self.to_dict().items() if k not in BEAT_FIELDS})

    def _tempo(self) -> float:
        if self.config.get("tempo") is None:
            raise SpectrodiffError("a beat-time spectrogram needs a tempo (--bpm) to be heard or made")
        return self.config.tempo

    # Riffusion derives the sample counts with these exact float expressions; keep them for identical rounding.
    @property
    def hop_length(self) -> int | float:
        """Samples between columns: an int in clock time; in beat time 60 x rate / (tempo x columns_per_beat), a
        fraction of a sample as it comes (frames then start at the nearest sample)."""
        if self.beat_time:
            return 60.0 * self.config.sample_rate / (self._tempo() * self.config.columns_per_beat)
        return int(self.config.step_size_ms / 1000.0 * self.config.sample_rate)

    @property
    def win_length(self) -> int:
        return int(self.config.window_duration_ms / 1000.0 * self.config.sample_rate)

    @property
    def n_fft(self) -> int:
        return int(self.config.padded_duration_ms / 1000.0 * self.config.sample_rate)

    @property
    def channels(self) -> int:
        return 2 if self.config.stereo else 1

    def __getattr__(self, name: str) -> Any:
        # Fields as attributes (`params.sample_rate`), without the deprecation warning diffusers' ConfigMixin gives.
        config = self.__dict__.get("_internal_dict")
        if config is not None and name in config:
            return config[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def key(self) -> tuple:
        """A hashable identity, for caches keyed by parameter set (`from_key` turns it back)."""
        return tuple(sorted(self.to_dict().items()))

    @classmethod
    def from_key(cls, key: tuple) -> SpectrogramParams:
        return cls(**dict(key))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpectrogramParams) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def width_for_samples(self, num_samples: int) -> int:
        """Image width (frames) for `num_samples` samples: one column per hop, centred frames."""
        return 1 + int(num_samples // self.hop_length)

    def samples_for_width(self, width: int) -> int:
        """Samples that a reconstruction of `width` columns spans: `(width - 1) * hop` (in beat time rounded up, so
        that those samples make `width` columns again)."""
        if self.beat_time:
            return math.ceil(max(width - 1, 0) * self.hop_length - 1e-9)
        return max(width - 1, 0) * self.hop_length

    def samples_for_loop(self, width: int) -> int:
        """Samples of a loop of `width` columns, `width * hop` (rounded in beat time: N bars of B beats are exactly
        N x B x 60 / tempo seconds, to the nearest sample)."""
        if self.beat_time:
            return round(width * 60 * self.config.sample_rate / (self._tempo() * self.config.columns_per_beat))
        return width * self.hop_length

    def tile_width(self, seconds: float) -> int:
        """Columns of a tile of `seconds` (5.12 s gives Riffusion's 512)."""
        if self.beat_time:
            return max(1, round(seconds * self.config.sample_rate / self.hop_length))
        return max(1, round(seconds * 1000 / self.config.step_size_ms))

    def tile_starts(self, duration: float, tile_seconds: float, hop: float) -> list[float]:
        """Start times of whole tiles of `tile_seconds`, one every `hop` seconds, in audio `duration` seconds long
        (a partial last tile is dropped)."""
        if duration < tile_seconds:
            return []
        return [k * hop for k in range(int((duration - tile_seconds) // hop) + 1)]

    def to_exif(self) -> dict[int, Any]:
        """Riffusion's EXIF tags for these parameters (without the clip's MAX_VALUE)."""
        fields = self.to_dict()
        exif = {int(tag): fields[name] for tag, (name, _) in _EXIF_FIELDS.items() if name in fields}
        exif[int(ExifTag.POWER_FOR_IMAGE)] = float(self.config.power_for_image)
        if self.config.get("tempo") is not None:
            exif[int(ExifTag.TEMPO)] = float(self.config.tempo)
        return exif

    @classmethod
    def from_exif(cls, exif: dict[int, Any]) -> SpectrogramParams | None:
        """Parameters read from EXIF tags; None when none of Riffusion's tags are present.

        Tags that are absent take Riffusion's defaults. Raises SpectrodiffError for values that are not numbers or
        describe an impossible spectrogram.
        """
        present = {tag: exif[int(tag)] for tag in _EXIF_FIELDS if int(tag) in exif}
        if not present:
            return None
        kwargs = {}
        for tag, value in present.items():
            name, kind = _EXIF_FIELDS[tag]
            kwargs[name] = _exif_number(value, kind, name)
        try:
            return cls(**kwargs)
        except SpectrodiffError as exc:
            raise SpectrodiffError(f"corrupt spectrogram EXIF: {exc}") from None


def _exif_number(value: Any, kind: type, name: str) -> Any:
    """Coerce one EXIF value (int, float, or a one-element tuple as some writers store it) to `kind`."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpectrodiffError(f"corrupt spectrogram EXIF: {name} is {value!r}, not a number") from None
    if not math.isfinite(number):
        raise SpectrodiffError(f"corrupt spectrogram EXIF: {name} is {value!r}")
    if kind is bool:
        if number not in (0, 1):
            raise SpectrodiffError(f"corrupt spectrogram EXIF: {name} is {value!r}, expected 0 or 1")
        return bool(number)
    if kind is int:
        if number != int(number):
            raise SpectrodiffError(f"corrupt spectrogram EXIF: {name} is {value!r}, expected a whole number")
        return int(number)
    return number


def warn_default_params() -> SpectrogramParams:
    """Riffusion's default parameters, with a warning that they were assumed."""
    warnings.warn("image has no spectrogram EXIF tags; assuming Riffusion's default parameters", stacklevel=3)
    return SpectrogramParams()
