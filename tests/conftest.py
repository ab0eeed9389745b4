"""Shared fixtures: Riffusion's parameters and short signals made in code."""

import numpy as np
import pytest
import torch

from spectrodiff import SpectrogramParams
from spectrodiff.metrics import spectral_convergence  # noqa: F401 (re-exported for the tests)
from spectrodiff.signals import SIGNALS
from spectrodiff.testing import build_tiny_pipeline

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def params() -> SpectrogramParams:
    return SpectrogramParams()


@pytest.fixture(scope="session")
def stereo_params() -> SpectrogramParams:
    return SpectrogramParams(stereo=True)


def stft_phase_ramp(n_fft: int, win_length: int) -> torch.Tensor:
    """`(n_fft // 2 + 1,)` factor from FrameTransform's spectra to torch.stft's: torch counts phase from the FFT
    frame's start, FrameTransform from the window's, `(n_fft - win_length) // 2` samples later."""
    turns = torch.arange(n_fft // 2 + 1) * ((n_fft - win_length) // 2) % n_fft  # exact, then a small angle
    return torch.polar(torch.ones(len(turns)), -2 * torch.pi * turns / n_fft)


def signal(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    """`(1, N)` float32 mono signal."""
    return SIGNALS[kind](seconds, seed=seed)[None]


@pytest.fixture(scope="module")
def pipe():
    """A tiny random pipeline (64 mel bins), built in code."""
    return build_tiny_pipeline()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, pipe):
    """The tiny pipeline saved as a diffusers folder, for loading and CLI tests."""
    folder = tmp_path_factory.mktemp("model")
    pipe.save_pretrained(folder)
    return folder
