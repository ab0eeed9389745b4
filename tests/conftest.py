"""Shared fixtures: Riffusion's parameters and short signals made in code."""

import numpy as np
import pytest
import torch

from spectrodiff import SpectrogramParams
from spectrodiff.signals import SIGNALS

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def params() -> SpectrogramParams:
    return SpectrogramParams()


@pytest.fixture(scope="session")
def stereo_params() -> SpectrogramParams:
    return SpectrogramParams(stereo=True)


def spectral_convergence(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """||ref - est||_F / ||ref||_F over the shorter length (DESIGN.md section 5)."""
    n = min(reference.shape[-1], estimate.shape[-1])
    reference, estimate = reference[..., :n], estimate[..., :n]
    return float((reference - estimate).norm() / reference.norm())


def signal(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    """`(1, N)` float32 mono signal."""
    return SIGNALS[kind](seconds, seed=seed)[None]
