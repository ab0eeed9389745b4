"""What every benchmark prints first: the command and the machine it ran on."""

import os
import platform
import sys

import torch


def machine_header() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}\n"
            f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}")
