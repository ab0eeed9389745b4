"""Neural vocoder vs Griffin-Lim on real recordings no training saw: quality and speed, next to their bars.

    python benchmarks/vocoder.py [--vocoder mini] [--clips 24] [--refine FULL BASS]

Clips: `hydrogen-drumkits` (never used in training) and the held-out fifth of the Debian recordings
(`python -m spectrodiff.training.recordings data/recordings`), up to 5.12 s each, chosen by a hash of their paths.
Each clip's mel (the vocoder's parameters) is turned back into audio by Griffin-Lim at its defaults (32 iterations,
momentum 0.99) and by the vocoder (its network alone, and with its mel-consistency refinement: the vocoder as
generation uses it, which the bars apply to), and each is compared with the original (docs/measures.md):
multi-resolution STFT distance and mel spectral convergence. Speed: one 5.12 s tile (512 frames), median of warm runs.
"""

import argparse
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from common import machine_header

from spectrodiff.codec.audio import find_audio, load_audio
from spectrodiff.codec.mel import waveform_to_mel
from spectrodiff.errors import SpectrodiffError
from spectrodiff.metrics import mel_spectral_convergence, multi_resolution_stft_distance
from spectrodiff.vocoding.reconstruct import mel_to_waveform
from spectrodiff.vocoding.registry import resolve_vocoder
from spectrodiff.vocoding.vocoder import check_refine_iterations

CLIP_SECONDS = 5.12
MIN_SECONDS = 0.25


def pick_clips(root: Path, count: int, sample_rate: int) -> list[tuple[str, np.ndarray]]:
    """Up to `count` readable, non-silent clips of at least MIN_SECONDS under `root`, in hash order."""
    files = sorted(find_audio(root), key=lambda p: zlib.crc32(str(p.relative_to(root)).encode()))
    clips = []
    for path in files:
        try:
            audio = load_audio(path, sample_rate, "mono", duration=CLIP_SECONDS)[0]
        except SpectrodiffError:
            continue
        if len(audio) >= MIN_SECONDS * sample_rate and np.abs(audio).max() > 1e-3:
            clips.append((str(path.relative_to(root)), audio))
        if len(clips) == count:
            break
    return clips


def timed(function, runs: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocoder", default="mini", help="a vocoder folder, a bundled model's name, or 'riffusion'")
    parser.add_argument("--clips", type=int, default=24, help="clips per source")
    parser.add_argument("--heldout", type=Path, default=Path("data/recordings/heldout"))
    parser.add_argument("--hydrogen", type=Path, default=Path("/usr/share/hydrogen/data/drumkits"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--refine", type=int, nargs=2, metavar=("FULL", "BASS"),
                        help="full-band and bass refinement iterations instead of the vocoder's config")
    args = parser.parse_args()
    for root in (args.heldout, args.hydrogen):
        if not root.is_dir():
            sys.exit(f"no recordings at {root}: install hydrogen-drumkits, sonic-pi-samples and lmms-common and run "
                     "`python -m spectrodiff.training.recordings data/recordings`")
    print(machine_header())
    vocoder = resolve_vocoder(args.vocoder)
    params = vocoder.params
    if args.refine:
        try:
            for value, name in zip(args.refine, ("refine_iterations", "bass_refine_iterations"), strict=True):
                check_refine_iterations(value, name)
        except SpectrodiffError as exc:
            sys.exit(str(exc))
        vocoder.register_to_config(refine_iterations=args.refine[0], bass_refine_iterations=args.refine[1])
    config = vocoder.config
    print(f"vocoder: {args.vocoder} ({sum(p.numel() for p in vocoder.parameters()) / 1e6:.1f} M parameters, "
          f"{config.refine_iterations} full-band and {config.bass_refine_iterations} bass refinement iterations), "
          f"{params.describe()}")
    rows = {}
    for source, root in (("hydrogen-drumkits", args.hydrogen), ("held-out recordings", args.heldout)):
        figures = {f"{key}_{figure}": [] for key in ("gl", "net", "nv") for figure in ("stft", "sc")}
        for _, audio in pick_clips(root, args.clips, params.sample_rate):
            audio = torch.from_numpy(audio)
            mel = waveform_to_mel(audio[None], params)
            for key, estimate in (("gl", mel_to_waveform(mel, params)[0]), ("nv", vocoder.vocode(mel)[0]),
                                  ("net", vocoder.vocode(mel, refine_iterations=0, bass_refine_iterations=0)[0])):
                figures[f"{key}_stft"].append(multi_resolution_stft_distance(audio, estimate))
                figures[f"{key}_sc"].append(mel_spectral_convergence(audio, estimate, params))
        rows[source] = {k: float(np.mean(v)) for k, v in figures.items()} | {"clips": len(figures["gl_sc"])}

    tile = waveform_to_mel(torch.from_numpy(pick_clips(args.heldout, 1, params.sample_rate)[0][1])[None], params)
    tile = torch.nn.functional.pad(tile, (0, max(0, 512 - tile.shape[-1])))[..., :512]
    nv_time = timed(lambda: vocoder.vocode(tile), args.runs)
    net_time = timed(lambda: vocoder.vocode(tile, refine_iterations=0, bass_refine_iterations=0), args.runs)
    gl_time = timed(lambda: mel_to_waveform(tile, params), max(1, args.runs // 2))

    print(f"{'':<40} {'Griffin-Lim':>12} {'network':>9} {'neural':>9}   bar (neural)")
    for source, row in rows.items():
        gain = 1 - row["nv_stft"] / row["gl_stft"]
        print(f"{source} ({row['clips']} clips)")
        print(f"  {'multi-resolution STFT distance':<38} {row['gl_stft']:>12.3f} {row['net_stft']:>9.3f} "
              f"{row['nv_stft']:>9.3f}   {gain:.0%} lower, >= 25 %  {'PASS' if gain >= 0.25 else 'FAIL'}")
        print(f"  {'mel spectral convergence':<38} {row['gl_sc']:>12.3f} {row['net_sc']:>9.3f} {row['nv_sc']:>9.3f}   "
              f"lower        {'PASS' if row['nv_sc'] < row['gl_sc'] else 'FAIL'}")
    print(f"{'5.12 s tile (512 frames), median of ' + str(args.runs):<40} {gl_time:>10.3f} s {net_time:>7.3f} s "
          f"{nv_time:>7.3f} s   <= 0.25 s ({CLIP_SECONDS / nv_time:.0f}x real time)  "
          f"{'PASS' if nv_time <= 0.25 else 'FAIL'}")


if __name__ == "__main__":
    main()
