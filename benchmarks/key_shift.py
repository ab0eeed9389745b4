"""Chords aligned with the frames against anchor keys and a shift (issue 28, item 3): the inference half.

    python benchmarks/key_shift.py [--model mini] [--seeds 2] [--styles house,techno] [--ceiling-clips 2]
        [--heldout data/heldout] [--json FILE]

The plain alternative to aligned chord conditions trains in a few anchor keys and moves the mel by at most 3
semitones before vocoding. No anchor-key model is trained here: both arms run the same beat-time model (mini v3,
trained with chords in all keys), so this measures what the shift itself costs, not what anchor-key training gives.
For every style with pitched parts and a major or minor mode, at the middle of its tempo range, `--seeds` loops
each (2 bars, or 4 where 2 last under 3 s: music.py `loop_bars`), a key drawn from those modes and one of the
style's progressions in it, one chord a bar:

- aligned: the loop asked in its key with its chords (GenerateJob's `chords`);
- anchor + shift: the same ask transposed to the nearest anchor key (C or F#, 6 semitones apart, so every tonic
  is within 3), its chords transposed with it, and the decoded mel (the image's, in beat time, before the vocoder)
  moved by the difference (`spectrodiff.codec.pitch.shift_mel`), then vocoded as a loop is.

Both arms render through the same path (the shift is 0 semitones in the aligned arm, an exact copy), which is the
path `generate` takes for a beat-time loop (`takes.loop_blocks`). The judges are music.py's, calibrated there: the
key (tonic and mode, on the second time through a loop played three times) and the asked triad of each bar. Style
is not judged: its classifier is fitted on the held-out render's features, minutes of work on this machine.

Then the shift on music that is right (`--ceiling-clips` a style, `render_ceiling`): loops of the held-out render,
their mel vocoded as it is and shifted by 1-3 semitones, judged against their labels moved with them.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import soxr
import torch
from common import machine_header
from music import Ask, excerpts, loop_bars
from music_estimators import RATE, Heard, bar_triads, estimate_key, parse_key_name, triad_of
from threadpoolctl import threadpool_limits

from spectrodiff.codec.mel import waveform_to_mel
from spectrodiff.codec.pitch import shift_mel
from spectrodiff.generation.conditions import label_key
from spectrodiff.generation.harmony import chord_name
from spectrodiff.generation.jobs import GenerateJob
from spectrodiff.generation.modes import generate, tempo_of
from spectrodiff.generation.musical import NOTE_NAMES
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.generation.takes import resample_loop
from spectrodiff.training.composition import STYLES, ClipFacts, bar_chords, style_by_name
from spectrodiff.vocoding.registry import choose_vocoder
from spectrodiff.vocoding.render import mel_to_audio

ANCHORS = (0, 6)  # C and F#
CEILING_SHIFTS = (1, -1, 2, -2, 3, -3)
TONAL_MODES = ("major", "minor")


def anchor_of(root: int) -> tuple[int, int]:
    """The anchor nearest pitch class `root` and the semitones from it up to `root` (-3 ... 3); Eb and A, halfway
    between, go up 3 from C and F#."""
    shifts = {anchor: (root - anchor + 6) % 12 - 6 for anchor in ANCHORS}
    anchor = min(ANCHORS, key=lambda a: (abs(shifts[a]), -shifts[a]))
    return anchor, shifts[anchor]


def plan(seeds: int, styles: set[str] | None) -> list[tuple[Ask, int, int]]:
    """Each style with pitched parts and a major or minor mode, at its middle tempo, `seeds` seeds: the ask (its key
    drawn at random, with one of its progressions in that key), the seed and the root it was drawn on."""
    entries = []
    for index, style in enumerate(STYLES):
        modes = [m for m in style.modes if m in TONAL_MODES]
        if not style.parts or not modes or (styles is not None and style.name not in styles):
            continue
        bpm = float(round(sum(style.tempo) / 2))
        bars = loop_bars(bpm, style.meter)
        for seed in range(seeds):
            rng = np.random.default_rng([index, seed, 28])
            root, mode = int(rng.integers(12)), modes[int(rng.integers(len(modes)))]
            progression = style.progressions[int(rng.integers(len(style.progressions)))]
            chords = bar_chords(style, ClipFacts(bpm, root, mode, progression, {}, (), style.meter))
            asked = tuple(chords[b % len(chords)] for b in range(bars))
            entries.append((Ask(style, bpm, bars, label_key(NOTE_NAMES[root], mode), mode, asked), seed, root))
    return entries


def transposed(ask: Ask, semitones: int) -> Ask:
    """`ask` moved by `semitones`: its key and every chord."""
    tonic, _ = parse_key_name(ask.key)
    chords = tuple(tuple((p + semitones) % 12 for p in chord) for chord in ask.chords)
    return dataclasses.replace(ask, key=label_key(NOTE_NAMES[(tonic + semitones) % 12], ask.mode), chords=chords)


def shifted_loop(pipe, ask: Ask, seed: int, semitones: int) -> np.ndarray:
    """`ask` generated as a loop, its beat-time mel moved by `semitones` before it is vocoded as `generate` vocodes a
    beat-time loop (`takes.loop_blocks`), at `generate`'s gain: `(N,)` mono at the model's rate."""
    job = GenerateJob(prompt=ask.style.name, seed=seed, bpm=ask.bpm, bars=ask.bars, key=ask.key,
                      meter=f"{ask.style.meter}/4", chords=" ".join(chord_name(chord) for chord in ask.chords))
    with pipe.at_tempo(tempo_of(pipe, job)):
        take = generate(pipe, job)
        decoding = take.decoding
        mel = shift_mel(decoding.image_mel(), semitones, decoding.params)
        period = mel_to_audio(mel, decoding.params, take.vocoder, circular=True, n_iter=job.iters).numpy()
        samples = round(take.seconds * decoding.params.sample_rate)
        audio = dataclasses.replace(take, blocks=resample_loop(period, samples)).audio()
    return audio.mean(axis=0)


def heard_harmony(loop: np.ndarray, rate: int, ask: Ask) -> dict:
    """Key and chord judges as music.py `judge` runs them: the loop played three times, its second time through."""
    seconds = len(loop) / rate
    thrice = Heard(np.tile(loop, 3), rate)
    heard = bar_triads(thrice, ask.bar_seconds, ask.bars, start=seconds)
    key = estimate_key(thrice, ask.bar_seconds, start=seconds, bars=ask.bars)
    return {"key_hit": key == parse_key_name(ask.key),
            "chords": [triad == triad_of(chord) for triad, chord in zip(heard, ask.chords, strict=True)]}


def render_ceiling(pipe, heldout: Path, per_style: int, styles: set[str] | None) -> list[dict]:
    """The shift on music that is right: the loop that each of the first `per_style` clips a tonal style (of
    `styles`) of the held-out render holds (music.py `excerpts`, major and minor ones), its clock-time mel at the
    model's parameters vocoded by the model's vocoder as it is ("aligned") and moved by 1-3 semitones up or down in
    turn ("shifted"), each judged against its labels moved with it."""
    params = pipe.spectrogram.clock()
    vocoder = choose_vocoder(None, params, getattr(pipe, "vocoder", None))
    rows = []
    for ask, loop in excerpts(heldout, {ask.style.name for ask, _, _ in plan(1, styles)}, per_style):
        if not ask.tonal:
            continue
        shift = CEILING_SHIFTS[len(rows) % len(CEILING_SHIFTS)]
        audio = soxr.resample(loop, RATE, params.sample_rate)
        mel = waveform_to_mel(torch.from_numpy(audio)[None], params)
        verdicts = {}
        for arm, semitones in (("aligned", 0), ("shifted", shift)):
            heard = mel_to_audio(shift_mel(mel, semitones, params), params, vocoder).numpy()[0]
            heard = np.pad(heard, (0, max(len(audio) - len(heard), 0)))[: len(audio)]
            verdicts[arm] = heard_harmony(heard, params.sample_rate, transposed(ask, semitones))
        rows.append({"style": ask.style.name, "key": ask.key, "shift": shift, **verdicts})
    return rows


def summary(rows: list[dict], arm: str) -> dict:
    keys = [r[arm]["key_hit"] for r in rows]
    bars = [hit for r in rows for hit in r[arm]["chords"]]
    return {"key": float(np.mean(keys)), "chords": float(np.mean(bars)), "loops": len(keys), "bars": len(bars)}


def report(rows: list[dict], title: str, names: tuple[str, str]) -> None:
    """The key and chord hit rates of both arms (`names`), over all loops and by the shift's size."""
    print(f"{title}: {len(rows)} loops")
    print(f"{'arm':<40} {'key hit':>9} {'chords per bar':>15}")
    for arm, name in zip(("aligned", "shifted"), names, strict=True):
        s = summary(rows, arm)
        print(f"{name:<40} {s['key']:>9.1%} {s['chords']:>15.1%}   ({s['loops']} loops, {s['bars']} bars)")
    for size in sorted({abs(r["shift"]) for r in rows}):
        some = [r for r in rows if abs(r["shift"]) == size]
        a, s = summary(some, "aligned"), summary(some, "shifted")
        print(f"  |shift| {size} ({len(some)} loops): key {a['key']:.0%} aligned, {s['key']:.0%} shifted; "
              f"chords {a['chords']:.0%} aligned, {s['chords']:.0%} shifted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per style (0: the held-out ceiling alone)")
    parser.add_argument("--styles", default=None, help="comma-separated style names (default: all tonal ones)")
    parser.add_argument("--ceiling-clips", type=int, default=2,
                        help="held-out clips a style whose own loops are shifted (0: none)")
    parser.add_argument("--heldout", type=Path, default=Path("data/heldout"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    styles = {style_by_name(s.strip()).name for s in args.styles.split(",")} if args.styles else None
    print(machine_header(), flush=True)
    pipe = SpectrodiffPipeline.load(args.model)
    pipe.set_progress_bar_config(disable=True)
    began, rows, rate = time.perf_counter(), [], pipe.spectrogram.sample_rate
    for ask, seed, root in plan(args.seeds, styles):
        anchor, shift = anchor_of(root)
        with threadpool_limits(1, user_api="blas"):  # small matrices: BLAS threads only contend for the cores
            aligned = heard_harmony(shifted_loop(pipe, ask, seed, 0), rate, ask)
            # A tonic on an anchor is made the same way in both arms: its loop is judged once.
            shifted = heard_harmony(shifted_loop(pipe, transposed(ask, -shift), seed, shift), rate, ask) \
                if shift else aligned
        rows.append({"style": ask.style.name, "bpm": ask.bpm, "bars": ask.bars, "key": ask.key, "seed": seed,
                     "anchor": NOTE_NAMES[anchor], "shift": shift, "aligned": aligned, "shifted": shifted})
        print(f"{ask.style.name} {ask.key} seed {seed}: shift {shift:+d}; key {aligned['key_hit']} / "
              f"{shifted['key_hit']}, chords {np.mean(aligned['chords']):.2f} / {np.mean(shifted['chords']):.2f}",
              flush=True)
    with threadpool_limits(1, user_api="blas"):
        ceiling = render_ceiling(pipe, args.heldout, args.ceiling_clips, styles) if args.ceiling_clips else []
    if rows:
        report(rows, f"generated ({time.perf_counter() - began:.0f} s in all); the anchor-key TRAINING arm is not "
               "trained: both arms run the same model, so this is the shift's cost at inference",
               ("aligned chords, asked key", "anchor key (C, F#) + mel shift"))
    if ceiling:
        report(ceiling, "the held-out render's own loops: the shift on music that is right",
               ("vocoded as it is", "mel shifted 1-3 semitones"))
    if args.json:
        summaries = {f"{name}_{arm}": summary(some, arm) for name, some in (("generated", rows), ("ceiling", ceiling))
                     if some for arm in ("aligned", "shifted")}
        args.json.write_text(json.dumps({"rows": rows, "ceiling": ceiling, **summaries}, indent=1) + "\n")


if __name__ == "__main__":
    main()
