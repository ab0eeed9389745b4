"""The options of `prepare` and of the trainers (`train`, `train-vocoder`, the decoder fine-tune), declared once as
spectrodiff.settings models: name, type, default, range and help. The command line's options are made from them,
a YAML config's `training:` section is checked by them, and a bad value reads the same from either
("--batch-size must be between 1 and 4096, got 0").

Light on purpose (no torch): the command line reads these to build its options and its `--help`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import field_validator, model_validator

from spectrodiff.codec.params import TileSettings
from spectrodiff.errors import SpectrodiffError
from spectrodiff.settings import REQUIRED, Settings, number_words, quote_value, refuse, setting

MAX_STEPS = 10_000_000
MAX_BATCH = 4096
MIXED_PRECISION = ("no", "fp16", "bf16")
# diffusers' schedules (diffusers.optimization.SchedulerType), by name.
DIFFUSERS_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


def _warmup(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup else 1.0


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / total))


# The trainers' own rules: the factor of the base rate at optimizer step `s` (from 0) of `total`, after `warmup`.
LR_RULES: dict[str, Callable[[int, int, int], float]] = {
    "warmup-constant": lambda s, warmup, total: _warmup(s, warmup),  # train's
    "warmup-cosine": lambda s, warmup, total: _warmup(s, warmup) * _cosine(s, total),  # train-vocoder's
    "cosine-to-tenth": lambda s, warmup, total: 0.1 + 0.9 * _cosine(s, total),  # the decoder's
}
LR_SCHEDULES = (*LR_RULES, *DIFFUSERS_SCHEDULES)


# ---- the settings every trainer shares, declared once (each trainer picks its defaults) --------------------------


def max_steps_setting(default: Any = REQUIRED) -> Any:
    return setting(default, "Optimizer steps.", low=1, high=MAX_STEPS)


def lr_setting(default: Any = REQUIRED, help: str = "Learning rate.") -> Any:
    return setting(default, help, low=0, above=True, high=1)


def lr_schedule_setting(default: Any = REQUIRED) -> Any:
    return setting(default, "Learning-rate schedule: warmup-constant, warmup-cosine, cosine-to-tenth, or one of "
                   "diffusers' get_scheduler names (linear, cosine, constant_with_warmup, ...).", choices=LR_SCHEDULES)


def warmup_steps_setting(default: int = 0, cli: str | None = None) -> Any:
    return setting(default, "Steps of linear warm-up.", low=0, high=MAX_STEPS, cli=cli)


def every_setting(default: int, what: str, cli: str | None = None) -> Any:
    return setting(default, f"Steps between {what}.", low=1, cli=cli)


def keep_checkpoints_setting(default: int = 3) -> Any:
    return setting(default, "Checkpoints kept, the newest.", low=1, cli="")


def seed_setting(help: str = "Seed.") -> Any:
    return setting(0, help, low=0)


def mixed_precision_setting() -> Any:
    return setting(None, "no, fp16 or bf16 (default: accelerate's config, else no).", choices=MIXED_PRECISION)


def device_setting() -> Any:
    return setting(None, "cpu to force the CPU (default: accelerate's choice).")


def resume_setting(help: str = "'latest' continues the run in OUT.") -> Any:
    return setting(None, help)


def log_setting() -> Any:
    return setting(print, "Where progress lines go.", cli="")


def base_setting(help: str) -> Any:
    return setting(None, help + ": a bundled name (mini), a model folder or a hub id.")


class Schedule(Settings):
    """How long and how a run trains: what `training.core.train_loop` takes (`of` picks it from a trainer's
    options)."""

    max_steps: int = max_steps_setting()
    lr: float = lr_setting()
    lr_schedule: str = lr_schedule_setting()
    warmup_steps: int = warmup_steps_setting()
    grad_accum: int = setting(1, "Micro-batches per step.", low=1, high=1024)
    checkpoint_every: int = every_setting(500, "checkpoints")
    validate_every: int = every_setting(500, "validations")
    keep_checkpoints: int = keep_checkpoints_setting()
    seed: int = seed_setting()
    ema: float = setting(0.0, "EMA decay of the weights saved, e.g. 0.999 (0: off).", low=0, high=0.999999)
    mixed_precision: str | None = mixed_precision_setting()
    device: str | None = device_setting()
    log_every: int = setting(50, "Steps between progress lines.", low=1, cli="")
    log: Callable[[str], None] = log_setting()

    @classmethod
    def of(cls, options: Settings, **overrides: Any) -> Schedule:
        """The schedule a trainer's options hold (the fields both have; the others take Schedule's defaults)."""
        return cls(**{name: getattr(options, name) for name in cls.model_fields if name in type(options).model_fields}
                   | overrides)


def given(options: Settings) -> dict[str, Any]:
    """The options set by the caller (the command line's given ones, a Python call's keywords)."""
    return {name: getattr(options, name) for name in options.model_fields_set}


def with_config(options: Settings, section: Any) -> Settings:
    """`options` with those the caller did not set taken from a config's `training:` section (then their defaults),
    checked as the command line's are."""
    if not isinstance(section, Mapping):
        raise SpectrodiffError(f"a config's training section is a mapping of options, got {section!r:.60}")
    return type(options).from_dict(dict(section) | given(options), flag=True)


def _multiple_of_8(cls: type, value: int | None) -> int | None:
    if value is not None and value % 8:
        refuse(f"must be a positive multiple of 8 pixels, got {value}")
    return value


# ---- the trainers --------------------------------------------------------------------------------------------


class TrainOptions(Settings):
    """A `spectrodiff train` run. A config's `training:` section sets any of these the caller did not."""

    dataset: Path = setting(REQUIRED, "Dataset folder made by `spectrodiff prepare`.", cli="argument")
    out: Path = setting(REQUIRED, "Output folder: the trained model (or lora.safetensors), checkpoints, "
                        "train_log.csv, validation clips.", cli="-o/--out")
    base: str | None = base_setting("Model to fine-tune (the dataset must have its spectrogram parameters)")
    config: Path | None = setting(None, "Train from scratch from a YAML config (training/configs/).")
    lora_rank: int = setting(0, "Train a LoRA of this rank instead of the whole UNet (0: full fine-tuning).",
                             low=0, high=1024)
    dataset_params: bool = setting(False, "Full fine-tuning onto the dataset's spectrogram parameters where they "
                                   "differ from the base's (another time axis or mel scale: the trained model takes "
                                   "the dataset's); without it a dataset that does not fit the base is an error.",
                                   cli="--dataset-params")
    max_steps: int = max_steps_setting(1000)
    batch_size: int = setting(4, "Tiles per device per micro-batch.", low=1, high=MAX_BATCH)
    grad_accum: int = setting(1, "Micro-batches per step.", low=1, high=1024)
    lr: float | None = lr_setting(None, "Learning rate (default 1e-5 for full fine-tuning of a base, else 1e-4).")
    lr_schedule: str = lr_schedule_setting("warmup-constant")
    warmup_steps: int = warmup_steps_setting()
    resume: str | None = resume_setting("'latest' continues the run in OUT from its last checkpoint (or a "
                                        "checkpoint folder).")
    validation_prompts: Path | None = setting(None, "Text file, a prompt per line (default: two of the dataset's "
                                              "captions).")
    seed: int = seed_setting("Seed of data order, noise and validation clips.")
    checkpoint_every: int = every_setting(500, "checkpoints")
    validate_every: int = every_setting(500, "validations")
    keep_checkpoints: int = keep_checkpoints_setting()
    validation_steps: int = setting(20, "Denoising steps of validation clips.", low=1, high=1000)
    validation_iters: int = setting(16, "Griffin-Lim iterations of validation clips.", low=0, high=1000, cli="")
    validation_tiles: int = setting(16, "Held-out tiles the validation loss averages.", low=1, cli="")
    mixed_precision: str | None = mixed_precision_setting()
    gradient_checkpointing: bool = setting(False, "Less memory, ~30% slower.", cli="--gradient-checkpointing")
    ema: float = setting(0.0, "EMA decay of the weights saved, e.g. 0.999 (0: off).", low=0, high=0.999999)
    crop_width: int | None = setting(None, "Random crops this many columns wide (a multiple of 8; default whole "
                                     "tiles).", low=8)
    caption_dropout: float = setting(0.1, "Share of captions replaced by \"\", so that classifier-free guidance "
                                     "works.", low=0, high=1, cli="")
    music_dropout: float = setting(0.2, "Share of musical conditions dropped, so that a model with them also "
                                   "learns to do without.", low=0, high=1, cli="")
    latents: str = setting("sample", "sample the VAE's posterior (Stable Diffusion's way) or take its mean.",
                           choices=("sample", "mean"), cli="")
    scaling_factor: float | str | None = setting(
        None, "Latent scaling: auto (1 / std of the data's latents, for fresh VAEs), a number, or the VAE's own.",
        low=0, above=True, cli="")
    device: str | None = device_setting()
    allow_pickle: bool = setting(False, "Allow pickled (.bin/.ckpt) weights: they can run code, load them only "
                                 "from sources you trust.", cli="--allow-pickle")
    log_every: int = setting(10, "Steps between progress lines.", low=1, cli="")
    log: Callable[[str], None] = log_setting()

    positional: ClassVar[tuple[str, ...]] = ("dataset", "out")

    _crop_width = field_validator("crop_width")(classmethod(_multiple_of_8))

    @field_validator("scaling_factor")
    @classmethod
    def _auto_or_number(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, str) and value != "auto":
            refuse(f"must be 'auto' or a positive number, got {quote_value(value)}")
        return value

    @model_validator(mode="after")
    def _default_lr(self) -> TrainOptions:
        """Full fine-tuning of a base moves trained weights: a tenth of the rate that a LoRA or a new model takes."""
        if self.lr is None:
            object.__setattr__(self, "lr", 1e-5 if self.base and not self.lora_rank else 1e-4)
        return self


# What a vocoder config's `training:` section may set.
VOCODER_CONFIG_FIELDS = ("max_steps", "batch_size", "lr", "warmup_steps", "segment_frames", "checkpoint_every",
                         "validate_every", "mel_weight", "stft_weight", "adversarial_weight", "feature_weight",
                         "adversarial_start", "lr_schedule")


class VocoderOptions(Settings):
    """A `spectrodiff train-vocoder` run. A config's `training:` section sets those of VOCODER_CONFIG_FIELDS the
    caller did not."""

    inputs: list[Path] = setting(REQUIRED, "Audio folders or files, or datasets made by `spectrodiff prepare` "
                                 "(their source audio and spectrogram parameters).", cli="argument")
    out: Path = setting(REQUIRED, "Output folder: the vocoder, checkpoints, train_log.csv, validation clips.",
                        cli="-o/--out")
    config: Path | None = setting(None, "YAML config: spectrogram, vocoder and training sections "
                                  "(training/configs/vocoder-*.yaml).")
    resume: str | None = resume_setting()
    max_steps: int = max_steps_setting(20000)
    batch_size: int = setting(16, "Segments per device per step.", low=1, high=MAX_BATCH)
    lr: float = lr_setting(5e-4, "Peak learning rate.")
    lr_schedule: str = lr_schedule_setting("warmup-cosine")
    seed: int = seed_setting("Seed of the weights and the segments.")
    mixed_precision: str | None = mixed_precision_setting()
    device: str | None = device_setting()
    keep_checkpoints: int = keep_checkpoints_setting()
    warmup_steps: int = warmup_steps_setting(200, cli="")
    checkpoint_every: int = every_setting(500, "checkpoints", cli="")
    validate_every: int = every_setting(500, "validations", cli="")
    segment_frames: int = setting(48, "Frames of each training segment.", low=1, cli="")
    mel_weight: float = setting(1.0, "Weight of the log-mel L1 loss.", low=0, cli="")
    stft_weight: float = setting(1.0, "Weight of the multi-resolution STFT loss.", low=0, cli="")
    adversarial_weight: float = setting(0.0, "Weight of the discriminator's hinge loss (0: no discriminator).",
                                        low=0, cli="")
    feature_weight: float = setting(2.0, "Weight of the discriminator's feature matching.", low=0, cli="")
    adversarial_start: int = setting(0, "Step the adversarial losses start at.", low=0, cli="")
    log: Callable[[str], None] = log_setting()

    positional: ClassVar[tuple[str, ...]] = ("inputs", "out", "config")


class DecoderOptions(Settings):
    """A fine-tune of a model's VAE decoder (training/decoder.py)."""

    model: str = setting(REQUIRED, "A model folder (or bundled name) whose decoder is fine-tuned.", cli="argument")
    dataset: Path = setting(REQUIRED, "The dataset that trains and validates.", cli="argument")
    out: Path = setting(REQUIRED, "Output folder: the model with the new decoder.", cli="-o/--out")
    extra: tuple[Path, ...] = setting((), "Datasets whose training tiles are added.")
    max_steps: int = max_steps_setting(2000)
    batch_size: int = setting(8, "Tiles per step.", low=1, high=MAX_BATCH)
    crop_width: int = setting(256, "Crop width in pixels, a multiple of 8.", low=8)
    lr: float = lr_setting(2e-4)
    lr_schedule: str = lr_schedule_setting("cosine-to-tenth")
    sc_weight: float = setting(1.0, "Weight of the spectral convergence term.", low=0)
    seed: int = seed_setting()
    checkpoint_every: int = every_setting(250, "checkpoints")
    validate_every: int = every_setting(250, "validations")
    keep_checkpoints: int = keep_checkpoints_setting(2)
    resume: str | None = resume_setting("A checkpoint folder, or latest.")
    device: str | None = device_setting()

    positional: ClassVar[tuple[str, ...]] = ("model", "dataset", "out")

    _crop_width = field_validator("crop_width")(classmethod(_multiple_of_8))


# ---- prepare ---------------------------------------------------------------------------------------------------


class PrepareOptions(TileSettings):
    """A `spectrodiff prepare` run: how a catalogue becomes tiles (TileSettings, `slice`'s too) and splits."""

    catalogue: Path = setting(REQUIRED, "Folder of audio (wav, flac, ogg, mp3), searched recursively; captions from "
                              "<stem>.txt, captions.csv/metadata.jsonl or folders.", cli="argument")
    out: Path = setting(REQUIRED, "Dataset folder; running again resumes and updates it.", cli="-o/--out")
    base: str | None = base_setting("Model the tiles are for, whose spectrogram parameters they take (mel bins, "
                                    "stereo, columns per beat; without it Riffusion's, and the options')")
    min_rms: float = setting(-50.0, "Drop tiles quieter than this RMS level, dBFS.")
    workers: int | None = setting(None, "Files tiled in parallel (default: min(4, CPUs)).", low=1)
    validation: float = setting(0.1, "Fraction of tracks held out for validation, in [0, 1).", low=0)
    seed: int = setting(0, "Seed of the train/validation split.")
    columns_per_beat: int | None = setting(None, "Beat-time tiles: image columns a quarter-note beat, each file at "
                                           "its own tempo (the reference catalogue's labels, a tempo.csv or "
                                           "<file>.tempo.json, else tracked); tiles start on bar lines.",
                                           low=1, high=256)
    beats: int = setting(16, "Beat-time tiles: a tile's length in beats.", low=1, high=1024)
    unsteady: Literal["skip", "clock"] = setting("skip", "Beat-time tiles: files with no steady beat are skipped, "
                                                 "or tiled in clock time; listed either way.")
    strict_tempo: bool = setting(False, "Beat-time tiles: a file whose tracked tempo is ambiguous (half or double "
                                 "nearly as likely) is an error naming both tempi, not tiled at the tracker's "
                                 "guess; give its tempo in tempo.csv or <file>.tempo.json.")

    @field_validator("validation")
    @classmethod
    def _a_fraction(cls, value: float) -> float:
        if value >= 1:
            refuse(f"must be a fraction in [0, 1), got {number_words(value)}")
        return value

