"""A retrieval index: backbone embeddings of a set of clips (and of their captions), on disk.

The index stores *backbone* features (before the projection heads), so one index serves every
checkpoint trained on the same backbones; the encoder configs are stored with it so that an
index is never silently mixed with another backbone. On disk an index is a folder with
``embeddings.safetensors`` (tensors) and ``index.json`` (ids, paths, captions, metadata, encoder
configs, counts and the checksum of the tensor file). This module does no projection, search or
encoding: see ``engine.py`` for the search and the CLI for building an index from audio.

Shapes: N clips, M captions (all clips' captions, flattened in clip order), Da / Dt backbone widths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from diffatr.encoders.identity import encoder_mismatches
from diffatr.errors import DiffatrError

__all__ = [
    "EMBEDDINGS_FILE",
    "INDEX_FILE",
    "INDEX_FORMAT",
    "INDEX_VERSION",
    "IndexFormatError",
    "IndexMismatchError",
    "RetrievalIndex",
    "encoder_mismatches",
    "encoders_from_configs",
]

EMBEDDINGS_FILE = "embeddings.safetensors"
INDEX_FILE = "index.json"
INDEX_FORMAT = "diffatr-index"
INDEX_VERSION = 1

_REBUILD_HINT = "rebuild it with `diffatr index ... --out DIR`"

class IndexFormatError(DiffatrError):
    """An index that is missing, corrupt, inconsistent or built for another backbone."""


class IndexMismatchError(IndexFormatError):
    """Two indexes (or an index and a model) that were built with different backbones."""


def encoders_from_configs(audio: Any, text: Any | None = None) -> dict[str, Any]:
    """The ``encoders`` dict of an index from the encoder configs (dataclasses or dicts).

    Args:
        audio: the ``AudioEncoderConfig`` (or its dict) that produced ``audio_features``.
        text: the ``TextEncoderConfig`` (or its dict) that produced ``text_features``, if any.
    Returns:
        ``{"audio": {...}, "text": {...} or None}``, JSON-able.
    """

    def as_dict(config: Any) -> Any:
        if config is None:
            return None
        if dataclasses.is_dataclass(config):
            return dataclasses.asdict(config)
        return dict(config)

    return {"audio": as_dict(audio), "text": as_dict(text)}


def _json_roundtrips(value: Any) -> bool:
    try:
        return json.loads(json.dumps(value, allow_nan=False)) == value
    except (TypeError, ValueError):
        return False


@dataclass(eq=False)
class RetrievalIndex:
    """Backbone embeddings of N clips and (optionally) of their M captions.

    Attributes:
        audio_features: (N, Da) float32 audio backbone embeddings (pre-head).
        clip_ids: N unique clip ids.
        paths: N audio paths (``None`` where unknown).
        captions: N lists of captions (may be empty: text->audio search needs no captions).
        text_features: (M, Dt) float32 text backbone embeddings of the captions, flattened in
            clip order (clip 0's captions, then clip 1's ...), or ``None``.
        caption_to_clip: (M,) long, the clip row of each caption row (derived from ``captions``
            when omitted).
        metadata: N JSON-able dicts (source, licence, ...).
        encoders: ``{"audio": config dict, "text": config dict | None}`` (see
            ``encoders_from_configs``); ``{}`` when unknown.
    """

    audio_features: Tensor
    clip_ids: list[str]
    paths: list[str | None] | None = None
    captions: list[list[str]] | None = None
    text_features: Tensor | None = None
    caption_to_clip: Tensor | None = None
    metadata: list[dict[str, Any]] | None = None
    encoders: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.clip_ids)
        self.clip_ids = [str(i) for i in self.clip_ids]
        self.paths = [None if p is None else str(p) for p in self.paths] if self.paths is not None else [None] * n
        self.captions = [list(c) for c in self.captions] if self.captions is not None else [[] for _ in range(n)]
        self.metadata = [dict(m) for m in self.metadata] if self.metadata is not None else [{} for _ in range(n)]
        self.encoders = dict(self.encoders or {})
        self._validate()

    # ------------------------------------------------------------------ consistency

    def _validate(self) -> None:
        """Raise ``IndexFormatError`` unless every field agrees with every other."""
        feats = self.audio_features
        if not isinstance(feats, Tensor) or feats.ndim != 2:
            raise IndexFormatError(
                f"audio_features must be a 2-D tensor (N, Da), got "
                f"{tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__}")
        if not feats.is_floating_point():
            raise IndexFormatError(f"audio_features must be floating point, got {feats.dtype}")
        self.audio_features = feats = feats.to(torch.float32).contiguous()
        n = feats.shape[0]
        for name, values in (("clip_ids", self.clip_ids), ("paths", self.paths),
                             ("captions", self.captions), ("metadata", self.metadata)):
            if len(values) != n:
                raise IndexFormatError(f"{name} has {len(values)} entries but audio_features has {n} rows")
        if len(set(self.clip_ids)) != n:
            seen: set[str] = set()
            dups = sorted({i for i in self.clip_ids if i in seen or seen.add(i)})
            raise IndexFormatError(f"clip ids must be unique; duplicated: {dups[:5]}")
        for row, caps in enumerate(self.captions):
            if not all(isinstance(c, str) for c in caps):
                raise IndexFormatError(f"captions of clip {self.clip_ids[row]!r} must be strings")
        for row, meta in enumerate(self.metadata):
            if not all(isinstance(k, str) for k in meta):
                raise IndexFormatError(f"metadata keys of clip {self.clip_ids[row]!r} must be strings")
        _check_finite(feats, self.clip_ids, "audio_features")

        m = self.num_captions
        derived = torch.repeat_interleave(torch.arange(n), torch.tensor([len(c) for c in self.captions],
                                                                        dtype=torch.long))  # (M,)
        if self.caption_to_clip is not None:
            c2c = torch.as_tensor(self.caption_to_clip)
            if c2c.ndim != 1 or not torch.equal(c2c.to(torch.long), derived):
                raise IndexFormatError(
                    "caption_to_clip does not match the captions: text_features rows must be the "
                    "captions flattened in clip order")
        self.caption_to_clip = derived
        if self.text_features is not None:
            tf = self.text_features
            if not isinstance(tf, Tensor) or tf.ndim != 2 or not tf.is_floating_point():
                raise IndexFormatError("text_features must be a floating point tensor (M, Dt)")
            if tf.shape[0] != m:
                raise IndexFormatError(
                    f"text_features has {tf.shape[0]} rows but the clips have {m} captions in total")
            self.text_features = tf = tf.to(torch.float32).contiguous()
            owners = [self.clip_ids[i] for i in derived.tolist()]
            _check_finite(tf, owners, "text_features (caption of clip)")

    # ------------------------------------------------------------------ accessors

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def num_captions(self) -> int:
        """M: the number of captions over all clips."""
        return sum(len(c) for c in self.captions)

    @property
    def flat_captions(self) -> list[str]:
        """The M captions in text_features row order."""
        return [c for caps in self.captions for c in caps]

    @property
    def audio_dim(self) -> int:
        return int(self.audio_features.shape[1])

    @property
    def text_dim(self) -> int | None:
        return None if self.text_features is None else int(self.text_features.shape[1])

    def row_of(self, clip_id: str) -> int:
        """The row of ``clip_id`` (ValueError if absent)."""
        try:
            return self._rows()[clip_id]
        except KeyError:
            raise ValueError(f"clip id {clip_id!r} is not in this index") from None

    def _rows(self) -> dict[str, int]:
        rows = getattr(self, "_row_cache", None)
        if rows is None or len(rows) != len(self.clip_ids):
            rows = {cid: i for i, cid in enumerate(self.clip_ids)}
            self._row_cache = rows
        return rows

    # ------------------------------------------------------------------ combining

    def check_compatible(self, other: RetrievalIndex) -> None:
        """Raise ``IndexMismatchError`` if ``other`` was built with a different backbone."""
        problems = encoder_mismatches(self.encoders.get("audio"), other.encoders.get("audio"), "audio")
        if self.audio_dim != other.audio_dim:
            problems.append(f"audio feature width {self.audio_dim} != {other.audio_dim}")
        if self.text_features is not None and other.text_features is not None:
            problems += encoder_mismatches(self.encoders.get("text"), other.encoders.get("text"), "text")
            if self.text_dim != other.text_dim:
                problems.append(f"text feature width {self.text_dim} != {other.text_dim}")
        if problems:
            raise IndexMismatchError(
                "these indexes were built with different encoders and cannot be combined: "
                + "; ".join(problems))

    def concat(self, other: RetrievalIndex) -> RetrievalIndex:
        """A new index with this index's clips followed by ``other``'s.

        Raises:
            IndexMismatchError: different backbones, or only one side has caption features.
            IndexFormatError: a clip id present in both.
        """
        self.check_compatible(other)
        if (self.text_features is None) != (other.text_features is None):
            # Dropping one side's caption features would silently lose audio->text search.
            with_text = self if self.text_features is not None else other
            without = other if with_text is self else self
            if without.num_captions > 0:
                raise IndexMismatchError(
                    "one index has caption text features and the other has captions without "
                    "features; re-index both with the same text encoder")
        shared = set(self.clip_ids) & set(other.clip_ids)
        if shared:
            raise IndexFormatError(f"clip ids present in both indexes: {sorted(shared)[:5]}")
        text = None
        if self.text_features is not None or other.text_features is not None:
            width = self.text_dim if self.text_features is not None else other.text_dim
            parts = [ix.text_features if ix.text_features is not None else torch.zeros(0, width)
                     for ix in (self, other)]
            text = torch.cat(parts)
        encoders = dict(self.encoders or other.encoders)
        if encoders.get("text") is None and other.encoders.get("text") is not None:
            encoders["text"] = other.encoders["text"]
        return RetrievalIndex(
            audio_features=torch.cat([self.audio_features, other.audio_features]),
            clip_ids=self.clip_ids + other.clip_ids,
            paths=self.paths + other.paths,
            captions=self.captions + other.captions,
            text_features=text,
            metadata=self.metadata + other.metadata,
            encoders=encoders,
        )

    __add__ = concat

    def add(self, audio_features: Tensor, clip_ids: Sequence[str], *,
            paths: Sequence[str | None] | None = None,
            captions: Sequence[Sequence[str]] | None = None,
            text_features: Tensor | None = None,
            metadata: Sequence[dict[str, Any]] | None = None) -> RetrievalIndex:
        """A new index with extra clips appended (same encoders as this one).

        Args:
            audio_features: (n, Da) backbone embeddings of the new clips.
            clip_ids: n new unique ids; the other arguments as in the constructor.
        """
        extra = RetrievalIndex(audio_features=audio_features, clip_ids=list(clip_ids),
                               paths=None if paths is None else list(paths),
                               captions=None if captions is None else [list(c) for c in captions],
                               text_features=text_features,
                               metadata=None if metadata is None else list(metadata),
                               encoders=self.encoders)
        return self.concat(extra)

    @classmethod
    def concatenate(cls, indexes: Iterable[RetrievalIndex]) -> RetrievalIndex:
        """Concatenate several indexes in order (at least one)."""
        indexes = list(indexes)
        if not indexes:
            raise ValueError("concatenate needs at least one index")
        out = indexes[0]
        for ix in indexes[1:]:
            out = out.concat(ix)
        return out

    def subset(self, clip_ids: Iterable[str]) -> RetrievalIndex:
        """A new index with only ``clip_ids``, in the order given (with their captions)."""
        clip_ids = [str(i) for i in clip_ids]
        rows_of = self._rows()
        missing = [i for i in clip_ids if i not in rows_of]
        if missing:
            raise ValueError(f"{len(missing)} clip ids are not in this index, e.g. {missing[:5]}")
        if len(set(clip_ids)) != len(clip_ids):
            raise ValueError("subset: clip ids must be unique")
        rows = [rows_of[i] for i in clip_ids]
        text = None
        if self.text_features is not None:
            starts = torch.cumsum(torch.tensor([0] + [len(c) for c in self.captions]), 0).tolist()
            cap_rows = [r for row in rows for r in range(starts[row], starts[row + 1])]
            text = self.text_features[torch.tensor(cap_rows, dtype=torch.long)]
        return RetrievalIndex(
            audio_features=self.audio_features[torch.tensor(rows, dtype=torch.long)],
            clip_ids=clip_ids,
            paths=[self.paths[r] for r in rows],
            captions=[list(self.captions[r]) for r in rows],
            text_features=text,
            metadata=[dict(self.metadata[r]) for r in rows],
            encoders=dict(self.encoders),
        )

    # ------------------------------------------------------------------ disk

    def to_json_dict(self, embeddings_sha256: str) -> dict[str, Any]:
        """The ``index.json`` content (everything except the tensors)."""
        return {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "num_clips": len(self),
            "num_captions": self.num_captions,
            "audio_dim": self.audio_dim,
            "text_dim": self.text_dim,
            "has_text_features": self.text_features is not None,
            "embeddings_file": EMBEDDINGS_FILE,
            "embeddings_sha256": embeddings_sha256,
            "encoders": self.encoders,
            "clips": [
                {"id": cid, "path": path, "captions": caps, "metadata": meta}
                for cid, path, caps, meta in zip(self.clip_ids, self.paths, self.captions, self.metadata)
            ],
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``embeddings.safetensors`` + ``index.json`` into ``directory``, atomically.

        Both files are written to a temporary folder beside ``directory`` first. A new folder is
        then moved into place in one rename; an existing folder gets the tensor file replaced
        first and ``index.json`` last, and ``index.json`` records the tensor file's checksum, so
        an interrupted overwrite is detected by ``load`` instead of read as a mixed index.

        Returns:
            The index folder.
        """
        from safetensors.torch import save as st_save

        directory = Path(directory)
        for row, meta in enumerate(self.metadata):
            if not _json_roundtrips(meta):
                raise ValueError(f"metadata of clip {self.clip_ids[row]!r} is not JSON-able "
                                 f"(use str keys, lists not tuples, finite numbers): {meta!r}")
        if not _json_roundtrips(self.encoders):
            raise ValueError("encoders must be a JSON-able dict")
        tensors = {"audio_features": self.audio_features.detach().cpu().contiguous()}
        if self.text_features is not None:
            tensors["text_features"] = self.text_features.detach().cpu().contiguous()
            tensors["caption_to_clip"] = self.caption_to_clip.cpu().contiguous()
        blob = st_save(tensors, metadata={"format": INDEX_FORMAT, "num_clips": str(len(self))})
        digest = hashlib.sha256(blob).hexdigest()
        text = json.dumps(self.to_json_dict(digest), indent=1, ensure_ascii=False, allow_nan=False)

        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            for name, data in ((EMBEDDINGS_FILE, blob), (INDEX_FILE, text.encode("utf-8"))):
                with open(tmp / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            if not directory.exists():
                os.replace(tmp, directory)
            else:
                if not directory.is_dir():
                    raise FileExistsError(f"{directory} exists and is not a folder")
                os.replace(tmp / EMBEDDINGS_FILE, directory / EMBEDDINGS_FILE)
                os.replace(tmp / INDEX_FILE, directory / INDEX_FILE)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> RetrievalIndex:
        """Load and validate an index folder written by ``save``.

        Raises:
            IndexFormatError: missing files, truncated or corrupt tensors, bad JSON, counts that
                disagree, non-finite rows; the message says what is wrong and how to rebuild.
        """
        from safetensors.torch import load as st_load

        directory = Path(directory)

        def fail(what: str) -> IndexFormatError:
            return IndexFormatError(f"index at {directory}: {what}; {_REBUILD_HINT}")

        if not directory.is_dir():
            raise fail("no such folder")
        json_path, emb_path = directory / INDEX_FILE, directory / EMBEDDINGS_FILE
        for path in (json_path, emb_path):
            if not path.is_file():
                raise fail(f"{path.name} is missing")
        try:
            info = json.loads(json_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise fail(f"{INDEX_FILE} is not valid JSON ({err})") from err
        if not isinstance(info, dict) or info.get("format") != INDEX_FORMAT:
            found = info.get("format") if isinstance(info, dict) else type(info).__name__
            raise fail(f"{INDEX_FILE} is not a diffatr index (format {found!r})")
        if info.get("version") != INDEX_VERSION:
            raise fail(f"unsupported index version {info.get('version')!r} (this diffatr reads {INDEX_VERSION})")
        try:
            num_clips = int(info["num_clips"])
            num_captions = int(info["num_captions"])
            clips = info["clips"]
            encoders = info.get("encoders") or {}
            digest = str(info["embeddings_sha256"])
            has_text = bool(info.get("has_text_features", False))
            if not isinstance(clips, list) or not all(isinstance(c, dict) for c in clips):
                raise TypeError("'clips' must be a list of objects")
            clip_ids = [c["id"] for c in clips]
            # A relative path is relative to the index folder (a shipped index stays valid
            # wherever the repository is cloned).
            paths = [_resolve_path(c.get("path"), directory) for c in clips]
            captions = [c.get("captions", []) for c in clips]
            metadata = [c.get("metadata", {}) for c in clips]
            if not all(isinstance(i, str) for i in clip_ids):
                raise TypeError("clip ids must be strings")
            if not all(isinstance(c, list) for c in captions) or not all(isinstance(m, dict) for m in metadata):
                raise TypeError("captions must be lists and metadata objects")
        except (KeyError, TypeError, ValueError) as err:
            raise fail(f"{INDEX_FILE} is malformed ({type(err).__name__}: {err})") from err
        if len(clips) != num_clips:
            raise fail(f"{INDEX_FILE} says num_clips={num_clips} but lists {len(clips)} clips")
        if sum(len(c) for c in captions) != num_captions:
            raise fail(f"{INDEX_FILE} says num_captions={num_captions} but lists "
                       f"{sum(len(c) for c in captions)}")

        blob = emb_path.read_bytes()
        try:
            tensors = st_load(blob)
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise fail(f"{EMBEDDINGS_FILE} is truncated or corrupt ({type(err).__name__}: {err})") from err
        if "audio_features" not in tensors:
            raise fail(f"{EMBEDDINGS_FILE} has no 'audio_features' tensor")
        audio = tensors["audio_features"]
        if audio.ndim != 2 or audio.shape[0] != num_clips:
            raise fail(f"{EMBEDDINGS_FILE} has audio_features of shape {tuple(audio.shape)} but "
                       f"{INDEX_FILE} lists {num_clips} clips")
        text = tensors.get("text_features")
        if has_text != (text is not None):
            raise fail(f"{INDEX_FILE} and {EMBEDDINGS_FILE} disagree on whether caption features exist")
        if text is not None and (text.ndim != 2 or text.shape[0] != num_captions):
            raise fail(f"{EMBEDDINGS_FILE} has text_features of shape {tuple(text.shape)} but "
                       f"{INDEX_FILE} lists {num_captions} captions")
        if hashlib.sha256(blob).hexdigest() != digest:
            raise fail(f"{EMBEDDINGS_FILE} does not match {INDEX_FILE} (checksum differs: corrupt, "
                       "or an interrupted overwrite)")
        try:
            return cls(audio_features=audio, clip_ids=clip_ids, paths=paths, captions=captions,
                       text_features=text, caption_to_clip=tensors.get("caption_to_clip"),
                       metadata=metadata, encoders=encoders)
        except IndexFormatError as err:
            raise fail(str(err)) from err


def _resolve_path(path: Any, directory: Path) -> Any:
    if isinstance(path, str) and path and not os.path.isabs(path):
        return os.path.normpath(os.path.join(os.path.abspath(directory), path))
    return path


def _check_finite(features: Tensor, owners: Sequence[str], what: str) -> None:
    bad = ~torch.isfinite(features).all(dim=1)  # (rows,)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        names = [owners[r] for r in rows[:5]]
        raise IndexFormatError(
            f"{len(rows)} rows of {what} contain NaN or inf, e.g. {names}; re-embed those clips "
            "(a silent or corrupt audio file is the usual cause)")
