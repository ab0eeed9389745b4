"""What the process asks of the C library beyond Python's own means (Linux and glibc, through ctypes; elsewhere
each function does nothing): a worker that ends with its parent, glibc's heap kept for reuse or handed back, and an
exit that skips tearing the interpreter down.

SPECTRODIFF_NO_PROCESS_TUNING=1 turns the speed and memory tuning off (everything here but `end_with_parent`), to
see what it is worth or to rule it out when chasing a problem; docs/benchmarks.md has what each part measured.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import sys
from typing import NoReturn

TUNING_SWITCH = "SPECTRODIFF_NO_PROCESS_TUNING"
# glibc's mallopt(3) parameters (malloc.h) and prctl(2)'s request for the signal sent when the parent dies.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
PR_SET_PDEATHSIG = 1


def tuning_enabled() -> bool:
    """Whether the speed and memory tuning is on (it is unless SPECTRODIFF_NO_PROCESS_TUNING is set, and not 0)."""
    return os.environ.get(TUNING_SWITCH, "0") in ("", "0")


def _libc_function(name: str):
    """A function of the C library the process runs on, or None where it has none of that name (not glibc)."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


def end_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Have the kernel send `signum` to this process when its parent dies, however the parent ends (SIGKILL and
    crashes included). Whether it was set (Linux only); the caller still checks that the parent is alive, since it
    may have died before this call."""
    prctl = _libc_function("prctl")
    return prctl is not None and prctl(PR_SET_PDEATHSIG, int(signum)) == 0


def keep_freed_memory() -> None:
    """Let glibc keep freed buffers of up to 32 MB for reuse instead of mapping and unmapping each one (and faulting
    its pages in anew): phase recovery frees and allocates the same sizes every iteration."""
    mallopt = _libc_function("mallopt") if tuning_enabled() else None
    if mallopt is not None:
        for option, value in ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 256 << 20), (M_TOP_PAD, 64 << 20)):
            mallopt(option, value)


def release_freed_memory() -> None:
    """Hand the heap's freed pages back to the operating system (glibc keeps them for later allocations, so a
    long-running process would stay at its largest)."""
    malloc_trim = _libc_function("malloc_trim") if tuning_enabled() else None
    if malloc_trim is not None:
        malloc_trim(0)


def exit_now(status: int) -> NoReturn:
    """Exit with `status` once output is flushed and exit handlers (temporary folders' finalizers and the like) have
    run, skipping the interpreter's teardown, which after torch is slow."""
    if not tuning_enabled():
        sys.exit(status)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (`spectrodiff ... | head`)
        pass
    atexit._run_exitfuncs()  # the handlers sys.exit would run; CPython offers no public way to run them early
    os._exit(status)
