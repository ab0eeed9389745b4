"""512 x 512 tile -> audio: speed and image -> audio consistency, our default vs classic Griffin-Lim (librosa).

Ours is `image_to_audio` at its defaults: for Riffusion's parameters the bundled neural vocoder with its mel
refinement (`--iters` applies when Griffin-Lim renders). Consistency (docs/measures.md): spectral convergence
between the mel decoded from the image and the mel of the reconstructed audio. The reference runs
librosa.griffinlim (32 iterations, momentum 0.99, Riffusion's FFT size 17640) on the same least-squares magnitude,
Riffusion's way. Real music: benchmarks/real_music.py.

    python benchmarks/reconstruction.py [--runs 5] [--iters 32]
"""

import argparse
import statistics
import time

import librosa
import numpy as np
import torch
from common import machine_header

from spectrodiff import SpectrogramParams, audio_to_image, image_params, image_to_audio, image_to_mel, waveform_to_mel
from spectrodiff.codec.mel import mel_filterbank
from spectrodiff.signals import SIGNALS
from spectrodiff.vocoding.reconstruct import inverse_filterbank

TARGET_SECONDS = 1.0


def consistency(decoded: torch.Tensor, audio: np.ndarray, params: SpectrogramParams) -> float:
    rebuilt = waveform_to_mel(torch.as_tensor(audio, dtype=torch.float32), params)
    n = min(decoded.shape[-1], rebuilt.shape[-1])
    return float((decoded[..., :n] - rebuilt[..., :n]).norm() / decoded[..., :n].norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of ours per tile (median reported)")
    parser.add_argument("--iters", type=int, default=32)
    args = parser.parse_args()
    print(machine_header())
    params = SpectrogramParams()
    tile_seconds = params.samples_for_width(512) / params.sample_rate

    start = time.perf_counter()
    inverse_filterbank(params.key(), torch.device("cpu"))
    print(f"one-off least-squares set-up (cached per parameter set): {time.perf_counter() - start:.3f} s")
    pinv = torch.linalg.pinv(mel_filterbank(params).double())

    rows, ours_times = [], []
    for kind, make in SIGNALS.items():
        image = audio_to_image(make(tile_seconds + 1e-6)[None], params)
        assert image.size == (512, 512)
        decoded = image_to_mel(image, *image_params(image))
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            audio, _ = image_to_audio(image, n_iter=args.iters)
            times.append(time.perf_counter() - start)
        ours_times += times
        linear = (decoded[0].double().T @ pinv).T.clamp(min=0).numpy()
        start = time.perf_counter()
        classic = librosa.griffinlim(linear, n_iter=32, hop_length=params.hop_length, win_length=params.win_length,
                                     n_fft=params.n_fft, momentum=0.99, init="random", random_state=0)
        classic_time = time.perf_counter() - start
        rows.append((kind, statistics.median(times), consistency(decoded, audio, params), classic_time,
                     consistency(decoded, classic[None] / 32768, params)))

    print(f"\n| tile (512 x 512, {tile_seconds:.2f} s) | ours: median s | ours: consistency | "
          "librosa GL-32: s | librosa GL-32: consistency |")
    print("|---|---|---|---|---|")
    for kind, ours_t, ours_c, ref_t, ref_c in rows:
        print(f"| {kind} | {ours_t:.3f} | {ours_c:.4f} | {ref_t:.2f} | {ref_c:.4f} |")
    median = statistics.median(ours_times)
    ours_mean = statistics.mean(r[2] for r in rows)
    ref_mean = statistics.mean(r[4] for r in rows)
    ref_median = statistics.median(r[3] for r in rows)
    print(f"| mean | {median:.3f} (median of all runs) | {ours_mean:.4f} | {ref_median:.2f} | {ref_mean:.4f} |")
    print(f"\nspeed: {median:.3f} s per tile, target <= {TARGET_SECONDS} s: "
          f"{'met' if median <= TARGET_SECONDS else 'NOT met'}; {ref_median / median:.1f}x faster than the reference")
    better = [r[0] for r in rows if r[2] <= r[4]]
    print(f"consistency: mean {ours_mean:.4f} vs {ref_mean:.4f} "
          f"({'no worse' if ours_mean <= ref_mean else 'WORSE'}); no worse on {len(better)}/{len(rows)} tiles "
          f"({', '.join(better)})")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
