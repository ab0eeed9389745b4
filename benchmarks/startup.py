"""Start-up of the command line as whole processes: `spectrodiff --help` and every command's `--help` (bar 0.5 s),
and the codec commands on a short file, each the median of several cold runs, with what they imported.

    python benchmarks/startup.py [--runs 5]

Each run is a new `spectrodiff` process, timed from start to exit, as a user waits for it.
"""

import argparse
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


def timed(args: list[str], runs: int) -> float:
    """Median wall seconds of `spectrodiff ARGS` over `runs` new processes."""
    command = [str(Path(sys.executable).with_name("spectrodiff")), *args]
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
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
    print(f"\nevery --help in at most {HELP_BAR_SECONDS} s: {'PASS' if worst <= HELP_BAR_SECONDS else 'FAIL'} "
          f"(slowest {worst:.3f} s)")


if __name__ == "__main__":
    main()
