"""The user's own sounds: an upload indexed into its session only (never the shipped index),
and forgotten again. Files reach the session folder through ``unpack``; here they are decoded
(cut at the demo's limit, silence refused), embedded, captioned and joined to the session.

Owns a session's ``user_index`` while it changes (under the session's upload lock).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from diffatr.audio.io import AudioError, decode_audio, is_silent
from diffatr.data.manifest import ClipRecord
from diffatr.demo.corpus import USER_PREFIX, DemoCorpus
from diffatr.demo.messages import DemoError, Notice, hide_paths, reason, short_error
from diffatr.demo.session import DemoSession, Sessions
from diffatr.demo.settings import AUDIO_MAX_SECONDS
from diffatr.demo.unpack import Skipped, collect_uploads
from diffatr.retrieval.engine import SearchError
from diffatr.retrieval.index import IndexFormatError, RetrievalIndex
from diffatr.uploads import UploadStore

Progress = Callable[[int, int], None]


class UserSounds:
    """Indexes uploads into sessions and forgets them.

    Args:
        sessions: the app's sessions (locks, engines, expiry).
        corpus: the shipped corpus (its clip ids are taken; its summary is reported).
        text_encoder: embeds the uploads' captions.
        audio_encoder: embeds the uploads (``embed_waveform``, ``sample_rate``, ``config``).
    """

    def __init__(self, sessions: Sessions, corpus: DemoCorpus, text_encoder: Any, audio_encoder: Any) -> None:
        self.sessions, self.corpus = sessions, corpus
        self.text_encoder, self.audio_encoder = text_encoder, audio_encoder

    @property
    def store(self) -> UploadStore:
        return self.sessions.uploads

    def index_uploads(self, files: Any, session: DemoSession,
                      on_progress: Progress | None = None) -> dict[str, Any]:
        """Index the user's files (audio, or zips of audio) into this session only.

        A caption may come with a clip as ``NAME.txt`` (one caption per line) beside
        ``NAME.wav``, uploaded with it or inside the same zip. Every file is copied (or
        unpacked) into the session's folder in the upload store, charged to the session's and
        the demo's quotas as it is written; files that cannot be used are deleted at once and
        listed with the reason; the rest are indexed. A quota reached mid-way stops the upload
        there: what was written before is indexed, and clips indexed earlier stay.

        Args:
            files: paths (``diffatr.webapp_io.upload_paths`` turns Gradio's values into
                these); a single path is accepted too.
            session: the session that will search them.
            on_progress: ``on_progress(done, total)`` after each file.

        Returns:
            ``{"indexed", "skipped": [{"file", "reason"}], "your_clips", "corpus", "clips":
            [ids added], "notices", "quota": {"written_mb", "session_mb", "clips", "session_clips"}}``.

        Raises:
            DemoError: no files given, or the session has reached a quota before writing anything.
        """
        paths = _as_paths(files)
        if not paths:
            raise DemoError("Choose one or more audio files (or a .zip of them) to index first.")
        with self.sessions.upload_lock(session):  # two uploads of one session (two tabs) must not race
            return self._index_uploads(paths, session, on_progress)

    def clear_uploads(self, session: DemoSession) -> dict[str, Any]:
        """Forget this session's clips and delete their files (the shipped corpus is untouched;
        the bytes the session wrote stay counted on its quota)."""
        with self.sessions.upload_lock(session):  # not while an upload of this session is being indexed
            removed = session.num_uploads
            self.sessions.drop_engines(session.session_id)
            self.store.clear(session.session_id)
            session.user_index = None
            session.version += 1
        return {"removed": removed, "your_clips": 0, "corpus": self.corpus.summary(session)}

    def _index_uploads(self, paths: list[str], session: DemoSession, on_progress: Progress | None) -> dict[str, Any]:
        notices: list[Notice] = []
        self.sessions.expire(session, notices)
        self._check_room(session)
        skipped = Skipped()
        session.upload_dir = str(self.store.session_dir(session.session_id))
        audio, captions, names = collect_uploads(paths, self.store, session.session_id, skipped)
        records = self._records(audio, captions, names, session)
        added: list[str] = []
        if records:
            encoder = _CheckedAudioEncoder(self.audio_encoder, AUDIO_MAX_SECONDS, names)
            new_index = self._embed(records, encoder, names, skipped, session, on_progress)
            if new_index is not None:
                self._attach(new_index, session)
                added = list(new_index.clip_ids)
                for name in encoder.truncated:
                    notices.append(Notice("warning", f"{name} is longer than {AUDIO_MAX_SECONDS:g} s: only "
                                                     "its first part was indexed."))
        if skipped.quota:
            notices.append(Notice("warning", f"Upload stopped: {skipped.quota}. Your sounds indexed so far are kept."))
        if not added:
            notices.append(Notice("warning", "No file could be indexed: see the list of skipped files."))
        return self._report(session, added, skipped, notices)

    def _check_room(self, session: DemoSession) -> None:
        """Refuse an upload once the session has used its quota of bytes or clips."""
        q = self.store.quotas
        if self.store.usage(session.session_id)["written"] >= q.session_bytes:
            raise DemoError(f"This session has written its quota of {q.session_mb:g} MB of uploads: reload the "
                            "page to start a new session.")
        if session.num_uploads >= q.session_clips:
            raise DemoError(f"This session already holds {q.session_clips} of your clips (the demo's limit): "
                            "forget your sounds to index others.")

    def _records(self, audio: list[str], captions: Mapping[str, list[str]], names: Mapping[str, str],
                 session: DemoSession) -> list[ClipRecord]:
        """One record per written file, under a ``yours/`` id no other clip has."""
        taken = set(self.corpus.index.clip_ids) | set(session.user_index.clip_ids if session.user_index else [])
        records = []
        for path in audio:
            clip_id = _unique_id(USER_PREFIX + Path(names[path]).stem, taken)
            taken.add(clip_id)
            records.append(ClipRecord(clip_id, path, tuple(captions.get(path, ())),
                                      metadata={"source": f"your upload: {names[path]}",
                                                "license": "yours (kept in this session only)",
                                                "upload_name": names[path]}))
        return records

    def _embed(self, records: list[ClipRecord], encoder: _CheckedAudioEncoder, names: Mapping[str, str],
               skipped: Skipped, session: DemoSession, on_progress: Progress | None) -> RetrievalIndex | None:
        """The index of the usable records, or None; unusable files are listed and deleted."""
        from diffatr.indexing import build_index

        text_encoder = self.text_encoder if any(r.captions for r in records) else None
        try:
            new_index, _ = build_index(records, encoder, text_encoder, cache=None, progress=False,
                                       on_progress=on_progress)
        except AudioError:  # not one file could be used; the reasons are in encoder.failures
            new_index = None
        for record in records:
            if new_index is None or record.path in encoder.failures:
                self.store.discard(session.session_id, record.path)  # an unusable file does not stay on disk
            if record.path in encoder.failures:
                skipped.add(names[record.path], encoder.failures[record.path])
        return new_index

    def _attach(self, new_index: RetrievalIndex, session: DemoSession) -> None:
        """Join ``new_index`` to the session's clips and build its engine now (so a failure
        shows here, not at the next search); on failure the session is as it was."""
        previous = session.user_index
        try:
            session.user_index = new_index if previous is None else previous.concat(new_index)
            session.version += 1
            self.sessions.engine_for(session)
        except (IndexFormatError, SearchError) as err:
            session.user_index = previous
            session.version += 1
            for path in new_index.paths:
                self.store.discard(session.session_id, path)
            raise DemoError(f"Could not add these clips to the corpus: {hide_paths(str(err))}") from None

    def _report(self, session: DemoSession, added: list[str], skipped: Skipped,
                notices: list[Notice]) -> dict[str, Any]:
        q = self.store.quotas
        usage = self.store.usage(session.session_id)
        return {
            "indexed": len(added),
            "clips": added,
            "skipped": skipped.rows(),
            "your_clips": session.num_uploads,
            "corpus": self.corpus.summary(session),
            "notices": [dataclasses.asdict(n) for n in notices],
            "quota": {"written_mb": round(usage["written"] / 1e6, 3), "session_mb": q.session_mb,
                      "clips": session.num_uploads, "session_clips": q.session_clips},
        }


class _CheckedAudioEncoder:
    """Wraps the audio encoder for indexing uploads: decodes through ``audio/io.py`` with the
    demo's length cut, refuses silence, records cuts and failures per file, and turns any
    failure into ``AudioError`` so that ``build_index`` lists the file instead of stopping."""

    def __init__(self, encoder: Any, max_seconds: float, names: Mapping[str, str]) -> None:
        self.encoder = encoder
        self.config = encoder.config
        self.max_seconds = max_seconds
        self.names = names  # path -> the name the user knows
        self.truncated: list[str] = []
        self.failures: dict[str, str] = {}  # path -> reason

    def embed_file(self, path: str) -> torch.Tensor:
        try:
            return self._embed(str(path))
        except AudioError as err:
            self.failures[str(path)] = str(err)
            raise

    def _embed(self, path: str) -> torch.Tensor:
        name = self.names.get(path, Path(path).name)
        try:
            decoded = decode_audio(path, self.encoder.sample_rate, max_seconds=self.max_seconds)
        except AudioError as err:
            raise AudioError(short_error(err, path)) from None
        except Exception as err:  # noqa: BLE001 - one bad upload must never stop the others
            raise AudioError(f"could not read {name} ({type(err).__name__}: {reason(err)})") from None
        if is_silent(decoded.waveform):
            raise AudioError("the audio is silent (peak below -80 dBFS): nothing to index")
        if decoded.truncated:
            self.truncated.append(name)
        try:
            return self.encoder.embed_waveform(decoded.waveform, decoded.sample_rate)
        except Exception as err:  # noqa: BLE001
            raise AudioError(f"could not embed {name} ({type(err).__name__}: {reason(err)})") from None


def _as_paths(files: Any) -> list[str]:
    """A path, or paths, as a list of strings (empty entries dropped)."""
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    if not all(isinstance(item, (str, os.PathLike)) for item in files):
        raise DemoError("Unsupported upload: give the paths of the files to index.")
    return [str(item) for item in files if item]


def _unique_id(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"
