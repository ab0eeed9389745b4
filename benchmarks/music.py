"""Musical bars of a model trained on catalogue version 2 (issue 21): tempo, key, style, seamless loops and joins
that keep the beat, speed and size.

    python benchmarks/music.py [--model mini] [--seeds 10] [--tempo-seeds 2] [--heldout data/heldout]
        [--catalogue data/catalogue] [--json FILE]

Every judge is independent of the training labels and of the model (benchmarks/music_estimators.py): librosa's beat
tracker for tempo (within 4 %, half or double a miss), a Krumhansl-Kessler chroma key estimator for key, and the
style classifier of benchmarks/mini.py fitted on the held-out timidity/freepats render alone. Each is also run on
that held-out render of the same music, as the ceiling a perfect model could reach. Needs `make catalogue`.
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine_header
from mini import (
    SAMPLE_RATE,
    clip_features,
    cold_generate,
    fit_classifier,
    interior_ratios,
    labelled_windows,
    line,
    read_mono,
    vae_round_trip,
)
from music_estimators import beat_phase_error, estimate_key, estimate_tempo, parse_key_name, tempo_hit

from spectrodiff.generation.conditions import label_key
from spectrodiff.generation.jobs import ComposeJob, GenerateJob, Keyframe
from spectrodiff.generation.modes import make
from spectrodiff.generation.musical import NOTE_NAMES
from spectrodiff.generation.output import Output
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.metrics import loop_wrap_ratio, seam_ratios
from spectrodiff.training.catalogue import STYLES

# Phrasings no training caption uses, one per style.
UNSEEN = {
    "jazzy saxophone": "smooth sax solo", "funky piano": "funk keyboard riff",
    "church organ and bells": "pipe organ in a cathedral", "electronic beats": "edm club track",
    "blues guitar": "bluesy electric guitar", "string ensemble": "violins and cellos",
    "acoustic drums": "a rock drummer jamming", "ambient pad": "dreamy synth atmosphere",
    "lo-fi hip hop": "lofi study beats", "house": "deep house track", "techno": "warehouse rave techno",
    "drum and bass": "dnb breakbeat", "trap": "808 trap instrumental", "reggae": "jamaican skank groove",
    "bossa nova": "brazilian guitar samba", "rock": "electric guitar rock song", "metal": "heavy metal riffing",
    "country": "nashville fiddle tune", "gospel": "church choir with organ",
    "baroque harpsichord": "bach on harpsichord",
    "ragtime": "scott joplin piano", "big band swing": "swing era horn section", "synthwave": "retrowave outrun",
    "chiptune": "8 bit game music", "cinematic orchestra": "epic movie soundtrack",
    "flamenco guitar": "spanish guitar with palmas", "afrobeat": "fela style groove",
    "waltz": "ballroom dance in three",
    "celtic": "irish folk tune",
}
COMPOSE_PLAN = (("jazzy saxophone", 8), ("lo-fi hip hop", 8), ("house", 8), ("cinematic orchestra", 8))
COMPOSE_BPM = 120.0


def loop_bars(bpm: float, beats: int) -> int:
    """Bars of a tempo loop: 2, or 4 where 2 would last under 3 s (the beat tracker needs a few beats)."""
    return 2 if 2 * beats * 60 / bpm >= 3.0 else 4


def tempo_plan(seeds: int) -> list[dict]:
    """Every style at 4 tempi spread over its range, `seeds` seeds each, with a key drawn from its modes."""
    plan = []
    for index, style in enumerate(STYLES):
        for n, bpm in enumerate(np.linspace(style.tempo[0], style.tempo[1], 4).round()):
            for seed in range(seeds):
                rng = np.random.default_rng([index, n, seed, 5])
                tonic = NOTE_NAMES[int(rng.integers(12))]
                key = label_key(tonic, style.modes[int(rng.integers(len(style.modes)))])
                plan.append({"style": style.name, "bpm": float(bpm), "seed": seed, "key": key,
                             "meter": f"{style.meter}/4", "bars": loop_bars(float(bpm), style.meter),
                             "tonal": bool(style.parts)})  # a style with pitched parts has a key to hear
    return plan


def heard(audio: np.ndarray, bpm: float, key: str | None) -> dict:
    """What the estimators hear in `(N,)` audio asked to be at `bpm` (and in `key`)."""
    tempo = estimate_tempo(audio, SAMPLE_RATE)
    result = {"tempo": None if math.isnan(tempo) else tempo, "tempo_hit": tempo_hit(tempo, bpm)}
    if key is not None:
        result["key"] = estimate_key(audio, SAMPLE_RATE)
        result["key_hit"] = result["key"] == parse_key_name(key)
    return result


def tempo_and_key(pipe, plan: list[dict], out: Path) -> list[dict]:
    """Generate each planned loop; the estimators' verdicts on it (played three times), its wrap statistic, the
    same at points inside it, and the beat grid's phase error at the wraps and elsewhere."""
    rows = []
    for n, entry in enumerate(plan):
        job = GenerateJob(prompt=entry["style"], seed=entry["seed"], bpm=entry["bpm"], bars=entry["bars"],
                          key=entry["key"], meter=entry["meter"])
        audio = read_mono(make(pipe, job, Output(out / f"tempo-{n}.wav")).audio)
        thrice = np.concatenate([audio] * 3)
        near, elsewhere = beat_phase_error(thrice, SAMPLE_RATE, 60 / entry["bpm"], [len(audio) / SAMPLE_RATE,
                                                                                     2 * len(audio) / SAMPLE_RATE])
        rows.append({**entry, **heard(thrice, entry["bpm"], entry["key"] if entry["tonal"] else None),
                     "wrap": loop_wrap_ratio(audio, pipe.spectrogram),
                     "inside": interior_ratios(audio, pipe.spectrogram),
                     "phase_near": near, "phase_elsewhere": elsewhere})
    return rows


def ceilings(heldout: Path, seconds: float = 8.0) -> dict:
    """The tempo and key estimators on the first `seconds` of every held-out clip, against its labels."""
    labels = json.loads((heldout / "catalogue.json").read_text())["files"]
    tonal = {s.name: bool(s.parts) for s in STYLES}
    tempo, key = [], []
    for entry in labels:
        audio = read_mono(heldout / entry["file"])[: int(seconds * SAMPLE_RATE)]
        tonic, mode = entry["key"].split()
        verdict = heard(audio, entry["tempo"], label_key(tonic, mode) if tonal[entry["style"]] else None)
        tempo.append(verdict["tempo_hit"])
        if "key_hit" in verdict:
            key.append(verdict["key_hit"])
    return {"tempo": float(np.mean(tempo)), "key": float(np.mean(key))}


def styles(pipe, classifier, prompts: dict[str, str], seeds: int, out: Path) -> dict:
    """A loop per (style, seed); the share the classifier names as the prompted style, and what it named."""
    hits, confusion, wraps, inside = 0, {}, [], []
    for name, prompt in prompts.items():
        slug = next(s.slug for s in STYLES if s.name == name)
        for seed in range(seeds):
            result = make(pipe, GenerateJob(prompt=prompt, seed=seed), Output(out / f"{slug}-{seed}.wav"))
            audio = read_mono(result.audio)
            guess = classifier.predict(clip_features(audio)[None])[0]
            hits += guess == slug
            confusion.setdefault(name, []).append(str(guess))
            wraps.append(loop_wrap_ratio(audio, pipe.spectrogram))
            inside += interior_ratios(audio, pipe.spectrogram)
    return {"accuracy": hits / (len(prompts) * seeds), "confusion": confusion, "wraps": wraps, "inside": inside}


def composed(pipe, out: Path) -> dict:
    """A compose through four styles in bars at one tempo: warm real-time factor, the join statistic at its joins
    (section changes and decoding pieces) and at the interior points farthest from them."""
    keyframes = [Keyframe(style, seed=n, seconds=bars * 4 * 60 / COMPOSE_BPM)
                 for n, (style, bars) in enumerate(COMPOSE_PLAN)]
    began = time.perf_counter()
    result = make(pipe, ComposeJob(keyframes=keyframes, bpm=COMPOSE_BPM), Output(out / "compose.wav"))
    wall = time.perf_counter() - began
    audio = read_mono(result.audio)
    params = pipe.spectrogram
    tile = pipe.tile_columns * pipe.vae_scale_factor * params.hop_length
    sections = np.cumsum([k.seconds for k in keyframes])[:-1]
    joins = sorted(set(range(tile, len(audio), tile)) | {int(s * SAMPLE_RATE) for s in sections})
    # The points farthest from any join: midway between neighbouring joins (half a tile where pieces meet).
    bounds = [0, *joins, len(audio)]
    interior = [(a + b) // 2 for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b - a > SAMPLE_RATE]
    return {"seconds": len(audio) / SAMPLE_RATE, "wall_s": wall, "rtf": len(audio) / SAMPLE_RATE / wall,
            "joins": seam_ratios(audio, joins, params).tolist(),
            "interior": seam_ratios(audio, interior, params).tolist()}


def share(values) -> float:
    return float(np.mean(np.array(values) <= 1.0))


def report_tempo(args, rows: list[dict], ceiling: dict, wraps: list[float], inside: list[float]) -> None:
    """Print the tempo, key, wrap and beat-grid bars of the tempo loops (and of further loops' `wraps`/`inside`)."""
    tempo_share = float(np.mean([r["tempo_hit"] for r in rows]))
    tonal = [r for r in rows if "key_hit" in r]
    key_share = float(np.mean([r["key_hit"] for r in tonal]))
    wraps = [r["wrap"] for r in rows] + wraps
    inside = [v for r in rows for v in r["inside"]] + inside
    gridded = [r for r in rows if r["tempo_hit"]]  # the grid is judged where the beat is the asked one
    phase_near = float(np.median([r["phase_near"] for r in gridded])) if gridded else float("nan")
    phase_elsewhere = float(np.median([r["phase_elsewhere"] for r in gridded])) if gridded else float("nan")
    print(f"model: {args.model}; {len(rows)} tempo loops ({args.tempo_seeds} seeds x 4 tempi x {len(STYLES)} styles)"
          + ("" if args.tempo_only else f", {len(STYLES)} styles x {args.seeds} seeds, unseen phrasings x "
             f"{args.unseen_seeds}"))
    line("tempo: beat tracker hears the asked tempo (4 %)", f"{tempo_share:.1%}", ">= 80 %", tempo_share >= 0.8)
    line("  ceiling: same tracker on the held-out render", f"{ceiling['tempo']:.1%}", "(reference)", None)
    line(f"key: estimator names the asked key ({len(tonal)} loops)", f"{key_share:.1%}", ">= 60 %", key_share >= 0.6)
    line("  ceiling: same estimator on the held-out render", f"{ceiling['key']:.1%}", "(reference)", None)
    wrap_gap = (share(wraps) - share(inside)) * 100
    line("wraps passing, less interior points passing", f"{wrap_gap:+.1f} pt", ">= -3 pt", wrap_gap >= -3)
    line(f"  wraps passing ({len(wraps)})", f"{share(wraps):.1%}", "(reported)", None)
    line(f"  interior points passing ({len(inside)})", f"{share(inside):.1%}", "(reported)", None)
    line("beat grid: onset phase error at the wrap (beats)", f"{phase_near:.3f}", f"<= {phase_elsewhere:.3f}",
         phase_near <= phase_elsewhere if gridded else None)
    line(f"  inside the loops ({len(gridded)} loops on tempo)", f"{phase_elsewhere:.3f}", "(reference)", None)
    by_style = {}
    for r in rows:
        entry = by_style.setdefault(r["style"], {"tempo": [], "key": []})
        entry["tempo"].append(r["tempo_hit"])
        if "key_hit" in r:
            entry["key"].append(r["key_hit"])
    print("tempo / key hits by style: " + "; ".join(
        f"{name}: {sum(v['tempo'])}/{len(v['tempo'])}" + (f", {sum(v['key'])}/{len(v['key'])}" if v["key"] else "")
        for name, v in by_style.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per style for the style bar")
    parser.add_argument("--unseen-seeds", type=int, default=3, help="seeds per unseen phrasing")
    parser.add_argument("--tempo-seeds", type=int, default=2, help="seeds per (style, tempo)")
    parser.add_argument("--heldout", type=Path, default=Path("data/heldout"))
    parser.add_argument("--catalogue", type=Path, default=Path("data/catalogue"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--tempo-only", action="store_true",
                        help="the tempo, key and wrap bars alone (e.g. to compare with a model without conditions)")
    args = parser.parse_args()
    for root in (args.heldout, args.catalogue):
        if not (root / "catalogue.json").is_file():
            sys.exit(f"no catalogue at {root}: run `make catalogue` first")
    print(machine_header(), flush=True)

    ceiling = ceilings(args.heldout)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pipe = SpectrodiffPipeline.load(args.model)
        pipe.set_progress_bar_config(disable=True)
        rows = tempo_and_key(pipe, tempo_plan(args.tempo_seeds), tmp / "tempo")
        if args.tempo_only:
            report_tempo(args, rows, ceiling, [], [])
            return
        classifier = fit_classifier(args.heldout)
        x, y = labelled_windows(args.catalogue)
        style_ceiling = float((classifier.predict(x) == y).mean())
        named = styles(pipe, classifier, {s.name: s.name for s in STYLES}, args.seeds, tmp / "named")
        unseen = styles(pipe, classifier, UNSEEN, args.unseen_seeds, tmp / "unseen")
        clip = composed(pipe, tmp)
        vae_sc, _ = vae_round_trip(pipe, args.heldout, pipe.config.encode_steps, per_style=4)
        cold = cold_generate(args.model, None, tmp, ["--bpm", "100", "--bars", "2"])

    report_tempo(args, rows, ceiling, named["wraps"], named["inside"])
    line(f"style: classifier names the prompted style ({len(STYLES)})", f"{named['accuracy']:.1%}", ">= 80 %",
         named["accuracy"] >= 0.8)
    line("  unseen phrasings", f"{unseen['accuracy']:.1%}", "(reported)", None)
    line("  ceiling: classifier on the training render", f"{style_ceiling:.1%}", "(reference)", None)
    join_gap = (share(clip["joins"]) - share(clip["interior"])) * 100
    line("compose joins passing, less interior points", f"{join_gap:+.1f} pt", ">= -3 pt", join_gap >= -3)
    line(f"  joins passing ({len(clip['joins'])})", f"{share(clip['joins']):.1%}", "(reported)", None)
    line(f"  interior points passing ({len(clip['interior'])})", f"{share(clip['interior']):.1%}", "(reported)", None)
    line("cold `generate \"jazzy saxophone\" --bpm 100 --bars 2`", f"{cold['wall_s']:.1f} s", "<= 10 s",
         cold["wall_s"] <= 10)
    line("  its peak RSS", f"{cold['rss_mb']:.0f} MB", "<= 1.5 GB", cold["rss_mb"] <= 1536)
    line(f"{clip['seconds']:.0f} s compose: warm real-time factor", f"{clip['rtf']:.2f}", ">= 3", clip["rtf"] >= 3)
    line("VAE round trip mel SC, held-out tiles", f"{vae_sc:.3f}", "<= 0.25", vae_sc <= 0.25)
    print("style confusion: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in named["confusion"].items()))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "named": named, "unseen": unseen, "compose": clip,
                                         "cold": cold, "vae_sc": vae_sc, "ceilings": ceiling,
                                         "style_ceiling": style_ceiling}, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
