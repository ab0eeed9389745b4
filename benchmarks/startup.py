"""Start-up of the command line as whole processes: `spectrodiff --help` and every command's `--help` (bar 0.5 s),
and the codec commands on a short file, each the median of several cold runs, with what they imported; with
`--tuning`, then what the process tuning (spectrodiff/process.py) is worth: a 30 s image to audio with it and without
it (SPECTRODIFF_NO_PROCESS_TUNING=1), runs alternating.

    python benchmarks/startup.py [--runs 5] [--tuning]

Each run is a new `spectrodiff` process, timed from start to exit, as a user waits for it.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_header

from spectrodiff.testing import heavy_imports

HELP_BAR_SECONDS = 0.5
CODEC_BAR = ("diffusers", "transformers", "peft")  # what a codec command never imports


def spectrodiff(args: list[str], env: dict | None = None) -> tuple[float, float, float, float]:
    """(wall seconds, CPU seconds, system CPU seconds, millions of minor page faults) of one new `spectrodiff ARGS`
    process. The CPU times move less than the wall time when other work shares the machine."""
    with tempfile.TemporaryFile() as errors:
        began = time.perf_counter()
        child = subprocess.Popen([str(Path(sys.executable).with_name("spectrodiff")), *args], env=env,
                                 stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - began
        if os.waitstatus_to_exitcode(status):
            errors.seek(0)
            sys.exit(f"spectrodiff {' '.join(args)} failed: {errors.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_stime, usage.ru_minflt / 1e6


def timed(args: list[str], runs: int) -> float:
    """Median wall seconds of `spectrodiff ARGS` over `runs` new processes."""
    return statistics.median(spectrodiff(args)[0] for _ in range(runs))


def tuning_worth(image: Path, out: Path, runs: int) -> None:
    """A 30 s image to audio (the bundled vocoder, then Griffin-Lim) with the process tuning and without, runs
    alternating so that both see the same load: medians, tuned / untuned."""
    untuned = {**os.environ, "SPECTRODIFF_NO_PROCESS_TUNING": "1"}
    print(f"\n| process (median of {runs}, alternating; tuned / untuned) | wall s | CPU s | system CPU s | "
          "minor faults (M) |")
    print("|---|---|---|---|---|")
    for vocoder in ([], ["--vocoder", "griffin-lim"]):
        command = ["image-to-audio", str(image), "-o", str(out), "--overwrite", *vocoder]
        tuned_runs, untuned_runs = [], []
        for _ in range(runs):
            tuned_runs.append(spectrodiff(command))
            untuned_runs.append(spectrodiff(command, untuned))
        medians = [[statistics.median(run[kind] for run in runs) for runs in (tuned_runs, untuned_runs)]
                   for kind in range(4)]
        print(f"| spectrodiff image-to-audio 30 s {' '.join(vocoder)} | "
              f"{' | '.join(f'{tuned:.2f} / {plain:.2f}' for tuned, plain in medians)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tuning", action="store_true", help="then time what the process tuning is worth")
    args = parser.parse_args()
    print(machine_header())
    from spectrodiff.cli import app

    commands = [[]] + [[info.name] for info in app.registered_commands]
    print(f"\n| process (median of {args.runs}) | seconds | imports | bar |")
    print("|---|---|---|---|")
    worst = 0.0
    for command in commands:
        seconds = timed([*command, "--help"], args.runs)
        worst = max(worst, seconds)
        print(f"| spectrodiff {' '.join(command + ['--help'])} | {seconds:.3f} | "
              f"{', '.join(heavy_imports(*command, '--help')) or '-'} | <= {HELP_BAR_SECONDS} s "
              f"{'PASS' if seconds <= HELP_BAR_SECONDS else 'FAIL'} |")
    with tempfile.TemporaryDirectory() as folder:
        import numpy as np
        import soundfile

        wav, png = Path(folder) / "tone.wav", Path(folder) / "tone.png"
        t = np.arange(5 * 44100) / 44100
        soundfile.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44100)
        for command in (["audio-to-image", str(wav), "-o", str(png), "--overwrite"], ["info", str(png)],
                        ["info", str(wav)]):
            seconds, modules = timed(command, args.runs), heavy_imports(*command)
            clean = not set(modules) & set(CODEC_BAR)
            print(f"| spectrodiff {command[0]} {Path(command[1]).name} (5 s tone) | {seconds:.3f} | "
                  f"{', '.join(modules) or '-'} | "
                  f"no {', '.join(CODEC_BAR)} {'PASS' if clean else 'FAIL'} |")
        if args.tuning:
            wav30, png30 = Path(folder) / "chord.wav", Path(folder) / "chord.png"
            t = np.arange(30 * 44100) / 44100
            chord = sum(np.sin(2 * np.pi * f * t) for f in (220, 277.2, 329.6)) / 6
            soundfile.write(wav30, chord.astype(np.float32), 44100)
            spectrodiff(["audio-to-image", str(wav30), "-o", str(png30)])
            tuning_worth(png30, Path(folder) / "back.wav", args.runs)
    print(f"\nevery --help in at most {HELP_BAR_SECONDS} s: {'PASS' if worst <= HELP_BAR_SECONDS else 'FAIL'} "
          f"(slowest {worst:.3f} s)")


if __name__ == "__main__":
    main()
