"""Musical bars of a beat-time model (issue 28, item 6): tempo, beats, downbeats, key, chords and style of generated
loops, each printed beside its judge's ceiling and its target; wraps and compose joins; speed and size.

    python benchmarks/music.py [--model mini] [--seeds 2] [--chords] [--styles house,techno] [--limit N]
        [--ceilings-only] [--codec-clips 2] [--heldout data/heldout] [--catalogue data/catalogue] [--json FILE]

The judges (benchmarks/music_estimators.py) hear audio only; each is calibrated before it judges: its ceiling is
the same judge on the held-out timidity render of the catalogue's MIDI (labels exact: tempo, key and meter from
catalogue.json, the chord of every bar from training/composition.py), taken exactly as a generated loop is taken -
each clip's first bars (it starts on a downbeat, with its progression's first chord), as many as a generated loop
at that tempo (`loop_bars`), played three times, judged against the grid, key and chords it was "asked". The
style judge is a classifier fitted on the held-out render's excerpts and its ceiling measured across renders, on the
fluidsynth render's (the one the model trained on). Then the same judges on `--codec-clips` held-out clips a style
as the model's own codec voices them (`codec_ceilings`: their mel through the vocoder, and through the VAE too): the
most a better UNet could reach. `--ceilings-only` runs these calibrations alone (a few minutes).

The table: every style x 4 tempi across its range x `--seeds` seeds, a loop each (`GenerateJob` with the tempo, meter,
bars and a key drawn from the style's modes; with `--chords`, also the chords of one of the style's progressions in
that key, one a bar). Tempo and beat figures are over styles with a pulse (`has_pulse`), key figures over tonal
loops (`Ask.tonal`). Needs `make catalogue`.
"""

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr
import torch
from common import machine_header
from mini import SAMPLE_RATE, cold_generate, interior_ratios, read_mono, vae_round_trip
from music_estimators import (
    BEAT_TOLERANCE,
    RATE,
    Heard,
    bar_triads,
    beat_f_measure,
    beat_grid,
    beat_phase_error,
    downbeats,
    estimate_key,
    estimate_tempo,
    parse_key_name,
    style_features,
    tempo_hit,
    track_beats,
    triad_of,
)
from threadpoolctl import threadpool_limits

from spectrodiff.codec.audio import load_audio
from spectrodiff.codec.convert import audio_to_pixels
from spectrodiff.codec.image import layout, pixels_to_mel
from spectrodiff.codec.params import SpectrogramParams
from spectrodiff.generation.conditions import label_key
from spectrodiff.generation.harmony import chord_name
from spectrodiff.generation.jobs import ComposeJob, GenerateJob, Keyframe
from spectrodiff.generation.modes import make
from spectrodiff.generation.musical import NOTE_NAMES
from spectrodiff.generation.output import Output
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.metrics import loop_wrap_ratio, seam_ratios
from spectrodiff.training.composition import STYLES, ClipFacts, Style, bar_chords, clip_facts, style_by_name
from spectrodiff.vocoding.registry import choose_vocoder
from spectrodiff.vocoding.render import mel_to_audio

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


def has_pulse(style: Style) -> bool:
    """Whether the style's score marks every beat of every bar, on the beat or on its off-beat eighth (a reggae
    skank): some part or the drums strike there whatever rhythm or pattern a clip draws. Those that do not - held
    chords and half-note melodies: church organ and bells, string ensemble, ambient pad, cinematic orchestra - give a
    tracker no beat to hear in 2-4 bars, so tempo and beat figures leave them out."""
    def struck(patterns: list[str]) -> set[int]:
        return set.intersection(*({step // 4 for step, hit in enumerate(p) if hit != "." and step % 2 == 0}
                                  for p in patterns))

    beats = set().union(*(struck(list(part.rhythms)) for part in style.parts))
    if style.drums:
        beats |= struck([merged(pattern) for pattern in style.drums])
    return beats >= set(range(style.meter))


def merged(pattern: dict[int, str]) -> str:
    """One bar of drum hits with every drum of `pattern` in it ('x' where any drum strikes)."""
    return "".join("x" if any(hits[step] != "." for hits in pattern.values()) else "."
                   for step in range(len(next(iter(pattern.values())))))


@dataclass(frozen=True)
class Ask:
    """What a loop was asked to be, all that its judges are told: the style (whose declared tempo range is the
    tempo judge's prior), tempo, bars, key, and the chord of each bar (pitch classes, root first) when asked."""

    style: Style
    bpm: float
    bars: int
    key: str
    mode: str  # the catalogue mode the key was drawn as ("dorian" asks "D minor")
    chords: tuple[tuple[int, ...], ...] | None = None

    @property
    def bar_seconds(self) -> float:
        return self.style.meter * 60 / self.bpm

    @property
    def tonal(self) -> bool:
        """A key to hear: the style has pitched parts and the mode is major or minor. Modal clips are asked as the
        major or minor key of their third (D dorian as D minor) but sound the pitch classes of another major key
        (C major's), so the key figures leave them out."""
        return bool(self.style.parts) and self.mode in ("major", "minor")

    @property
    def pulse(self) -> bool:
        return has_pulse(self.style)


def judge(loop: np.ndarray, rate: int, ask: Ask) -> dict:
    """Every judge's verdict on a `(N,)` loop at `rate` Hz asked to be `ask`, heard three times in a row: tempo
    (blind, in the style's range) and its hits, the tracker's beats against the asked grid (F-measure), whether a
    downbeat falls within 70 ms of the loop's first sample (at the first wrap), the onsets' phase error against the
    asked grid near the wraps and elsewhere, the triad of each asked bar and the key (both on the second time
    through) and the style features."""
    seconds = len(loop) / rate
    thrice = Heard(np.tile(loop, 3), rate)
    tempo = estimate_tempo(thrice, tempo_range=ask.style.tempo)
    beats = track_beats(thrice, tempo)
    bar_lines = downbeats(thrice, beats, ask.style.meter)
    near, inside = beat_phase_error(thrice, 60 / ask.bpm, [seconds, 2 * seconds])
    verdict = {"style": ask.style.name, "bpm": ask.bpm, "bars": ask.bars, "key": ask.key, "pulse": ask.pulse,
               "tempo": tempo, "acc1": tempo_hit(tempo, ask.bpm), "acc2": tempo_hit(tempo, ask.bpm, octave=True),
               "beat_f": beat_f_measure(beat_grid(ask.bpm, thrice.seconds), beats),
               "downbeat": bool(len(bar_lines)) and float(np.min(np.abs(bar_lines - seconds))) <= BEAT_TOLERANCE,
               "phase_near": near, "phase_inside": inside, "features": style_features(thrice).tolist()}
    if ask.chords:
        heard = bar_triads(thrice, ask.bar_seconds, ask.bars, start=seconds)
        verdict["chords"] = [triad == triad_of(chord) for triad, chord in zip(heard, ask.chords, strict=True)]
    if ask.tonal:
        key = estimate_key(thrice, ask.bar_seconds, start=seconds, bars=ask.bars)
        verdict["key_hit"] = key == parse_key_name(ask.key)
    return verdict


# ---- the ceilings --------------------------------------------------------------------------------------------


def excerpts(root: Path, styles: set[str], limit: int | None) -> Iterator[tuple[Ask, np.ndarray]]:
    """The loop each clip of a catalogue render holds (at most `limit` clips a style of `styles`): its first
    `loop_bars` bars at its tempo - a clip starts on a downbeat, with its progression's first chord, as a generated
    loop's asked chords do - with its exact labels. Audio `(N,)` at RATE."""
    taken: dict[str, int] = {}
    for record in json.loads((root / "catalogue.json").read_text())["files"]:
        style = style_by_name(record["style"])
        if style.name not in styles or taken.get(style.name, 0) == limit:
            continue
        taken[style.name] = taken.get(style.name, 0) + 1
        chords = bar_chords(style, clip_facts(style, record["seed"]))
        bars = loop_bars(record["tempo"], style.meter)
        tonic, mode = record["key"].split()
        asked = tuple(chords[n % len(chords)] for n in range(bars)) if style.parts else None
        seconds = bars * record["bar_seconds"]
        yield (Ask(style, record["tempo"], bars, label_key(tonic, mode), mode, asked),
               load_audio(root / record["file"], RATE, "mono", duration=seconds)[0])


def fit_style_judge(rows: list[dict]):
    """A classifier of style features (standardised, logistic regression, scikit-learn) fitted on judged rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.array([r["features"] for r in rows]), [r["style"] for r in rows]
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000)).fit(x, y)


def ceilings(heldout: Path, catalogue: Path, styles: set[str], limit: int | None) -> tuple[dict, object]:
    """Every judge on the held-out render's excerpts of `styles` (`excerpts`), and the style judge fitted on the
    held-out excerpts of every style and measured on the fluidsynth render's of `styles`: the figures (`figures`),
    by style, and the fitted style judge."""
    began = time.perf_counter()
    with threadpool_limits(1, user_api="blas"):  # small matrices: BLAS threads only contend for the cores
        rows = [judge(loop, RATE, ask) for ask, loop in excerpts(heldout, styles, limit)]
        others = [{"style": ask.style.name, "features": style_features(Heard(np.tile(loop, 3), RATE))}
                  for ask, loop in excerpts(heldout, {s.name for s in STYLES} - styles, limit)]
        across = [(ask.style.name, style_features(Heard(np.tile(loop, 3), RATE)))
                  for ask, loop in excerpts(catalogue, styles, limit)]
    classifier = fit_style_judge(rows + others)
    named = classifier.predict(np.stack([f for _, f in across]))
    style_hits = [bool(guess == name) for guess, (name, _) in zip(named, across, strict=True)]
    for row in rows:
        row.pop("features")
    by_style = {name: figures([r for r in rows if r["style"] == name],
                              [hit for hit, (n, _) in zip(style_hits, across, strict=True) if n == name])
                for name in (s.name for s in STYLES if s.name in styles)}
    return {"figures": figures(rows, style_hits), "by_style": by_style, "loops": len(rows),
            "seconds": time.perf_counter() - began, "rows": rows}, classifier


def figures(rows: list[dict], style_hits: list[bool]) -> dict:
    """The item-6 figures of judged loops: tempo Acc1 and Acc2, beat F-measure and first downbeats over loops with
    a pulse; key over tonal loops; chords over asked bars; style; the onsets' median phase error near the wraps and
    inside the loops whose tempo was heard (Acc1)."""
    pulsed = [r for r in rows if r["pulse"]]
    tonal = [r["key_hit"] for r in rows if "key_hit" in r]
    bars = [hit for r in rows for hit in r.get("chords", [])]
    on_tempo = [r for r in pulsed if r["acc1"]]

    def mean(values) -> float:
        return float(np.mean(values)) if len(values) else math.nan

    def median(values) -> float:
        values = [v for v in values if not math.isnan(v)]
        return float(np.median(values)) if values else math.nan

    return {"acc1": mean([r["acc1"] for r in pulsed]), "acc2": mean([r["acc2"] for r in pulsed]),
            "beat_f": mean([r["beat_f"] for r in pulsed]), "downbeat": mean([r["downbeat"] for r in pulsed]),
            "key": mean(tonal), "chords": mean(bars), "style": mean(style_hits),
            "phase_near": median([r["phase_near"] for r in on_tempo]),
            "phase_inside": median([r["phase_inside"] for r in on_tempo]),
            "counts": {"pulse": len(pulsed), "tonal": len(tonal), "bars": len(bars), "style": len(style_hits),
                       "on_tempo": len(on_tempo)}}


def codec_ceilings(pipe, heldout: Path, styles: set[str], limit: int) -> dict:
    """The judges on held-out excerpts (`limit` clips a style) as the model's codec voices them at best: each
    excerpt's mel in the model's parameters (at its tempo in beat time), looped and rendered by the model's vocoder
    ("mel"), and after the VAE's encode (the model's `encode_steps` of refinement) and decode too ("vae"): what a
    model whose latents were the music's own would reach. A target above the "vae" figure is out of a better
    UNet's reach alone."""
    vocoder = choose_vocoder(None, audio_params(pipe), getattr(pipe, "vocoder", None))
    rows: dict[str, list[dict]] = {"mel": [], "vae": []}
    with threadpool_limits(1, user_api="blas"):
        for ask, loop in excerpts(heldout, styles, limit):
            with pipe.at_tempo(ask.bpm if pipe.spectrogram.beat_time else None):
                params = pipe.spectrogram
                width = pipe.columns_for(ask.bars * ask.bar_seconds, loop=True) * pipe.vae_scale_factor
                audio = soxr.resample(loop, RATE, params.sample_rate)[None]
                pixels, peak = audio_to_pixels(audio[:, : params.samples_for_width(width)], params, width)
                latents = pipe.encode_image(pixels, pipe.config.encode_steps)
                decoded = layout(torch.cat([image for _, image in pipe.decode_latents(latents, loop=True)], -1),
                                 params)
                for name, image in (("mel", pixels), ("vae", decoded)):
                    heard = mel_to_audio(pixels_to_mel(image, params, peak)[:1], params, vocoder, circular=True)
                    rows[name].append(judge(heard.numpy()[0], params.sample_rate, ask))
    for row in (r for name in rows for r in rows[name]):
        row.pop("features")
    return {name: figures(judged, []) for name, judged in rows.items()} | {"loops": len(rows["mel"])}


# ---- the generated loops -------------------------------------------------------------------------------------


def tempo_plan(seeds: int, styles: set[str] | None = None, limit: int | None = None) -> list[tuple[Ask, int]]:
    """Every style (of `styles`) at 4 tempi spread over its range, `seeds` seeds each (the first `limit` of them):
    the ask (a key drawn from the style's modes, the chords of one of its progressions in that key, one a bar) and
    the seed."""
    plan = []
    for index, style in enumerate(STYLES):
        if styles is not None and style.name not in styles:
            continue
        for n, bpm in enumerate(np.linspace(style.tempo[0], style.tempo[1], 4).round()):
            for seed in range(seeds):
                rng = np.random.default_rng([index, n, seed, 5])
                root = int(rng.integers(12))
                mode = style.modes[int(rng.integers(len(style.modes)))]
                progression = style.progressions[int(rng.integers(len(style.progressions)))]
                chords = bar_chords(style, ClipFacts(float(bpm), root, mode, progression, {}, (), style.meter))
                bars = loop_bars(float(bpm), style.meter)
                asked = tuple(chords[b % len(chords)] for b in range(bars)) if style.parts else None
                plan.append((Ask(style, float(bpm), bars, label_key(NOTE_NAMES[root], mode), mode, asked), seed))
    return [entry for n, entry in enumerate(plan) if limit is None or n % (4 * seeds) < limit]


def audio_params(pipe) -> SpectrogramParams:
    """The clock-time parameters that the model's audio is measured in (a beat-time model's clock twin)."""
    return pipe.spectrogram.clock() if pipe.spectrogram.beat_time else pipe.spectrogram


def generated(pipe, plan: list[tuple[Ask, int]], out: Path, with_chords: bool) -> list[dict]:
    """Generate each planned loop into `out` and judge it (`judge`; chords only `with_chords`), with its wrap
    statistic and the same statistic at points inside it. A loop already in `out` (`--loops`) is judged again, not
    made again."""
    rows, params = [], audio_params(pipe)
    for ask, seed in plan:
        fields = {"prompt": ask.style.name, "seed": seed, "bpm": ask.bpm, "bars": ask.bars, "key": ask.key,
                  "meter": f"{ask.style.meter}/4"}
        if with_chords and ask.chords:
            fields["chords"] = " ".join(chord_name(chord) for chord in ask.chords)
        asked_chords = "-chords" if "chords" in fields else ""
        path = out / f"{ask.style.name.replace(' ', '_')}-{ask.bpm:g}-{seed}{asked_chords}.wav"
        audio = read_mono(path if path.is_file() else make(pipe, GenerateJob(**fields), Output(path)).audio)
        asked = ask if with_chords else Ask(ask.style, ask.bpm, ask.bars, ask.key, ask.mode)
        rows.append({**judge(audio, SAMPLE_RATE, asked), "seed": seed,
                     "wrap": loop_wrap_ratio(audio, params), "inside": interior_ratios(audio, params)})
    return rows


def unseen_styles(pipe, classifier, seeds: int, styles: set[str], out: Path) -> float:
    """The share of loops made from phrasings no caption uses (`seeds` each) that the style judge names right."""
    hits = []
    for name, prompt in UNSEEN.items():
        if name not in styles:
            continue
        for seed in range(seeds):
            result = make(pipe, GenerateJob(prompt=prompt, seed=seed), Output(out / f"{name}-{seed}.wav"))
            audio = read_mono(result.audio)
            hits.append(classifier.predict(style_features(Heard(np.tile(audio, 3), SAMPLE_RATE))[None])[0] == name)
    return float(np.mean(hits)) if hits else math.nan


def composed(pipe, out: Path) -> dict:
    """A compose through four styles in bars at one tempo: warm real-time factor; the join statistic at its joins
    (section changes and decoding pieces) and at the interior points farthest from them; the onsets' phase error
    against the 120 BPM grid near the section changes and elsewhere."""
    keyframes = [Keyframe(style, seed=n, seconds=bars * 4 * 60 / COMPOSE_BPM)
                 for n, (style, bars) in enumerate(COMPOSE_PLAN)]
    began = time.perf_counter()
    result = make(pipe, ComposeJob(keyframes=keyframes, bpm=COMPOSE_BPM), Output(out / "compose.wav"))
    wall = time.perf_counter() - began
    audio = read_mono(result.audio)
    params = audio_params(pipe)
    with pipe.at_tempo(COMPOSE_BPM):  # a decoding piece is a tile: in beat time, BEAT_TILE_BEATS beats at the tempo
        tile = round(pipe.tile_columns * pipe.seconds_per_column * SAMPLE_RATE)
    sections = np.cumsum([k.seconds for k in keyframes])[:-1]
    joins = sorted(set(range(tile, len(audio), tile)) | {int(s * SAMPLE_RATE) for s in sections})
    # The points farthest from any join: midway between neighbouring joins (half a tile where pieces meet).
    bounds = [0, *joins, len(audio)]
    interior = [(a + b) // 2 for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b - a > SAMPLE_RATE]
    near, inside = beat_phase_error(Heard(audio, SAMPLE_RATE), 60 / COMPOSE_BPM, sections)
    return {"seconds": len(audio) / SAMPLE_RATE, "wall_s": wall, "rtf": len(audio) / SAMPLE_RATE / wall,
            "joins": seam_ratios(audio, joins, params).tolist(),
            "interior": seam_ratios(audio, interior, params).tolist(), "phase_near": near, "phase_inside": inside}


# ---- the report ----------------------------------------------------------------------------------------------


def row(name: str, value: str, ceiling: str, target: str, ok: bool | None) -> None:
    verdict = "" if ok is None else ("PASS" if ok else "FAIL")
    print(f"{name:<54} {value:>10} {ceiling:>10}   {target:<24} {verdict}", flush=True)


def share(values) -> float:
    return float(np.mean(np.array(values) <= 1.0))


def report_ceilings(ceiling: dict) -> None:
    """The calibration: each judge's ceiling beside the bar it must reach before it judges."""
    f, counts = ceiling["figures"], ceiling["figures"]["counts"]
    print(f"ceilings: {ceiling['loops']} excerpts of the held-out render, judged as generated loops "
          f"({ceiling['seconds']:.0f} s); no pulse (left out of tempo and beats): "
          + ", ".join(s.name for s in STYLES if not has_pulse(s)))
    row("", "ceiling", "", "bar", None)
    row(f"tempo Acc1, within 4 % ({counts['pulse']} loops with a pulse)", f"{f['acc1']:.1%}", "", ">= 85 %",
        f["acc1"] >= 0.85)
    row("tempo Acc2, half or double allowed", f"{f['acc2']:.1%}", "", "(reported)", None)
    row("beat F-measure at 70 ms against the label grid", f"{f['beat_f']:.3f}", "", ">= 0.90", f["beat_f"] >= 0.9)
    row("first downbeat on the loop's first sample (70 ms)", f"{f['downbeat']:.1%}", "", "(reported)", None)
    row(f"key, tonic and mode ({counts['tonal']} major/minor tonal loops)", f"{f['key']:.1%}", "", ">= 85 %",
        f["key"] >= 0.85)
    row(f"chord per bar: the label triad heard ({counts['bars']} bars)", f"{f['chords']:.1%}", "", "(reported)", None)
    row(f"style, fitted on timidity, on fluidsynth ({counts['style']})", f"{f['style']:.1%}", "", ">= 90 %",
        f["style"] >= 0.9)
    row(f"beat grid: onset phase error at the wrap ({counts['on_tempo']})", f"{f['phase_near']:.3f}", "",
        f"inside: {f['phase_inside']:.3f}", None)
    print("by style (Acc1 / beat F / downbeat / key / chords / style): " + "; ".join(
        f"{name}: " + " / ".join("-" if math.isnan(v[k]) else f"{v[k]:.2f}"
                                 for k in ("acc1", "beat_f", "downbeat", "key", "chords", "style"))
        for name, v in ceiling["by_style"].items()), flush=True)


def report_table(args, rows: list[dict], style_hits: list[bool], ceiling: dict, clip: dict, speed: dict) -> None:
    """The item-6 table: each figure of the generated loops beside its ceiling and target, then speed and size."""
    f, c = figures(rows, style_hits), ceiling["figures"]
    print(f"model: {args.model}; {len(rows)} loops ({args.seeds} seeds x 4 tempi x styles)"
          f"{'' if args.chords else '; chords not asked (--chords off): the chord row is not measured'}")
    row("", "measured", "ceiling", "target", None)
    row(f"tempo Acc1, within 4 % ({f['counts']['pulse']} loops with a pulse)", f"{f['acc1']:.1%}", f"{c['acc1']:.1%}",
        "ceiling - 5 pt", f["acc1"] >= c["acc1"] - 0.05)
    row("tempo Acc2, half or double allowed", f"{f['acc2']:.1%}", f"{c['acc2']:.1%}", "(reported)", None)
    row("beat F-measure at 70 ms against the asked grid", f"{f['beat_f']:.3f}", f"{c['beat_f']:.3f}", ">= 0.85",
        f["beat_f"] >= 0.85)
    row("first downbeat on sample 0 (70 ms)", f"{f['downbeat']:.1%}", f"{c['downbeat']:.1%}", ">= 80 %",
        f["downbeat"] >= 0.8)
    row(f"key, tonic and mode ({f['counts']['tonal']} tonal loops)", f"{f['key']:.1%}", f"{c['key']:.1%}",
        "ceiling - 10 pt", f["key"] >= c["key"] - 0.1)
    if args.chords:
        row(f"asked chords heard ({f['counts']['bars']} bars)", f"{f['chords']:.1%}", f"{c['chords']:.1%}",
            ">= 70 %", f["chords"] >= 0.7)
    row(f"style, named by the style judge ({len(style_hits)})", f"{f['style']:.1%}", f"{c['style']:.1%}",
        f">= {0.85 * c['style']:.1%} (85 %)", f["style"] >= 0.85 * c["style"])
    row("  unseen phrasings", f"{speed['unseen']:.1%}", "", "(reported)", None)
    row(f"beat grid: phase error at the wrap ({f['counts']['on_tempo']})", f"{f['phase_near']:.3f}",
        f"{c['phase_near']:.3f}", f"<= inside {f['phase_inside']:.3f}",
        f["phase_near"] <= f["phase_inside"] if f["counts"]["on_tempo"] else None)
    row("  at the compose's section changes", f"{clip['phase_near']:.3f}", "",
        f"<= inside {clip['phase_inside']:.3f}", clip["phase_near"] <= clip["phase_inside"])
    wraps, inside = [r["wrap"] for r in rows], [v for r in rows for v in r["inside"]]
    wrap_gap = (share(wraps) - share(inside)) * 100
    row("wraps passing the wrap statistic, less interior points", f"{wrap_gap:+.1f} pt", "", ">= -3 pt",
        wrap_gap >= -3)
    join_gap = (share(clip["joins"]) - share(clip["interior"])) * 100
    row("compose joins passing, less interior points", f"{join_gap:+.1f} pt", "", ">= -3 pt", join_gap >= -3)
    cold = speed["cold"]
    row("cold `generate \"jazzy saxophone\" --bpm 100 --bars 2`", f"{cold['wall_s']:.1f} s", "", "<= 10 s",
        cold["wall_s"] <= 10)
    row("  its peak RSS", f"{cold['rss_mb']:.0f} MB", "", "<= 1.5 GB", cold["rss_mb"] <= 1536)
    row(f"{clip['seconds']:.0f} s compose: warm real-time factor", f"{clip['rtf']:.2f}", "", ">= 3", clip["rtf"] >= 3)
    row("VAE round trip mel SC, held-out tiles", f"{speed['vae_sc']:.3f}", "", "<= 0.25", speed["vae_sc"] <= 0.25)


def report_codec(codec: dict) -> None:
    """What the model's codec lets through (`codec_ceilings`), beside the held-out render's own figures."""
    mel, vae = codec["mel"], codec["vae"]
    print(f"through the model's codec: {codec['loops']} held-out excerpts as its mel + vocoder, and + VAE")
    row("", "mel", "+ VAE", "", None)
    for name, key, form in (("tempo Acc1", "acc1", "{:.1%}"), ("beat F-measure", "beat_f", "{:.3f}"),
                            ("first downbeat on sample 0", "downbeat", "{:.1%}"), ("key", "key", "{:.1%}"),
                            ("chord per bar", "chords", "{:.1%}")):
        row(f"  {name}", form.format(mel[key]), form.format(vae[key]), "", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per (style, tempo)")
    parser.add_argument("--unseen-seeds", type=int, default=1, help="seeds per unseen phrasing")
    parser.add_argument("--chords", action="store_true", help="ask each loop's chords (GenerateJob's chords field)")
    parser.add_argument("--styles", default=None, help="comma-separated style names (default: all)")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many clips a style in each render, and loops a style in the table")
    parser.add_argument("--ceilings-only", action="store_true", help="calibrate the judges (and the codec) and stop")
    parser.add_argument("--codec-clips", type=int, default=2,
                        help="held-out clips a style heard through the model's codec (0: skip)")
    parser.add_argument("--heldout", type=Path, default=Path("data/heldout"))
    parser.add_argument("--catalogue", type=Path, default=Path("data/catalogue"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--loops", type=Path, default=None,
                        help="keep the table's loops in this folder; loops already there are judged, not remade "
                        "(empty it when the model changes)")
    args = parser.parse_args()
    for root in (args.heldout, args.catalogue):
        if not (root / "catalogue.json").is_file():
            sys.exit(f"no catalogue at {root}: run `make catalogue` first")
    styles = {style_by_name(s.strip()).name for s in args.styles.split(",")} if args.styles else \
        {s.name for s in STYLES}
    print(machine_header(), flush=True)

    ceiling, classifier = ceilings(args.heldout, args.catalogue, styles, args.limit)
    report_ceilings(ceiling)
    pipe = SpectrodiffPipeline.load(args.model)
    pipe.set_progress_bar_config(disable=True)
    codec = codec_ceilings(pipe, args.heldout, styles, args.codec_clips) if args.codec_clips else None
    if codec:
        report_codec(codec)
    if args.ceilings_only:
        if args.json:
            args.json.write_text(json.dumps({"ceilings": ceiling, "codec": codec}, indent=1, default=float) + "\n")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = generated(pipe, tempo_plan(args.seeds, styles, args.limit), args.loops or tmp / "loops", args.chords)
        style_hits = [bool(guess == r["style"]) for guess, r in
                      zip(classifier.predict(np.array([r.pop("features") for r in rows])), rows, strict=True)]
        speed = {"unseen": unseen_styles(pipe, classifier, args.unseen_seeds, styles, tmp / "unseen")}
        clip = composed(pipe, tmp)
        speed["vae_sc"], _ = vae_round_trip(pipe, args.heldout, pipe.config.encode_steps, per_style=4)
        speed["cold"] = cold_generate(args.model, None, tmp, ["--bpm", "100", "--bars", "2"])
    report_table(args, rows, style_hits, ceiling, clip, speed)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "style_hits": style_hits, "ceilings": ceiling,
                                         "compose": clip, "speed": speed, "codec": codec}, indent=1,
                                        default=float) + "\n")


if __name__ == "__main__":
    main()
