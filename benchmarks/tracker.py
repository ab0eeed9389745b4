"""The project's tempo and downbeat tracker (spectrodiff/codec/beats.py) against a reference catalogue's exact labels.

    python benchmarks/tracker.py [CATALOGUE ...] [--json FILE]     (default: data/heldout data/catalogue)
    python benchmarks/tracker.py --render data/tracker-fluidr3       a second render to fit on (FluidR3 GM, seed 1)
    python benchmarks/tracker.py --fit data/catalogue data/tracker-fluidr3
                                             refit beats.TEMPO_WEIGHTS and DOWNBEAT_WEIGHTS; prints them

Every catalogue clip starts on a downbeat, so its true downbeats are at k x bar_seconds (catalogue.json lists each
file's style, tempo, meter and bar_seconds). A clip is a hit when the tracked tempo is within 4 % of the label and
the tracked first downbeat within 70 ms of a true downbeat; the meter is given, as the catalogue knows it. Figures
are printed over all clips, over the clips of the styles with a pulse (those whose clips the tracker mostly finds
steady; the others are listed) and over the clips it calls steady, with the CPU time per minute of audio; and again
with the tracker told that each clip starts on a downbeat (`starts_on_downbeat`, as for loops cut on a bar line).

The weights of the tempo and downbeat rankers are fitted on data/catalogue (fluidsynth with MuseScore General and
avldrums) and on `--render`'s clips (the same styles drawn from seed 1, played by fluidsynth with FluidR3 GM):
data/heldout (timidity with freepats) is never fitted on. `--fit` also prints the accuracy of fits that leave each
style out, a fairer figure for music unlike the catalogue's.
"""

import argparse
import json
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from common import machine_header

from spectrodiff.codec import beats
from spectrodiff.codec.audio import load_audio
from spectrodiff.training.catalogue import plan
from spectrodiff.training.composition import clip_facts, style_midi
from spectrodiff.training.rendering import render_midi

TEMPO_TOLERANCE = 0.04
DOWNBEAT_TOLERANCE = 0.070  # seconds
RATE = beats.ANALYSIS_RATE  # read files at the tracker's own rate: no resampling inside it
L2 = 0.01  # ridge on the standardised weights of the ranker


def clips(catalogue: Path) -> list[dict]:
    return json.loads((catalogue / "catalogue.json").read_text(encoding="utf-8"))["files"]


def downbeat_error(first_downbeat: float, bar_seconds: float) -> float:
    """Seconds from a tracked downbeat to the nearest true one (true downbeats at k x bar_seconds)."""
    return abs((first_downbeat + bar_seconds / 2) % bar_seconds - bar_seconds / 2)


def measure(catalogue: Path) -> list[dict]:
    rows = []
    for clip in clips(catalogue):
        audio = load_audio(catalogue / clip["file"], RATE, "mono")
        start = time.process_time()
        grid = beats.track_beats(audio, RATE, meter=clip["meter"])
        cpu = time.process_time() - start
        tempo_hit = abs(grid.bpm - clip["tempo"]) <= TEMPO_TOLERANCE * clip["tempo"]
        error = downbeat_error(grid.first_downbeat, clip["bar_seconds"])
        loop = beats.track_beats(audio, RATE, meter=clip["meter"], starts_on_downbeat=True)
        loop_error = downbeat_error(loop.first_downbeat, clip["bar_seconds"])
        rows.append({"file": clip["file"], "style": clip["style"], "tempo": clip["tempo"], "meter": clip["meter"],
                     "bpm": round(grid.bpm, 2), "first_downbeat": round(grid.first_downbeat, 4),
                     "downbeat_error": round(error, 4), "tempo_hit": bool(tempo_hit),
                     "hit": bool(tempo_hit and error <= DOWNBEAT_TOLERANCE), "clarity": round(grid.clarity, 3),
                     "loop_hit": bool(tempo_hit and loop_error <= DOWNBEAT_TOLERANCE),
                     "steady": grid.steady, "ambiguous": grid.ambiguous, "cpu_s": cpu,
                     "seconds": audio.shape[-1] / RATE})
    return rows


def share(rows: list[dict], key: str = "hit") -> str:
    return f"{sum(r[key] for r in rows)}/{len(rows)} = {100 * sum(r[key] for r in rows) / max(1, len(rows)):.1f} %"


def report(catalogue: Path, rows: list[dict]) -> dict:
    by_style = defaultdict(list)
    for row in rows:
        by_style[row["style"]].append(row)
    print(f"\n{catalogue}: {len(rows)} clips")
    print(f"{'style':24s} {'clips':>5s} {'tempo':>5s} {'both':>5s} {'steady':>6s} {'clarity':>7s}  "
          "misses (label:tracked BPM/downbeat error ms)")
    for style, group in sorted(by_style.items()):
        misses = " ".join(f"{r['tempo']:.0f}:{r['bpm']:.0f}/{1000 * r['downbeat_error']:.0f}"
                          for r in group if not r["hit"])
        print(f"{style:24s} {len(group):5d} {sum(r['tempo_hit'] for r in group):5d} {sum(r['hit'] for r in group):5d} "
              f"{sum(r['steady'] for r in group):6d} {np.median([r['clarity'] for r in group]):7.2f}  {misses}")
    unsteady = sorted(s for s, group in by_style.items() if sum(r["steady"] for r in group) < len(group) / 2)
    pulse = [r for r in rows if r["style"] not in unsteady]
    steady = [r for r in rows if r["steady"]]
    minutes = sum(r["seconds"] for r in rows) / 60
    cpu = sum(r["cpu_s"] for r in rows)
    print(f"tempo within 4 %: {share(rows, 'tempo_hit')} of all clips")
    print(f"tempo within 4 % and first downbeat within 70 ms: {share(rows)} of all clips; {share(pulse)} of the "
          f"clips of styles with a pulse; {share(steady)} of the clips tracked as steady")
    print(f"the same, told that each clip starts on a downbeat (starts_on_downbeat): {share(rows, 'loop_hit')} of "
          f"all clips; {share(pulse, 'loop_hit')} of the clips of styles with a pulse")
    print(f"styles with no steady beat (most clips not steady): {', '.join(unsteady) or 'none'}")
    print(f"steady: {share(rows, 'steady')} of all clips; {share(pulse, 'steady')} of the clips of styles with a "
          f"pulse; ambiguous: {share(rows, 'ambiguous')}")
    print(f"speed: {cpu / minutes:.2f} CPU s per minute of audio ({cpu:.1f} s for {minutes:.1f} min)")
    return {"catalogue": str(catalogue), "hits": sum(r["hit"] for r in rows), "clips": len(rows),
            "pulse_hits": sum(r["hit"] for r in pulse), "pulse_clips": len(pulse), "no_steady_beat": unsteady,
            "cpu_s_per_minute": cpu / minutes, "rows": rows}


# ---- fitting the tempo ranker ---------------------------------------------------------------------------------


def candidate_sets(catalogue: Path) -> tuple[list, list]:
    """Per clip, for the tempo and for the downbeat ranker: (style, candidate features `(K, F)`, which candidates
    are right `(K,)`): a tempo within 4 % of the label; the downbeat (found at the labelled tempo) nearest a true
    one, if within 70 ms."""
    tempo_sets, downbeat_sets = [], []
    for clip in clips(catalogue):
        audio = load_audio(catalogue / clip["file"], RATE, "mono")
        bpms, features = beats.tempo_candidates(audio, RATE)
        tempo_sets.append((clip["style"], features,
                           np.abs(bpms - clip["tempo"]) <= TEMPO_TOLERANCE * clip["tempo"]))
        seconds, features = beats.downbeat_candidates(audio, RATE, clip["tempo"], meter=clip["meter"])
        errors = np.array([downbeat_error(s, clip["bar_seconds"]) for s in seconds])
        downbeat_sets.append((clip["style"], features,
                              (errors == errors.min()) & (errors <= DOWNBEAT_TOLERANCE)))
    return tempo_sets, downbeat_sets


def fit_weights(sets: list[tuple[str, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Weights `(F,)` of the log-linear ranker (softmax over a clip's candidates) that make the right candidate
    likeliest, with a ridge on the standardised weights; clips with no right candidate are left out."""
    usable = [(f, int(np.flatnonzero(y)[0])) for _, f, y in sets if y.any()]
    most = max(len(f) for f, _ in usable)
    features = torch.zeros(len(usable), most, usable[0][0].shape[1], dtype=torch.float64)
    present = torch.zeros(len(usable), most, dtype=torch.bool)
    for i, (f, _) in enumerate(usable):
        features[i, : len(f)], present[i, : len(f)] = torch.from_numpy(f), True
    labels = torch.tensor([label for _, label in usable])
    mean, scale = features[present].mean(0), features[present].std(0) + 1e-9
    standard = (features - mean) / scale
    weights = torch.zeros(features.shape[-1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        scores = (standard @ weights).masked_fill(~present, -torch.inf)
        total = torch.nn.functional.cross_entropy(scores, labels) + L2 * (weights * weights).sum()
        total.backward()
        return total

    optimiser.step(loss)
    return (weights / scale).detach().numpy()


def ranked_right(weights: np.ndarray, sets: list) -> list[bool]:
    return [bool(y[np.argmax(f @ weights)]) for _, f, y in sets]


def fit_and_report(name: str, sets: list) -> None:
    weights = fit_weights(sets)
    print(f"\n{name}: {len(sets)} clips; a right candidate in {sum(y.any() for _, _, y in sets)}")
    print(f"right with the fitted weights (in sample): {np.mean(ranked_right(weights, sets)):.3f}")
    left_out = {}
    for style in sorted({s for s, _, _ in sets}):
        held = [x for x in sets if x[0] == style]
        left_out[style] = ranked_right(fit_weights([x for x in sets if x[0] != style]), held)
    print(f"right, each style's clips ranked by weights fitted without that style: "
          f"{np.mean([h for v in left_out.values() for h in v]):.3f}")
    print("  " + ", ".join(f"{s} {sum(v)}/{len(v)}" for s, v in left_out.items()))
    print(f"{name.upper()}_WEIGHTS = (" + ", ".join(f"{w:.3f}" for w in weights) + ")")


def render(out: Path, minutes: float = 60, seed: int = 1) -> None:
    """Render the catalogue's styles drawn from `seed` with fluidsynth and FluidR3 GM into `out`, with a
    catalogue.json holding what the measure needs (file, style, tempo, meter, bar_seconds)."""
    def clip(entry: dict) -> dict:
        facts = clip_facts(entry["style"], entry["seed"])
        render_midi(style_midi(entry["style"], entry["seed"], entry["seconds"]), out / entry["file"], "fluidsynth",
                    entry["seconds"])
        return {"file": entry["file"], "style": entry["style"], "tempo": facts.tempo, **facts.labels,
                "bar_seconds": facts.bar_seconds}

    with ThreadPoolExecutor(2) as pool:
        files = list(pool.map(clip, plan(minutes, seed, 20)))
    (out / "catalogue.json").write_text(json.dumps({"renderer": "fluidsynth FluidR3 GM", "seed": seed,
                                                    "files": files}, indent=1) + "\n", encoding="utf-8")


def fit(catalogues: list[Path]) -> None:
    tempo_sets, downbeat_sets = [], []
    for catalogue in catalogues:
        tempos, downbeats = candidate_sets(catalogue)
        tempo_sets += tempos
        downbeat_sets += downbeats
    print(f"fitted on {', '.join(map(str, catalogues))}")
    fit_and_report("tempo", tempo_sets)
    fit_and_report("downbeat", downbeat_sets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("catalogues", nargs="*", type=Path, default=[Path("data/heldout"), Path("data/catalogue")])
    parser.add_argument("--fit", action="store_true", help="refit the rankers' weights on the catalogues; print them")
    parser.add_argument("--render", type=Path, help="render a second catalogue to fit on (FluidR3 GM, seed 1) here")
    parser.add_argument("--json", type=Path, help="also write every clip's figures here")
    args = parser.parse_args()
    print(machine_header())
    if args.render:
        render(args.render)
        return
    if args.fit:
        fit(args.catalogues)
        return
    results = [report(catalogue, measure(catalogue)) for catalogue in args.catalogues]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
