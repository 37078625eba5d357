"""Searching by text or by sound, and for sounds like a sound: reading the user's caption or
audio (with the demo's cuts and refusals), running the session's engine, and the JSON-able
response the page and API get.

Owns the query side of the demo; it takes paths or waveforms with their rate, never a UI
value (``diffatr.webapp_io`` converts those), and never puts a server path in a response.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffatr.audio.io import (
    AudioError,
    AudioTruncatedWarning,
    decode_audio,
    is_silent,
    prepare_waveform,
)
from diffatr.config import RetrievalConfig
from diffatr.demo.corpus import USER_PREFIX, DemoCorpus
from diffatr.demo.messages import DemoError, Notice, short_error, subject
from diffatr.demo.session import DemoSession, Sessions
from diffatr.demo.settings import AUDIO_MAX_SECONDS, MAX_QUERY_CHARS, MIN_QUERY_SECONDS
from diffatr.errors import DiffatrError
from diffatr.retrieval.engine import SearchEngine, SearchError, SearchHit, SearchResults, clean_query

_CUT_NOTE = f"only its first {AUDIO_MAX_SECONDS:g} s were used (the demo's limit per recording)."


class Searcher:
    """Text -> audio, audio -> text and audio -> audio for the sessions of one app.

    Args:
        audio_rate: the audio encoder's sample rate (queries are decoded at it).
        sessions: the app's sessions (their engines, expiry).
        corpus: the shipped corpus (names and summary in responses).
    """

    def __init__(self, audio_rate: int, sessions: Sessions, corpus: DemoCorpus) -> None:
        self.audio_rate = int(audio_rate)
        self.sessions = sessions
        self.corpus = corpus

    # Searches run in inference mode: no autograd bookkeeping on any tensor (a search on one
    # thread costs about a third less).
    @torch.inference_mode()
    def search_text(self, query: Any, settings: RetrievalConfig, session: DemoSession) -> dict[str, Any]:
        """Text -> audio: the best clips for the user's caption.

        Args:
            query: the caption typed by the user.
            settings: the search's settings (``DemoApp.parse_settings``).
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
        notices: list[Notice] = []
        text = read_caption(query, notices)
        engine = self._engine(session, notices)
        try:
            results = engine.search_text(text, settings, return_trajectory=True)
        except DiffatrError as err:
            raise DemoError(str(err)) from None
        except ValueError as err:  # the text encoder's own refusal
            raise DemoError(f"Could not read the caption: {err}") from None
        return self._response(engine, results, text, session, notices)

    @torch.inference_mode()
    def search_audio(self, audio: Any, settings: RetrievalConfig, session: DemoSession, *,
                     sample_rate: int | None = None) -> dict[str, Any]:
        """Audio -> text: the best captions for a sound.

        Args:
            audio: a file path, or a recording: a waveform array shaped (S,), (S, C) or (C, S),
                int PCM or float, with ``sample_rate`` (``diffatr.webapp_io.audio_query`` turns
                Gradio's values into these).
            settings, session: as for ``search_text``.
            sample_rate: the recording's rate in Hz (ignored for a file).

        Returns:
            As ``search_text``; each hit's ``caption`` is the matched caption; ``similar``: the
            clips that sound most like it (rows as in ``search_similar``).

        Raises:
            DemoError: no audio, unreadable or silent audio, no captions to search.
        """
        notices: list[Notice] = []
        waveform, rate, name = read_query_audio(audio, sample_rate, self.audio_rate, notices)
        engine = self._engine(session, notices)
        try:
            features = engine.embed_audio(waveform, sample_rate=rate)  # (1, Da): once for both searches
        except AudioError as err:
            raise DemoError(f"Could not use {name} as a query: {err}") from None
        except DiffatrError as err:
            raise DemoError(str(err)) from None
        return self._sound_response(engine, features, [], settings, name, session, notices)

    @torch.inference_mode()
    def search_like(self, clip_id: Any, settings: RetrievalConfig, session: DemoSession) -> dict[str, Any]:
        """A clip of the library as a sound query ("More like this"): its ranked captions and the
        clips that sound most like it, from its stored features (nothing is decoded).

        Args:
            clip_id: a clip of this session's library (the shipped corpus, or ``yours/...``).
            settings, session: as for ``search_text``.

        Returns:
            As ``search_audio``, with ``query_clip``: the clip, and ``audio_file``: its file's
            public name.

        Raises:
            DemoError: not a clip of this session's library.
        """
        notices: list[Notice] = []
        engine = self._engine(session, notices)
        row = self._clip_row(engine, clip_id)
        features = engine.index.audio_features[row : row + 1]  # (1, Da)
        response = self._sound_response(engine, features, [row], settings, clip_id, session, notices)
        response["query_clip"] = clip_id
        response["audio_file"] = self.corpus.public_name(engine.index.paths[row], engine.index.metadata[row])
        return response

    @torch.inference_mode()
    def search_similar(self, query: Any, settings: RetrievalConfig, session: DemoSession, *,
                       sample_rate: int | None = None) -> dict[str, Any]:
        """Audio -> audio: the clips that sound most like a clip of the library or a sound.

        Args:
            query: a clip id of this session's library, or audio as ``search_audio`` takes it.
            settings, session: as for ``search_text`` (the session's trajectory is kept: no
                diffusion runs here).
            sample_rate: the recording's rate in Hz (ignored for a file or a clip id).

        Returns:
            ``{"direction": "audio_to_audio", "query", "query_clip" (or None), "settings",
            "corpus", "results", "notices"}``; each result as in ``search_text``, its
            ``cosine`` (= ``fused``) the similarity, ``variants`` the hidden variants.

        Raises:
            DemoError: no audio, unreadable or silent audio, an unknown clip id.
        """
        notices: list[Notice] = []
        engine = self._engine(session, notices)
        clip = query if isinstance(query, str) and engine.clip_row(query) is not None else None
        if clip is None and isinstance(query, str) and query.strip() and not os.path.exists(query):
            self._clip_row(engine, query)  # neither a clip nor a file: says so
        try:
            if clip is not None:
                results = engine.search_similar(clip, settings)
                name = clip
            else:
                waveform, rate, name = read_query_audio(query, sample_rate, self.audio_rate, notices)
                results = engine.search_similar(waveform, settings, sample_rate=rate)
        except AudioError as err:
            raise DemoError(f"Could not use the sound as a query: {err}") from None
        except DiffatrError as err:
            raise DemoError(str(err)) from None
        return {"direction": results.direction, "query": name, "query_clip": clip,
                "settings": dataclasses.asdict(results.config), "corpus": self.corpus.summary(session),
                "results": [self._row(hit, session) for hit in results[0]],
                "notices": [dataclasses.asdict(n) for n in notices]}

    def _sound_response(self, engine: SearchEngine, features: torch.Tensor, own: list[int],
                        settings: RetrievalConfig, name: str, session: DemoSession,
                        notices: list[Notice]) -> dict[str, Any]:
        """Audio -> text (with its trajectory) and audio -> audio for one sound's features."""
        try:
            results = engine.search_audio_embeds(features, settings, return_trajectory=True)
            similar = engine.search_similar_embeds(features, settings, exclude=[own])
        except DiffatrError as err:
            raise DemoError(str(err)) from None
        response = self._response(engine, results, name, session, notices)
        response["similar"] = [self._row(hit, session) for hit in similar[0]]
        return response

    @staticmethod
    def _clip_row(engine: SearchEngine, clip_id: Any) -> int:
        row = engine.clip_row(clip_id) if isinstance(clip_id, str) else None
        if row is None:
            shown = clip_id if isinstance(clip_id, str) and len(clip_id) <= 80 else "that clip"
            raise DemoError(f"No clip {shown!r} in the library searched here: pick a result of a search "
                            "(your own sounds stay in this session only).")
        return row

    def _engine(self, session: DemoSession, notices: list[Notice]) -> SearchEngine:
        self.sessions.expire(session, notices)
        return self.sessions.engine_for(session)

    def _response(self, engine: SearchEngine, results: SearchResults, query: str, session: DemoSession,
                  notices: list[Notice]) -> dict[str, Any]:
        k_used = int(results.ranking.trajectory.x_t.shape[-1])  # K after clamping to the corpus size
        # The view is built on its first read (the page's plots; API clients rarely ask for it).
        session.trajectory = functools.partial(_trajectory_view, engine, results, query)
        return {
            "direction": results.direction,
            "query": query,
            "settings": dataclasses.asdict(results.config) | {"top_k_used": k_used},
            "corpus": self.corpus.summary(session),
            "results": [self._row(hit, session) for hit in results[0]],
            "notices": [dataclasses.asdict(n) for n in notices],
        }

    def _row(self, hit: SearchHit, session: DemoSession) -> dict[str, Any]:
        """One hit as the response shows it (no server path)."""
        row = hit.to_dict()
        # No server path leaves the app (and no "path" key: API clients take any {"path": ...}
        # object for a file to download).
        row["audio_file"] = self.corpus.public_name(row.pop("path"), hit.metadata)
        row["metadata"] = {k: v for k, v in hit.metadata.items() if k != "upload_name"}
        # The attribution names the recording's author; "source" says where the file came from.
        row["source"] = hit.metadata.get("attribution") or hit.metadata.get("source")
        row["license"] = hit.metadata.get("license") or hit.metadata.get("licence")
        row["yours"] = hit.clip_id.startswith(USER_PREFIX) and session.user_index is not None
        return row


def read_caption(query: Any, notices: list[Notice]) -> str:
    """The caption to encode: spaces collapsed, control characters removed, cut at
    ``MAX_QUERY_CHARS`` (with a notice).

    Raises:
        DemoError: not text, empty, or without a letter or digit.
    """
    if query is None:
        query = ""
    if not isinstance(query, str):
        shown = repr(query) if len(repr(query)) <= 60 else repr(query)[:59] + "…"
        raise DemoError(f"The caption (caption) must be text, got {shown}")
    text = " ".join(query.split())  # newlines and runs of spaces mean nothing to the encoder
    if not text:
        raise DemoError("The caption is empty: type a few words describing a sound, e.g. 'a dog barking'.")
    try:
        text = clean_query(text)
    except SearchError as err:
        raise DemoError(f"Could not search for {text[:40]!r}: {err}.") from None
    if len(text) > MAX_QUERY_CHARS:
        cut = text[:MAX_QUERY_CHARS].rsplit(" ", 1)[0] or text[:MAX_QUERY_CHARS]
        notices.append(Notice("warning", f"The caption was {len(text):,} characters long; only its "
                                         f"first {len(cut):,} characters were used."))
        text = cut
    return text


def read_query_audio(audio: Any, sample_rate: int | None, target_rate: int,
                     notices: list[Notice]) -> tuple[np.ndarray, int, str]:
    """(waveform (S,) float32 at ``target_rate``, that rate, a name) from a path or a recording.

    Args:
        audio: a file path, or a waveform array (int PCM or float; (S,), (S, C) or (C, S)).
        sample_rate: the waveform's rate (unused for a file).
        target_rate: the audio encoder's rate.
        notices: a notice is added when the audio was cut at ``AUDIO_MAX_SECONDS``.

    Raises:
        DemoError: no audio, an unreadable file or recording, too short, or silent.
    """
    if audio is None or (isinstance(audio, str) and not audio.strip()):
        raise DemoError("No audio yet: upload a sound file or record one with the microphone.")
    if isinstance(audio, (str, os.PathLike)):
        waveform, name = _decode_file(Path(audio), target_rate, notices)
    elif isinstance(audio, (np.ndarray, torch.Tensor)):
        if sample_rate is None:
            raise DemoError("A recording needs its sample rate: pass sample_rate=.")
        waveform, name = _prepare_recording(audio, sample_rate, target_rate, notices), "the recording"
    else:
        raise DemoError("Unsupported audio input: give a file or a microphone recording.")
    if waveform.shape[0] < MIN_QUERY_SECONDS * target_rate:
        # The encoder would zero-pad a click of a few samples and still rank every caption.
        raise DemoError(f"{subject(name)} is only {1000 * waveform.shape[0] / target_rate:.0f} ms long: "
                        f"a sound query needs at least {1000 * MIN_QUERY_SECONDS:.0f} ms.")
    if is_silent(waveform):
        raise DemoError(f"{subject(name)} is silent (no sound above -80 dBFS): "
                        "record or upload a sound to search with.")
    return waveform, int(target_rate), name


def _decode_file(path: Path, target_rate: int, notices: list[Notice]) -> tuple[np.ndarray, str]:
    name = path.name
    try:
        decoded = decode_audio(path, target_rate, max_seconds=AUDIO_MAX_SECONDS)
    except AudioError as err:
        raise DemoError(f"Could not read {name} as audio: {short_error(err, path)}") from None
    except Exception as err:  # noqa: BLE001 - an odd file must give a message, not a crash
        raise DemoError(f"Could not read {name} as audio ({type(err).__name__}).") from None
    if decoded.truncated:
        notices.append(Notice("warning", f"{name} is longer than {AUDIO_MAX_SECONDS:g} s; {_CUT_NOTE}"))
    return decoded.waveform, name


def _prepare_recording(array: Any, sample_rate: int, target_rate: int, notices: list[Notice]) -> np.ndarray:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AudioTruncatedWarning)
            waveform = prepare_waveform(array, sample_rate, target_rate, max_seconds=AUDIO_MAX_SECONDS)
    except AudioError as err:
        raise DemoError(f"Could not use the recording: {err}") from None
    if any(issubclass(w.category, AudioTruncatedWarning) for w in caught):
        notices.append(Notice("warning", f"The recording is longer than {AUDIO_MAX_SECONDS:g} s; {_CUT_NOTE}"))
    return waveform


def _trajectory_view(engine: SearchEngine, results: SearchResults, query: str) -> dict[str, Any]:
    """The engine's view of the search, named as the page names the query (a file's name)."""
    return engine.trajectory_view(results) | {"query": query}
