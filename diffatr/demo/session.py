"""Session bookkeeping: ``DemoSession`` (one browser session's uploads and last trajectory) and
``Sessions``, which keeps per-session engines over (corpus + uploads), one lock per session for
its uploads, and forgets sessions idle past the upload time-to-live.

Owns what is shared between sessions and guarded by locks; it must not read files or search.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diffatr.demo.messages import Notice
from diffatr.retrieval.engine import SearchEngine
from diffatr.retrieval.index import RetrievalIndex
from diffatr.uploads import UploadStore


@dataclass
class DemoSession:
    """What belongs to one browser session: its uploads and its last trajectory.

    Attributes:
        session_id: a random id (keys the server-side engine cache and the upload folder).
        user_index: the session's own clips, or None.
        upload_dir: the session's folder in the app's ``UploadStore`` (set on the first upload).
        trajectory: the trajectory view of the last search (see ``Searcher.search_text``). A
            search stores a function that builds it; the first read builds it once. API clients
            never read it, and building it costs about a tenth of a search.
        version: bumped whenever ``user_index`` changes.
        last_error: the message of this session's last failed request, for the page's status
            line (a toast fades; the status keeps the message until the next search).
        query_upload: the uploaded sound this session last searched with (kept while its player
            shows it; the web server's copy is deleted when another replaces it).
    """

    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    user_index: RetrievalIndex | None = None
    upload_dir: str | None = None
    version: int = 0
    last_error: str | None = None
    query_upload: str | None = None
    _trajectory: dict[str, Any] | Callable[[], dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def trajectory(self) -> dict[str, Any] | None:
        if callable(self._trajectory):
            self._trajectory = self._trajectory()
        return self._trajectory

    @trajectory.setter
    def trajectory(self, view: dict[str, Any] | Callable[[], dict[str, Any]] | None) -> None:
        self._trajectory = view

    @property
    def num_uploads(self) -> int:
        return 0 if self.user_index is None else len(self.user_index)


class Sessions:
    """The server side of the sessions: engines over their clips, their upload locks, expiry.

    Args:
        engine: the shared engine over the shipped corpus (never modified).
        uploads: the app's upload store (its ``quotas`` give the time-to-live).
        cache_size: engines over (corpus + a session's uploads) kept in memory.
    """

    def __init__(self, engine: SearchEngine, uploads: UploadStore, cache_size: int = 16) -> None:
        self.engine = engine
        self.uploads = uploads
        self._engines: OrderedDict[tuple[str, int], SearchEngine] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._upload_locks: dict[str, threading.Lock] = {}  # one upload at a time per session

    def engine_for(self, session: DemoSession | None) -> SearchEngine:
        """The shared engine, or one over (corpus + this session's uploads), cached."""
        if session is None or session.user_index is None:
            return self.engine
        key = (session.session_id, session.version)
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
        shared = self.engine
        combined = shared.index.concat(session.user_index)
        engine = SearchEngine(shared.model, combined, text_encoder=shared.text_encoder,
                              audio_encoder=shared.audio_encoder)
        with self._lock:
            for old in [k for k in self._engines if k[0] == session.session_id]:
                del self._engines[old]
            self._engines[key] = engine
            while len(self._engines) > self._cache_size:
                self._engines.popitem(last=False)
        return engine

    def upload_lock(self, session: DemoSession) -> threading.Lock:
        """The lock one session's uploads take (two tabs must not race on its index)."""
        with self._lock:
            return self._upload_locks.setdefault(session.session_id, threading.Lock())

    def drop_engines(self, session_id: str) -> None:
        with self._lock:
            for old in [k for k in self._engines if k[0] == session_id]:
                del self._engines[old]

    def forget(self, session: DemoSession | None) -> None:
        """Drop a finished session's cached engine and delete its files."""
        if session is None:
            return
        self.drop_engines(session.session_id)
        with self._lock:
            self._upload_locks.pop(session.session_id, None)
        self.uploads.release(session.session_id)
        session.upload_dir = None

    def expire(self, session: DemoSession, notices: list[Notice]) -> None:
        """Forget the uploads of sessions idle past the time-to-live; if this session's were
        among them (its files are gone), say so and search the shipped corpus only."""
        for session_id in self.uploads.sweep():
            self.drop_engines(session_id)
        if session.user_index is not None and not self.uploads.active(session.session_id):
            session.user_index = None
            session.upload_dir = None
            session.version += 1
            minutes = self.uploads.quotas.session_ttl_s / 60
            notices.append(Notice("warning", f"Your sounds were forgotten after {minutes:g} "
                                             "minutes without use: upload them again to search them."))
        self.uploads.touch(session.session_id)
