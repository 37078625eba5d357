"""``DemoApp``: the loaded model, corpus and encoders, shared by every session, and the one
object ``diffatr.webapp`` and the tests call. It wires the parts together and delegates:
``search`` (queries), ``trajectory`` (the view of the last search), ``user_sounds`` and
``unpack`` (uploads), ``session`` (per-session engines, locks, expiry), ``corpus`` (names).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

from diffatr.demo.corpus import DemoCorpus, demo_index_dir
from diffatr.demo.search import Searcher
from diffatr.demo.session import DemoSession, Sessions
from diffatr.demo.settings import AUDIO_MAX_SECONDS, Settings
from diffatr.demo.trajectory import last_trajectory
from diffatr.demo.user_sounds import Progress, UserSounds
from diffatr.retrieval.engine import SearchEngine
from diffatr.retrieval.index import RetrievalIndex
from diffatr.uploads import UploadQuotas, UploadStore


class DemoApp:
    """The loaded model, corpus and encoders, shared by every session (read-only).

    Args:
        model: a DiffATR in eval mode.
        index: the demo corpus (never modified).
        text_encoder: ``encode(list[str]) -> (Q, Dt)``.
        audio_encoder: an AudioEncoder (``embed_waveform``, ``sample_rate``, ``config``).
        engine_cache_size: engines over (corpus + a session's uploads) kept in memory.
        quotas: the upload path's limits (default ``UploadQuotas.from_env()``).
        upload_root: where uploads are written (default ``diffatr.uploads.upload_root()``).
    """

    def __init__(self, model: Any, index: RetrievalIndex, text_encoder: Any, audio_encoder: Any,
                 *, engine_cache_size: int = 16, quotas: UploadQuotas | None = None,
                 upload_root: str | os.PathLike | None = None, first_stage: dict[str, Any] | None = None) -> None:
        self.model = model
        self.index = index
        self.text_encoder = text_encoder
        self.audio_encoder = audio_encoder
        # The corpus's first-stage stores (FAISS / Milvus) when its index has them; a session
        # with uploads searches corpus + uploads exactly.
        self.engine = SearchEngine(model, index, text_encoder=text_encoder, audio_encoder=audio_encoder,
                                   first_stage=first_stage)
        self.num_train_timesteps = int(model.config.diffusion.num_train_timesteps)
        self.defaults = Settings.for_model(model.config.retrieval, self.num_train_timesteps)
        self.quotas = quotas or UploadQuotas.from_env()
        self.uploads = UploadStore(self.quotas, upload_root)
        self.sessions = Sessions(self.engine, self.uploads, engine_cache_size)
        self.corpus = DemoCorpus(index)
        self.searcher = Searcher(text_encoder, audio_encoder, self.sessions, self.corpus)
        self.user_sounds = UserSounds(self.sessions, self.corpus, text_encoder, audio_encoder)

    @classmethod
    def load(cls, checkpoint_dir: str | os.PathLike | None = None,
             index_dir: str | os.PathLike | None = None, *, warm_up: bool = True,
             quotas: UploadQuotas | None = None, upload_root: str | os.PathLike | None = None) -> DemoApp:
        """Load everything from disk (nothing is downloaded).

        Args:
            checkpoint_dir: default ``diffatr.checkpoint.default_checkpoint_dir()``.
            index_dir: default ``demo_index_dir()``.
            warm_up: run one query so the first user's query is as fast as the next.
            quotas, upload_root: as for ``DemoApp``.
        """
        from diffatr.checkpoint import default_checkpoint_dir, load_checkpoint
        from diffatr.encoders.audio import build_audio_encoder
        from diffatr.encoders.text import TextEncoder
        from diffatr.retrieval import stores

        model = load_checkpoint(checkpoint_dir or default_checkpoint_dir())
        index_dir = index_dir or demo_index_dir()
        index = RetrievalIndex.load(index_dir)
        index_stores, why_not = stores.attach(index_dir, index, model)
        if why_not:
            warnings.warn(f"the demo index: {why_not}", stacklevel=2)
        audio_config = dataclasses.replace(model.config.audio, max_seconds=AUDIO_MAX_SECONDS)
        app = cls(model, index, TextEncoder(model.config.text), build_audio_encoder(audio_config),
                  quotas=quotas, upload_root=upload_root, first_stage=index_stores)
        if warm_up:
            app.search_text("a sound", app.defaults, DemoSession())
        return app

    # ------------------------------------------------------------------ settings and corpus

    def parse_settings(self, **values: Any) -> Settings:
        """``Settings.parse`` with this checkpoint's defaults and step limit."""
        return Settings.parse(defaults=self.defaults, num_train_timesteps=self.num_train_timesteps, **values)

    @property
    def audio_dirs(self) -> list[str]:
        """Folders holding the corpus audio (the app serves files from these)."""
        return self.corpus.audio_dirs

    def example_queries(self, n: int = 5) -> list[str]:
        """Up to ``n`` example queries (see ``DemoCorpus.example_queries``)."""
        return self.corpus.example_queries(n)

    def example_audio(self, n: int = 3) -> list[str]:
        """Up to ``n`` example clips on disk (see ``DemoCorpus.example_audio``)."""
        return self.corpus.example_audio(n)

    def corpus_summary(self, session: DemoSession | None) -> str:
        """One line: what a search in this session looks through."""
        return self.corpus.summary(session)

    def audio_file(self, clip_id: str, session: DemoSession | None = None) -> str | None:
        """The server path of a clip's audio (for the app's players; never sent in a response)."""
        index = self.engine_for(session).index
        try:
            return index.paths[index.clip_ids.index(clip_id)] or None
        except ValueError:
            return None

    # ------------------------------------------------------------------ sessions

    def engine_for(self, session: DemoSession | None) -> SearchEngine:
        """The shared engine, or one over (corpus + this session's uploads), cached."""
        return self.sessions.engine_for(session)

    def forget(self, session: DemoSession | None) -> None:
        """Drop a finished session's cached engine and delete its files."""
        self.sessions.forget(session)

    # ------------------------------------------------------------------ search

    def search_text(self, query: Any, settings: Settings, session: DemoSession) -> dict[str, Any]:
        """Text -> audio.

        Args:
            query: the caption typed by the user.
            settings: validated knobs (``parse_settings``).
            session: this user's session; its ``trajectory`` is replaced.

        Returns:
            ``{"direction", "query", "settings", "corpus", "results": [hit dicts], "notices":
            [{"level", "text"}]}``; hits are ``SearchHit.to_dict()`` with ``path`` replaced
            by ``audio_file`` (the file's name relative to the corpus folder, or ``yours/`` and
            the name of an upload: never a server path; ``DemoApp.audio_file`` gives the path),
            plus ``source``, ``license`` and ``yours``.

        Raises:
            DemoError: an empty or non-text query, or a search that cannot run.
        """
        return self.searcher.search_text(query, settings, session)

    def search_audio(self, audio: Any, settings: Settings, session: DemoSession, *,
                     sample_rate: int | None = None) -> dict[str, Any]:
        """Audio -> text.

        Args:
            audio: a file path, or a recording: a waveform array shaped (S,), (S, C) or (C, S),
                int PCM or float, with ``sample_rate`` (``diffatr.webapp_io.audio_query`` turns
                Gradio's values into these).
            settings, session: as for ``search_text``.
            sample_rate: the recording's rate in Hz (ignored for a file).

        Returns:
            As ``search_text``; each hit's ``caption`` is the matched caption.

        Raises:
            DemoError: no audio, unreadable or silent audio, no captions to search.
        """
        return self.searcher.search_audio(audio, settings, session, sample_rate=sample_rate)

    def trajectory(self, session: DemoSession | None) -> dict[str, Any]:
        """The last search's trajectory view in this session (``diffatr.demo.trajectory``).

        Raises:
            DemoError: no search yet in this session.
        """
        return last_trajectory(session)

    # ------------------------------------------------------------------ uploads

    def index_uploads(self, files: Any, session: DemoSession, on_progress: Progress | None = None) -> dict[str, Any]:
        """Index the user's files (audio, or zips of audio) into this session only.

        A caption may come with a clip as ``NAME.txt`` (one caption per line) beside
        ``NAME.wav``, uploaded with it or inside the same zip. Every file is copied (or
        unpacked) into the session's folder in ``self.uploads``, charged to the session's and
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
        return self.user_sounds.index_uploads(files, session, on_progress)

    def clear_uploads(self, session: DemoSession) -> dict[str, Any]:
        """Forget this session's clips and delete their files (the shipped corpus is untouched;
        the bytes the session wrote stay counted on its quota)."""
        return self.user_sounds.clear_uploads(session)
