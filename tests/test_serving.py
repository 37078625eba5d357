"""diffatr.serving: the heap trimmer a long-running server starts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from diffatr.serving import _malloc_trim, start_heap_trimmer


def test_the_trimmer_calls_trim_every_period_and_can_be_disabled() -> None:
    calls = []
    done = threading.Event()

    def trim() -> bool:
        calls.append(time.monotonic())
        if len(calls) >= 3:
            done.set()
        return True

    thread = start_heap_trimmer(0.02, trim=trim)
    assert thread is not None and thread.daemon
    assert done.wait(10), f"only {len(calls)} trims in 10 s"
    thread.stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert start_heap_trimmer(0, trim=trim) is None and start_heap_trimmer(-1, trim=trim) is None


# In a fresh interpreter: 200 MB freed by a worker thread stays resident (a few survivors pin
# the arena's pages) until malloc_trim hands it back.
_FRAGMENTED = """
import gc, json, threading
from diffatr.serving import _malloc_trim
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
keep = []
def work():
    chunks = [bytes(2000) for _ in range(100_000)]
    keep.extend(chunks[::50])
    del chunks
thread = threading.Thread(target=work); thread.start(); thread.join(); gc.collect()
before = rss(); _malloc_trim()(); print(json.dumps([before, rss()]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None, reason="glibc only")
def test_trimming_returns_freed_heap_to_the_os() -> None:
    run = subprocess.run([sys.executable, "-c", _FRAGMENTED], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    before, after = (float(v) for v in run.stdout.strip().strip("[]").split(","))
    assert before - after > 100, (before, after)
