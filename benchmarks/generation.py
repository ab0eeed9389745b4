"""Long-clip generation: real-time factor, time outside the UNet and VAE, and peak memory against clip length.

Targets (generation issue): for a 60 s compose, work outside UNet and VAE calls (text encoding, latent bookkeeping,
pixels -> mel, Griffin-Lim, file I/O) at most 20 % of wall time; peak RSS for 240 s at most 1.2 x that for 30 s.
Each length runs in a fresh process, so peak RSS is its own.

    python benchmarks/generation.py [--model FOLDER] [--steps 25]

Without --model it builds a randomly initialised model in code at Riffusion's 512 mel bins, with a UNet of about
the size a CPU can run in real time (the bundled model's budget); timings depend on the model, so the model is
printed with the figures.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine_header

MEMORY_LENGTHS = (30.0, 240.0)


def build_benchmark_model():
    from diffusers import UNet2DConditionModel

    from spectrodiff import SpectrogramParams
    from spectrodiff.testing import build_tiny_pipeline

    pipe = build_tiny_pipeline(SpectrogramParams())
    pipe.unet = UNet2DConditionModel(
        sample_size=(64, 64), in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(64, 128, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=32)
    return pipe


def timed(module: torch.nn.Module, totals: dict, key: str) -> None:
    """Accumulate wall time spent inside `module`'s forward calls."""
    starts = []
    module.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
    module.register_forward_hook(lambda *_: totals.__setitem__(key, totals[key] + time.perf_counter() - starts.pop()))


def run_child(args) -> None:
    from spectrodiff.generation.jobs import ComposeJob, Keyframe
    from spectrodiff.generation.modes import make
    from spectrodiff.generation.output import Output
    from spectrodiff.generation.pipeline import SpectrodiffPipeline

    torch.set_num_threads(2)
    pipe = SpectrodiffPipeline.load(args.model) if args.model else build_benchmark_model()
    pipe.set_progress_bar_config(disable=True)
    totals = {"unet": 0.0, "vae": 0.0}
    timed(pipe.unet, totals, "unet")
    timed(pipe.vae.decoder, totals, "vae")
    styles = ["jazzy saxophone", "funky piano", "church organ and bells", "electronic beats"]
    keyframes = [Keyframe(styles[i % 4], seed=i, seconds=args.seconds / 4) for i in range(4)]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = make(pipe, ComposeJob(keyframes=keyframes, transition=2.0, steps=args.steps),
                      Output(Path(folder) / "clip.wav"))
        wall = time.perf_counter() - start
    print(json.dumps({"seconds": result.seconds, "wall": wall, **totals,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "unet_params_m": sum(p.numel() for p in pipe.unet.parameters()) / 1e6}))


def child(args, seconds: float) -> dict:
    command = [sys.executable, __file__, "--child", "--seconds", str(seconds), "--steps", str(args.steps)]
    if args.model:
        command += ["--model", args.model]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: a random CPU-sized model built in code)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_child(args)
    print(machine_header())
    print(f"model: {args.model or 'random, built in code'}; {args.steps} steps; 4-keyframe compose\n")
    run = child(args, args.seconds)
    overhead = 1 - (run["unet"] + run["vae"]) / run["wall"]
    print(f"UNet {run['unet_params_m']:.1f} M parameters")
    rtf = run["seconds"] / run["wall"]
    verdict = "met" if overhead <= 0.20 else "NOT met"
    print(f"{run['seconds']:.1f} s compose: wall {run['wall']:.1f} s, real-time factor {rtf:.2f}; "
          f"UNet {run['unet']:.1f} s, VAE decode {run['vae']:.1f} s, "
          f"everything else {overhead:.1%} of wall time (target <= 20 %: {verdict})")
    rss = {seconds: child(args, seconds)["peak_rss_mb"] for seconds in MEMORY_LENGTHS}
    ratio = rss[MEMORY_LENGTHS[1]] / rss[MEMORY_LENGTHS[0]]
    print(f"peak RSS: {rss[MEMORY_LENGTHS[0]]:.0f} MB for {MEMORY_LENGTHS[0]:.0f} s, {rss[MEMORY_LENGTHS[1]]:.0f} MB "
          f"for {MEMORY_LENGTHS[1]:.0f} s: ratio {ratio:.2f} (target <= 1.2: {'met' if ratio <= 1.2 else 'NOT met'})")


if __name__ == "__main__":
    main()
