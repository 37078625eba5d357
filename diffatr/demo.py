"""The demo's logic as plain functions of plain types: no Gradio here, so it is tested directly.

``DemoApp.load()`` loads the checkpoint, the demo corpus and both encoders once at start-up.
Each browser session owns a ``DemoSession`` (its own uploaded clips and its last trajectory);
the shipped index is never changed. Handlers take strings, paths, numbers and waveforms with
their ``sample_rate`` (Gradio's own values are converted in ``diffatr.webapp_io``) and return
JSON-able dicts. A user mistake raises ``DemoError``
with a message written for the user; softer problems (a caption or a recording that was cut)
come back as ``notices``. ``app.py`` turns all of this into components; ``plots.py`` draws.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import threading
import uuid
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from diffatr.audio.io import (
    AudioError,
    AudioTruncatedWarning,
    decode_audio,
    is_silent,
    prepare_waveform,
)
from diffatr.config import DEFAULT_RESULTS, KNOB_BOUNDS, RetrievalConfig
from diffatr.data.manifest import AUDIO_SUFFIXES, ClipRecord
from diffatr.errors import DiffatrError
from diffatr.retrieval.engine import SearchEngine, SearchError, clean_query
from diffatr.retrieval.index import IndexFormatError, RetrievalIndex
from diffatr.runtime import default_index_dir
from diffatr.uploads import QuotaExceeded, UploadQuotas, UploadStore

__all__ = [
    "AUDIO_MAX_SECONDS",
    "DemoApp",
    "DemoError",
    "DemoSession",
    "MAX_QUERY_CHARS",
    "MAX_RESULTS",
    "Settings",
    "demo_index_dir",
]

# The corpus the demo searches. The ~200-clip demo corpus will replace the ten examples here.
DEMO_INDEX_ENV = "DIFFATR_DEMO_INDEX"

# The first examples the app offers on the shipped demo corpus: queries and clips the shipped
# checkpoint gets right at top 1 (benchmarks/user_queries.py; tests/test_default_model.py fails
# when a retrained checkpoint stops getting one of them right). Text example -> a clip that
# answers it; the audio examples are val / test clips, unseen in training.
EXAMPLE_QUERIES = {
    "birds chirping": "openclonk-birdsloop",
    "thunder": "0ad-thunder_10",
    "applause": "opensfx-29_applause",
    "horse neighing": "opensfx-38_horse",
    "car engine": "torcs-ferrarif355",
}
EXAMPLE_AUDIO = ("ovos-rooster", "gcompris-guitar", "0ad-footstep_gravel_walking")
PLACEHOLDER_QUERY = "birds chirping"

MAX_RESULTS = DEFAULT_RESULTS  # result slots on the page (and the cap on k)
TOP_K_MAX = 64  # K: candidates re-ranked per query (the engine clamps it to the corpus)
# The knobs' bounds are the library's (diffatr.config.KNOB_BOUNDS), written once.
ALPHA_MAX = KNOB_BOUNDS["alpha"][1]
TEMPERATURE_MIN, TEMPERATURE_MAX = KNOB_BOUNDS["temperature"]  # the fusion's softmax temperature
SEED_MAX = 2**31 - 1  # the browser's number box holds 32-bit integers; the library allows more
MAX_QUERY_CHARS = 500  # longer captions are cut (the text encoder reads 128 tokens anyway)
# Audio queries and uploads are cut here (the library's max_seconds policy, with a notice):
# on the 2-core CPU this keeps an audio query or one upload at about a second.
AUDIO_MAX_SECONDS = 30.0
MIN_QUERY_SECONDS = 0.05  # shorter audio queries are refused (the shortest corpus clip is 0.098 s)
USER_PREFIX = "yours/"
ZIP_RATIO_SLACK = 64 << 10  # members this small may compress better than the zip ratio quota
MAX_SKIPPED_ROWS = 100  # files listed as skipped per upload (then one "... more" row)


class DemoError(DiffatrError):
    """A request the demo cannot answer; the message tells the user what to do."""


@dataclass(frozen=True)
class Notice:
    """A message for the user that does not stop the request ("info" or "warning")."""

    level: str
    text: str


def demo_index_dir() -> Path:
    """The corpus index the demo searches: ``$DIFFATR_DEMO_INDEX`` or the shipped demo corpus."""
    env = os.environ.get(DEMO_INDEX_ENV)
    return Path(env) if env else default_index_dir()


# ----------------------------------------------------------------------------- settings


def _number(value: Any, name: str, default: float) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return float(default)
    if isinstance(value, bool):
        raise DemoError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise DemoError(f"{name} must be a finite number, got {value!r}")
    return number


def _integer(value: Any, name: str, default: int, low: int, high: int) -> int:
    number = _number(value, name, default)
    if number != int(number):
        raise DemoError(f"{name} must be a whole number, got {value!r}")
    if not low <= number <= high:
        raise DemoError(f"{name} must be between {low} and {high}, got {int(number)}")
    return int(number)


@dataclass(frozen=True)
class Settings:
    """The knobs of one search (see ``diffatr.retrieval.engine.rerank``).

    Attributes:
        k: results shown (1..MAX_RESULTS).
        num_inference_steps: DDIM steps S (1..T).
        top_k: K, candidates re-ranked by the diffusion (clamped to the corpus size).
        alpha: weight of the diffusion score in fused = cosine + alpha * softmax(x0 / temperature).
        seed: seed of the start noise x_T (same seed, same trajectory).
        temperature: the fusion's softmax temperature (the paper: 1; 1 / CE scale = the
            sharpness the denoisers were trained at).
    """

    k: int = DEFAULT_RESULTS
    num_inference_steps: int = RetrievalConfig.num_inference_steps
    top_k: int = RetrievalConfig.top_k
    alpha: float = RetrievalConfig.alpha
    seed: int = RetrievalConfig.seed
    temperature: float = RetrievalConfig.temperature

    @classmethod
    def parse(cls, *, k: Any = None, num_inference_steps: Any = None, top_k: Any = None,
              alpha: Any = None, seed: Any = None, temperature: Any = None, defaults: Settings | None = None,
              num_train_timesteps: int = 50) -> Settings:
        """Validate values from a form or an API call (None = the default).

        Raises:
            DemoError: a value that is not a number or is out of range.
        """
        d = defaults or cls()
        alpha_value = _number(alpha, "alpha", d.alpha)
        if not 0.0 <= alpha_value <= ALPHA_MAX:
            raise DemoError(f"alpha must be between 0 and {ALPHA_MAX:g}, got {alpha_value:g}")
        temperature_value = _number(temperature, "temperature", d.temperature)
        if not TEMPERATURE_MIN <= temperature_value <= TEMPERATURE_MAX:
            raise DemoError(f"temperature must be between {TEMPERATURE_MIN:g} and {TEMPERATURE_MAX:g}, "
                            f"got {temperature_value:g}")
        return cls(
            k=_integer(k, "k (results shown)", d.k, 1, MAX_RESULTS),
            num_inference_steps=_integer(num_inference_steps, "steps (DDIM steps)", d.num_inference_steps, 1,
                                         num_train_timesteps),
            top_k=_integer(top_k, "top_k (K, candidates re-ranked)", d.top_k, 1, TOP_K_MAX),
            alpha=alpha_value,
            seed=_integer(seed, "seed", d.seed, 0, SEED_MAX),
            temperature=temperature_value,
        )

    def knobs(self) -> dict[str, Any]:
        """The engine's keyword arguments."""
        return {"top_k": self.top_k, "num_inference_steps": self.num_inference_steps,
                "alpha": self.alpha, "seed": self.seed, "temperature": self.temperature}


# ----------------------------------------------------------------------------- session


@dataclass
class DemoSession:
    """What belongs to one browser session: its uploads and its last trajectory.

    Attributes:
        session_id: a random id (keys the server-side engine cache and the upload folder).
        user_index: the session's own clips, or None.
        upload_dir: the session's folder in the app's ``UploadStore`` (set on the first upload).
        trajectory: the trajectory view of the last search (see ``DemoApp.search_text``).
        version: bumped whenever ``user_index`` changes.
    """

    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    user_index: RetrievalIndex | None = None
    upload_dir: str | None = None
    trajectory: dict[str, Any] | None = None
    version: int = 0

    @property
    def num_uploads(self) -> int:
        return 0 if self.user_index is None else len(self.user_index)


# ----------------------------------------------------------------------------- the app


# An absolute path in a message (POSIX, or a Windows drive): what is left after the last slash
# is the part a user may know.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[\\/](?:[^\s'\"\\/:]+[\\/])+([^\s'\"\\/:]*)")


def hide_paths(text: str) -> str:
    """``text`` with every absolute server path replaced by its last part (the file name)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "", str(text))


def _short_error(err: BaseException, *paths: Any) -> str:
    """The error message with server-side paths replaced by file names."""
    text = str(err)
    for path in paths:
        if path:
            text = text.replace(str(path), Path(str(path)).name)
    return hide_paths(text)


def _reason(err: BaseException) -> str:
    """Why an OS or zip operation failed, without the server path the exception carries."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return hide_paths(str(err)) or type(err).__name__


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
            raise AudioError(_short_error(err, path)) from None
        except Exception as err:  # noqa: BLE001 - one bad upload must never stop the others
            raise AudioError(f"could not read {name} ({type(err).__name__}: {_reason(err)})") from None
        if is_silent(decoded.waveform):
            raise AudioError("the audio is silent (peak below -80 dBFS): nothing to index")
        if decoded.truncated:
            self.truncated.append(name)
        try:
            return self.encoder.embed_waveform(decoded.waveform, decoded.sample_rate)
        except Exception as err:  # noqa: BLE001
            raise AudioError(f"could not embed {name} ({type(err).__name__}: {_reason(err)})") from None


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
                 upload_root: str | os.PathLike | None = None) -> None:
        self.model = model
        self.index = index
        self.text_encoder = text_encoder
        self.audio_encoder = audio_encoder
        self.engine = SearchEngine(model, index, text_encoder=text_encoder, audio_encoder=audio_encoder)
        retrieval = model.config.retrieval
        self.num_train_timesteps = int(model.config.diffusion.num_train_timesteps)
        self.defaults = Settings(k=DEFAULT_RESULTS,
                                 num_inference_steps=min(retrieval.num_inference_steps, self.num_train_timesteps),
                                 top_k=min(retrieval.top_k, TOP_K_MAX), alpha=float(retrieval.alpha),
                                 seed=int(retrieval.seed), temperature=float(retrieval.temperature))
        self._engines: OrderedDict[tuple[str, int], SearchEngine] = OrderedDict()
        self._engine_cache_size = engine_cache_size
        self._lock = threading.Lock()
        self.quotas = quotas or UploadQuotas.from_env()
        self.uploads = UploadStore(self.quotas, upload_root)
        self._upload_locks: dict[str, threading.Lock] = {}  # one upload at a time per session
        # Where the shipped clips are named from in responses (no server path leaves the app).
        paths = [p for p in index.paths if p]
        self._corpus_root = os.path.commonpath(paths) if paths else ""
        if self._corpus_root and Path(self._corpus_root).is_file():
            self._corpus_root = str(Path(self._corpus_root).parent)

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

        model = load_checkpoint(checkpoint_dir or default_checkpoint_dir())
        index = RetrievalIndex.load(index_dir or demo_index_dir())
        audio_config = dataclasses.replace(model.config.audio, max_seconds=AUDIO_MAX_SECONDS)
        app = cls(model, index, TextEncoder(model.config.text), build_audio_encoder(audio_config),
                  quotas=quotas, upload_root=upload_root)
        if warm_up:
            app.search_text("a sound", app.defaults, DemoSession())
        return app

    # ------------------------------------------------------------------ helpers

    @property
    def audio_dirs(self) -> list[str]:
        """Folders holding the corpus audio (the app serves files from these)."""
        return sorted({str(Path(p).parent) for p in self.index.paths if p})

    def parse_settings(self, **values: Any) -> Settings:
        """``Settings.parse`` with this checkpoint's defaults and step limit."""
        return Settings.parse(defaults=self.defaults, num_train_timesteps=self.num_train_timesteps, **values)

    def example_queries(self, n: int = 5) -> list[str]:
        """Up to ``n`` example queries: the checked ``EXAMPLE_QUERIES`` whose answer is in this
        corpus, then captions spread over the corpus (another index than the shipped one)."""
        ids = set(self.index.clip_ids)
        checked = [q for q, clip in EXAMPLE_QUERIES.items() if clip in ids]
        if checked:
            return checked[:n]
        firsts = [caps[0] for caps in self.index.captions if caps]
        if not firsts:
            return ["a dog barking"]
        step = max(1, len(firsts) // n)
        return firsts[::step][:n]

    def example_audio(self, n: int = 3) -> list[str]:
        """Up to ``n`` corpus clips that exist on disk (examples for the audio tab): the checked
        ``EXAMPLE_AUDIO`` clips when this corpus holds them, else clips spread over it."""
        row = {clip: i for i, clip in enumerate(self.index.clip_ids)}
        checked = [self.index.paths[row[c]] for c in EXAMPLE_AUDIO if c in row]
        checked = [p for p in checked if p and Path(p).is_file()]
        if checked:
            return checked[:n]
        paths = [p for p in self.index.paths if p and Path(p).is_file()]
        step = max(1, len(paths) // n)
        return paths[::step][:n]

    def corpus_summary(self, session: DemoSession | None) -> str:
        """One line: what a search in this session looks through."""
        text = f"{len(self.index)} shipped clips ({self.index.num_captions} captions)"
        if session is not None and session.user_index is not None:
            ui = session.user_index
            text += f" + {len(ui)} of your clips ({ui.num_captions} captions)"
        return text

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
        combined = self.index.concat(session.user_index)
        engine = SearchEngine(self.model, combined, text_encoder=self.text_encoder,
                              audio_encoder=self.audio_encoder)
        with self._lock:
            for old in [k for k in self._engines if k[0] == session.session_id]:
                del self._engines[old]
            self._engines[key] = engine
            while len(self._engines) > self._engine_cache_size:
                self._engines.popitem(last=False)
        return engine

    def forget(self, session: DemoSession | None) -> None:
        """Drop a finished session's cached engine and delete its files."""
        if session is None:
            return
        self._drop_engines(session.session_id)
        with self._lock:
            self._upload_locks.pop(session.session_id, None)
        self.uploads.release(session.session_id)
        session.upload_dir = None

    def _drop_engines(self, session_id: str) -> None:
        with self._lock:
            for old in [k for k in self._engines if k[0] == session_id]:
                del self._engines[old]

    def _expire(self, session: DemoSession, notices: list[Notice]) -> None:
        """Forget the uploads of sessions idle past the time-to-live; if this session's were
        among them (its files are gone), say so and search the shipped corpus only."""
        for session_id in self.uploads.sweep():
            self._drop_engines(session_id)
        if session.user_index is not None and not self.uploads.active(session.session_id):
            session.user_index = None
            session.upload_dir = None
            session.version += 1
            notices.append(Notice("warning", f"Your sounds were forgotten after {self.quotas.session_ttl_s / 60:g} "
                                             "minutes without use: upload them again to search them."))
        self.uploads.touch(session.session_id)

    def audio_file(self, clip_id: str, session: DemoSession | None = None) -> str | None:
        """The server path of a clip's audio (for the app's players; never sent in a response)."""
        index = self.engine_for(session).index
        try:
            return index.paths[index.clip_ids.index(clip_id)] or None
        except ValueError:
            return None

    def _public_name(self, path: str | None, metadata: Mapping[str, Any]) -> str | None:
        """A clip's file as a user may see it: relative to the shipped corpus folder, or the
        name the user gave an upload."""
        if not path:
            return None
        upload = metadata.get("upload_name")
        if upload:
            return USER_PREFIX + str(upload)
        if self._corpus_root:
            try:
                return Path(path).relative_to(self._corpus_root).as_posix()
            except ValueError:
                pass
        return Path(path).name

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
        notices: list[Notice] = []
        if query is None:
            query = ""
        if not isinstance(query, str):
            raise DemoError(f"the query must be text, got {type(query).__name__}")
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
        try:
            features = torch.as_tensor(self.text_encoder.encode([text]))
        except ValueError as err:
            raise DemoError(f"Could not read the caption: {err}") from None
        return self._search("text_to_audio", features, text, settings, session, notices)

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
        notices: list[Notice] = []
        waveform, rate, name = self._read_query_audio(audio, sample_rate, notices)
        try:
            features = self.audio_encoder.embed_waveform(waveform, rate)[None]  # (1, Da)
        except AudioError as err:
            raise DemoError(f"Could not use {name} as a query: {err}") from None
        return self._search("audio_to_text", features, name, settings, session, notices)

    def _read_query_audio(self, audio: Any, sample_rate: int | None,
                          notices: list[Notice]) -> tuple[np.ndarray, int, str]:
        """(waveform (S,) float32, its rate, a name) from a path or a recording."""
        target = self.audio_encoder.sample_rate
        cut_note = (f"only its first {AUDIO_MAX_SECONDS:g} s were used (the demo's limit per "
                    "recording).")
        if audio is None or (isinstance(audio, str) and not audio.strip()):
            raise DemoError("No audio yet: upload a sound file or record one with the microphone.")
        if isinstance(audio, (str, os.PathLike)):
            path = Path(audio)
            name = path.name
            try:
                decoded = decode_audio(path, target, max_seconds=AUDIO_MAX_SECONDS)
            except AudioError as err:
                raise DemoError(f"Could not read {name} as audio: {_short_error(err, path)}") from None
            except Exception as err:  # noqa: BLE001 - an odd file must give a message, not a crash
                raise DemoError(f"Could not read {name} as audio ({type(err).__name__}).") from None
            if decoded.truncated:
                notices.append(Notice("warning", f"{name} is longer than {AUDIO_MAX_SECONDS:g} s; {cut_note}"))
            waveform, rate = decoded.waveform, decoded.sample_rate
        elif isinstance(audio, (np.ndarray, torch.Tensor)):
            if sample_rate is None:
                raise DemoError("A recording needs its sample rate: pass sample_rate=.")
            array, rate = audio, sample_rate
            name = "the recording"
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", AudioTruncatedWarning)
                    waveform = prepare_waveform(array, rate, target, max_seconds=AUDIO_MAX_SECONDS)
            except AudioError as err:
                raise DemoError(f"Could not use the recording: {err}") from None
            if any(issubclass(w.category, AudioTruncatedWarning) for w in caught):
                notices.append(Notice("warning", f"The recording is longer than {AUDIO_MAX_SECONDS:g} s; {cut_note}"))
            rate = target
        else:
            raise DemoError("Unsupported audio input: give a file or a microphone recording.")
        if waveform.shape[0] < MIN_QUERY_SECONDS * rate:
            # The encoder would zero-pad a click of a few samples and still rank every caption.
            raise DemoError(f"{_subject(name)} is only {1000 * waveform.shape[0] / rate:.0f} ms long: "
                            f"a sound query needs at least {1000 * MIN_QUERY_SECONDS:.0f} ms.")
        if is_silent(waveform):
            raise DemoError(f"{_subject(name)} is silent (no sound above -80 dBFS): "
                            "record or upload a sound to search with.")
        return waveform, int(rate), name

    def _search(self, direction: str, features: torch.Tensor, query: str, settings: Settings,
                session: DemoSession, notices: list[Notice]) -> dict[str, Any]:
        self._expire(session, notices)
        engine = self.engine_for(session)
        try:
            result = engine.rerank_features(direction, features, k=settings.k, return_trajectory=True,
                                            **settings.knobs())
        except SearchError as err:
            raise DemoError(str(err)) from None
        hits = engine.hits(result, direction, settings.k)[0]
        k_eff = int(result.trajectory.x_t.shape[-1])  # K after clamping to the corpus size
        session.trajectory = self._trajectory_view(engine, result, direction, query, settings)
        rows = []
        for hit in hits:
            row = hit.to_dict()
            # No server path leaves the app (and no "path" key: API clients take any {"path": ...}
            # object for a file to download).
            row["audio_file"] = self._public_name(row.pop("path"), hit.metadata)
            row["metadata"] = {k: v for k, v in hit.metadata.items() if k != "upload_name"}
            # The attribution names the recording's author; "source" says where the file came from.
            row["source"] = hit.metadata.get("attribution") or hit.metadata.get("source")
            row["license"] = hit.metadata.get("license") or hit.metadata.get("licence")
            row["yours"] = hit.clip_id.startswith(USER_PREFIX) and session.user_index is not None
            rows.append(row)
        return {
            "direction": direction,
            "query": query,
            "settings": dataclasses.asdict(settings) | {"top_k_used": k_eff},
            "corpus": self.corpus_summary(session),
            "results": rows,
            "notices": [dataclasses.asdict(n) for n in notices],
        }

    @staticmethod
    def _trajectory_view(engine: SearchEngine, result: Any, direction: str, query: str,
                         settings: Settings) -> dict[str, Any]:
        """The JSON-able view ``plots.py`` draws: candidates in cosine order (the denoiser's)."""
        x_t, pred_x0 = result.query_trajectory(0)  # (S+1, K), (S, K)
        k = int(x_t.shape[-1])
        cosine_rank = result.cosine_rank[0, :k].tolist()  # final position -> cosine position
        final_rank = [0] * k
        cosine = [0.0] * k
        rows = [0] * k
        diffusion = [0.0] * k
        fused = [0.0] * k
        for position, cos_pos in enumerate(cosine_rank):
            final_rank[cos_pos] = position
            cosine[cos_pos] = float(result.cosine[0, position])
            rows[cos_pos] = int(result.indices[0, position])
            diffusion[cos_pos] = float(result.diffusion[0, position])
            fused[cos_pos] = float(result.fused[0, position])
        # What the animation shows: the start noise read as a distribution, then at every step
        # the distribution the model was trained to generate, softmax(x̂0 x CE scale) (at the
        # fusion's temperature 1 it would look flat: x̂0 spans about 0.1).
        ce_scale = float(engine.model.config.diffusion.ce_scale)
        distribution = torch.cat([torch.softmax(x_t[:1].double(), dim=-1),
                                  torch.softmax(ce_scale * pred_x0.double(), dim=-1)])  # (S+1, K)
        # The diffusion's own ranking at x_0 (ties keep the cosine order, as the engine's sort).
        gen_order = torch.sort(x_t[-1], descending=True, stable=True).indices.tolist()
        gen_rank = [0] * k
        for position, cos_pos in enumerate(gen_order):
            gen_rank[cos_pos] = position
        index = engine.index
        if direction == "text_to_audio":
            labels = [index.clip_ids[r] for r in rows]
        else:
            labels = [index.flat_captions[r] for r in rows]
        return {
            "direction": direction,
            "query": query,
            "labels": labels,
            "rows": rows,
            "final_rank": final_rank,
            "cosine": cosine,
            "diffusion": diffusion,
            "fused": fused,
            "highlight": min(settings.k, k),
            "timesteps": [int(t) for t in result.trajectory.timesteps.tolist()],
            "x_t": [[round(float(v), 6) for v in row] for row in x_t.tolist()],
            "pred_x0": [[round(float(v), 6) for v in row] for row in pred_x0.tolist()],
            "distribution": [[round(float(v), 6) for v in row] for row in distribution.tolist()],
            "gen_rank": gen_rank,
            "ce_scale": ce_scale,
            "settings": dataclasses.asdict(settings),
        }

    def trajectory(self, session: DemoSession | None) -> dict[str, Any]:
        """The last search's trajectory view in this session.

        Raises:
            DemoError: no search yet in this session.
        """
        if session is None or session.trajectory is None:
            raise DemoError("No search yet in this session: search by text or by sound first.")
        return session.trajectory

    # ------------------------------------------------------------------ uploads

    def index_uploads(self, files: Any, session: DemoSession,
                      on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
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
        paths = _as_paths(files)
        if not paths:
            raise DemoError("Choose one or more audio files (or a .zip of them) to index first.")
        with self._lock:
            lock = self._upload_locks.setdefault(session.session_id, threading.Lock())
        with lock:  # two uploads of one session (two tabs) must not race on its index
            return self._index_uploads(paths, session, on_progress)

    def _index_uploads(self, paths: list[str], session: DemoSession,
                       on_progress: Callable[[int, int], None] | None) -> dict[str, Any]:
        notices: list[Notice] = []
        self._expire(session, notices)
        q, sid = self.quotas, session.session_id
        usage = self.uploads.usage(sid)
        if usage["written"] >= q.session_bytes:
            raise DemoError(f"This session has written its quota of {q.session_mb:g} MB of uploads: reload the "
                            "page to start a new session.")
        if session.num_uploads >= q.session_clips:
            raise DemoError(f"This session already holds {q.session_clips} of your clips (the demo's limit): "
                            "forget your sounds to index others.")
        skipped = _Skipped()
        session.upload_dir = str(self.uploads.session_dir(sid))
        audio, captions, names = self._collect_uploads(paths, session, skipped)
        taken = set(self.index.clip_ids) | set(session.user_index.clip_ids if session.user_index else [])
        records = []
        for path in audio:
            clip_id = _unique_id(USER_PREFIX + Path(names[path]).stem, taken)
            taken.add(clip_id)
            records.append(ClipRecord(clip_id, path, tuple(captions.get(path, ())),
                                      metadata={"source": f"your upload: {names[path]}",
                                                "license": "yours (kept in this session only)",
                                                "upload_name": names[path]}))
        added: list[str] = []
        if records:
            from diffatr.indexing import build_index

            encoder = _CheckedAudioEncoder(self.audio_encoder, AUDIO_MAX_SECONDS, names)
            text_encoder = self.text_encoder if any(r.captions for r in records) else None
            try:
                new_index, _ = build_index(records, encoder, text_encoder, cache=None, progress=False,
                                           on_progress=on_progress)
            except AudioError:  # not one file could be used; the reasons are in encoder.failures
                new_index = None
            for record in records:
                if new_index is None or record.path in encoder.failures:
                    self.uploads.discard(sid, record.path)  # an unusable file does not stay on disk
                if record.path in encoder.failures:
                    skipped.add(names[record.path], encoder.failures[record.path])
            if new_index is not None:
                previous = session.user_index
                try:
                    session.user_index = new_index if previous is None else previous.concat(new_index)
                    session.version += 1
                    self.engine_for(session)  # builds the session's engine now: fails here, not at search
                except (IndexFormatError, SearchError) as err:
                    session.user_index = previous
                    session.version += 1
                    for path in new_index.paths:
                        self.uploads.discard(sid, path)
                    raise DemoError(f"Could not add these clips to the corpus: {hide_paths(str(err))}") from None
                added = list(new_index.clip_ids)
                for name in encoder.truncated:
                    notices.append(Notice("warning", f"{name} is longer than {AUDIO_MAX_SECONDS:g} s: only "
                                                     "its first part was indexed."))
        if skipped.quota:
            notices.append(Notice("warning", f"Upload stopped: {skipped.quota}. Your sounds indexed so far are kept."))
        if not added:
            notices.append(Notice("warning", "No file could be indexed: see the list of skipped files."))
        usage = self.uploads.usage(sid)
        return {
            "indexed": len(added),
            "clips": added,
            "skipped": skipped.rows(),
            "your_clips": session.num_uploads,
            "corpus": self.corpus_summary(session),
            "notices": [dataclasses.asdict(n) for n in notices],
            "quota": {"written_mb": round(usage["written"] / 1e6, 3), "session_mb": q.session_mb,
                      "clips": session.num_uploads, "session_clips": q.session_clips},
        }

    def clear_uploads(self, session: DemoSession) -> dict[str, Any]:
        """Forget this session's clips and delete their files (the shipped corpus is untouched;
        the bytes the session wrote stay counted on its quota)."""
        with self._lock:
            lock = self._upload_locks.setdefault(session.session_id, threading.Lock())
        with lock:  # not while an upload of this session is being indexed
            removed = session.num_uploads
            self._drop_engines(session.session_id)
            self.uploads.clear(session.session_id)
            session.user_index = None
            session.version += 1
        return {"removed": removed, "your_clips": 0, "corpus": self.corpus_summary(session)}

    def _collect_uploads(self, paths: list[str], session: DemoSession,
                         skipped: _Skipped) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
        """Copy audio files and unpack zips into the session's folder; pair NAME.txt captions
        with NAME.<audio>. Returns (written audio paths in order, captions by path, the user's
        name of each path)."""
        audio: list[str] = []
        names: dict[str, str] = {}
        sidecars: dict[str, list[str]] = {}  # stem (lower case) -> captions
        for path in paths:
            name = Path(path).name
            suffix = Path(path).suffix.lower()
            if skipped.quota:
                skipped.add(name, f"not read: {skipped.quota}")
            elif suffix == ".zip" or (suffix not in AUDIO_SUFFIXES and _is_zip(path)):
                self._extract_zip(path, session, audio, names, sidecars, skipped)
            elif not Path(path).is_file():
                skipped.add(name, "the file is missing (the upload did not finish)")
            elif suffix == ".txt":
                try:
                    with open(path, "rb") as src:
                        text = _read_capped(src, self.quotas.caption_bytes)
                except OSError as err:
                    skipped.add(name, f"could not be read ({_reason(err)})")
                    continue
                if text is None:
                    skipped.add(name, f"a caption file larger than {self.quotas.caption_kb:g} KB (the demo's limit)")
                else:
                    sidecars[Path(name).stem.lower()] = _caption_lines(text)
            else:
                # Any other name is tried: libsndfile recognises formats by content, and a
                # file that is not audio is listed with the decoder's reason (and deleted).
                try:
                    with open(path, "rb") as src:
                        out = self._write_clip(session, src, name, None)
                except OSError as err:
                    skipped.add(name, f"could not be read ({_reason(err)})")
                    continue
                except QuotaExceeded as err:
                    skipped.stop(name, str(err))
                    continue
                audio.append(str(out))
                names[str(out)] = name
        captions = {p: sidecars.get(Path(names[p]).stem.lower(), []) for p in audio}
        return audio, captions, names

    def _write_clip(self, session: DemoSession, src: Any, name: str, limit: int | None) -> Path:
        """One audio file into the session's folder, counted as a clip and as bytes written."""
        self.uploads.admit_clip(session.session_id)
        return self.uploads.write(session.session_id, src, _safe_name(name), limit=limit)

    def _extract_zip(self, path: str, session: DemoSession, audio: list[str], names: dict[str, str],
                     sidecars: dict[str, list[str]], skipped: _Skipped) -> None:
        q = self.quotas
        zip_name = Path(path).name
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            skipped.add(zip_name, f"not a readable zip archive ({_reason(err)})")
            return
        with archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) > q.zip_members:
                skipped.add(zip_name, f"holds {len(members):,} files; the demo reads zips of at most {q.zip_members}")
                return
            packed = max(1, Path(path).stat().st_size)
            unpacked = sum(m.file_size for m in members)
            if unpacked > q.zip_ratio * packed + ZIP_RATIO_SLACK:
                skipped.add(zip_name, f"unpacks to {unpacked / packed:,.0f} times its size (a zip bomb?); the demo "
                                      f"unpacks zips up to {q.zip_ratio:g} times")
                return
            for member in members:
                inner = member.filename.replace("\\", "/")
                base = inner.rsplit("/", 1)[-1]
                shown = f"{zip_name}/{inner}"
                suffix = Path(base).suffix.lower()
                if base.startswith(".") or "__MACOSX/" in inner:
                    continue  # resource forks and hidden files are not the user's sounds
                if skipped.quota:
                    skipped.add(shown, f"not unpacked: {skipped.quota}")
                    continue
                if suffix not in AUDIO_SUFFIXES and suffix != ".txt":
                    skipped.add(shown, "not an audio file type (supported: "
                                       f"{', '.join(sorted(AUDIO_SUFFIXES))})")
                    continue
                if member.file_size > q.zip_ratio * max(1, member.compress_size) + ZIP_RATIO_SLACK:
                    skipped.add(shown, f"compressed {member.file_size / max(1, member.compress_size):,.0f} to 1 "
                                       f"(a zip bomb?); the demo unpacks files up to {q.zip_ratio:g} to 1")
                    continue
                try:
                    if suffix == ".txt":  # read into memory, so read at most the cap
                        if member.file_size > q.caption_bytes:
                            text = None
                        else:
                            with archive.open(member) as src:
                                text = _read_capped(src, q.caption_bytes)
                        if text is None:
                            skipped.add(shown, f"a caption file larger than {q.caption_kb:g} KB (the demo's limit)")
                        else:
                            sidecars[Path(base).stem.lower()] = _caption_lines(text)
                        continue
                    # Never use the member's own path on disk: "../" in a zip must not escape.
                    with archive.open(member) as src:
                        out = self._write_clip(session, src, base, member.file_size)
                except QuotaExceeded as err:
                    if "unpacks to more than" in str(err):
                        skipped.add(shown, f"could not be unpacked: {err}")
                    else:
                        skipped.stop(shown, str(err))
                    continue
                except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError, NotImplementedError) as err:
                    skipped.add(shown, f"could not be unpacked ({_reason(err)})")
                    continue
                audio.append(str(out))
                names[str(out)] = shown


# ----------------------------------------------------------------------------- small helpers


class _Skipped:
    """The files an upload could not use, with reasons; ``quota`` is set once a quota stops it."""

    def __init__(self) -> None:
        self._rows: list[dict[str, str]] = []
        self.quota: str | None = None

    def add(self, file: str, reason: str) -> None:
        self._rows.append({"file": file, "reason": reason})

    def stop(self, file: str, reason: str) -> None:
        self.quota = reason
        self.add(file, f"not read: {reason}")

    def rows(self) -> list[dict[str, str]]:
        if len(self._rows) <= MAX_SKIPPED_ROWS:
            return list(self._rows)
        more = len(self._rows) - MAX_SKIPPED_ROWS + 1
        return self._rows[:MAX_SKIPPED_ROWS - 1] + [{"file": f"… and {more:,} more files",
                                                     "reason": self._rows[-1]["reason"]}]


def _as_paths(files: Any) -> list[str]:
    """A path, or paths, as a list of strings (empty entries dropped)."""
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    if not all(isinstance(item, (str, os.PathLike)) for item in files):
        raise DemoError("Unsupported upload: give the paths of the files to index.")
    return [str(item) for item in files if item]


def _is_zip(path: str) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _read_capped(src: Any, cap: int) -> str | None:
    """The text of a caption file, or None if it holds more than ``cap`` bytes (never reads
    more than ``cap + 1`` bytes into memory)."""
    data = src.read(cap + 1)
    if len(data) > cap:
        return None
    return data.decode("utf-8", errors="replace")


def _caption_lines(text: str) -> list[str]:
    return [" ".join(line.split())[:MAX_QUERY_CHARS] for line in text.splitlines() if line.strip()][:20]


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "clip"
    return cleaned[-100:]


def _unique_id(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def hits_table(response: Mapping[str, Any]) -> list[list[Any]]:
    """Rows for a results table: rank (1-based), caption, clip, fused, cosine, diffusion, moved."""
    rows = []
    for hit in response.get("results", []):
        diffusion = hit.get("diffusion")
        rows.append([hit["rank"], hit.get("caption") or "", hit["clip_id"], round(hit["fused"], 3),
                     round(hit["cosine"], 3), None if diffusion is None else round(diffusion, 3),
                     _moved_text(hit.get("moved", 0))])
    return rows


def _moved_text(moved: int) -> str:
    if moved > 0:
        return f"▲ {moved}"
    if moved < 0:
        return f"▼ {-moved}"
    return "0"


def hit_markdown(hit: Mapping[str, Any]) -> str:
    """A short Markdown card for one text->audio result."""
    caption = hit.get("caption") or "(no caption)"
    others = [c for c in hit.get("captions", []) if c != caption]
    diffusion = hit.get("diffusion")
    lines = [
        f"**#{hit['rank']} · {md_escape(hit['clip_id'])}**: {md_escape(caption)}",
        f"fused **{hit['fused']:.3f}** = cosine {hit['cosine']:.3f}"
        + (f" + α·diffusion {diffusion:.3f}" if diffusion is not None else " (not re-ranked)")
        + f" · places moved by the diffusion: {_moved_text(int(hit.get('moved', 0)))}",
    ]
    if others:
        lines.append("also: " + "; ".join(md_escape(c) for c in others[:3]))
    source, licence = hit.get("source"), hit.get("license")
    if source or licence:
        lines.append(f"<small>source: {md_escape(str(source or 'unknown'))} · licence: "
                     f"{md_escape(str(licence or 'unknown'))}</small>")
    return "  \n".join(lines)


def _subject(name: str) -> str:
    """A message's subject: "The recording", or a user's file name exactly as given (its case is
    the user's: "dog.WAV" must not become "Dog.WAV")."""
    return "The recording" if name == "the recording" else f"The file {name}"


def md_escape(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]<>#|])", r"\\\1", text)


def notices_of(response: Mapping[str, Any]) -> list[Notice]:
    """The notices of a handler's response, as ``Notice`` objects."""
    return [Notice(n["level"], n["text"]) for n in response.get("notices", [])]


def iter_steps(view: Mapping[str, Any], start: int = 0) -> Iterable[int]:
    """The steps an animation shows from ``start`` to x_0 (restarts at 0 when at the end)."""
    last = len(view["x_t"]) - 1
    start = 0 if start >= last else max(0, int(start))
    return range(start, last + 1)


def skipped_table(report: Mapping[str, Any]) -> list[list[str]]:
    """Rows (file, reason) of the files an upload could not use."""
    return [[s["file"], s["reason"]] for s in report.get("skipped", [])]


def status_line(response: Mapping[str, Any]) -> str:
    """A one-line summary of a search for the status text."""
    s = response["settings"]
    n = len(response["results"])
    query = str(response.get("query", ""))
    query = md_escape(query if len(query) <= 60 else query[:59] + "…")  # the user's text, shown as text
    return (f"{n} result{'s' if n != 1 else ''} for “{query}” from {response['corpus']} · K = {s['top_k_used']} re-ranked "
            f"in {s['num_inference_steps']} DDIM steps · α = {s['alpha']:g} · T = {s.get('temperature', 1.0):g} "
            f"· seed {s['seed']}")


def upload_status(report: Mapping[str, Any]) -> str:
    """A one-line summary of an upload."""
    skipped = len(report.get("skipped", []))
    text = f"Indexed {report['indexed']} file{'s' if report['indexed'] != 1 else ''}"
    if skipped:
        text += f", skipped {skipped}"
    return text + f". Searching now: {report['corpus']}."

