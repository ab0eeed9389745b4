"""Compose plans in bars whose tempo changes from one section to the next (issue 28, item 4): on a beat-time model each
section is whole bars of the canvas and is heard at its own tempo, the next one starting on its bar line."""

import json

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from spectrodiff.codec.image import image_params
from spectrodiff.codec.params import SpectrogramParams
from spectrodiff.codec.retime import TempoMap, columns_per_clock_column, retime_pieces
from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.jobs import ComposeJob, Keyframe
from spectrodiff.generation.modes import make
from spectrodiff.generation.output import Output
from spectrodiff.generation.plans import load_plan
from spectrodiff.testing import build_tiny_pipeline
from spectrodiff.training.train import add_aligned_conditions, add_music_conditioning
from spectrodiff.vocoding.reconstruct import stream_mel_to_waveform

from .test_beat_time import peak_columns

SR = 44100
BEAT_PARAMS = SpectrogramParams(num_frequencies=64, columns_per_beat=8)
STYLES = {"drums": {"captions": ["a drum beat"], "tempo": [80, 160], "meter": "4/4", "modes": ["minor"],
                    "progressions": {"minor": [[[0, 3, 7], [8, 0, 3]]]}}}
FAST = {"steps": 2, "iters": 2, "transition": 0.5}
SLOW, FAST_BPM = 2 * 4 * 60 / 90, 2 * 4 * 60 / 120  # 2 bars of 4/4 at 90 and at 120 BPM: 5.333 s and 4 s


def two_tempi(slow: float = 90, fast: float = 120, **job) -> ComposeJob:
    return ComposeJob(keyframes=[Keyframe("a drum beat", bars=2, bpm=slow), Keyframe("a drum beat", seed=1, bars=2,
                                                                                      bpm=fast)], **FAST | job)


@pytest.fixture(scope="module")
def beat_model():
    """A tiny beat-time pipeline (8 columns a beat) with musical and aligned conditions, trained on 80-160 BPM."""
    pipe = build_tiny_pipeline(BEAT_PARAMS)
    add_music_conditioning(pipe)
    add_aligned_conditions(pipe)
    pipe.register_to_config(music_styles=STYLES)
    return pipe


# ---- the plan ------------------------------------------------------------------------------------------------------


def test_sections_in_bars_take_their_own_tempo_or_the_plans(tmp_path):
    job = ComposeJob(keyframes=[Keyframe("a", bars=2, bpm=90), Keyframe("b", bars=3), Keyframe("c", seconds=3)],
                     bpm=120, meter="3/4")
    assert [k.seconds for k in job.keyframes] == pytest.approx([2 * 3 * 60 / 90, 3 * 1.5, 3.0])
    assert [k.bars for k in job.keyframes] == [2, 3, 2]  # seconds that are whole bars are counted in them
    again = ComposeJob.from_dict(job.to_dict())  # the sidecar's record redoes it
    assert [k.seconds for k in again.keyframes] == [k.seconds for k in job.keyframes]
    plan = tmp_path / "plan.yaml"
    plan.write_text("transition: 0.5\nkeyframes:\n  - {prompt: a, bars: 2, bpm: 90}\n"
                    "  - {prompt: b, bars: 2, bpm: 120}\n")
    loaded = ComposeJob.from_dict(load_plan(plan))
    assert [k.seconds for k in loaded.keyframes] == pytest.approx([SLOW, FAST_BPM])


@pytest.mark.parametrize("keyframes, words", [
    ([{"prompt": "a", "bars": 2}], "keyframe 1: bars needs a tempo: give the keyframe or the plan a bpm"),
    ([{"prompt": "a", "bars": 2, "bpm": 90}, {"prompt": "b"}], "keyframe 2 has no seconds or bars"),
    ([{"prompt": "a", "seconds": 5, "bpm": 120}], "keyframe 1: 5 s is not whole bars of 4/4 at 120 BPM"),
    ([{"prompt": "a", "bars": 64, "bpm": 40}] * 2, "the keyframes' seconds add up to 768; at most 600"),
    ([{"prompt": "a", "bars": 2, "bpm": 300}], "bpm must be between 40 and 240, got 300"),
])
def test_bad_sections_are_one_line_errors(keyframes, words):
    with pytest.raises(SpectrodiffError) as error:
        ComposeJob.from_dict({"keyframes": keyframes})
    assert words in str(error.value) and "\n" not in str(error.value)


# ---- the geometry --------------------------------------------------------------------------------------------------


def test_the_beat_grid_runs_on_across_the_tempo_change():
    """A click on every beat of 2 bars at 90 BPM then 2 at 120, in one beat-time mel (64 columns a section): re-timed
    section by section, the clicks fall on 90 BPM's grid and then on 120 BPM's from the join at 5.333 s, in the clock
    mel and in the audio (within a clock hop); the same mel at one tempo puts the second section's clicks elsewhere."""
    quick = SpectrogramParams(num_frequencies=32, window_duration_ms=20, padded_duration_ms=40, columns_per_beat=8)
    slow, fast = quick.at_tempo(90), quick.at_tempo(120)
    mel = torch.full((1, 32, 8 * 16 + 8), 1e-3)
    mel[..., : 8 * 16: 8] = 1e3  # a click on each of 16 beats; a beat more after them, as a canvas has
    beats = [k * 60 / 90 for k in range(8)] + [SLOW + k * 60 / 120 for k in range(8)]
    clock = slow.clock()
    tempo_map = TempoMap((64,), (columns_per_clock_column(slow), columns_per_clock_column(fast)))
    assert tempo_map.clock_column(64) * clock.hop_length == pytest.approx(SLOW * SR)  # the join: sample 235200
    retimed = torch.cat(list(retime_pieces(mel.split(24, dim=-1), slow, tempo_map)), dim=-1)
    expected = [t * SR / clock.hop_length for t in beats[1:]]  # the first click, on column 0, is no inner peak
    assert np.abs(np.array(peak_columns(retimed)) - expected).max() <= 1
    steady = torch.cat(list(retime_pieces(mel.split(24, dim=-1), slow)), dim=-1)
    assert np.abs(np.array(peak_columns(steady)) - expected).max() > 10  # one tempo: 8 columns off by the 9th beat
    # In the audio (Griffin-Lim, as a composition's clip is streamed): each click's energy peaks within a clock hop
    # of its beat (at most 314 samples off here); at one tempo, a second section's click is a tenth of a second off.
    assert click_errors(retimed, clock, beats[1:]).max() <= clock.hop_length
    assert click_errors(steady, clock, beats[1:]).max() > 4000


def click_errors(mel: torch.Tensor, clock: SpectrogramParams, beats: list[float]) -> np.ndarray:
    """Samples between each beat and the energy peak (smoothed over a window) within 0.1 s of it, in the audio of a
    clock-time mel streamed through Griffin-Lim."""
    pieces = stream_mel_to_waveform(mel.split(100, dim=-1), clock, n_iter=4)
    audio = torch.cat([torch.as_tensor(piece) for piece in pieces], dim=-1)[0].double().numpy()
    energy = np.convolve(audio**2, np.ones(clock.win_length), mode="same")
    reach = SR // 10
    return np.array([abs(int(np.argmax(energy[round(t * SR) - reach: round(t * SR) + reach])) - reach)
                     for t in beats])


# ---- the composition -----------------------------------------------------------------------------------------------


def test_a_tempo_change_on_a_beat_time_model_is_its_sections_to_the_sample(beat_model, tmp_path):
    result = make(beat_model, two_tempi(), Output(tmp_path / "a.wav"))
    assert soundfile.info(result.audio).frames == round((SLOW + FAST_BPM) * SR)  # 411600
    record = json.loads(result.sidecar.read_text())
    assert [(s["start"], s["bars"], s["bpm"]) for s in record["sections"]] == [(0, 2, 90), (round(SLOW, 6), 2, 120)]
    assert round(record["sections"][1]["start"] * SR) == round(SLOW * SR) == 235200
    assert "tempo" not in record  # a WAV holds one tempo: a plan whose tempo changes writes none
    image = Image.open(result.image)
    params, _ = image_params(image)
    assert image.width == (2 * 2 * 4 * 8 // 8 + 1) * 8 and params.tempo == 90  # 4 bars of the canvas, and a column
    one = make(beat_model, two_tempi(fast=90), Output(tmp_path / "b.wav"))  # the negative control: one tempo
    assert soundfile.info(one.audio).frames == round(2 * SLOW * SR) != soundfile.info(result.audio).frames
    assert json.loads(one.sidecar.read_text())["tempo"]["bpm"] == 90  # one tempo: the acid chunk says it
    assert Image.open(one.image).width == image.width  # the same canvas, heard at other tempi


def test_a_section_in_seconds_at_a_picked_tempo_keeps_its_seconds(beat_model, tmp_path):
    """As `generate` keeps the length of a plain clip whose tempo the model picked (here the style's 120 BPM)."""
    job = ComposeJob(keyframes=[Keyframe("a drum beat", seconds=3), Keyframe("a drum beat", bars=1, bpm=90)], **FAST)
    result = make(beat_model, job, Output(tmp_path / "a.wav"))
    assert soundfile.info(result.audio).frames == round((3 + 4 * 60 / 90) * SR)
    sections = result.record["sections"]
    assert [(s["start"], s["bars"], s["bpm"]) for s in sections] == [(0, 1.5, 120), (3, 1, 90)]


def test_a_section_tempo_the_model_never_heard_is_refused(beat_model, tmp_path):
    with pytest.raises(SpectrodiffError) as error:
        make(beat_model, two_tempi(fast=200), Output(tmp_path / "a.wav"))
    assert str(error.value) == ("keyframe 2: 200 BPM is outside the tempi this model was trained on (80-160 BPM): ask "
                                "within them")
    plain = build_tiny_pipeline(BEAT_PARAMS)  # no styles: no tempo to pick
    with pytest.raises(SpectrodiffError, match="it needs a tempo"):
        make(plain, ComposeJob(keyframes=[Keyframe("a", seconds=2)], **FAST), Output(tmp_path / "b.wav"))
    assert not any(tmp_path.iterdir())


def test_a_clock_time_model_makes_one_tempo(tmp_path):
    pipe = build_tiny_pipeline()
    with pytest.raises(SpectrodiffError) as error:
        make(pipe, two_tempi(), Output(tmp_path / "a.wav"))
    assert str(error.value).startswith("the keyframes ask for 90 BPM and 120 BPM: this model's time axis is in "
                                       "seconds")
    result = make(pipe, two_tempi(fast=90), Output(tmp_path / "b.wav"))  # the same tempo twice: today's compose
    assert soundfile.info(result.audio).frames == round(2 * SLOW * pipe.spectrogram.sample_rate)
    assert result.record["tempo"]["bpm"] == 90
