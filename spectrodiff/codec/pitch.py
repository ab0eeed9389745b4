"""Pitch shift of a mel spectrogram by resampling along its frequency axis: the plain alternative to key conditions
(generate in a few anchor keys, then move the mel by at most a few semitones before vocoding; issue 28)."""

from __future__ import annotations

import torch

from ..errors import SpectrodiffError
from .mel import _hz_to_mel, _mel_to_hz
from .params import SpectrogramParams

# Beyond a minor third a shifted mel moves the formants and the drums' colour with the notes, audibly.
MAX_SHIFT_SEMITONES = 3


def shift_mel(mel: torch.Tensor, semitones: float, params: SpectrogramParams) -> torch.Tensor:
    """`mel` moved up by `semitones` (negative: down, |semitones| <= MAX_SHIFT_SEMITONES): mel bin m, centred at
    frequency f_m, takes the source's value at f_m / 2^(semitones / 12), interpolated linearly between the source's
    bins on the mel scale. Bins whose source frequency lies below the lowest bin's centre are zero, above the
    highest's the top bin's value (edge). The time axis (clock or beat time) is untouched; 0 semitones returns an
    exact copy.

    Args:
        mel: `(C, n_mels, T)` magnitudes (any leading dims), `n_mels = params.num_frequencies`, HTK mel bands from
            `params.min_frequency` to `params.max_frequency` as `mel.mel_filterbank` places them.
    Returns:
        `(C, n_mels, T)`, the same dtype and device.
    """
    if abs(semitones) > MAX_SHIFT_SEMITONES:
        raise SpectrodiffError(f"a mel is shifted by at most {MAX_SHIFT_SEMITONES} semitones, not {semitones:g}")
    n_mels = params.num_frequencies
    if mel.shape[-2] != n_mels:
        raise SpectrodiffError(f"the mel has {mel.shape[-2]} bands, its parameters {n_mels}")
    if semitones == 0:
        return mel.clone()
    low, high = (_hz_to_mel(torch.tensor(float(f), dtype=torch.float64))
                 for f in (params.min_frequency, params.max_frequency))
    step = (high - low) / (n_mels + 1)  # the filters' centres are the inner points of n_mels + 2 equal mel steps
    centres = _mel_to_hz(low + step * torch.arange(1, n_mels + 1, dtype=torch.float64))
    source = (_hz_to_mel(centres / 2 ** (semitones / 12)) - low) / step - 1  # fractional source bin
    lower = source.floor().clamp(0, n_mels - 1).long()
    upper = (lower + 1).clamp(max=n_mels - 1)
    weight = (source - lower).clamp(0, 1).to(mel.dtype).to(mel.device).unsqueeze(-1)
    shifted = mel[..., lower.to(mel.device), :] * (1 - weight) + mel[..., upper.to(mel.device), :] * weight
    return shifted.masked_fill((source < 0).to(mel.device).unsqueeze(-1), 0.0)
