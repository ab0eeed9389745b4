"""The generation benchmark's label-free estimators (benchmarks/music_estimators.py) on music made in code: click
tracks of known tempo, chord progressions of known key, loops whose beat grid does or does not run on across the
wrap."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

SOURCE = Path(__file__).resolve().parent.parent / "benchmarks" / "music_estimators.py"
_spec = importlib.util.spec_from_file_location("music_estimators", SOURCE)
me = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(me)

RATE = 22050


def pulses(bpm: float, seconds: float, rate: int = RATE, *, offset_beats: float = 0.0, seed: int = 0) -> np.ndarray:
    """`(N,)` float32 drum-ish pulse train: a 50 ms decaying noise burst on every beat from `offset_beats` on."""
    rng = np.random.default_rng(seed)
    audio = np.zeros(int(round(seconds * rate)), dtype=np.float32)
    length = int(0.05 * rate)
    decay = np.exp(-np.arange(length) / (0.008 * rate))
    beat = 60 / bpm
    for start in np.arange(offset_beats * beat, seconds, beat):
        i = int(round(start * rate))
        burst = (0.5 * rng.standard_normal(length) * decay)[: len(audio) - i]
        audio[i:i + len(burst)] += burst
    return audio


def tones(midi_notes: list[int], seconds: float, rate: int = RATE) -> np.ndarray:
    """`(N,)` notes sounding together: four harmonics (amplitudes 1/k) each, 10 ms attack, exponential decay."""
    t = np.arange(int(round(seconds * rate))) / rate
    envelope = np.minimum(t / 0.01, 1) * np.exp(-t / (0.6 * seconds))
    out = np.zeros_like(t)
    for note in midi_notes:
        hz = 440 * 2 ** ((note - 69) / 12)
        out += sum(np.sin(2 * np.pi * k * hz * t) / k for k in range(1, 5) if k * hz < rate / 2)
    return (out * envelope / (2 * len(midi_notes))).astype(np.float32)


# Chord progressions as (root, quality) on scale degrees in semitones above the tonic: I IV V I vi ii V I in major,
# i iv V i VI iv V i (harmonic minor's major dominant) in minor. Each chord sounds 1 s over its root an octave down.
MAJOR = [(0, "M"), (5, "M"), (7, "M"), (0, "M"), (9, "m"), (2, "m"), (7, "M"), (0, "M")]
MINOR = [(0, "m"), (5, "m"), (7, "M"), (0, "m"), (8, "M"), (5, "m"), (7, "M"), (0, "m")]
TRIADS = {"M": (0, 4, 7), "m": (0, 3, 7)}


def progression(tonic: int, mode: str, shift: int = 0) -> np.ndarray:
    """8 s of block triads in `tonic` (pitch class) `mode`, around middle C, transposed `shift` semitones."""
    chords = []
    for degree, quality in MAJOR if mode == "major" else MINOR:
        root = 60 + (tonic + degree) % 12 + shift
        chords.append(tones([root - 12] + [root + step for step in TRIADS[quality]], 1.0))
    return np.concatenate(chords)


@pytest.mark.parametrize("rate", [22050, 44100])
@pytest.mark.parametrize("bpm", [90, 120, 150])
def test_tempo_of_a_click_track(bpm, rate):
    estimate = me.estimate_tempo(me.Heard(pulses(bpm, 12, rate, seed=bpm), rate))
    assert abs(estimate - bpm) <= 0.04 * bpm, estimate
    assert me.tempo_hit(estimate, bpm)


def test_half_or_double_tempo_is_a_miss():
    estimate = me.estimate_tempo(me.Heard(pulses(120, 12), RATE))
    assert me.tempo_hit(estimate, 120)
    assert not me.tempo_hit(estimate, 60)
    assert not me.tempo_hit(estimate, 240)
    assert me.tempo_hit(104, 100) and not me.tempo_hit(104.5, 100)
    assert not me.tempo_hit(math.nan, 120)


def test_no_steady_beat_has_no_tempo():
    """Noise and a held chord give the autocorrelation nothing to pick, so the prior would pick a tempo anyway; the
    pulse-clarity gate turns that into NaN, never a hit."""
    noise = (0.3 * np.random.default_rng(0).standard_normal(12 * RATE)).astype(np.float32)
    noise = me.Heard(noise, RATE)
    assert math.isnan(me.estimate_tempo(noise))
    assert not me.tempo_hit(me.estimate_tempo(noise), 120)
    assert math.isfinite(me.estimate_tempo(noise, min_clarity=-1.0))  # what the gate is for
    assert math.isnan(me.estimate_tempo(me.Heard(tones([57, 60, 64], 12), RATE)))


def test_a_short_loop_tiled_three_times():
    loop = pulses(100, 4.8)  # 8 beats
    assert me.tempo_hit(me.estimate_tempo(me.Heard(np.tile(loop, 3), RATE)), 100)


@pytest.mark.parametrize("key", ["C major", "A minor", "F# major", "E minor"])
def test_key_of_a_chord_progression(key):
    tonic, mode = me.parse_key_name(key)
    assert me.key_name(*me.estimate_key(me.Heard(progression(tonic, mode), RATE))) == key


def test_a_transposed_progression_is_not_the_original_key():
    estimate = me.estimate_key(me.Heard(progression(0, "major", shift=1), RATE))
    assert estimate != (0, "major")
    assert estimate == (1, "major")


def test_key_names_round_trip():
    for tonic in range(12):
        for mode in ("major", "minor"):
            assert me.parse_key_name(me.key_name(tonic, mode)) == (tonic, mode)
    assert me.key_name(6, "major") == "F# major" and me.key_name(5, "minor") == "F minor"
    assert me.parse_key_name("Db major") == me.parse_key_name("C# major") == (1, "major")
    assert me.parse_key_name("A# minor") == (10, "minor")
    assert me.parse_key_name("Cb major") == (11, "major") and me.parse_key_name("E# minor") == (5, "minor")
    for bad in ("H major", "D dorian", "C", "major", "Cbb major", ""):
        with pytest.raises(ValueError):
            me.parse_key_name(bad)
    with pytest.raises(ValueError):
        me.key_name(0, "dorian")


def test_key_profiles_pick_their_own_key():
    for tonic in range(12):
        assert me.best_key(np.roll(me.AS_MAJOR, tonic)) == (tonic, "major")
        assert me.best_key(np.roll(me.AS_MINOR, tonic)) == (tonic, "minor")


BPM, BEATS = 120, 8
BEAT = 60 / BPM
LOOP = BEATS * BEAT  # 4 s


def test_beat_grid_runs_on_across_the_wrap():
    loop = pulses(BPM, LOOP)
    near, away = me.beat_phase_error(me.Heard(np.tile(loop, 3), RATE), BEAT, [LOOP, 2 * LOOP])
    assert near < 0.1 and away < 0.1


def test_a_grid_that_jumps_at_the_wrap():
    """The second copy 0.3 beats late: the onsets around the wraps are off the grid, most others on it."""
    audio = np.concatenate([pulses(BPM, LOOP), pulses(BPM, LOOP, offset_beats=0.3), pulses(BPM, LOOP)])
    near, away = me.beat_phase_error(me.Heard(audio, RATE), BEAT, [LOOP, 2 * LOOP])
    assert near > away + 0.08  # about 0.17 against 0.04
    assert away < 0.1


def test_a_loop_that_starts_between_beats():
    audio = np.tile(pulses(BPM, LOOP, offset_beats=0.25), 3)
    near, away = me.beat_phase_error(me.Heard(audio, RATE), BEAT, [LOOP, 2 * LOOP])
    assert near > 0.15 and away > 0.15  # anchored at the loop start
    near, away = me.beat_phase_error(me.Heard(audio, RATE), BEAT, [LOOP, 2 * LOOP], offset_seconds=None)
    assert near < 0.1 and away < 0.1
    assert all(math.isnan(e) for e in me.beat_phase_error(me.Heard(np.zeros(RATE, np.float32), RATE), BEAT, [0.5]))
