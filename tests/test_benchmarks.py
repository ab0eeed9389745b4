"""The benchmark's references: what the loop and seam statistics score on a catalogue's own music."""

import importlib
from pathlib import Path

import numpy as np
import pytest
import soundfile

from spectrodiff import SpectrogramParams

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SAMPLE_RATE = 44100
TRACK_SECONDS = 20


@pytest.fixture(scope="module")
def mini_benchmark():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))  # the scripts import their shared `common` as a sibling
        return importlib.import_module("mini")


def tremolo_catalogue(root: Path, styles: tuple[str, ...], clicks_at: range | None = None) -> Path:
    """One 20 s track a style: a chord with a slow tremolo (smooth change, no onsets). With `clicks_at`, a one-sample
    click at each of those positions of the 60 s clip the compose ceiling builds from 15 s of each track."""
    t = np.arange(TRACK_SECONDS * SAMPLE_RATE) / SAMPLE_RATE
    for n, style in enumerate(styles):
        tones = sum(np.sin(2 * np.pi * hz * (1 + 0.1 * n) * t) for hz in (220, 277, 330))
        track = tones * (1 + 0.5 * np.sin(2 * np.pi * 2 * t)) / 6
        for position in clicks_at or ():
            if 0 <= position - 15 * SAMPLE_RATE * n < 15 * SAMPLE_RATE:
                track[position - 15 * SAMPLE_RATE * n] += 0.9
        (root / style).mkdir(parents=True)
        soundfile.write(root / style / f"{style}_000.wav", track, SAMPLE_RATE, subtype="PCM_16")
    return root


@pytest.mark.slow
def test_catalogue_ceilings_score_the_music_and_see_clicks_at_the_joins(tmp_path, mini_benchmark):
    params = SpectrogramParams(num_frequencies=128)
    tile = 512 * params.hop_length
    styles = mini_benchmark.COMPOSE_STYLES + ("funky_piano",)
    clean = mini_benchmark.catalogue_ceilings(tremolo_catalogue(tmp_path / "clean", styles), params, tile)
    # 3 whole tiles in a 20 s track, 7 points each; 2 compose clips (from 0 s and from 5 s in) of one track a style.
    assert {style: len(ratios) for style, ratios in clean["inside"].items()} == {style: 21 for style in styles}
    assert len(clean["seams"]) == 2
    assert max(clean["seams"]) < 1.5  # measured 1.01, 1.10: a smooth tremolo, and the style cuts are left out
    clicked = mini_benchmark.catalogue_ceilings(
        tremolo_catalogue(tmp_path / "clicked", styles, clicks_at=range(tile, 60 * SAMPLE_RATE, tile)), params, tile
    )
    # The clip from 0 s has a click on every join (measured 5.12); the clip from 5 s has them 12 frames off (1.07).
    assert clicked["seams"][0] > 3.0 and clicked["seams"][1] < 1.5


@pytest.fixture(scope="module")
def music_benchmark():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        return importlib.import_module("music")


def test_music_benchmark_plans_every_style_over_its_range_with_unseen_phrasings(music_benchmark):
    from spectrodiff.generation.musical import bar_seconds
    from spectrodiff.training.catalogue import STYLES

    plan = music_benchmark.tempo_plan(2)
    assert len(plan) == len(STYLES) * 4 * 2
    for style in STYLES:
        rows = [r for r in plan if r["style"] == style.name]
        assert {r["bpm"] for r in rows} >= {float(style.tempo[0]), float(style.tempo[1])}
        assert all(r["meter"] == f"{style.meter}/4" for r in rows)
        assert all(r["bars"] * bar_seconds(r["bpm"], r["meter"]) >= 3.0 for r in rows)
        assert all(r["key"].split()[1] in ("major", "minor") for r in rows)
    captions = {c.lower() for s in STYLES for c in s.captions} | {s.name for s in STYLES}
    assert set(music_benchmark.UNSEEN) == {s.name for s in STYLES}
    assert not set(music_benchmark.UNSEEN.values()) & captions
