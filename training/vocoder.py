"""Train a neural vocoder (`spectrodiff.generation.components.NeuralVocoder`) on audio: `spectrodiff train-vocoder`.

What an output folder holds:

    OUT/config.json, diffusion_pytorch_model.safetensors   the vocoder (`--vocoder OUT` on any generating command)
    OUT/run.json                                          the config and inputs of the run (a resumed run must match)
    OUT/train_log.csv                                     step, lr, loss, mel, stft, adversarial, val_stft, elapsed_s
    OUT/tensorboard/                                      the same figures as TensorBoard event files
    OUT/checkpoints/step-NNNNNN/                          weights (safetensors), optimizer state, step
    OUT/validation/step-NNNNNN/<clip>.wav                 the validation clips as the vocoder renders them

The loss is the benchmark's multi-resolution STFT distance (DESIGN.md section 5) plus an L1 distance of log mels
in the vocoder's own parameters; with `adversarial_weight` above 0, a multi-resolution spectrogram discriminator
(UnivNet's, as Vocos uses) adds hinge and feature-matching losses from `adversarial_start` on. Like `train`,
resuming is exact: step s's segments come from a generator seeded by (seed, s, process).
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from spectrodiff.codec.audio import find_audio, load_audio, save_audio
from spectrodiff.codec.mel import waveform_to_mel
from spectrodiff.codec.params import SpectrogramParams
from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.components import NeuralVocoder
from spectrodiff.metrics import STFT_SIZES, multi_resolution_stft_distance, multi_resolution_stft_loss, stft_magnitude
from spectrodiff.vocoding.vocoder import MEL_FLOOR

from .train import TrainLog, checkpoint_dirs, load_checkpoint, save_checkpoint, step_generator

LOG_COLUMNS = ("step", "lr", "loss", "mel", "stft", "adversarial", "val_stft", "elapsed_s")
CONFIG_KEYS = {"spectrogram", "vocoder", "training"}
TRAINING_DEFAULTS = {
    "max_steps": 20000, "batch_size": 16, "lr": 5e-4, "warmup_steps": 200, "segment_frames": 48,
    "checkpoint_every": 500, "validate_every": 500, "mel_weight": 1.0, "stft_weight": 1.0,
    "adversarial_weight": 0.0, "feature_weight": 2.0, "adversarial_start": 0,
}
RESUMABLE_CHANGES = ("max_steps", "checkpoint_every", "validate_every")
VALIDATION_SECONDS = 5.12
VALIDATION_CLIPS = 8
SILENCE_PEAK = 1e-4
MIN_SECONDS = 0.1


@dataclass
class VocoderOptions:
    """A run. `None` fields take the config's `training:` value, then TRAINING_DEFAULTS."""

    inputs: list[Path]
    out: Path
    config: Path | None = None
    resume: str | None = None  # "latest"
    max_steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    mixed_precision: str | None = None
    device: str | None = None
    keep_checkpoints: int = 3
    log: Callable[[str], None] = field(default=print, repr=False)


@dataclass
class Clip:
    name: str
    audio: np.ndarray  # (N,) float32 mono
    rate: int


# ---- config and data -----------------------------------------------------------------------------------------


def load_vocoder_config(path: Path | None) -> dict:
    """The YAML config (or {}), top-level keys checked; `training:` keys checked against TRAINING_DEFAULTS."""
    if path is None:
        return {}
    if not Path(path).is_file():
        raise SpectrodiffError(f"no such config file: {path}")
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpectrodiffError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise SpectrodiffError(f"{path}: expected a mapping of {', '.join(sorted(CONFIG_KEYS))}")
    unknown = set(config) - CONFIG_KEYS | set(config.get("training") or {}) - set(TRAINING_DEFAULTS)
    if unknown:
        raise SpectrodiffError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
    return config


def resolve_training(opts: VocoderOptions, config: dict) -> dict:
    """The run's training settings: command line over config over defaults, ranges checked."""
    settings = TRAINING_DEFAULTS | (config.get("training") or {})
    for name in ("max_steps", "batch_size", "lr"):
        if getattr(opts, name) is not None:
            settings[name] = getattr(opts, name)
    for name in ("max_steps", "batch_size", "segment_frames", "checkpoint_every", "validate_every"):
        if not isinstance(settings[name], int) or settings[name] < 1:
            raise SpectrodiffError(f"{name} must be a positive integer, got {settings[name]!r}")
    if not (isinstance(settings["lr"], int | float) and 0 < settings["lr"] <= 1 and math.isfinite(settings["lr"])):
        raise SpectrodiffError(f"lr must be in (0, 1], got {settings['lr']}")
    for name in ("mel_weight", "stft_weight", "adversarial_weight", "feature_weight", "warmup_steps",
                 "adversarial_start"):
        if not isinstance(settings[name], int | float) or settings[name] < 0:
            raise SpectrodiffError(f"{name} must be a number >= 0, got {settings[name]!r}")
    return settings


def audio_sources(inputs: list[Path]) -> tuple[list[Path], SpectrogramParams | None]:
    """Audio files of the inputs (folders searched recursively; a prepared dataset stands for the catalogue it was
    made from) and the first dataset's SpectrogramParams, if any."""
    files, params = [], None
    for source in inputs:
        source = Path(source)
        manifest = source / "manifest.json"
        if manifest.is_file():
            try:
                record = json.loads(manifest.read_text())
                params = params or SpectrogramParams.from_dict(record["params"])
                source = Path(record["catalogue"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise SpectrodiffError(f"{manifest}: not a dataset manifest ({exc})") from None
            if not source.is_dir():
                raise SpectrodiffError(f"{manifest} names its audio folder {source}, which is missing")
        files += find_audio(source)
    return files, params


def load_clips(files: list[Path], sample_rate: int, log: Callable[[str], None]) -> list[Clip]:
    """Mono float32 audio of every readable, non-silent file, resampled to `sample_rate`."""
    clips, unreadable, silent = [], [], 0
    for path in files:
        try:
            audio = load_audio(path, sample_rate, "mono")[0]
        except SpectrodiffError:
            unreadable.append(path.name)
            continue
        if audio.size < MIN_SECONDS * sample_rate or np.abs(audio).max() < SILENCE_PEAK:
            silent += 1
            continue
        clips.append(Clip(str(path), audio, sample_rate))
    if unreadable or silent:
        log(f"skipped {len(unreadable)} unreadable file(s) {unreadable[:3]} and {silent} silent or shorter than "
            f"{MIN_SECONDS} s")
    if not clips:
        raise SpectrodiffError(f"none of the {len(files)} audio files is readable and non-silent")
    return clips


def split_clips(clips: list[Clip]) -> tuple[list[Clip], list[Clip]]:
    """(training, validation): up to VALIDATION_CLIPS files of at least a second, chosen by a hash of their names,
    are held out for validation (about one in ten). A single file serves as both."""
    if len(clips) == 1:
        return clips, clips
    ranked = sorted(clips, key=lambda c: (len(c.audio) < c.rate, zlib.crc32(Path(c.name).name.encode())))
    count = min(max(1, len(clips) // 10), VALIDATION_CLIPS)
    held = {id(c) for c in ranked[:count]}
    return [c for c in clips if id(c) not in held], ranked[:count]


def segment_batch(clips: list[Clip], lengths: np.ndarray, samples: int, count: int,
                  generator: torch.Generator) -> torch.Tensor:
    """`(count, samples)` random segments; clips drawn in proportion to their length, short ones zero-padded."""
    weights = torch.from_numpy(np.maximum(lengths, samples).astype(np.float64))
    picks = torch.multinomial(weights, count, replacement=True, generator=generator).tolist()
    out = torch.zeros(count, samples)
    for row, index in enumerate(picks):
        audio = clips[index].audio
        start = int(torch.randint(0, max(len(audio) - samples, 0) + 1, (1,), generator=generator))
        piece = torch.from_numpy(audio[start: start + samples])
        out[row, : len(piece)] = piece
    return out


# ---- the discriminator ---------------------------------------------------------------------------------------


class SpectrogramDiscriminator(nn.Module):
    """UnivNet's discriminator at one STFT resolution: `(B, N)` waveform -> (`(B, 1, F', T)` logits, features)."""

    def __init__(self, n_fft: int, channels: int = 32):
        super().__init__()
        self.n_fft = n_fft
        norm = nn.utils.parametrizations.weight_norm
        self.convs = nn.ModuleList([
            norm(nn.Conv2d(1, channels, (3, 9), padding=(1, 4))),
            *[norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4))) for _ in range(3)],
            norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))),
        ])
        self.post = norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = stft_magnitude(audio, self.n_fft).transpose(-1, -2).unsqueeze(1)  # (B, 1, T, F)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        return self.post(x), features


class MultiResolutionDiscriminator(nn.Module):
    """One SpectrogramDiscriminator per FFT size of the STFT loss."""

    def __init__(self, sizes: tuple[int, ...] = STFT_SIZES):
        super().__init__()
        self.discriminators = nn.ModuleList(SpectrogramDiscriminator(n) for n in sizes)

    def forward(self, audio: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(audio) for d in self.discriminators]


def discriminator_loss(real: list, fake: list) -> torch.Tensor:
    """Hinge loss: real logits pushed above 1, fake below -1."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake, strict=True))


def generator_losses(real: list, fake: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(hinge loss of the fake logits, feature matching: mean L1 between the discriminators' features)."""
    adversarial = sum(F.relu(1 - f).mean() for f, _ in fake)
    matching = sum(F.l1_loss(f, r.detach()) for (_, rs), (_, fs) in zip(real, fake, strict=True)
                   for r, f in zip(rs, fs, strict=True)) / sum(len(fs) for _, fs in fake)
    return adversarial, matching


class Optimizers:
    """Several optimizers saved and restored as one state dict (a checkpoint holds one `optimizer.pt`)."""

    def __init__(self, **optimizers):
        self.optimizers = optimizers

    def state_dict(self) -> dict:
        return {name: o.state_dict() for name, o in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[name])


# ---- training ------------------------------------------------------------------------------------------------


def log_mel(audio: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """`(B, N)` -> `(B, n_mels, T)` log of the Riffusion-scale mel, floored as the vocoder's input is."""
    return torch.log(waveform_to_mel(audio, params).clamp(min=MEL_FLOOR))


def _check_run(out: Path, resume: str | None, record: dict) -> Path | None:
    """The checkpoint to resume from (None: a fresh run); OUT must be new or empty unless resuming its own run."""
    if resume is None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise SpectrodiffError(f"{out} is not an empty folder; pass --resume latest to continue its run, or "
                                   "choose another folder")
        return None
    if resume != "latest":
        raise SpectrodiffError(f"--resume takes 'latest', got {resume!r}")
    run_file = out / "run.json"
    if not run_file.is_file():
        raise SpectrodiffError(f"--resume latest: {out} holds no vocoder run to resume")
    saved = json.loads(run_file.read_text())
    changed = [k for k in record if saved.get(k) != record[k]]
    if changed:
        raise SpectrodiffError(f"--resume: {', '.join(changed)} differ from the run in {out}; use the same ones")
    found = checkpoint_dirs(out)
    return found[-1] if found else None


def validate(vocoder: NeuralVocoder, clips: list[Clip], params: SpectrogramParams, folder: Path | None) -> float:
    """Mean multi-resolution STFT distance of the validation clips (the first 5.12 s of each) as vocoded; writes
    them to `folder` when given."""
    samples = round(VALIDATION_SECONDS * params.sample_rate)
    distances = []
    for clip in clips:
        audio = torch.from_numpy(clip.audio[:samples])
        mel = waveform_to_mel(audio[None].to(vocoder.device), params)
        rendered = vocoder.vocode(mel)[0]
        distances.append(multi_resolution_stft_distance(audio, rendered))
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            save_audio(folder / f"{Path(clip.name).stem}.wav", rendered.numpy()[None], params.sample_rate,
                       overwrite=True)
    return float(np.mean(distances))


def train_vocoder(opts: VocoderOptions) -> dict:
    """Run (or resume) a vocoder training; returns steps, last loss, validation distances and OUT."""
    from accelerate import Accelerator

    config = load_vocoder_config(opts.config)
    settings = resolve_training(opts, config)
    files, dataset_params = audio_sources(opts.inputs)
    spectrogram = config.get("spectrogram")
    try:
        params = SpectrogramParams.from_dict(spectrogram) if spectrogram else dataset_params or SpectrogramParams()
    except TypeError as exc:
        raise SpectrodiffError(f"{opts.config}: bad spectrogram section ({exc})") from None
    model_config = {"spectrogram": params.to_dict() | {"stereo": False}} | (config.get("vocoder") or {})
    out = Path(opts.out)
    # What a resumed run must repeat (its length and checkpoint cadence may change).
    record = {"inputs": [str(p) for p in opts.inputs], "model": model_config, "seed": opts.seed,
              "training": {k: v for k, v in settings.items() if k not in RESUMABLE_CHANGES}}
    resume = _check_run(out, opts.resume, record)
    clips = load_clips(files, params.sample_rate, opts.log)
    train_clips, val_clips = split_clips(clips)
    opts.log(f"{len(train_clips)} training and {len(val_clips)} validation files, "
             f"{sum(len(c.audio) for c in train_clips) / params.sample_rate / 60:.1f} min of training audio")

    accelerator = Accelerator(mixed_precision=opts.mixed_precision, cpu=opts.device == "cpu")
    torch.manual_seed(opts.seed)
    try:
        vocoder = NeuralVocoder(**model_config)
    except TypeError as exc:
        raise SpectrodiffError(f"{opts.config}: bad vocoder section ({exc})") from None
    adversarial = settings["adversarial_weight"] > 0
    discriminator = MultiResolutionDiscriminator() if adversarial else None
    opt_g = torch.optim.AdamW(vocoder.parameters(), lr=settings["lr"], betas=(0.8, 0.9))
    opt_d = torch.optim.AdamW(discriminator.parameters(), lr=settings["lr"], betas=(0.8, 0.9)) if adversarial \
        else None
    modules = {"vocoder": vocoder} | ({"discriminator": discriminator} if adversarial else {})
    optimizers = Optimizers(generator=opt_g, **({"discriminator": opt_d} if adversarial else {}))
    step = load_checkpoint(resume, modules, optimizers, None) if resume else 0
    if resume:
        opts.log(f"resuming from {resume} (step {step})")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    vocoder, opt_g = accelerator.prepare(vocoder, opt_g)
    if adversarial:
        discriminator, opt_d = accelerator.prepare(discriminator, opt_d)
    log = TrainLog(out, step, LOG_COLUMNS) if accelerator.is_main_process else None
    device, rank = accelerator.device, accelerator.process_index
    lengths = np.array([len(c.audio) for c in train_clips])
    samples = settings["segment_frames"] * params.hop_length
    bare = accelerator.unwrap_model(vocoder)

    def run_validation(at: int) -> float:
        bare.eval()
        value = validate(bare, val_clips, params, out / "validation" / f"step-{at:06d}"
                         if accelerator.is_main_process else None)
        bare.train()
        return value

    began, loss, vals = time.monotonic(), None, []
    if step == 0 and accelerator.is_main_process:
        vals.append(run_validation(0))
        log.row(step=0, lr=settings["lr"], val_stft=f"{vals[-1]:.4f}", elapsed_s="0.0")
    vocoder.train()
    while step < settings["max_steps"]:
        lr = settings["lr"] * min(1.0, (step + 1) / max(settings["warmup_steps"], 1)) * \
            (0.5 * (1 + math.cos(math.pi * step / settings["max_steps"])))
        for optimizer in optimizers.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr
        generator = step_generator(opts.seed, 5, step, rank)
        target = segment_batch(train_clips, lengths, samples, settings["batch_size"], generator).to(device)
        with accelerator.autocast():
            mel = waveform_to_mel(target, params)
            audio = vocoder(mel).float()
        adversarial_now = adversarial and step >= settings["adversarial_start"]
        if adversarial_now:
            loss_d = discriminator_loss(discriminator(target), discriminator(audio.detach()))
            accelerator.backward(loss_d)
            accelerator.clip_grad_norm_(discriminator.parameters(), 10.0)
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
        mel_loss = F.l1_loss(log_mel(audio, params), torch.log(mel.float().clamp(min=MEL_FLOOR)))
        stft_loss = multi_resolution_stft_loss(target, audio)
        objective = settings["mel_weight"] * mel_loss + settings["stft_weight"] * stft_loss
        adv_value = None
        if adversarial_now:
            adv, matching = generator_losses(discriminator(target), discriminator(audio))
            objective = objective + settings["adversarial_weight"] * adv + settings["feature_weight"] * matching
            adv_value = float(adv.detach())
        accelerator.backward(objective)
        accelerator.clip_grad_norm_(vocoder.parameters(), 10.0)
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        step += 1
        loss = float(accelerator.gather(objective.detach()[None]).mean())
        val = None
        if step % settings["validate_every"] == 0 or step == settings["max_steps"]:
            if accelerator.is_main_process:
                val = run_validation(step)
                vals.append(val)
        if accelerator.is_main_process:
            log.row(step=step, lr=f"{lr:.3g}", loss=f"{loss:.5f}", mel=f"{float(mel_loss.detach()):.5f}",
                    stft=f"{float(stft_loss.detach()):.5f}",
                    adversarial=None if adv_value is None else f"{adv_value:.5f}",
                    val_stft=None if val is None else f"{val:.4f}", elapsed_s=f"{time.monotonic() - began:.1f}")
            if step % 50 == 0 or val is not None:
                opts.log(f"step {step}/{settings['max_steps']} loss {loss:.4f}"
                         + (f" validation STFT distance {val:.4f}" if val is not None else ""))
            if step % settings["checkpoint_every"] == 0 or step == settings["max_steps"]:
                save_checkpoint(out, step, {k: accelerator.unwrap_model(m) for k, m in
                                            (("vocoder", vocoder), ("discriminator", discriminator)) if m is not None},
                                optimizers, None, opts.keep_checkpoints)
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        log.close()
        bare.eval().save_pretrained(out, safe_serialization=True)
    accelerator.wait_for_everyone()
    return {"steps": step, "last_loss": loss, "val_stft": vals, "out": str(out)}
