"""What a long-running server needs that a single library call does not: returning freed C
heap to the operating system (``start_heap_trimmer``), and charging the web server's upload
route to the upload quotas before a byte is received (``UploadGuard``, plain ASGI).

Pure plumbing around threads and requests; it knows nothing of models or Gradio's components.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from collections.abc import Callable
from typing import Any

from diffatr.uploads import QuotaExceeded, UploadStore

UPLOAD_ROUTE_SUFFIX = "/upload"  # Gradio's POST /gradio_api/upload


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


class UploadGuard:
    """ASGI middleware around the web server: a POST to its upload route is charged to the
    ``UploadStore`` (``reserve_upload``, on its Content-Length) before its body is read, and
    refused at once (413, the quota's words) when it would pass the upload cache's cap or the
    demo's total, or the sender's share of the cache; a request that does not say its size is
    refused (411). When the request ends, what it left on disk is measured, and the files it
    stored are noted as the sender's uploads (``UploadStore.note_uploads``: only those may be
    deleted once used, and until then they count against the sender's share).

    Args:
        app: the ASGI app (Gradio's FastAPI app; Starlette passes it).
        store: the demo's upload store.
        forwarded: name the sender by the first address of X-Forwarded-For (behind a proxy that
            sets it, as on Hugging Face Spaces, where every peer is the proxy) instead of the
            peer's address.
    """

    def __init__(self, app: Any, store: UploadStore, forwarded: bool = False) -> None:
        self.app = app
        self.store = store
        self.forwarded = forwarded

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" \
                or not scope.get("path", "").rstrip("/").endswith(UPLOAD_ROUTE_SUFFIX):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if not declared.isdigit():
            await _plain(send, 411, "An upload must say its size (a Content-Length header).")
            return
        nbytes = int(declared)
        client = client_address(scope, self.forwarded)
        try:
            self.store.reserve_upload(nbytes, client)
        except QuotaExceeded as err:
            await _plain(send, 413, f"Upload refused: {err}.")
            return
        status, body = [0], bytearray()

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and len(body) < 1_000_000:
                body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.store.settle_upload(nbytes, client)
            if status[0] == 200:
                try:
                    self.store.note_uploads(json.loads(bytes(body)), client)
                except (ValueError, TypeError):
                    pass  # not the list of stored paths: nothing to note


def client_address(scope: dict, forwarded: bool = False) -> str | None:
    """Who sent an ASGI request: the peer's address, or with ``forwarded`` the first address of
    its X-Forwarded-For header (the client as the proxy saw it; the peer when there is none).
    A client can write that header itself, so a per-client limit read from it holds honest and
    careless clients, not one who forges addresses: the cache's own cap still bounds those."""
    if forwarded:
        header = dict(scope.get("headers") or []).get(b"x-forwarded-for", b"")
        first = header.decode("latin-1").split(",")[0].strip()
        if first:
            return first
    peer = scope.get("client")
    return str(peer[0]) if peer else None


async def _plain(send: Callable, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": text.encode()})
