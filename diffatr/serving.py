"""What a long-running server needs that a single library call does not: returning freed C
heap to the operating system (``start_heap_trimmer``).

Pure plumbing around threads; it knows nothing of models, Gradio or files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable


def _malloc_trim() -> Callable[[], bool] | None:
    """glibc's ``malloc_trim(0)`` as a function, or None where there is no glibc (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: bool(trim(0))


def start_heap_trimmer(every_seconds: float, trim: Callable[[], bool] | None = None) -> threading.Thread | None:
    """Give freed C heap back to the OS every ``every_seconds``, on a daemon thread.

    Why: under load the demo's resident memory crept up by ~25 MB per 1,000 API requests
    (benchmarks/load.py) while Python's own allocations stayed flat (tracemalloc): freed heap
    that glibc keeps, fragmented, in its arenas. Trimming keeps it flat; a trim takes a few
    milliseconds.

    Args:
        every_seconds: the pause between trims; <= 0 disables trimming.
        trim: the trimming function (default: glibc's ``malloc_trim(0)``).

    Returns:
        The started thread, or None (disabled, or no glibc).
    """
    trim = trim or _malloc_trim()
    if every_seconds <= 0 or trim is None:
        return None
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_seconds):
            trim()

    thread = threading.Thread(target=run, name="diffatr-heap-trim", daemon=True)
    thread.stop = stop  # type: ignore[attr-defined]  # lets tests end it
    thread.start()
    return thread
