"""The cost of the geometry (issue 28, item 6): a beat-time mel made at one tempo and heard at another, against the
same music played at that tempo.

    python benchmarks/beat_geometry.py [--styles "jazzy saxophone,waltz" | --styles all] [--tempi 3] [--bars 2]
        [--columns 32 64] [--renderer fluidsynth|timidity] [--catalogue data/catalogue/catalogue.json]

For each style, the first clip of catalogue v2 (its seed) is written as MIDI (training/composition.py
`style_midi`) and re-timed with pretty_midi's `adjust_times`: the same MIDI, every note and event at another tempo,
as a sequencer plays it. Each tempo is rendered as catalogue v2 renders (training/rendering.py `render_stems`, the
stems summed, no gain). T0 is the middle of the style's tempo range; the targets T are `--tempi` tempi across it
and T0 itself. For each T and each columns-per-beat C, at mini's parameters (128 mel bins, Riffusion's STFT) and
through mini's vocoder (`spectrodiff/models/mini/vocoder`):

- floor: the direct render at T, its clock-time mel vocoded (the vocoder alone);
- near: the render at T x 1.001, its beat-time mel (the first C) heard at T: no stretch to speak of, but another
  render, which differs from the direct one by more than the vocoder does (`NEAR`): the floor of any re-timing;
- C: the beat-time mel (C columns a beat) of the render at T0, heard at T (same columns, tempo T): what a beat-time
  model that learnt the music at T0 gives at best when asked for T. At T = T0 this is the beat-time axis alone (the
  columns re-timed to the vocoder's clock hop).

Each figure is the mel spectral convergence (docs/measures.md) between the direct render at T and that audio, on the
clock-time mel; lower is better. The summary compares C = 32 and 64 by their mean excess over the floor.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_header

from spectrodiff.codec.mel import waveform_to_mel
from spectrodiff.codec.params import SpectrogramParams
from spectrodiff.metrics import mel_spectral_convergence
from spectrodiff.training.composition import clip_facts, style_by_name, style_midi
from spectrodiff.training.rendering import SAMPLE_RATE, render_stems
from spectrodiff.vocoding.registry import resolve_vocoder
from spectrodiff.vocoding.render import mel_to_audio

# A few styles by default (a wide tempo range, a slow one, drums alone); --styles all for the full table.
DEFAULT_STYLES = ("jazzy saxophone", "church organ and bells", "acoustic drums")
MINI = SpectrogramParams(num_frequencies=128)  # mini's parameters: 128 mel bins, Riffusion's STFT
# The near reference is rendered this much faster: a stretch too small to matter, yet the synthesiser's render differs
# by a mel spectral convergence of 0.10-0.17 (jazzy saxophone, techno; not MIDI's tick rounding: 9600 ticks a beat
# change nothing), more than the vocoder: overlapping notes meet in another phase. The floor of any re-timing.
NEAR = 1.001


def catalogue_clips(path: Path, names: str) -> list[tuple[str, int, tuple[int, int]]]:
    """(style, seed of its first clip, tempo range) of each style asked ("all", or comma-separated names)."""
    if not path.is_file():
        sys.exit(f"no catalogue at {path}: run `make data/catalogue/catalogue.json` first")
    catalogue = json.loads(path.read_text())
    styles = list(catalogue["styles"]) if names == "all" else [style_by_name(n.strip()).name for n in names.split(",")]
    seeds = {}
    for record in catalogue["files"]:
        seeds.setdefault(record["style"], record["seed"])
    return [(style, seeds[style], tuple(catalogue["styles"][style]["tempo"])) for style in styles]


def render_at(style: str, seed: int, bars: int, bpm: float, renderer: str) -> np.ndarray:
    """`bars` bars of the style's clip, its MIDI re-timed to `bpm`: `(N,)` float32 mono, N exactly the bars."""
    facts = clip_facts(style, seed)
    tempo, seconds = facts.tempo, bars * facts.bar_seconds
    midi = style_midi(style, seed, seconds)
    midi.adjust_times([0.0, seconds], [0.0, seconds * tempo / bpm])
    stems = render_stems(midi.instruments, style_by_name(style).kit, seed, seconds * tempo / bpm, renderer)
    return np.sum(stems, axis=0).mean(axis=1).astype(np.float32)


def convergence(reference: torch.Tensor, audio: torch.Tensor) -> float:
    return mel_spectral_convergence(reference, audio, MINI)


def style_rows(style: str, seed: int, tempo_range: tuple[int, int], args, vocoder) -> list[dict]:
    """One row per target tempo T: its stretch from T0, the floor, and per C the convergence of the beat-time mel
    made at T0 and heard at T (at T = T0, the beat-time axis alone)."""
    low, high = tempo_range
    origin = round((low + high) / 2)
    renders = {bpm: torch.from_numpy(render_at(style, seed, args.bars, bpm, args.renderer))[None]
               for bpm in {origin, *(round(t) for t in np.linspace(low, high, args.tempi))}}
    rows = []
    for bpm in sorted(renders):
        direct = renders[bpm]
        row = {"style": style, "t0": origin, "t": bpm, "stretch": origin / bpm,
               "floor": convergence(direct, vocoder.vocode(waveform_to_mel(direct, MINI)))}
        near = SpectrogramParams(num_frequencies=128, columns_per_beat=args.columns[0]).at_tempo(bpm * NEAR)
        again = torch.from_numpy(render_at(style, seed, args.bars, bpm * NEAR, args.renderer))[None]
        made = waveform_to_mel(again, near)
        row["near"] = convergence(direct, mel_to_audio(made, near.at_tempo(bpm), vocoder))
        for columns in args.columns:
            beat = SpectrogramParams(num_frequencies=128, columns_per_beat=columns)
            made = waveform_to_mel(renders[origin], beat.at_tempo(origin))
            row[f"c{columns}"] = convergence(direct, mel_to_audio(made, beat.at_tempo(bpm), vocoder))
        rows.append(row)
        print(format_row(row, args.columns), flush=True)
    return rows


def format_row(row: dict, columns: list[int]) -> str:
    cells = "".join(f" {row[f'c{c}']:>7.3f}" for c in columns)
    return (f"{row['style'][:24]:<24} {row['t0']:>4} {row['t']:>4} {100 * (row['stretch'] - 1):>+7.1f}% "
            f"{row['floor']:>6.3f} {row['near']:>6.3f}{cells}")


def summary(rows: list[dict], columns: list[int]) -> list[str]:
    """Mean excess over the floor per C: the beat-time axis alone (T = T0), re-timed (T != T0), slow tempi (T < 90
    BPM); and which C each of the first two favours, by how much."""
    lines = []
    retimed = [r for r in rows if r["t"] != r["t0"]]
    groups = {"axis alone (T = T0)": [r for r in rows if r["t"] == r["t0"]], "re-timed (T != T0)": retimed,
              "re-timed, slow (T < 90 BPM)": [r for r in retimed if r["t"] < 90]}
    for name, group in groups.items():
        if group:
            cells = ", ".join(f"C={c} +{statistics.mean(r[f'c{c}'] - r['floor'] for r in group):.3f}" for c in columns)
            near = statistics.mean(r["near"] - r["floor"] for r in group)
            lines.append(f"mean excess over the floor, {name}, {len(group)} rows: near +{near:.3f}, {cells}")
    for name, group in list(groups.items())[:2]:
        if group and len(columns) > 1:
            means = sorted((statistics.mean(r[f"c{c}"] for r in group), c) for c in columns)
            lines.append(f"favoured, {name}: {means[0][1]} columns a beat, by {means[1][0] - means[0][0]:.3f} "
                         f"against {means[1][1]}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", default=",".join(DEFAULT_STYLES), help='comma-separated style names, or "all"')
    parser.add_argument("--tempi", type=int, default=3, help="target tempi across each style's range (>= 2)")
    parser.add_argument("--bars", type=int, default=2)
    parser.add_argument("--columns", type=int, nargs="+", default=[32, 64], help="columns a beat to compare")
    parser.add_argument("--renderer", default="fluidsynth", choices=("fluidsynth", "timidity"))
    parser.add_argument("--catalogue", type=Path, default=Path("data/catalogue/catalogue.json"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.tempi < 2 or args.bars < 1:
        sys.exit("--tempi must be at least 2 and --bars at least 1")
    clips = catalogue_clips(args.catalogue, args.styles)
    print(machine_header(), flush=True)
    vocoder = resolve_vocoder("mini")
    began = time.perf_counter()
    head = "".join(f" {f'C={c}':>7}" for c in args.columns)
    print(f"{'style':<24} {'T0':>4} {'T':>4} {'stretch':>8} {'floor':>6} {'near':>6}{head}   (mel SC against the "
          "render at T)")
    rows = [row for style, seed, tempo_range in clips for row in style_rows(style, seed, tempo_range, args, vocoder)]
    print("\n".join(summary(rows, args.columns)))
    print(f"{len(rows)} rows in {time.perf_counter() - began:.0f} s ({args.bars} bars each, {SAMPLE_RATE} Hz, "
          f"{args.renderer})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
