"""The tempo and downbeat tracker (spectrodiff/codec/beats.py) on music made in code at known tempi and downbeats,
its controls (noise, a drifting tempo, a grid at the wrong tempo), and the tempo tables a user gives."""

import json

import numpy as np
import pytest

from spectrodiff.codec.beats import BeatGrid, load_known_tempi, track_beats
from spectrodiff.errors import SpectrodiffError

RATE = 22050


def hit(seconds: float, length: float, decay: float, rate: int = RATE, *, hz: float | None = None,
        seed: int = 0) -> np.ndarray:
    """`(N,)` one drum hit: a sine at `hz` falling an octave (a kick), or noise (`hz` None), decaying."""
    t = np.arange(int(length * rate)) / rate
    if hz is None:
        body = np.random.default_rng(seed).standard_normal(len(t))
    else:
        body = np.sin(2 * np.pi * hz * (t - 0.5 * t * t / length))
    return (body * np.exp(-t / decay)).astype(np.float32)


def note(midi: int, length: float, rate: int = RATE) -> np.ndarray:
    """`(N,)` a plucked note: four harmonics, 5 ms attack, exponential decay."""
    t = np.arange(int(length * rate)) / rate
    hz = 440 * 2 ** ((midi - 69) / 12)
    tone = sum(np.sin(2 * np.pi * k * hz * t) / k for k in range(1, 5))
    return (tone * np.minimum(t / 0.005, 1) * np.exp(-t / (0.4 * length))).astype(np.float32)


def place(audio: np.ndarray, sound: np.ndarray, at: float, gain: float = 1.0) -> None:
    start = int(round(at * RATE))
    if 0 <= start < len(audio):
        end = min(len(audio), start + len(sound))
        audio[start:end] += gain * sound[: end - start]


def band(bpm: float, seconds: float, *, per_bar: int = 4, first_downbeat: float = 0.0, seed: int = 0) -> np.ndarray:
    """`(N,)` a drum kit and a bass line at `bpm`, bars of `per_bar` beats, the first downbeat `first_downbeat` s in
    (beats before it included): kick on the downbeat (and on beat 3 of 4/4), snare on the other beats, hi-hats on
    the 8ths, and a bass note on each downbeat that changes every bar (I IV V I), as a song's root would."""
    rng = np.random.default_rng(seed)
    audio = np.zeros(int(seconds * RATE), dtype=np.float32)
    beat = 60 / bpm
    kick, snare = hit(0, 0.25, 0.06, hz=110.0), hit(0, 0.2, 0.05, seed=seed)
    hat = np.diff(hit(0, 0.05, 0.01, seed=seed + 1), prepend=0).astype(np.float32)
    first = first_downbeat - beat * np.floor(first_downbeat / beat)
    for at in np.arange(first, seconds, beat):
        position = round((at - first_downbeat) / beat) % per_bar
        place(audio, kick if position == 0 or (per_bar == 4 and position == 2) else snare, at,
              0.9 if position == 0 else 0.6)
        for half in (0.0, 0.5):
            place(audio, hat, at + half * beat, 0.3 * (1 + 0.2 * rng.standard_normal()))
        if position == 0:
            bar = round((at - first_downbeat) / (beat * per_bar))
            place(audio, note(36 + (0, 5, 7, 0)[bar % 4], beat * per_bar), at, 0.5)
    return audio


def click_track(bpm: float, seconds: float, *, per_bar: int = 4, first_downbeat: float = 0.0) -> np.ndarray:
    """`(N,)` a metronome: a louder G6 on each downbeat, a C6 on the other beats."""
    audio = np.zeros(int(seconds * RATE), dtype=np.float32)
    beat = 60 / bpm
    first = first_downbeat - beat * np.floor(first_downbeat / beat)
    for at in np.arange(first, seconds, beat):
        downbeat = round((at - first_downbeat) / beat) % per_bar == 0
        place(audio, note(91 if downbeat else 84, 0.08), at, 1.0 if downbeat else 0.6)
    return audio


def onsets_on_grid(grid_beats: np.ndarray, true_beats: np.ndarray, tolerance: float = 0.07) -> float:
    """F-measure of a grid's beats against the true ones (each matched within `tolerance` s), as mir_eval's."""
    near = np.abs(grid_beats[:, None] - true_beats[None, :]) <= tolerance
    precision, recall = near.any(axis=1).mean(), near.any(axis=0).mean()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def off_downbeat(grid: BeatGrid, first_downbeat: float, bar: float) -> float:
    """Seconds from the grid's first downbeat to the nearest true one."""
    return abs((grid.first_downbeat - first_downbeat + bar / 2) % bar - bar / 2)


@pytest.mark.parametrize("bpm, first_downbeat", [(72.0, 0.0), (120.0, 0.61), (168.0, 1.3)])
def test_a_band_at_a_known_tempo_and_downbeat(bpm, first_downbeat):
    grid = track_beats(band(bpm, 16, first_downbeat=first_downbeat), RATE)
    assert abs(grid.bpm - bpm) < 0.01 * bpm
    assert off_downbeat(grid, first_downbeat, 4 * 60 / bpm) < 0.03
    assert grid.steady and grid.clarity > 0.5
    assert grid.beats_per_bar == 4 and 0 <= grid.first_downbeat < grid.bar_seconds


def test_a_waltz_in_three_four():
    bpm, first_downbeat = 150.0, 0.4
    audio = band(bpm, 16, per_bar=3, first_downbeat=first_downbeat)
    grid = track_beats(audio, RATE, meter="3/4")
    assert abs(grid.bpm - bpm) < 0.01 * bpm
    assert off_downbeat(grid, first_downbeat, 3 * 60 / bpm) < 0.03
    # control: read in 4/4, the bars no longer match the music's
    assert off_downbeat(track_beats(audio, RATE, meter="4/4"), first_downbeat, 3 * 60 / bpm) > 0.1


@pytest.mark.parametrize("bpm, offset", [(96.0, 0.25), (143.0, 0.0), (61.0, 0.7)])
def test_a_click_track_stereo_at_44100(bpm, offset):
    mono = click_track(bpm, 12, first_downbeat=offset)
    stereo = np.stack([mono, mono]).repeat(2, axis=1)  # 44.1 kHz by repeating samples: the same clicks
    grid = track_beats(stereo, 2 * RATE)
    assert abs(grid.bpm - bpm) < 0.01 * bpm
    true_beats = offset % (60 / bpm) + 60 / bpm * np.arange(30)
    assert onsets_on_grid(grid.beats(12.0), true_beats[true_beats < 12]) > 0.95


def test_a_grid_at_the_wrong_tempo_misses():
    """The control of the check above: a grid 5 % off the tempo, from the same first downbeat, drifts off."""
    bpm, first_downbeat = 96.0, 0.25
    true_beats = first_downbeat + 60 / bpm * np.arange(18)
    wrong = BeatGrid(bpm * 1.05, first_downbeat, 4, 1.0, True, False)
    assert onsets_on_grid(wrong.beats(12.0), true_beats[true_beats < 12]) < 0.7


def test_audio_that_starts_on_a_downbeat():
    """Drums alike on every beat: only the start tells the downbeat. Control: with a pickup beat before the first
    downbeat, the same assumption is wrong, and the default finds the downbeat from the bass."""
    bpm, start = 100.0, 0.3
    audio = np.zeros(12 * RATE, dtype=np.float32)
    for at in np.arange(start, 12, 60 / bpm):
        place(audio, hit(0, 0.25, 0.06, hz=110.0), at)
    grid = track_beats(audio, RATE, starts_on_downbeat=True)
    assert abs(grid.first_downbeat - start) < 0.03
    pickup = band(bpm, 12, first_downbeat=start + 60 / bpm)
    pickup[: int(start * RATE)] = 0
    bar = 4 * 60 / bpm
    assert off_downbeat(track_beats(pickup, RATE, starts_on_downbeat=True), start + 60 / bpm, bar) > 0.3
    assert off_downbeat(track_beats(pickup, RATE), start + 60 / bpm, bar) < 0.03


def test_a_known_tempo_finds_the_downbeat():
    bpm, first_downbeat = 110.0, 1.1
    grid = track_beats(band(bpm, 12, first_downbeat=first_downbeat), RATE, min_bpm=bpm, max_bpm=bpm)
    assert grid.bpm == pytest.approx(bpm)
    assert off_downbeat(grid, first_downbeat, 4 * 60 / bpm) < 0.03


@pytest.mark.parametrize("kind", ["noise", "silence"])
def test_no_beat_is_not_steady(kind):
    audio = np.random.default_rng(0).standard_normal(12 * RATE).astype(np.float32) * 0.1 if kind == "noise" \
        else np.zeros(12 * RATE, dtype=np.float32)
    grid = track_beats(audio, RATE)
    assert not grid.steady and grid.clarity < 0.2
    assert track_beats(band(120.0, 12), RATE).clarity > 0.5  # control: a band is


def test_a_drifting_tempo_is_not_steady():
    """100 -> 112 BPM over 16 s: no one grid fits; the control at a steady 106 BPM is steady."""
    audio = np.zeros(16 * RATE, dtype=np.float32)
    at = 0.0
    while at < 16:
        place(audio, hit(0, 0.05, 0.01, hz=880.0), at)
        at += 60 / (100 + 12 * at / 16)
    assert not track_beats(audio, RATE).steady
    assert track_beats(click_track(106.0, 16), RATE).steady


def test_grid_beats_and_downbeats():
    grid = BeatGrid(120.0, 0.75, 3, 0.9, True, False)
    assert grid.bar_seconds == pytest.approx(1.5)
    np.testing.assert_allclose(grid.downbeats(4.0), [0.75, 2.25, 3.75])
    np.testing.assert_allclose(grid.beats(2.0), [0.25, 0.75, 1.25, 1.75])


def test_unknown_meter_and_bad_bounds():
    with pytest.raises(SpectrodiffError, match="unknown meter"):
        track_beats(np.zeros(RATE), RATE, meter="4/3")
    with pytest.raises(SpectrodiffError, match="min_bpm"):
        track_beats(np.zeros(RATE), RATE, min_bpm=200, max_bpm=100)


# ---- tempi a user gives ---------------------------------------------------------------------------------------


def test_known_tempi_from_a_table_and_sidecars(tmp_path):
    (tmp_path / "loops").mkdir()
    for name in ("a.wav", "loops/b.flac", "loops/c.wav"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "tempo.csv").write_text("File,BPM,Downbeat\na.wav,96,0.5\n./loops/b.flac,120.5,0\n")
    (tmp_path / "loops" / "c.tempo.json").write_text(json.dumps({"bpm": 140, "downbeat": 0.25}))
    (tmp_path / "loops" / "b.tempo.json").write_text(json.dumps({"bpm": 121, "downbeat": 0.1}))
    assert load_known_tempi(tmp_path) == {"a.wav": (96.0, 0.5), "loops/b.flac": (121.0, 0.1),
                                          "loops/c.wav": (140.0, 0.25)}
    assert load_known_tempi(tmp_path / "loops") == {"b.flac": (121.0, 0.1), "c.wav": (140.0, 0.25)}


@pytest.mark.parametrize("table, message", [
    ("file,bpm\na.wav,96\n", "needs a header with the columns file, bpm and downbeat"),
    ("file,bpm,downbeat\na.wav,96,0\nb.wav,fast,0\n", r"tempo.csv line 3: bpm and downbeat must be numbers"),
    ("file,bpm,downbeat\na.wav,0,0\n", r"tempo.csv line 2: bpm must be between 20 and 400, got 0"),
    ("file,bpm,downbeat\na.wav,96,-1\n", r"tempo.csv line 2: downbeat must be a number of seconds >= 0"),
    ("file,bpm,downbeat\n,96,0\n", r"tempo.csv line 2: no file named"),
])
def test_a_bad_tempo_table(tmp_path, table, message):
    (tmp_path / "tempo.csv").write_text(table)
    with pytest.raises(SpectrodiffError, match=message):
        load_known_tempi(tmp_path)


@pytest.mark.parametrize("sidecar, message", [
    ("{not json", "c.tempo.json: not readable JSON"),
    ('{"bpm": 96}', r'c.tempo.json: expected \{"bpm": ..., "downbeat": ...\}'),
    ('{"bpm": "NaN", "downbeat": 0}', r"c.tempo.json: bpm must be between"),
])
def test_a_bad_sidecar(tmp_path, sidecar, message):
    (tmp_path / "c.wav").write_bytes(b"")
    (tmp_path / "c.tempo.json").write_text(sidecar)
    with pytest.raises(SpectrodiffError, match=message):
        load_known_tempi(tmp_path)


def test_a_sidecar_beside_no_audio(tmp_path):
    (tmp_path / "c.tempo.json").write_text('{"bpm": 96, "downbeat": 0}')
    with pytest.raises(SpectrodiffError, match="no audio file c.* beside it"):
        load_known_tempi(tmp_path)
    assert load_known_tempi(tmp_path / "missing") == {}  # control: no tables, no tempi
