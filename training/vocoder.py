"""Train a neural vocoder (`spectrodiff.generation.components.VocoderComponent`) on audio: `spectrodiff train-vocoder`.

What an output folder holds:

    OUT/config.json, diffusion_pytorch_model.safetensors   the vocoder (`--vocoder OUT` on any generating command)
    OUT/run.json                                          the config and inputs of the run (a resumed run must match)
    OUT/train_log.csv                                     step, lr, loss, mel, stft, adversarial, val_stft, elapsed_s
    OUT/tensorboard/                                      the same figures as TensorBoard event files
    OUT/checkpoints/step-NNNNNN/                          weights (safetensors), optimizer states, step
    OUT/validation/step-NNNNNN/<clip>.wav                 the validation clips as the vocoder renders them

The loss is the benchmark's multi-resolution STFT distance (docs/measures.md) plus an L1 distance of log mels
in the vocoder's own parameters; with `adversarial_weight` above 0, a multi-resolution spectrogram discriminator
(UnivNet's, as Vocos uses) adds hinge and feature-matching losses from `adversarial_start` on. The loop is
`training/core.py`'s; as with `train`, resuming is exact: step s's segments come from a generator seeded by
(seed, s, process).
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spectrodiff.codec.audio import find_audio, load_audio, save_audio
from spectrodiff.codec.mel import waveform_to_mel
from spectrodiff.codec.params import SpectrogramParams
from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.components import VocoderComponent
from spectrodiff.generation.plans import load_yaml
from spectrodiff.metrics import STFT_SIZES, multi_resolution_stft_distance, multi_resolution_stft_loss, stft_magnitude
from spectrodiff.vocoding.vocoder import MEL_FLOOR

from .core import Task, Update, check_run, step_generator, train_loop
from .options import VOCODER_CONFIG_FIELDS, Schedule, VocoderOptions, with_config

LOG_COLUMNS = ("step", "lr", "loss", "mel", "stft", "adversarial", "val_stft", "elapsed_s")
CONFIG_KEYS = {"spectrogram", "vocoder", "training"}
RESUMABLE_CHANGES = ("max_steps", "checkpoint_every", "validate_every")
VALIDATION_SECONDS = 5.12
VALIDATION_CLIPS = 8
SILENCE_PEAK = 1e-4
MIN_SECONDS = 0.1


@dataclass
class Clip:
    name: str
    audio: np.ndarray  # (N,) float32 mono
    rate: int


# ---- config and data -----------------------------------------------------------------------------------------


def load_vocoder_config(path: Path | None) -> dict:
    """The YAML config (or {}), top-level keys checked, and the `training:` section's against VOCODER_CONFIG_FIELDS
    (its values are checked with the command line's, by VocoderOptions)."""
    if path is None:
        return {}
    if not Path(path).is_file():
        raise SpectrodiffError(f"no such config file: {path}")
    config = load_yaml(path)[0] or {}
    if not isinstance(config, dict):
        raise SpectrodiffError(f"{path}: expected a mapping of {', '.join(sorted(CONFIG_KEYS))}")
    training = config.get("training") or {}
    unknown = set(config) - CONFIG_KEYS | (set(training) - set(VOCODER_CONFIG_FIELDS) if isinstance(training, dict)
                                           else set())
    if unknown:
        raise SpectrodiffError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
    return config


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


# ---- training ------------------------------------------------------------------------------------------------


def log_mel(audio: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    """`(B, N)` -> `(B, n_mels, T)` log of the Riffusion-scale mel, floored as the vocoder's input is."""
    return torch.log(waveform_to_mel(audio, params).clamp(min=MEL_FLOOR))


def validate(vocoder: VocoderComponent, clips: list[Clip], params: SpectrogramParams, folder: Path | None) -> float:
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


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """`module`'s parameters gather no gradients inside (the discriminator while it judges the generator)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class VocoderTask(Task):
    """The vocoder (and with `adversarial_weight` its discriminator, updated first each step) on audio segments."""

    columns = LOG_COLUMNS
    validation_column = "val_stft"

    def __init__(self, opts: VocoderOptions, model_config: dict, params: SpectrogramParams, train_clips: list[Clip],
                 val_clips: list[Clip]):
        self.opts, self.params, self.out = opts, params, Path(opts.out)
        self.train_clips, self.val_clips = train_clips, val_clips
        self.lengths = np.array([len(c.audio) for c in train_clips])
        self.samples = opts.segment_frames * params.hop_length
        torch.manual_seed(opts.seed)
        try:
            self.vocoder = VocoderComponent(**model_config)
        except TypeError as exc:
            raise SpectrodiffError(f"{opts.config}: bad vocoder section ({exc})") from None
        self.adversarial = opts.adversarial_weight > 0
        self.discriminator = MultiResolutionDiscriminator() if self.adversarial else None

    def prepare(self, accelerator) -> list[Update]:
        self.accelerator, lr = accelerator, self.opts.lr
        optimizer = torch.optim.AdamW(self.vocoder.parameters(), lr=lr, betas=(0.8, 0.9))
        self.wrapped, optimizer = accelerator.prepare(self.vocoder, optimizer)
        updates = [Update(optimizer, [self.wrapped], list(self.vocoder.parameters()), self.generator_loss, clip=10.0)]
        if self.adversarial:
            d_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=lr, betas=(0.8, 0.9))
            self.judge, d_optimizer = accelerator.prepare(self.discriminator, d_optimizer)
            updates.insert(0, Update(d_optimizer, [self.judge], list(self.discriminator.parameters()),
                                     self.discriminator_loss, clip=10.0, active=self.adversarial_at))
        self.vocoder.train()
        return updates

    def trainable(self) -> dict[str, nn.Module]:
        return {"vocoder": self.vocoder} | ({"discriminator": self.discriminator} if self.adversarial else {})

    def adversarial_at(self, step: int) -> bool:
        return self.adversarial and step >= self.opts.adversarial_start

    def batch(self, step: int, micro: int, rank: int, world: int) -> dict:
        generator = step_generator(self.opts.seed, 5, step, rank)
        target = segment_batch(self.train_clips, self.lengths, self.samples, self.opts.batch_size,
                               generator).to(self.accelerator.device)
        mel = waveform_to_mel(target, self.params)
        return {"step": step, "target": target, "mel": mel, "audio": self.wrapped(mel).float()}

    def discriminator_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Hinge loss of the discriminator on real segments and the vocoder's (detached)."""
        loss = discriminator_loss(self.judge(batch["target"]), self.judge(batch["audio"].detach()))
        return loss, {}

    def generator_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Log-mel L1 and multi-resolution STFT distances, and once adversarial, hinge and feature matching
        against the discriminator (frozen: this loss trains the vocoder alone)."""
        s, target, audio = self.opts, batch["target"], batch["audio"]
        mel_loss = F.l1_loss(log_mel(audio, self.params), torch.log(batch["mel"].float().clamp(min=MEL_FLOOR)))
        stft_loss = multi_resolution_stft_loss(target, audio)
        objective = s.mel_weight * mel_loss + s.stft_weight * stft_loss
        parts = {"mel": float(mel_loss.detach()), "stft": float(stft_loss.detach())}
        if self.adversarial_at(batch["step"]):
            with frozen(self.discriminator):
                adversarial, matching = generator_losses(self.discriminator(target), self.discriminator(audio))
            objective = objective + s.adversarial_weight * adversarial + s.feature_weight * matching
            parts["adversarial"] = float(adversarial.detach())
        return objective, {"loss": float(objective.detach())} | parts

    def validate(self, step: int) -> float:
        self.vocoder.eval()
        value = validate(self.vocoder, self.val_clips, self.params, self.out / "validation" / f"step-{step:06d}")
        self.vocoder.train()
        return value

    def finish(self) -> None:
        self.vocoder.eval().save_pretrained(self.out, safe_serialization=True)


def train_vocoder(opts: VocoderOptions) -> dict:
    """Run (or resume) a vocoder training; returns steps, last loss, validation distances and OUT. Options the caller
    did not set take the config's `training:` values, then their defaults."""
    config = load_vocoder_config(opts.config)
    opts = with_config(opts, config.get("training") or {})
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
              "training": {k: getattr(opts, k) for k in VOCODER_CONFIG_FIELDS if k not in RESUMABLE_CHANGES}}
    check_run(out, opts.resume, record)  # before the audio loads
    clips = load_clips(files, params.sample_rate, opts.log)
    train_clips, val_clips = split_clips(clips)
    opts.log(f"{len(train_clips)} training and {len(val_clips)} validation files, "
             f"{sum(len(c.audio) for c in train_clips) / params.sample_rate / 60:.1f} min of training audio")
    task = VocoderTask(opts, model_config, params, train_clips, val_clips)
    summary = train_loop(task, Schedule.of(opts), out, opts.resume, record)
    return summary | {"val_stft": summary["val"]}
