"""Quality measures (docs/measures.md): definitions on hand-made cases, and that each one sees what it is for."""

import numpy as np
import pytest
import torch

from spectrodiff import waveform_to_mel
from spectrodiff.metrics import (
    log_mel_flux,
    loop_wrap_ratio,
    mel_spectral_convergence,
    multi_resolution_stft_distance,
    seam_ratio,
    seam_ratios,
    spectral_convergence,
)
from spectrodiff.signals import SIGNALS

from .conftest import signal


def test_spectral_convergence_definition_and_alignment():
    reference = torch.tensor([[3.0, 4.0, 9.0]])
    assert spectral_convergence(reference, reference) == 0.0
    # The last column is cut to the shorter length: ||(3, 4) - (0, 0)|| / ||(3, 4)|| = 1.
    assert spectral_convergence(reference, np.zeros((1, 2))) == pytest.approx(1.0)
    assert spectral_convergence(reference[:, :2], 2 * reference[:, :2]) == pytest.approx(1.0)


def test_mel_spectral_convergence_accepts_arrays_tensors_and_mono(params):
    audio = signal("chord", 0.5)
    assert mel_spectral_convergence(audio, torch.from_numpy(audio), params) == 0.0
    assert mel_spectral_convergence(audio[0], 0.5 * audio[0], params) == pytest.approx(0.5, rel=1e-4)
    quieter = waveform_to_mel(torch.from_numpy(audio), params)
    assert spectral_convergence(quieter, 0.5 * quieter) == pytest.approx(0.5)


def test_multi_resolution_stft_distance_ranks_degradations():
    clean = signal("mix", 1.0)
    rng = np.random.default_rng(0)
    slight, heavy = (clean + level * rng.standard_normal(clean.shape).astype(np.float32) for level in (1e-3, 1e-1))
    assert multi_resolution_stft_distance(clean, clean) == 0.0
    assert 0 < multi_resolution_stft_distance(clean, slight) < multi_resolution_stft_distance(clean, heavy)
    # Lengths align to the shorter: a trimmed copy is identical over the common part.
    assert multi_resolution_stft_distance(clean, clean[:, :-100]) < 0.05


def test_log_mel_flux_shape_mono_mix_and_silence(params):
    audio = signal("drums", 1.0)
    flux = log_mel_flux(audio, params)
    assert flux.shape == (waveform_to_mel(torch.from_numpy(audio), params).shape[-1] - 1,)
    # Stereo is mixed to mono first; the flux is scale-invariant (the floor follows the clip's maximum).
    torch.testing.assert_close(log_mel_flux(np.concatenate([audio, audio]), params), flux)
    torch.testing.assert_close(log_mel_flux(0.1 * audio[0], params), flux, rtol=1e-3, atol=1e-4)
    assert not log_mel_flux(np.zeros(44100, np.float32), params).any()


def test_seam_ratio_sees_a_click_but_not_the_music(params):
    audio = signal("chord", 3.0)
    middle = 150 * params.hop_length + 200  # half way between chord onsets (one a second)
    assert seam_ratio(audio, [middle], params) < 0.5
    clicked = audio.copy()
    clicked[0, middle:] *= -1  # a polarity flip: a hard discontinuity
    # Its flux peaks 4-5 frames either side (where the 100 ms window's slope crosses it): measured 2.8 at radius 5,
    # 1.0 at the default radius 2, which is why the stricter tests also look 5 frames out.
    assert seam_ratio(clicked, [middle], params, radius=5) > 2.0
    with pytest.raises(ValueError, match="outside the clip"):
        seam_ratio(audio, [middle, 10 * audio.shape[-1]], params)
    with pytest.raises(ValueError, match="no boundary"):
        seam_ratio(audio, [], params)


def test_seam_ratios_judge_each_boundary_on_its_own(params):
    audio = signal("chord", 3.0)
    clean, flipped = 150 * params.hop_length + 200, 250 * params.hop_length + 200  # between chord onsets
    clicked = audio.copy()
    clicked[0, flipped:] *= -1
    ratios = seam_ratios(clicked, [clean, flipped], params, radius=5)
    assert ratios.shape == (2,) and ratios.dtype == torch.float64
    assert ratios[0] < 0.5 < 2.0 < ratios[1]  # the clean join stays clean beside a click
    torch.testing.assert_close(seam_ratios(clicked, [flipped, clean], params, radius=5), ratios.flip(0))
    assert seam_ratio(clicked, [clean, flipped], params, radius=5) == float(ratios.max())


def test_loop_wrap_ratio_of_a_true_loop_and_of_a_cut(params):
    hop = params.hop_length
    # One bar at 93.75 bpm is exactly 2.56 s; rolled half an eighth so the wrap falls between hits.
    loop = np.roll(SIGNALS["drums"](2.56, bpm=93.75), -16 * hop)
    assert loop_wrap_ratio(loop, params) < 0.5 and loop_wrap_ratio(loop, params, radius=5) < 0.5  # 0.25, 0.38
    cut = loop[: -hop // 3]  # a third of a hop short: the wrap jumps
    assert loop_wrap_ratio(cut, params) > 2 * loop_wrap_ratio(loop, params)  # 0.69
    assert loop_wrap_ratio(cut, params, radius=5) > 1.0  # 1.42
