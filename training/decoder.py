"""Fine-tune a model's VAE decoder alone, so that the UNet's latent space stays exactly as it was trained.

    python -m spectrodiff.training.decoder runs/mini data/mini-dataset [MORE_DATASETS...] -o runs/mini-decoder \
        [--resume latest]

Stability did the same for Stable Diffusion (the `ft-MSE` VAE: encoder frozen, decoder trained further): the
encoder, and so every latent the UNet learned from, is untouched, while the decoder learns to render those latents
more faithfully. Datasets after the first add their training tiles (e.g. real recordings, for timbres the
catalogue lacks); validation is the first one's. The loss is the pixel MSE plus the magnitudes' spectral
convergence (as the VAE stage's). OUT gets the whole model with the new decoder (a diffusers folder), its
checkpoints (`--resume latest`), `train_log.csv` (loss = training objective, val_loss = mean mel spectral
convergence of the validation tiles) and TensorBoard logs.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.metrics import magnitude_convergence

from .train import (
    TrainLog,
    checkpoint_dirs,
    encode_dataset,
    load_checkpoint,
    load_dataset,
    sample_indices,
    save_checkpoint,
    step_generator,
    tile_pixels,
)


@dataclass
class DecoderOptions:
    model: str
    dataset: Path
    out: Path
    extra: tuple[Path, ...] = ()  # datasets whose training tiles are added
    max_steps: int = 2000
    batch_size: int = 8
    crop_width: int = 256  # pixels, a multiple of 8
    lr: float = 2e-4  # cosine decay to a tenth
    sc_weight: float = 1.0
    seed: int = 0
    checkpoint_every: int = 250
    validate_every: int = 250
    resume: str | None = None  # "latest"


def check_options(opts: DecoderOptions) -> None:
    for name in ("max_steps", "batch_size", "checkpoint_every", "validate_every"):
        if getattr(opts, name) < 1:
            raise SpectrodiffError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(opts, name)}")
    if opts.crop_width < 8 or opts.crop_width % 8:
        raise SpectrodiffError(f"--crop-width must be a positive multiple of 8 pixels, got {opts.crop_width}")
    if not 0 < opts.lr <= 1:
        raise SpectrodiffError(f"--lr must be in (0, 1], got {opts.lr}")
    if opts.resume not in (None, "latest"):
        raise SpectrodiffError(f"--resume takes 'latest', got {opts.resume!r}")


def aligned_crops(pixels: torch.Tensor, latents: torch.Tensor, columns: int, factor: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random time crops of `(B, 3, H, W)` uint8 tiles and their `(B, C, H/f, W/f)` latents at the same place:
    `(B, 3, H, columns * f)` pixels in [-1, 1] and `(B, C, H/f, columns)` latents."""
    starts = torch.randint(0, latents.shape[-1] - columns + 1, (len(latents),), generator=generator).tolist()
    crops = torch.stack([p[..., s * factor: (s + columns) * factor] for p, s in zip(pixels, starts, strict=True)])
    return crops.float() / 127.5 - 1, torch.stack([z[..., s: s + columns] for z, s in zip(latents, starts,
                                                                                              strict=True)])


@torch.no_grad()
def validation_convergence(vae, pixels: torch.Tensor, latents: torch.Tensor, power: float) -> float:
    """Mean spectral convergence of the magnitudes over whole `(N, 3, H, W)` uint8 tiles decoded from `latents`."""
    values = []
    for tile, latent in zip(pixels, latents, strict=True):
        decoded = vae.decode(latent[None] / vae.config.scaling_factor).sample
        values.append(float(magnitude_convergence(decoded, tile[None].float() / 127.5 - 1, power)))
    return sum(values) / len(values)


def _tile_width(dataset) -> int:
    with Image.open(dataset.train[0]["path"]) as image:
        return image.width


def finetune_decoder(opts: DecoderOptions, log=print) -> dict:
    """Train the decoder of `opts.model` on `opts.dataset` (and `opts.extra`'s training tiles); returns steps, last
    loss and the validation SCs."""
    check_options(opts)
    dataset, extras = load_dataset(opts.dataset), [load_dataset(path) for path in opts.extra]
    pipe = SpectrodiffPipeline.load(opts.model)
    for data in (dataset, *extras):
        if data.params.num_frequencies != pipe.spectrogram.num_frequencies:
            raise SpectrodiffError(f"the dataset {data.root} has {data.params.num_frequencies} mel bins, the model "
                                   f"{pipe.spectrogram.num_frequencies}: prepare it with the model's parameters")
    for extra in extras:  # the tiles are stacked whole
        if _tile_width(extra) != _tile_width(dataset):
            raise SpectrodiffError(f"the dataset {extra.root} has tiles {_tile_width(extra)} columns wide, "
                                   f"{dataset.root} {_tile_width(dataset)}: prepare it with the same --seconds")
    train = dataset.train + [tile for extra in extras for tile in extra.train]
    out = Path(opts.out)
    resume = checkpoint_dirs(out)[-1] if opts.resume and checkpoint_dirs(out) else None
    if not opts.resume and checkpoint_dirs(out):
        raise SpectrodiffError(f"{out} already has checkpoints: pass --resume latest, or choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    vae, factor, power = pipe.vae, pipe.vae_scale_factor, dataset.params.power_for_image
    vae.requires_grad_(False)
    trainable = [vae.decoder, vae.post_quant_conv]
    for module in trainable:
        module.requires_grad_(True)
    log(f"encoding {len(train) + len(dataset.validation)} tiles once (the encoder is frozen)")
    validation = dataset.validation or dataset.train[:16]
    generator = torch.Generator()
    pixels = torch.cat([tile_pixels(train[i: i + 64], None, generator).add(1).mul(127.5).round()
                        .to(torch.uint8) for i in range(0, len(train), 64)])
    val_pixels = tile_pixels(validation, None, generator).add(1).mul(127.5).round().to(torch.uint8)
    latents = encode_dataset(vae, train, "cpu", torch.float32)
    val_latents = encode_dataset(vae, validation, "cpu", torch.float32)
    columns = min(opts.crop_width // factor, latents.shape[-1])

    params = [p for module in trainable for p in module.parameters()]
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=1e-2)
    modules = {"vae": vae}
    step = load_checkpoint(resume, modules, optimizer, None) if resume else 0
    if resume:
        log(f"resuming from {resume} (step {step})")
    board = TrainLog(out, step)
    vals = []
    if step == 0:
        vals.append(validation_convergence(vae.eval(), val_pixels, val_latents, power))
        board.row(step=0, lr=opts.lr, val_loss=f"{vals[-1]:.6f}", elapsed_s="0.0")
        log(f"step 0 validation SC {vals[-1]:.4f}")
    began, loss = time.monotonic(), None
    while step < opts.max_steps:
        lr = opts.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / opts.max_steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator = step_generator(opts.seed, 3, step)
        indices = torch.tensor(sample_indices(len(latents), opts.seed, step * opts.batch_size, opts.batch_size))
        target, latent = aligned_crops(pixels[indices], latents[indices], columns, factor, generator)
        vae.train()
        recon = vae.decode(latent / vae.config.scaling_factor).sample
        objective = F.mse_loss(recon, target) + opts.sc_weight * magnitude_convergence(recon, target, power)
        objective.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step, loss = step + 1, float(objective.detach())
        val = None
        if step % opts.validate_every == 0 or step == opts.max_steps:
            val = validation_convergence(vae.eval(), val_pixels, val_latents, power)
            vals.append(val)
        board.row(step=step, lr=f"{lr:.3g}", loss=f"{loss:.6f}", val_loss=None if val is None else f"{val:.6f}",
                  elapsed_s=f"{time.monotonic() - began:.1f}")
        if step % 50 == 0 or val is not None:
            log(f"step {step}/{opts.max_steps} loss {loss:.4f}" + (f" validation SC {val:.4f}" if val else ""))
        if step % opts.checkpoint_every == 0 or step == opts.max_steps:
            save_checkpoint(out, step, modules, optimizer, None, keep=2)
    board.close()
    vae.eval()
    pipe.save_pretrained(out, safe_serialization=True)
    return {"steps": step, "last_loss": loss, "val_sc": vals, "out": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model folder (or bundled name) whose decoder is fine-tuned")
    parser.add_argument("datasets", type=Path, nargs="+", metavar="DATASET",
                        help="datasets made by `spectrodiff prepare` with the model's params; the first validates")
    parser.add_argument("-o", "--out", type=Path, required=True)
    for name, default in vars(DecoderOptions("", Path(), Path())).items():
        if name not in ("model", "dataset", "out", "extra"):
            kind = type(default) if default is not None else str
            parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default)
    args = vars(parser.parse_args())
    first, *extra = args.pop("datasets")
    opts = DecoderOptions(**args, dataset=first, extra=tuple(extra))
    try:
        summary = finetune_decoder(opts)
    except SpectrodiffError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{summary['out']}: {summary['steps']} steps, validation SC {summary['val_sc'][-1]:.4f}")


if __name__ == "__main__":
    main()
