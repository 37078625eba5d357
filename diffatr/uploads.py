"""The disk the demo's upload path may use: quotas, and the folders users' files are written to.

``UploadQuotas`` holds the limits (frozen, from defaults or ``$DIFFATR_QUOTA_*``);
``UploadStore`` writes every byte a user sends into one folder per session, charging it to the
session and to the whole demo *as it is written*, deletes what is not kept, and removes what
a session, a run or an earlier run left behind. The web server's own upload cache (Gradio's,
where a browser's file lands before any handler sees it) lives in the run's folder too: the
store charges each upload to it before it is received (``reserve_upload``), counts what it
holds against the demo's total, deletes used uploads (``discard_uploads``) and empties it at
exit. No audio decoding and no Gradio here.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping

__all__ = ["QuotaExceeded", "UploadQuotas", "UploadStore", "upload_root"]

QUOTA_ENV_PREFIX = "DIFFATR_QUOTA_"
UPLOAD_DIR_ENV = "DIFFATR_UPLOAD_DIR"
RUN_PREFIX = "run-"
CACHE_DIR = "cache"  # the web server's upload cache, in the run's folder (never a session id: those are hex)
LEGACY_PREFIX = "diffatr-uploads-"  # the per-session folders of earlier versions (tempfile.mkdtemp)
CHUNK = 1 << 20


@dataclass(frozen=True)
class UploadQuotas:
    """Limits of the upload path. Each field can be set as ``$DIFFATR_QUOTA_<FIELD>`` (upper case)."""

    # MB one session may write over its life (files it uploads, copied into its folder, and zip
    # members), counted on what is written, kept or not.
    session_mb: float = 100.0
    # MB all sessions' files and the upload cache may hold on disk at once. Sized so that
    # min_sessions sessions at their full quota and a full cache fit together.
    total_mb: float = 2000.0
    # MB the web server's upload cache may hold (files arriving, and those not yet used or
    # deleted); one upload request is at most cache_mb / min_sessions (``upload_mb``).
    cache_mb: float = 500.0
    # MB of that cache one client (network address) may hold in uploads no search has used yet,
    # with those it is sending: so that one client cannot fill the cache and block everyone's
    # uploads until its files expire. At most cache_mb.
    client_cache_mb: float = 125.0
    # Sessions that can always upload their full quota at once (checked: one session, or nine,
    # cannot fill the demo's disk and lock the others out).
    min_sessions: int = 10
    # Audio files one session may hold at once (counted as they are written; an undecodable one
    # is deleted at once and no longer counts).
    session_clips: int = 200
    total_clips: int = 4000  # audio files all live sessions may hold at once
    zip_members: int = 500  # files one zip may list
    # Largest unpacked / packed size of a zip member (and of a whole zip); members under 64 KB
    # are exempt (headers compress well).
    zip_ratio: float = 50.0
    caption_kb: float = 64.0  # largest NAME.txt caption file read (it is read into memory)
    session_ttl_s: float = 3600.0  # a session idle this long is forgotten and its files deleted
    # An upload in the cache that no search or upload used for this long is deleted (a sound
    # sent but never searched with); the cache is swept every cache_sweep_s.
    cache_ttl_s: float = 600.0
    cache_sweep_s: float = 60.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"UploadQuotas.{f.name} must be a positive number, got {value!r}")
        if self.session_mb * self.min_sessions + self.cache_mb > self.total_mb:
            raise ValueError(f"UploadQuotas: {self.min_sessions} sessions x session_mb ({self.session_mb:g}) + "
                             f"cache_mb ({self.cache_mb:g}) must fit in total_mb ({self.total_mb:g}), so that "
                             f"{self.min_sessions} sessions can always upload their full quota")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> UploadQuotas:
        """Defaults, then ``$DIFFATR_QUOTA_<FIELD>`` values, then ``overrides``.

        Raises:
            ValueError: a value that is not a positive number (names the variable).
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = QUOTA_ENV_PREFIX + f.name.upper()
            if name in environ:
                kind = int if f.type in ("int", int) else float
                try:
                    values[f.name] = kind(environ[name])
                except ValueError:
                    raise ValueError(f"${name} must be a positive {kind.__name__}, got {environ[name]!r}") from None
        return cls(**(values | overrides))

    @property
    def session_bytes(self) -> int:
        return int(self.session_mb * 1e6)

    @property
    def total_bytes(self) -> int:
        return int(self.total_mb * 1e6)

    @property
    def cache_bytes(self) -> int:
        return int(self.cache_mb * 1e6)

    @property
    def client_cache_bytes(self) -> int:
        return int(min(self.client_cache_mb, self.cache_mb) * 1e6)

    @property
    def upload_mb(self) -> float:
        """The largest upload request (the web server refuses larger ones at once): a session's
        quota, at most a min_sessions-th of the cache and at most one client's share of it."""
        return min(self.session_mb, self.cache_mb / self.min_sessions, self.client_cache_mb)

    @property
    def caption_bytes(self) -> int:
        return int(self.caption_kb * 1e3)

    def describe(self) -> str:
        """One line for the README and the start-up log."""
        return (f"files up to {self.upload_mb:g} MB, {self.session_mb:g} MB and {self.session_clips} clips a session, "
                f"{self.total_mb:g} MB and {self.total_clips} clips in all, zips of at most {self.zip_members} files unpacking at "
                f"most {self.zip_ratio:g}x, captions up to {self.caption_kb:g} KB, sessions forgotten after "
                f"{self.session_ttl_s / 60:g} min idle")


class QuotaExceeded(Exception):
    """A write refused by a quota; the message says which one, for the user."""


@dataclass
class _Usage:
    written: int = 0  # bytes ever written for the session (never refunded)
    clips: int = 0  # audio files the session holds or is writing
    last_used: float = 0.0
    files: dict[str, tuple[int, bool]] = dataclasses.field(default_factory=dict)  # path -> (bytes, is a clip)


def upload_root() -> Path:
    """Where the runs' upload folders live: ``$DIFFATR_UPLOAD_DIR`` or ``<tmp>/diffatr-uploads``."""
    env = os.environ.get(UPLOAD_DIR_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / "diffatr-uploads"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


class UploadStore:
    """One folder per session under this run's folder; every byte written is charged first.

    Thread-safe. Disk use by the upload path is at most ``total_bytes`` whatever the sequence of
    calls: each chunk is charged before it is written, a write that would pass a quota stops,
    and its partial file is deleted.

    Args:
        quotas: the limits.
        root: the parent of the runs' folders (``upload_root()``); ``start`` deletes the folders
            of runs whose process is gone, and this run's at exit.
        clock: seconds (for the time-to-live; tests pass a fake).
    """

    def __init__(self, quotas: UploadQuotas | None = None, root: str | os.PathLike | None = None,
                 clock: Any = time.monotonic) -> None:
        self.quotas = quotas or UploadQuotas()
        self.root = Path(root) if root is not None else upload_root()
        self.run_dir = self.root / f"{RUN_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.removed_at_start: list[str] = []
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, _Usage] = {}
        self._disk = 0  # bytes of all sessions' files (and writes in flight) on disk now
        self._clips = 0  # audio files of all sessions on disk now
        self._cache_held = 0  # bytes in the upload cache when last measured
        self._cache_reserved = 0  # bytes of uploads being received now (charged before they arrive)
        self._uploaded: set[str] = set()  # files the upload route stored (the cache also holds output copies)
        self._client_files: dict[str, tuple[str, int]] = {}  # such a file -> (the client that sent it, bytes)
        self._client_reserved: dict[str, int] = {}  # client -> bytes of its uploads being received now
        self._started = False

    def start(self) -> UploadStore:
        """Take up the disk: delete earlier runs' leftovers, make this run's folder, and delete it
        at exit. A server calls this once, when it starts (constructing a store touches nothing)."""
        if not self._started:
            self.root.mkdir(parents=True, exist_ok=True)
            self.removed_at_start = self.remove_leftovers()
            self.run_dir.mkdir(exist_ok=True)
            atexit.register(self.close)
            self._started = True
        return self

    # ------------------------------------------------------------------ leftovers

    def remove_leftovers(self) -> list[str]:
        """Delete the folders of earlier runs (their process is gone) and of earlier versions."""
        removed = []
        for entry in self.root.iterdir() if self.root.is_dir() else []:
            name = entry.name
            stale = False
            if name.startswith(RUN_PREFIX):
                pid = name[len(RUN_PREFIX):].split("-", 1)[0]
                stale = not pid.isdigit() or not _pid_alive(int(pid))
            elif name.startswith(LEGACY_PREFIX) or name.endswith(".part"):
                stale = True
            if stale:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                removed.append(name)
        legacy_parent = Path(tempfile.gettempdir())  # earlier versions wrote straight into <tmp>
        for entry in legacy_parent.glob(LEGACY_PREFIX + "*") if legacy_parent != self.root else []:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
        return removed

    def close(self) -> None:
        """Delete this run's folder (at exit)."""
        shutil.rmtree(self.run_dir, ignore_errors=True)
        with self._lock:
            self._sessions.clear()
            self._uploaded.clear()
            self._client_files.clear()
            self._client_reserved.clear()
            self._disk = self._clips = self._cache_held = 0

    # ------------------------------------------------------------------ accounting

    def disk_bytes(self) -> int:
        """Bytes the upload path holds on disk now (all sessions; the upload cache apart)."""
        with self._lock:
            return self._disk

    # ------------------------------------------------------------------ the web server's upload cache

    @property
    def cache_dir(self) -> Path:
        """The web server's upload cache (``$GRADIO_TEMP_DIR``): in this run's folder, so that it
        is emptied at exit and an earlier run's is deleted at start."""
        return self.run_dir / CACHE_DIR

    def cache_bytes(self) -> int:
        """Bytes the upload cache holds (when last measured) and is receiving now."""
        with self._lock:
            return self._cache_held + self._cache_reserved

    def measure_cache(self) -> int:
        """Measure what the upload cache holds on disk now (Gradio writes and sweeps it)."""
        held, present = 0, set()
        for folder, _, files in os.walk(self.cache_dir):
            for name in files:
                path = os.path.join(folder, name)
                try:
                    held += os.lstat(path).st_size
                except OSError:
                    continue  # deleted meanwhile
                present.add(path)
        with self._lock:
            self._cache_held = held
            self._uploaded &= present  # uploads the server's own sweep deleted are forgotten
            self._client_files = {k: v for k, v in self._client_files.items() if k in present}
        return held

    def reserve_upload(self, nbytes: int, client: str | None = None) -> None:
        """Charge an upload request of ``nbytes`` (its Content-Length) before it is received.

        Args:
            nbytes: the request's size.
            client: who sends it (a network address), for the per-client share of the cache;
                None: not known, only the cache's own cap applies.

        Raises:
            QuotaExceeded: larger than ``upload_mb``, the cache or the demo's disk is full, or
                the client's unused uploads and this one would pass its share.
        """
        q = self.quotas
        if nbytes > q.upload_mb * 1e6:
            raise QuotaExceeded(f"an upload is at most {q.upload_mb:g} MB here")
        self.measure_cache()
        with self._lock:
            cache = self._cache_held + self._cache_reserved
            if cache + nbytes > q.cache_bytes:
                raise QuotaExceeded(f"the demo's upload cache ({q.cache_mb:g} MB) is full: try again in a few "
                                    "minutes")
            if self._disk + cache + nbytes > q.total_bytes:
                raise QuotaExceeded(f"the demo's disk for uploads ({q.total_mb:g} MB) is full: try again later")
            if client is not None:
                mine = self._client_held(client) + self._client_reserved.get(client, 0)
                if mine + nbytes > q.client_cache_bytes:
                    raise QuotaExceeded(
                        f"your uploads that no search has used yet ({mine / 1e6:.1f} MB) and this one would pass "
                        f"one visitor's share of the upload cache ({q.client_cache_bytes / 1e6:g} MB): search "
                        f"with them, or wait; unused ones are deleted after {q.cache_ttl_s / 60:g} min")
                self._client_reserved[client] = self._client_reserved.get(client, 0) + nbytes
            self._cache_reserved += nbytes

    def _client_held(self, client: str) -> int:
        """Bytes of ``client``'s uploads in the cache that no search has used (lock held)."""
        return sum(size for owner, size in self._client_files.values() if owner == client)

    def client_cache_bytes(self, client: str) -> int:
        """What ``client`` holds in the upload cache now: unused uploads and uploads arriving."""
        with self._lock:
            return self._client_held(client) + self._client_reserved.get(client, 0)

    def settle_upload(self, nbytes: int, client: str | None = None) -> None:
        """An upload request reserved with ``reserve_upload`` ended: count what it left on disk."""
        with self._lock:
            self._cache_reserved -= nbytes
            if client is not None:
                left = self._client_reserved.get(client, 0) - nbytes
                if left > 0:
                    self._client_reserved[client] = left
                else:
                    self._client_reserved.pop(client, None)
        self.measure_cache()

    def note_uploads(self, paths: Any, client: str | None = None) -> None:
        """Files the web server's upload route stored (its answer): they may be deleted once used,
        and until then they count against ``client``'s share of the cache."""
        if not isinstance(paths, list):
            return
        stored = [str(p) for p in paths if isinstance(p, str)]
        sizes = {}
        for path in stored:
            try:
                sizes[path] = os.path.getsize(path)
            except OSError:
                continue  # already gone
        with self._lock:
            self._uploaded.update(stored)
            if client is not None:
                self._client_files.update((path, (client, size)) for path, size in sizes.items())

    def discard_uploads(self, paths: Any) -> int:
        """Delete uploads of the cache now (indexed, refused, or replaced by a newer query). Only
        files the upload route stored (``note_uploads``) inside the cache go: the cache also holds
        the players' copies of corpus clips, shared by every page. Returns how many went."""
        cache = self.cache_dir.resolve()
        deleted = 0
        for path in paths or []:
            with self._lock:
                if not isinstance(path, str) or path not in self._uploaded:
                    continue
                self._uploaded.discard(path)
                self._client_files.pop(path, None)  # used: no longer held against its sender
            file = Path(path).resolve()
            if cache in file.parents and file.is_file():
                file.unlink(missing_ok=True)
                deleted += 1
                try:
                    file.parent.rmdir()  # Gradio's folder per upload (its hash), if now empty
                except OSError:
                    pass
        self.measure_cache()
        return deleted

    def usage(self, session_id: str) -> dict[str, int]:
        """``{"written", "clips", "on_disk", "files"}`` of one session."""
        with self._lock:
            u = self._sessions.get(session_id, _Usage())
            return {"written": u.written, "clips": u.clips, "on_disk": sum(s for s, _ in u.files.values()),
                    "files": len(u.files)}

    def active(self, session_id: str) -> bool:
        """Whether the store still holds this session (False once it expired or was released)."""
        with self._lock:
            return session_id in self._sessions

    def session_dir(self, session_id: str) -> Path:
        """The session's folder (created, and the session registered, on first use)."""
        folder = self.run_dir / session_id
        with self._lock:
            self._use(session_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _use(self, session_id: str) -> _Usage:
        usage = self._sessions.get(session_id)
        if usage is None:
            usage = self._sessions[session_id] = _Usage()
        usage.last_used = self._clock()
        return usage

    def touch(self, session_id: str) -> None:
        """Mark the session as used now (its time-to-live restarts)."""
        with self._lock:
            if session_id in self._sessions:
                self._sessions[session_id].last_used = self._clock()

    def admit_clip(self, session_id: str) -> None:
        """Count one more audio file held by the session (before it is written; ``write`` with
        ``clip=True`` then owns the count, and gives it back if the write fails).

        Raises:
            QuotaExceeded: the session's or the demo's clip quota is reached.
        """
        q = self.quotas
        with self._lock:
            usage = self._use(session_id)
            if usage.clips >= q.session_clips:
                raise QuotaExceeded(f"this session holds {q.session_clips} of your sound files, its limit "
                                    "(forget your sounds to add others)")
            if self._clips >= q.total_clips:
                raise QuotaExceeded(f"the demo holds {q.total_clips} uploaded sounds, its limit: try again later")
            usage.clips += 1
            self._clips += 1

    def _charge(self, session_id: str, nbytes: int) -> None:
        q = self.quotas
        with self._lock:
            usage = self._use(session_id)
            if usage.written + nbytes > q.session_bytes:
                raise QuotaExceeded(f"this session has written its quota of {q.session_mb:g} MB of uploads "
                                    "(reload the page for a new session)")
            if self._disk + self._cache_held + self._cache_reserved + nbytes > q.total_bytes:
                raise QuotaExceeded(f"the demo's disk for uploads ({q.total_mb:g} MB) is full: try again later")
            usage.written += nbytes
            self._disk += nbytes

    def _free(self, session_id: str, nbytes: int, clips: int) -> None:
        """Give back disk bytes and held clips (the session's written bytes stay counted)."""
        with self._lock:
            self._disk -= nbytes
            self._clips -= clips
            usage = self._sessions.get(session_id)
            if usage is not None:
                usage.clips -= clips

    # ------------------------------------------------------------------ files

    def write(self, session_id: str, src: BinaryIO, name: str, *, limit: int | None = None,
              clip: bool = True) -> Path:
        """Copy ``src`` into the session's folder as ``name``, atomically (a ``.part`` file then
        a rename), charging every chunk before it is written.

        Args:
            session_id: the session the bytes are charged to.
            src: a readable binary file (a zip member, an uploaded file).
            name: a safe file name (no folders); made unique in the folder.
            limit: refuse a file larger than this many bytes (a zip member's declared size).
            clip: whether the file is an audio clip (``admit_clip`` was called for it).

        Returns:
            The written file.

        Raises:
            QuotaExceeded: a quota or ``limit`` was reached; nothing of the file is left on disk
                (the bytes stay charged to the session: they were written).
        """
        folder = self.session_dir(session_id)
        final = folder / name
        if final.exists():
            final = folder / f"{uuid.uuid4().hex[:6]}_{name}"
        part = folder / f".{final.name}.{uuid.uuid4().hex[:6]}.part"
        written = 0
        try:
            with open(part, "wb") as dst:
                while True:
                    block = src.read(CHUNK)
                    if not block:
                        break
                    if limit is not None and written + len(block) > limit:
                        raise QuotaExceeded(f"it unpacks to more than {limit:,} bytes")
                    self._charge(session_id, len(block))
                    written += len(block)
                    dst.write(block)
            os.replace(part, final)
        except BaseException:
            part.unlink(missing_ok=True)
            self._free(session_id, written, int(clip))
            raise
        with self._lock:
            usage = self._sessions.get(session_id)
            if usage is not None:
                usage.files[str(final)] = (written, clip)
        if usage is None:  # released while it was written: its folder is gone or going
            final.unlink(missing_ok=True)
            self._free(session_id, written, int(clip))
            raise QuotaExceeded("this session ended while its upload was written")
        return final

    def discard(self, session_id: str, path: str | os.PathLike) -> None:
        """Delete one of the session's files now (e.g. an undecodable clip); its disk is freed."""
        path = str(path)
        with self._lock:
            usage = self._sessions.get(session_id)
            entry = usage.files.pop(path, None) if usage is not None else None
        Path(path).unlink(missing_ok=True)
        if entry is not None:
            self._free(session_id, entry[0], int(entry[1]))

    def release(self, session_id: str) -> None:
        """Forget a session and delete its folder (its session ended or its clips were cleared)."""
        with self._lock:
            usage = self._sessions.pop(session_id, None)
            if usage is not None:
                self._disk -= sum(s for s, _ in usage.files.values())
                self._clips -= sum(int(c) for _, c in usage.files.values())  # writes in flight free their own
        shutil.rmtree(self.run_dir / session_id, ignore_errors=True)

    def clear(self, session_id: str) -> None:
        """Delete the session's files; its written bytes stay counted (clearing does not renew them)."""
        with self._lock:
            usage = self._sessions.get(session_id)
            files = dict(usage.files) if usage else {}
            if usage is not None:
                usage.files.clear()
        for path in files:
            Path(path).unlink(missing_ok=True)
        self._free(session_id, sum(s for s, _ in files.values()), sum(int(c) for _, c in files.values()))

    def sweep(self) -> list[str]:
        """Release every session idle longer than the time-to-live; returns their ids."""
        now = self._clock()
        with self._lock:
            expired = [sid for sid, u in self._sessions.items() if now - u.last_used > self.quotas.session_ttl_s]
        for session_id in expired:
            self.release(session_id)
        return expired
