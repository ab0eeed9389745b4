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


@pytest.fixture
def launch(tmp_path):
    """Run `spectrodiff ARGS...` as `accelerate launch --num_processes 2 --cpu`: two processes training or generating
    together over gloo. accelerate starts several CPU processes through mpirun (Open MPI, from the Makefile), which
    refuses root unless told."""
    import os
    import socket
    import subprocess
    import sys

    hosts = tmp_path / "mpi-hosts"
    hosts.write_text("localhost slots=2\n")

    def run(*args, processes: int = 2) -> subprocess.CompletedProcess:
        with socket.socket() as probe:  # a free port for the processes' rendezvous
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = os.environ | {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                            "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--mpirun_hostfile",
                   str(hosts), "-m", "spectrodiff.cli", *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)

    return run
