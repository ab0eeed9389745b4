"""The mel pitch shift (spectrodiff.codec.pitch): a sine's peak moves to the shifted frequency's bin."""

import pytest
import torch

from spectrodiff.codec.mel import waveform_to_mel
from spectrodiff.codec.params import SpectrogramParams
from spectrodiff.codec.pitch import shift_mel
from spectrodiff.errors import SpectrodiffError

PARAMS = SpectrogramParams()  # Riffusion's: 512 HTK bands from 0 to 10 kHz at 44.1 kHz
HZ = 440.0


def sine_mel(hz: float) -> torch.Tensor:
    """`(1, n_mels, T)` mel of 0.3 s of a sine at `hz`."""
    t = torch.arange(int(0.3 * PARAMS.sample_rate)) / PARAMS.sample_rate
    return waveform_to_mel((0.5 * torch.sin(2 * torch.pi * hz * t))[None], PARAMS)


def peak_bin(mel: torch.Tensor) -> int:
    return int(mel.mean(dim=-1)[0].argmax())


@pytest.mark.parametrize("semitones", [-3, -1, 1, 2.5, 3])
def test_a_sines_peak_moves_to_the_shifted_frequency(semitones):
    source = sine_mel(HZ)
    target = peak_bin(sine_mel(HZ * 2 ** (semitones / 12)))
    assert abs(peak_bin(shift_mel(source, semitones, PARAMS)) - target) <= 1
    # Negative control: the unshifted peak stays at the sine's bin, far from the target's.
    assert abs(peak_bin(source) - target) > 3


def test_no_shift_is_the_identity_exactly_and_shapes_are_kept():
    mel = torch.rand(2, PARAMS.num_frequencies, 7)
    assert torch.equal(shift_mel(mel, 0, PARAMS), mel)
    assert shift_mel(mel, 2, PARAMS).shape == mel.shape


def test_bins_with_no_source_are_zero_below_and_edge_above():
    mel = torch.rand(1, PARAMS.num_frequencies, 3) + 1
    up, down = shift_mel(mel, 3, PARAMS), shift_mel(mel, -3, PARAMS)
    assert torch.equal(up[:, 0], torch.zeros(1, 3))  # bin 0's source lies below the lowest centre
    assert torch.equal(down[:, -1], mel[:, -1])  # the top bin's source lies above the highest: edge
    assert torch.all(down[:, 0] > 0) and torch.all(up[:, -1] > 0)  # control: the other ends have a source


def test_shifts_beyond_a_minor_third_are_refused():
    with pytest.raises(SpectrodiffError, match="at most 3 semitones"):
        shift_mel(torch.zeros(1, PARAMS.num_frequencies, 1), 4, PARAMS)
