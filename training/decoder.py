"""Fine-tune a model's VAE decoder alone, so that the UNet's latent space stays exactly as it was trained.

    python -m spectrodiff.training.decoder runs/mini data/mini-dataset [MORE_DATASETS...] -o runs/mini-decoder \
        [--resume latest]

Stability did the same for Stable Diffusion (the `ft-MSE` VAE: encoder frozen, decoder trained further): the
encoder, and so every latent the UNet learned from, is untouched, while the decoder learns to render those latents
more faithfully. Datasets after the first add their training tiles (e.g. real recordings, for timbres the
catalogue lacks); validation is the first one's. The loss is the pixel MSE plus the magnitudes' spectral
convergence (as the VAE stage's). OUT gets the whole model with the new decoder (a diffusers folder), its
checkpoints (`--resume latest`), `train_log.csv` (loss = training objective, val_loss = mean mel spectral
convergence of the validation tiles) and TensorBoard logs. The loop is `training/core.py`'s (accelerate).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from PIL import Image

from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.pipeline import SpectrodiffPipeline, magnitude_convergence

from .core import Task, Update, check_run, step_generator, train_loop
from .options import DecoderOptions, Schedule
from .train import encode_dataset, load_dataset, sample_indices, tile_pixels


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


class DecoderObjective(torch.nn.Module):
    """The decoder's loss as a module accelerate can wrap: `(B, C, h, w)` latents and their `(B, 3, H, W)` target
    pixels in [-1, 1] -> the pixel MSE plus `sc_weight` times the magnitudes' spectral convergence."""

    def __init__(self, vae, sc_weight: float, power: float):
        super().__init__()
        self.vae, self.sc_weight, self.power = vae, sc_weight, power

    def forward(self, latents: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        recon = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return F.mse_loss(recon, target) + self.sc_weight * magnitude_convergence(recon, target, self.power)


class DecoderTask(Task):
    """The VAE's decoder (and post-quant conv) on latents its frozen encoder made once."""

    def __init__(self, opts: DecoderOptions, pipe: SpectrodiffPipeline, train: list[dict], validation: list[dict],
                 power: float, log):
        self.opts, self.pipe, self.power = opts, pipe, power
        vae, self.factor = pipe.vae, pipe.vae_scale_factor
        vae.requires_grad_(False)
        for module in (vae.decoder, vae.post_quant_conv):
            module.requires_grad_(True)
        log(f"encoding {len(train) + len(validation)} tiles once (the encoder is frozen)")
        generator = torch.Generator()
        self.pixels = torch.cat([_uint8(tile_pixels(train[i: i + 64], None, generator))
                                 for i in range(0, len(train), 64)])
        self.val_pixels = _uint8(tile_pixels(validation, None, generator))
        self.latents = encode_dataset(vae, train, "cpu", torch.float32)
        self.val_latents = encode_dataset(vae, validation, "cpu", torch.float32)
        self.crop_columns = min(opts.crop_width // self.factor, self.latents.shape[-1])

    def prepare(self, accelerator) -> list[Update]:
        self.device = accelerator.device
        params = [p for p in self.pipe.vae.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.opts.lr, weight_decay=1e-2)
        objective = DecoderObjective(self.pipe.vae, self.opts.sc_weight, self.power)
        self.objective, optimizer = accelerator.prepare(objective, optimizer)
        return [Update(optimizer, [self.objective], params, self.loss)]

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.pipe.vae}

    def batch(self, step: int, micro: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
        opts = self.opts
        generator = step_generator(opts.seed, 3, step, rank)
        start = (step * world + rank) * opts.batch_size
        indices = torch.tensor(sample_indices(len(self.latents), opts.seed, start, opts.batch_size))
        target, latent = aligned_crops(self.pixels[indices], self.latents[indices], self.crop_columns, self.factor,
                                       generator)
        return latent.to(self.device), target.to(self.device)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        self.pipe.vae.train()
        objective = self.objective(*batch)
        return objective, {"loss": float(objective.detach())}

    def validate(self, step: int) -> float:
        vae = self.pipe.vae.eval()
        return validation_convergence(vae, self.val_pixels.to(self.device), self.val_latents.to(self.device),
                                      self.power)

    def finish(self) -> None:
        self.pipe.vae.to("cpu").eval()
        self.pipe.save_pretrained(self.opts.out, safe_serialization=True)


def _uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Float pixels in [-1, 1] -> uint8 (a quarter of the memory for tiles held through the run)."""
    return pixels.add(1).mul(127.5).round().to(torch.uint8)


def finetune_decoder(opts: DecoderOptions, log=print) -> dict:
    """Train the decoder of `opts.model` on `opts.dataset` (and `opts.extra`'s training tiles); returns steps, last
    loss and the validation SCs."""
    record = {"model": opts.model, "datasets": [str(p) for p in (opts.dataset, *opts.extra)],
              **{k: getattr(opts, k) for k in ("batch_size", "crop_width", "sc_weight", "seed")}}
    check_run(opts.out, opts.resume, record)  # before the model loads
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
    task = DecoderTask(opts, pipe, train, dataset.validation or dataset.train[:16], dataset.params.power_for_image,
                       log)
    summary = train_loop(task, Schedule.of(opts, log=log), opts.out, opts.resume, record)
    return summary | {"val_sc": summary["val"]}


if __name__ == "__main__":
    from spectrodiff.cli import main

    sys.exit(main(["dev", "decoder", *sys.argv[1:]]))
