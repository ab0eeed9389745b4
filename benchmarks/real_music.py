"""Spectrogram image -> audio on real music that no model or vocoder trains on: consistency and speed of our default,
every `--vocoder` choice and Riffusion's own algorithm, next to the targets.

    python benchmarks/real_music.py [--excerpts 16] [--seconds 20] [--runs 3]

Excerpts: `--seconds` from each of `--excerpts` tracks of Debian's `warzone2100-music` (Opus) and
`planetblupi-music-ogg` (Vorbis), half from each, picked by a hash of their paths and cut from 37 % into the track,
decoded to 44.1 kHz mono 16-bit WAV. Each goes through the command line exactly as a user runs it:
`spectrodiff audio-to-image`, then `spectrodiff image-to-audio --no-normalize` with the default and with each
`--vocoder` choice (the level is the original's, so the mels compare). Riffusion's algorithm runs in this process on
the same image: least squares (torchaudio's InverseMelScale: `torch.linalg.lstsq`, driver gels), then 32 fast
Griffin-Lim iterations at FFT 17640, momentum 0.99, random initial phase (torchaudio's GriffinLim, as Riffusion calls
them). Consistency is the mel spectral convergence between the image's mel and the mel of the audio made from it
(docs/measures.md); lower is better. Speed: a 30 s image -> audio, our default as a whole cold process
(`spectrodiff image-to-audio`, start-up included, median of `--runs`) against Riffusion's algorithm in this process
(the faster of two runs).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import soundfile
import torch
from common import machine_header

from spectrodiff.codec.audio import audio_info, find_audio, load_audio, save_audio
from spectrodiff.codec.image import image_params, image_to_mel, open_image
from spectrodiff.codec.mel import INT16_SCALE, mel_filterbank, waveform_to_mel
from spectrodiff.codec.params import SpectrogramParams
from spectrodiff.metrics import spectral_convergence

SOURCES = {"warzone2100-music": Path("/usr/share/games/warzone2100/music"),
           "planetblupi-music-ogg": Path("/usr/share/planetblupi/music")}
START_FRACTION = 0.37
CHOICES = {"default": [], "griffin-lim": ["--vocoder", "griffin-lim"], "neural": ["--vocoder", "neural"]}
# Targets: no worse than Riffusion's algorithm on average and within 5 % on every excerpt; 10x faster on 30 s.
EXCERPT_TOLERANCE = 1.05
SPEED_FACTOR = 10.0
TIMED_SECONDS = 30.0
PARAMS = SpectrogramParams()  # Riffusion's format


def pick_tracks(count: int) -> list[tuple[str, Path]]:
    """`count` tracks, half from each source, in the order of a hash of their paths (the same on every machine)."""
    picked = []
    for (name, root), share in zip(SOURCES.items(), (count - count // 2, count // 2), strict=True):
        files = sorted(find_audio(root), key=lambda p: zlib.crc32(str(p.relative_to(root)).encode()))
        picked += [(name, p) for p in files[:share]]
    return picked


def riffusion_reconstruction(mel: torch.Tensor, params: SpectrogramParams, n_iter: int = 32,
                             seed: int = 0) -> torch.Tensor:
    """Riffusion's mel -> audio: `(1, n_mels, T)` -> `(1, (T - 1) * hop)` on the [-1, 1] scale."""
    fb = mel_filterbank(params)  # (n_freqs, n_mels)
    linear = torch.linalg.lstsq(fb.T[None], mel, driver="gels").solution.relu()
    window = torch.hann_window(params.win_length)
    stft = dict(n_fft=params.n_fft, hop_length=params.hop_length, win_length=params.win_length, window=window)
    angles = torch.rand(linear.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed))
    previous = torch.tensor(0.0)
    for _ in range(n_iter):
        inverse = torch.istft(linear * angles, **stft)
        rebuilt = torch.stft(inverse, center=True, pad_mode="reflect", normalized=False, onesided=True,
                             return_complex=True, **stft)
        angles = rebuilt - previous * (0.99 / (1 + 0.99))
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return torch.istft(linear * angles, **stft) / INT16_SCALE


def consistency(mel: torch.Tensor, audio: np.ndarray | torch.Tensor) -> float:
    return spectral_convergence(mel, waveform_to_mel(torch.as_tensor(audio, dtype=torch.float32), PARAMS))


def spectrodiff_command(*args: str) -> float:
    """Run `spectrodiff ARGS` as a user does (a new process); its wall time in seconds."""
    began = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("spectrodiff")), *map(str, args)], check=True,
                   capture_output=True)
    return time.perf_counter() - began


def excerpt_row(name: str, track: Path, seconds: float, folder: Path) -> dict:
    duration = audio_info(track).duration
    start = round(duration * START_FRACTION, 2)
    wav = folder / f"{track.stem}.wav"
    save_audio(wav, load_audio(track, PARAMS.sample_rate, "mono", start, seconds), PARAMS.sample_rate)
    png = folder / f"{track.stem}.png"
    spectrodiff_command("audio-to-image", wav, "-o", png)
    image = open_image(png)
    mel = image_to_mel(image, *image_params(image))
    row = {"excerpt": f"{name}/{track.relative_to(SOURCES[name])} @ {start:.0f} s", "sc": {}, "s": {}}
    for choice, flags in CHOICES.items():
        out = folder / f"{track.stem}-{choice}.wav"
        row["s"][choice] = spectrodiff_command("image-to-audio", png, "-o", out, "--no-normalize", *flags)
        row["sc"][choice] = consistency(mel, soundfile.read(out, dtype="float32", always_2d=True)[0].T)
    began = time.perf_counter()
    audio = riffusion_reconstruction(mel, PARAMS)
    row["s"]["riffusion"] = time.perf_counter() - began
    row["sc"]["riffusion"] = consistency(mel, audio)
    return row


def speed(folder: Path, track: Path, runs: int) -> tuple[float, float]:
    """Our default's cold process time for a 30 s image (median of `runs`) and Riffusion's algorithm's (faster of
    two) on the same image."""
    wav, png = folder / "timed.wav", folder / "timed.png"
    save_audio(wav, load_audio(track, PARAMS.sample_rate, "mono", 60.0, TIMED_SECONDS), PARAMS.sample_rate)
    spectrodiff_command("audio-to-image", wav, "-o", png)
    ours = statistics.median(spectrodiff_command("image-to-audio", png, "-o", folder / "timed-out.wav",
                                                 "--overwrite") for _ in range(runs))
    image = open_image(png)
    mel = image_to_mel(image, *image_params(image))
    theirs = []
    for _ in range(2):
        began = time.perf_counter()
        riffusion_reconstruction(mel, PARAMS)
        theirs.append(time.perf_counter() - began)
    return ours, min(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--excerpts", type=int, default=16, help="tracks, one excerpt each (at least 8 for the bar)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each excerpt")
    parser.add_argument("--runs", type=int, default=3, help="cold runs of our default on the 30 s image")
    args = parser.parse_args()
    missing = [name for name, root in SOURCES.items() if not root.is_dir()]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: `make heldout-music` installs them (Debian packages)")
    torch.set_num_threads(2)
    print(machine_header())
    tracks = pick_tracks(args.excerpts)
    with tempfile.TemporaryDirectory(prefix="spectrodiff-bench-") as tmp:
        rows = [excerpt_row(name, track, args.seconds, Path(tmp)) for name, track in tracks]
        ours, theirs = speed(Path(tmp), tracks[0][1], args.runs)

    columns = [*CHOICES, "riffusion"]
    print(f"\n{len(rows)} excerpts of {args.seconds:g} s; mel spectral convergence (lower is better) and wall seconds "
          "(ours: whole `spectrodiff image-to-audio` processes; Riffusion's algorithm: in process)\n")
    print("| excerpt | " + " | ".join(columns) + " | default / riffusion | " + " | ".join(f"{c} s" for c in columns)
          + " |")
    print("|---" * (2 * len(columns) + 2) + "|")
    for row in rows:
        ratio = row["sc"]["default"] / row["sc"]["riffusion"]
        print(f"| {row['excerpt']} | " + " | ".join(f"{row['sc'][c]:.4f}" for c in columns)
              + f" | {ratio:.3f} {'PASS' if ratio <= EXCERPT_TOLERANCE else 'FAIL'} | "
              + " | ".join(f"{row['s'][c]:.1f}" for c in columns) + " |")
    means = {c: statistics.mean(r["sc"][c] for r in rows) for c in columns}
    times = {c: statistics.mean(r["s"][c] for r in rows) for c in columns}
    ratios = [r["sc"]["default"] / r["sc"]["riffusion"] for r in rows]
    print("| mean | " + " | ".join(f"{means[c]:.4f}" for c in columns) + f" | {statistics.mean(ratios):.3f} | "
          + " | ".join(f"{times[c]:.1f}" for c in columns) + " |")

    print("\ntargets (Riffusion-format images, default settings):")
    average_ok = means["default"] <= means["riffusion"]
    print(f"  consistency, average: default {means['default']:.4f} vs Riffusion's {means['riffusion']:.4f} "
          f"(target: no worse)  {'PASS' if average_ok else 'FAIL'}")
    passed = sum(r <= EXCERPT_TOLERANCE for r in ratios)
    print(f"  consistency, every excerpt within 5 % of Riffusion's: {passed}/{len(rows)} (worst "
          f"{max(ratios):.3f}x)  {'PASS' if passed == len(rows) else 'FAIL'}")
    factor = theirs / ours
    print(f"  {TIMED_SECONDS:g} s image -> audio: default {ours:.2f} s as a cold process (median of {args.runs}), "
          f"Riffusion's algorithm {theirs:.2f} s: {factor:.1f}x faster (target >= {SPEED_FACTOR:g}x)  "
          f"{'PASS' if factor >= SPEED_FACTOR else 'FAIL'}")


if __name__ == "__main__":
    main()
