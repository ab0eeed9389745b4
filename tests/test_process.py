"""spectrodiff/process.py: the quick exit still runs exit handlers, freed heap goes back to the OS, a worker ends with
its parent; SPECTRODIFF_NO_PROCESS_TUNING=1 turns the tuning off (each test's negative control)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from spectrodiff import process

QUICK_EXIT = """
import atexit
from spectrodiff import process

class Teardown:
    def __del__(self):
        print("torn down", flush=True)

kept = Teardown()  # a module global: the interpreter's teardown deletes it
atexit.register(print, "exit handler ran", flush=True)
process.exit_now(3)
"""


def python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_exit_now_runs_exit_handlers_and_skips_the_teardown():
    quick = python(QUICK_EXIT, SPECTRODIFF_NO_PROCESS_TUNING="0")
    assert quick.returncode == 3, quick.stderr
    assert quick.stdout.splitlines() == ["exit handler ran"]
    # The switch: a plain exit, with the same status and handlers, and the teardown.
    plain = python(QUICK_EXIT, SPECTRODIFF_NO_PROCESS_TUNING="1")
    assert plain.returncode == 3, plain.stderr
    assert plain.stdout.splitlines() == ["exit handler ran", "torn down"]


KEPT_BUFFER = """
import re
from pathlib import Path
from spectrodiff import process

def rss_mb():
    return int(re.search(r"VmRSS:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024

process.keep_freed_memory()
buffer = bytearray(b"\\x01") * (16 << 20)  # 16 MB written: glibc would map it apart and unmap it when freed
before = rss_mb()
del buffer
print(before - rss_mb())
"""


def test_keep_freed_memory_keeps_a_freed_16_mb_buffer_for_reuse():
    kept = python(KEPT_BUFFER, SPECTRODIFF_NO_PROCESS_TUNING="0")
    assert kept.returncode == 0 and float(kept.stdout) < 2, kept.stderr
    plain = python(KEPT_BUFFER, SPECTRODIFF_NO_PROCESS_TUNING="1")  # the switch: glibc's own policy, unmapped
    assert plain.returncode == 0 and float(plain.stdout) > 14, plain.stderr


def rss_mb() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def freed_after_release() -> float:
    """MB of RSS that release_freed_memory gave back after 200 MB was freed in 8 KB pieces under a piece still held
    (which glibc alone keeps)."""
    pieces = [bytearray(8192) for _ in range(25_000)]  # malloc's heap: below its mmap threshold
    held = pieces.pop()
    del pieces
    before = rss_mb()
    process.release_freed_memory()
    assert len(held) == 8192
    return before - rss_mb()


def test_release_freed_memory_gives_the_heap_back_unless_switched_off(monkeypatch):
    monkeypatch.setenv(process.TUNING_SWITCH, "1")
    assert freed_after_release() < 50
    monkeypatch.delenv(process.TUNING_SWITCH)
    assert freed_after_release() > 150


def test_end_with_parent_ends_a_child_whose_parent_was_killed():
    """A parent starts a child that asks to end with it, then is killed (SIGKILL: no clean-up of its own); the
    child, which would sleep a minute, is gone within seconds. The control: a child that did not ask outlives it."""
    for asks, survives in ((True, False), (False, True)):
        child = ("import time; from spectrodiff import process; "
                 f"{'process.end_with_parent()' if asks else 'None'}; print('ready', flush=True); time.sleep(60)")
        parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                                   f"child = subprocess.Popen([sys.executable, '-c', {child!r}]); "
                                   "print(child.pid, flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
        pid = int(parent.stdout.readline())
        assert parent.stdout.readline() == "ready\n"  # the child is up and has asked
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        # The asking child goes within milliseconds; the control is watched long enough to show it stays.
        deadline = time.monotonic() + (2 if survives else 10)
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive(pid) == survives
        if survives:
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by init, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
