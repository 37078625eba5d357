"""``DemoApp``: the loaded model, corpus and encoders, shared by every session, and its parts.

It builds the parts once and holds them; callers use them directly: ``searcher`` (text and
audio queries), ``user_sounds`` (uploads), ``sessions`` (per-session engines, locks, expiry),
``corpus`` (names and examples), ``diffatr.demo.trajectory.last_trajectory`` (the view of a
session's last search). Loading reads files only; ``start`` takes up the disk and warms up.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

from diffatr.config import RetrievalConfig
from diffatr.demo.corpus import DemoCorpus, demo_index_dir
from diffatr.demo.search import Searcher
from diffatr.demo.session import DemoSession, Sessions
from diffatr.demo.settings import AUDIO_MAX_SECONDS, page_defaults, read_settings
from diffatr.demo.user_sounds import UserSounds
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
        first_stage: the corpus's first-stage stores (FAISS / Milvus) when its index has them;
            a session with uploads searches corpus + uploads exactly.

    Attributes:
        engine: the shared engine over the corpus.
        defaults: the page's first settings (the checkpoint's, within the page's limits).
        searcher, user_sounds, sessions, corpus, uploads: the parts (see the module docstring).
    """

    def __init__(self, model: Any, index: RetrievalIndex, text_encoder: Any, audio_encoder: Any,
                 *, engine_cache_size: int = 16, quotas: UploadQuotas | None = None,
                 upload_root: str | os.PathLike | None = None, first_stage: dict[str, Any] | None = None) -> None:
        self.model = model
        self.index = index
        self.engine = SearchEngine(model, index, text_encoder=text_encoder, audio_encoder=audio_encoder,
                                   first_stage=first_stage)
        self.num_train_timesteps = int(model.config.diffusion.num_train_timesteps)
        self.defaults = page_defaults(model.config)
        self.quotas = quotas or UploadQuotas.from_env()
        self.uploads = UploadStore(self.quotas, upload_root)
        self.sessions = Sessions(self.engine, self.uploads, engine_cache_size)
        self.corpus = DemoCorpus(index)
        self.searcher = Searcher(audio_encoder.sample_rate, self.sessions, self.corpus)
        self.user_sounds = UserSounds(self.sessions, self.corpus, text_encoder, audio_encoder)

    @classmethod
    def load(cls, checkpoint_dir: str | os.PathLike | None = None,
             index_dir: str | os.PathLike | None = None, *, quotas: UploadQuotas | None = None,
             upload_root: str | os.PathLike | None = None) -> DemoApp:
        """Load everything from disk (nothing is downloaded, nothing is written).

        Args:
            checkpoint_dir: default ``diffatr.runtime.default_checkpoint_dir()``.
            index_dir: default ``demo_index_dir()``.
            quotas, upload_root: as for ``DemoApp``.
        """
        from diffatr.checkpoint import load_checkpoint
        from diffatr.encoders.audio import build_audio_encoder
        from diffatr.encoders.text import TextEncoder
        from diffatr.retrieval import stores
        from diffatr.runtime import default_checkpoint_dir

        model = load_checkpoint(checkpoint_dir or default_checkpoint_dir())
        index_dir = index_dir or demo_index_dir()
        index = RetrievalIndex.load(index_dir)
        index_stores, why_not = stores.attach(index_dir, index, model)
        if why_not:
            warnings.warn(f"the demo index: {why_not}", stacklevel=2)
        audio_config = dataclasses.replace(model.config.audio, max_seconds=AUDIO_MAX_SECONDS)
        text_encoder = TextEncoder(model.config.text, inference_only=True)  # start-up: no transformers import
        return cls(model, index, text_encoder, build_audio_encoder(audio_config),
                   quotas=quotas, upload_root=upload_root, first_stage=index_stores)

    def start(self, *, warm_up: bool = True) -> DemoApp:
        """What a server does once when it starts: the upload store takes up its folder (earlier
        runs' leftovers are deleted; this run's goes at exit), and one query warms the model up
        so that the first user's query is as fast as the next."""
        self.uploads.start()
        if warm_up:
            self.searcher.search_text("a sound", self.defaults, DemoSession())
        return self

    def parse_settings(self, **values: Any) -> RetrievalConfig:
        """The settings of one search from the page's values (``RetrievalConfig`` field names;
        None = the page's default), checked once (``diffatr.demo.settings.read_settings``).

        Raises:
            DemoError: a value that is not a number or is out of range.
        """
        return read_settings(self.model.config, values)

    def parse_api_settings(self, **values: Any) -> RetrievalConfig:
        """As ``parse_settings``, for the values of an API call or a page's form: every value
        must be given, of its JSON type (``read_settings(strict=True)``).

        Raises:
            DemoError: the setting's name and what it must be (a string, null, NaN or infinity
                for a number, say).
        """
        return read_settings(self.model.config, values, strict=True)

    def audio_file(self, clip_id: str, session: DemoSession | None = None) -> str | None:
        """The server path of a clip's audio (for the app's players; never sent in a response)."""
        index = self.sessions.engine_for(session).index
        try:
            return index.paths[index.clip_ids.index(clip_id)] or None
        except ValueError:
            return None
