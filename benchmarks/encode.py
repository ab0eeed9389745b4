"""Refined encodings: how close the VAE renders held-out tiles after N refinement steps, and what a step costs.

    python benchmarks/encode.py [--model mini] [--steps 0 5 20 60] [--per-style 2]

For the model: the held-out timidity tiles' mean mel spectral convergence after encode (+ N `refine_latents`
steps) + decode, the seconds a tile's encoding takes, and how far the steps moved the latents (RMS, in units of
the latents' spread). Then the cost of one step on a randomly initialised Stable Diffusion-size VAE (Riffusion's)
at one 512 x 512 tile, against a plain decode: the reason models default to no refinement unless they say so.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_header
from diffusers import AutoencoderKL
from mini import heldout_tiles, round_trip

from spectrodiff import SpectrogramParams
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.testing import build_tiny_pipeline


def refinement_rows(pipe, tiles: list[tuple[torch.Tensor, float]], steps: list[int]) -> list[tuple]:
    """(steps, mean mel SC, seconds a tile, RMS latent move / latent std) for each step count."""
    plain = [pipe.encode_image(pixels, 0) for pixels, _ in tiles]
    rows = []
    for count in steps:
        results = [round_trip(pipe, pixels, max_value, count) for pixels, max_value in tiles]
        moves = [float((latents - base).pow(2).mean().sqrt() / base.std())
                 for (_, latents, _), base in zip(results, plain, strict=True)]
        rows.append((count, np.mean([r[0] for r in results]), np.mean([r[2] for r in results]), np.mean(moves)))
    return rows


def stable_diffusion_step_cost() -> dict:
    """Seconds of a plain decode and of one refinement step, and the process's peak RSS after the step, for an
    SD 1.x-size VAE (random weights) at Riffusion's 512 x 512 tile."""
    torch.manual_seed(0)
    pipe = build_tiny_pipeline()
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512).eval()
    pipe.register_modules(vae=vae, spectrogram=SpectrogramParams())
    latents = torch.randn(1, 4, 64, 64)
    pixels = torch.rand(1, 3, 512, 512) * 2 - 1
    began = time.perf_counter()
    next(pipe.decode_latents(latents))
    decode_s = time.perf_counter() - began
    began = time.perf_counter()
    pipe.refine_latents(latents, pixels, 1)
    step_s = time.perf_counter() - began
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"decode_s": decode_s, "step_s": step_s, "rss_mb": rss_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini")
    parser.add_argument("--heldout", type=Path, default=Path("data/heldout"))
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 5, 20, 60])
    parser.add_argument("--per-style", type=int, default=2)
    args = parser.parse_args()
    if not args.heldout.is_dir():
        sys.exit(f"no held-out render at {args.heldout}: run `make catalogue` first")
    print(machine_header())
    pipe = SpectrodiffPipeline.load(args.model)
    tiles = heldout_tiles(pipe, args.heldout, args.per_style)
    print(f"model: {args.model} (its default: {pipe.config.encode_steps} steps), {len(tiles)} held-out tiles")
    print(f"{'steps':>5} {'mel SC':>8} {'s a tile':>9} {'latent move':>12}")
    for count, value, seconds, move in refinement_rows(pipe, tiles, args.steps):
        print(f"{count:>5} {value:>8.3f} {seconds:>9.2f} {move:>12.3f}")
    cost = stable_diffusion_step_cost()
    print(f"SD-size VAE, one 512 x 512 tile: decode {cost['decode_s']:.1f} s, one refinement step "
          f"{cost['step_s']:.1f} s, process peak RSS {cost['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
