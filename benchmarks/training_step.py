"""Where a UNet training step's time goes with a frozen VAE: encoding the batch's tiles against the whole step
(encoding, the UNet's forward and backward, the optimizer), for mini.yaml's UNet over the bundled mini VAE on
512 x 256 crops, float32. The reason `train` encodes a frozen VAE's tiles once (`latents: mean`).

    python benchmarks/training_step.py [--batch 4] [--runs 4]
"""

import argparse
import time
from pathlib import Path

import torch
from common import machine_header
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from spectrodiff.bundled import MODELS_DIR
from spectrodiff.generation.plans import load_yaml
from spectrodiff.training.train import diffusion_loss, encode_latents

CONFIG = Path(__file__).resolve().parent.parent / "training" / "configs" / "mini.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    print(machine_header())
    config, _ = load_yaml(CONFIG)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config["unet"])
    vae = AutoencoderKL.from_pretrained(MODELS_DIR / "mini", subfolder="vae", dtype=torch.float32)
    vae.requires_grad_(False)
    noise_scheduler = DDPMScheduler(**config["scheduler"])
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    pixels = torch.rand(args.batch, 3, 512, 256) * 2 - 1
    text = torch.randn(args.batch, 16, unet.config.cross_attention_dim)
    generator = torch.Generator().manual_seed(0)
    encoding = step = 0.0
    for run in range(args.runs + 1):  # the first is a warm-up
        began = time.perf_counter()
        with torch.no_grad():
            latents, _ = encode_latents(vae, pixels, generator)
        encoded = time.perf_counter()
        diffusion_loss(unet, noise_scheduler, latents, text, generator).backward()
        optimizer.step()
        optimizer.zero_grad()
        if run:
            encoding, step = encoding + encoded - began, step + time.perf_counter() - began
    print(f"batch {args.batch}: encoding {encoding / args.runs * 1000:.0f} ms of a {step / args.runs * 1000:.0f} ms "
          f"step ({encoding / step:.0%})")


if __name__ == "__main__":
    main()
