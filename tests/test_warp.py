"""Warping a clock-time clip to an asked tempo (spectrodiff/codec/warp.py), as a DAW warps a sample: a drum loop made
in code at one tempo, its spectrogram warped to another, rendered, and heard by the tracker at the asked tempo, on a
downbeat at sample 0, whole bars long; and `generate --bpm --bars` through a clock-time pipeline whose sidecar says
how the tempo was made."""

import json

import numpy as np
import pytest
import torch

from spectrodiff import SpectrogramParams
from spectrodiff.codec.beats import track_beats
from spectrodiff.codec.convert import audio_to_pixels
from spectrodiff.codec.image import layout, pixels_to_mel
from spectrodiff.codec.warp import Warp, nearest_octave, plan_warp, warp_columns
from spectrodiff.generation.jobs import GenerateJob
from spectrodiff.generation.modes import make
from spectrodiff.generation.output import Output
from spectrodiff.generation.takes import resample_loop
from spectrodiff.testing import build_tiny_pipeline
from spectrodiff.vocoding.render import mel_to_audio

from .test_beats import RATE, band

# Small clock-time params, so that Griffin-Lim renders seconds of audio in a moment.
PARAMS = SpectrogramParams(sample_rate=RATE, num_frequencies=64, window_duration_ms=40, padded_duration_ms=80)
HOP_SECONDS = PARAMS.hop_length / RATE


def image_of(audio: np.ndarray) -> tuple[torch.Tensor, float]:
    """`(N,)` audio -> its spectrogram's `(3, 64, T)` pixels, one column a hop, and the magnitude black stands for."""
    return audio_to_pixels(audio[None], PARAMS, PARAMS.width_for_samples(len(audio)))


def render(pixels: torch.Tensor, max_value: float, loop: bool) -> np.ndarray:
    return mel_to_audio(pixels_to_mel(pixels, PARAMS, max_value), PARAMS, None, circular=loop, n_iter=8).numpy()


def heard(audio: np.ndarray, loop: bool):
    """The tracker's grid of `(C, N)` audio; a loop played three times, as a DAW plays it."""
    return track_beats(np.tile(audio, 3) if loop else audio, RATE)


def off_sample_0(grid) -> float:
    """Seconds from the grid's nearest downbeat to the clip's first sample."""
    return min(grid.first_downbeat, grid.bar_seconds - grid.first_downbeat)


def test_a_loop_at_one_tempo_is_warped_to_whole_bars_of_another_from_its_downbeat():
    """Two bars at 120 BPM whose downbeat is 0.61 s in, warped to two bars at 100: heard at 100 on sample 0, 4.8 s
    to the sample; the loop as made (the control) is heard at 120, its downbeat 0.61 s in."""
    made = np.roll(band(120.0, 4.0), round(0.61 * RATE))
    pixels, max_value = image_of(made)
    source = render(pixels, max_value, loop=True)
    plan = plan_warp(source, RATE, 100.0, 2, 4, period=source.shape[-1] / RATE)
    assert isinstance(plan, Warp) and plan.tracked_bpm == pytest.approx(120, rel=0.01)
    assert abs(plan.first_downbeat - 0.61) < 0.03 and plan.ratio == pytest.approx(100 / 120, rel=0.01)
    warped = render(warp_columns(pixels, HOP_SECONDS, plan, round(4.8 / HOP_SECONDS)), max_value, loop=True)
    # whole hops, then resampled round the loop to two bars of 4/4 at 100 BPM to the sample, as `generate` does
    warped = np.concatenate(list(resample_loop(warped, round(4.8 * RATE))), axis=1)
    grid = heard(warped, loop=True)
    assert grid.steady and grid.bpm == pytest.approx(100, rel=0.02) and off_sample_0(grid) < 0.02
    control = heard(source, loop=True)
    assert control.bpm == pytest.approx(120, rel=0.02) and abs(off_sample_0(control) - 0.59) < 0.03


def test_a_plain_clip_is_warped_faster_from_its_first_downbeat():
    """A clip at 96 BPM with a bar of pickup before its first downbeat, warped to two bars at 110: heard at 110
    with a downbeat on sample 0; the unwarped clip is heard at 96."""
    made = band(96.0, 8.0, first_downbeat=0.3)
    pixels, max_value = image_of(made)
    source = render(pixels, max_value, loop=False)
    plan = plan_warp(source, RATE, 110.0, 2, 4)
    seconds = 2 * 4 * 60 / 110
    width = int(np.ceil(round(seconds * RATE) / PARAMS.hop_length)) + 1
    warped = render(warp_columns(pixels, HOP_SECONDS, plan, width), max_value, loop=False)
    assert warped.shape[-1] >= round(seconds * RATE)  # its columns cover the two bars, cut to them as `generate` does
    warped = warped[..., : round(seconds * RATE)]
    grid = heard(warped, loop=False)
    assert grid.bpm == pytest.approx(110, rel=0.02) and off_sample_0(grid) < 0.02
    assert heard(source, loop=False).bpm == pytest.approx(96, rel=0.02)


def test_half_and_double_time_are_the_same_beat():
    """A warp never changes the tempo by more than sqrt(2): 200 BPM heard for an asked 100 is double time."""
    assert nearest_octave(200.0, 100.0) == 100.0 and nearest_octave(52.0, 100.0) == 104.0
    assert nearest_octave(130.0, 100.0) == 130.0  # within the octave: warped as it is


def test_noise_has_no_beat_to_warp_by():
    noise = np.random.default_rng(0).standard_normal((1, 4 * RATE)).astype(np.float32)
    assert not plan_warp(noise, RATE, 100.0, 2, 4, period=4.0).steady


@pytest.fixture(scope="module")
def clock_pipe():
    return build_tiny_pipeline(PARAMS)


def test_generate_warps_a_clock_time_loop_and_its_sidecar_says_so(clock_pipe, tmp_path, monkeypatch):
    """`generate --bpm 100 --bars 2` on a clock-time model whose loop came out at 125 BPM (its decoder made to
    return a drum loop, 10 beats in the 4.8 s asked for): the WAV is heard at 100 and the sidecar says it was
    warped, from what and by how much. The tiny model's own noise (the control) has no beat: left as made, and said
    so."""
    job = GenerateJob(prompt="funk", bpm=100, bars=2, steps=1, iters=2)
    plain = make(clock_pipe, job, Output(tmp_path / "noise.wav"))
    made = json.loads(plain.sidecar.read_text())["tempo_made"]
    assert made["how"] == "asked only" and made["why"].startswith("no steady beat")

    def drum_loop(latents, loop=False):
        width = latents.shape[-1] * clock_pipe.vae_scale_factor
        drums = band(125.0, width * HOP_SECONDS)
        yield 0, layout(image_of(drums)[0][..., :width], PARAMS)

    monkeypatch.setattr(clock_pipe, "decode_latents", drum_loop)
    result = make(clock_pipe, job, Output(tmp_path / "drums.wav"))
    made = json.loads(result.sidecar.read_text())["tempo_made"]
    assert made["how"] == "warped" and made["tracked_bpm"] == pytest.approx(125, rel=0.02)
    assert made["ratio"] == pytest.approx(0.8, rel=0.02)
    import soundfile

    audio, rate = soundfile.read(result.audio, dtype="float32", always_2d=True)
    assert len(audio) == round(4.8 * rate)
    assert heard(audio.T, loop=True).bpm == pytest.approx(100, rel=0.02)
