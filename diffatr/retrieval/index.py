"""A retrieval index: the feature table (``diffatr.features.FeatureSet``) of the clips to search, on disk.

The index stores *backbone* features (before the projection heads), so one index serves every
checkpoint trained on the same backbones; the encoder configs are stored with it so that an
index is never silently mixed with another backbone. On disk an index is a folder with
``embeddings.safetensors`` (tensors) and ``index.json`` (ids, paths, captions, metadata, encoder
configs, counts and the checksum of the tensor file). This module does no projection, search or
encoding: see ``engine.py`` for the search and ``diffatr.indexing`` for building an index from audio.

Shapes: N clips, M captions (all clips' captions, flattened in clip order), Da / Dt backbone widths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import Tensor

from diffatr.encoders.identity import encoder_mismatches
from diffatr.errors import DiffatrError
from diffatr.features import FeatureSet

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
class RetrievalIndex(FeatureSet):
    """A ``diffatr.features.FeatureSet`` of the clips to search, under an index's rules, with
    the index's on-disk format.

    The fields are the table's (``audio_features`` (N, Da), ``clip_ids``, ``paths``,
    ``captions`` (N lists), ``text_features`` (M, Dt) or None, ``caption_to_clip`` (M,),
    ``metadata``, ``encoders``). An index adds: float32 features with no NaN or inf, unique
    clip ids, str metadata keys, and caption rows in clip order (clip 0's captions, then
    clip 1's ...). It raises ``IndexFormatError`` / ``IndexMismatchError``.
    """

    error: ClassVar[type[Exception]] = IndexFormatError
    mismatch_error: ClassVar[type[Exception]] = IndexMismatchError
    noun: ClassVar[str] = "index"

    def _validate(self) -> None:
        """Raise ``IndexFormatError`` unless every field agrees with every other."""
        feats = self.audio_features
        if not isinstance(feats, Tensor) or feats.ndim != 2:
            raise IndexFormatError(
                f"audio_features must be a 2-D tensor (N, Da), got "
                f"{tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__}")
        if not feats.is_floating_point():
            raise IndexFormatError(f"audio_features must be floating point, got {feats.dtype}")
        super()._validate()
        self.audio_features = feats = feats.to(torch.float32).contiguous()
        n = feats.shape[0]
        if len(set(self.clip_ids)) != n:
            seen: set[str] = set()
            dups = sorted({i for i in self.clip_ids if i in seen or seen.add(i)})
            raise IndexFormatError(f"clip ids must be unique; duplicated: {dups[:5]}")
        for row, meta in enumerate(self.metadata):
            if not all(isinstance(k, str) for k in meta):
                raise IndexFormatError(f"metadata keys of clip {self.clip_ids[row]!r} must be strings")
        _check_finite(feats, self.clip_ids, "audio_features")
        derived = torch.repeat_interleave(torch.arange(n), torch.tensor([len(c) for c in self.captions],
                                                                        dtype=torch.long))  # (M,)
        if not torch.equal(self.caption_to_clip.cpu(), derived):
            raise IndexFormatError(
                "caption_to_clip does not match the captions: text_features rows must be the "
                "captions flattened in clip order")
        self.caption_to_clip = derived
        if self.text_features is not None:
            if not self.text_features.is_floating_point():
                raise IndexFormatError("text_features must be a floating point tensor (M, Dt)")
            self.text_features = tf = self.text_features.to(torch.float32).contiguous()
            _check_finite(tf, [self.clip_ids[i] for i in derived.tolist()], "text_features (caption of clip)")

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
    def from_features(cls, features: FeatureSet) -> RetrievalIndex:
        """The index of a feature table (its ids, paths, captions, metadata and features)."""
        return cls(**{f.name: getattr(features, f.name) for f in dataclasses.fields(FeatureSet)})

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

    def save(self, directory: str | os.PathLike, *, half: bool = False) -> Path:
        """Write ``embeddings.safetensors`` + ``index.json`` into ``directory``, atomically.

        ``half`` stores the features rounded to float16 (about three significant digits): half the
        file, so the shipped demo index stays under 10 MB. They are read back as float32, which
        copies them at load instead of mapping the file: for small indexes.

        Both files are written to a temporary folder beside ``directory`` first. A new folder is
        then moved into place in one rename; an existing folder gets the tensor file replaced
        first and ``index.json`` last, and ``index.json`` records the tensor file's checksum, so
        an interrupted overwrite is detected by ``load`` instead of read as a mixed index.

        Returns:
            The index folder.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        for row, meta in enumerate(self.metadata):
            if not _json_roundtrips(meta):
                raise ValueError(f"metadata of clip {self.clip_ids[row]!r} is not JSON-able "
                                 f"(use str keys, lists not tuples, finite numbers): {meta!r}")
        if not _json_roundtrips(self.encoders):
            raise ValueError("encoders must be a JSON-able dict")
        stored = torch.float16 if half else torch.float32
        for name, feats in (("audio_features", self.audio_features), ("text_features", self.text_features)):
            if half and feats is not None and feats.abs().max() > torch.finfo(torch.float16).max:
                raise ValueError(f"{name} exceed float16's range: save this index without half precision")
        tensors = {"audio_features": self.audio_features.detach().cpu().to(stored).contiguous()}
        if self.text_features is not None:
            tensors["text_features"] = self.text_features.detach().cpu().to(stored).contiguous()
            tensors["caption_to_clip"] = self.caption_to_clip.cpu().contiguous()

        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            # Straight to the file, then hashed from it: no in-memory copy of gigabytes of features.
            save_file(tensors, tmp / EMBEDDINGS_FILE, metadata={"format": INDEX_FORMAT, "num_clips": str(len(self))})
            digest = _sha256_of_file(tmp / EMBEDDINGS_FILE)
            text = json.dumps(self.to_json_dict(digest), indent=1, ensure_ascii=False, allow_nan=False)
            with open(tmp / INDEX_FILE, "wb") as fh:
                fh.write(text.encode("utf-8"))
            for name in (EMBEDDINGS_FILE, INDEX_FILE):
                with open(tmp / name, "rb+") as fh:
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
        from safetensors.torch import load_file

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
        num_clips, num_captions, clip_ids, paths, captions, metadata, encoders, digest, has_text = \
            _read_clip_list(info, directory, fail)

        try:  # memory-mapped (copy-on-write): a store-backed search never reads most of the rows
            tensors = load_file(emb_path)
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
        if _sha256_of_file(emb_path) != digest:
            raise fail(f"{EMBEDDINGS_FILE} does not match {INDEX_FILE} (checksum differs: corrupt, "
                       "or an interrupted overwrite)")
        try:
            return cls(audio_features=audio, clip_ids=clip_ids, paths=paths, captions=captions,
                       text_features=text, caption_to_clip=tensors.get("caption_to_clip"),
                       metadata=metadata, encoders=encoders)
        except IndexFormatError as err:
            raise fail(str(err)) from err


def stored_in_half(directory: str | os.PathLike) -> bool:
    """Whether the index at ``directory`` stores its features as float16 (``save(half=True)``),
    read from the tensor file's header alone; False when there is no readable index."""
    from safetensors import safe_open

    try:
        with safe_open(Path(directory) / EMBEDDINGS_FILE, "pt") as handle:
            return handle.get_slice("audio_features").get_dtype() == "F16"
    except Exception:  # no index, or a damaged one: load() says what is wrong
        return False


def _read_clip_list(info: dict[str, Any], directory: Path, fail: Callable[[str], IndexFormatError]) -> tuple:
    """The clip list of an index's JSON, checked: (num_clips, num_captions, clip_ids, paths,
    captions, metadata, encoders, embeddings sha256, whether caption features exist)."""
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
        raise fail(f"{INDEX_FILE} says num_captions={num_captions} but lists {sum(len(c) for c in captions)}")
    return num_clips, num_captions, clip_ids, paths, captions, metadata, encoders, digest, has_text


def _resolve_path(path: Any, directory: Path) -> Any:
    if isinstance(path, str) and path and not os.path.isabs(path):
        return os.path.normpath(os.path.join(os.path.abspath(directory), path))
    return path


def _sha256_of_file(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB pieces (an index of a million clips is gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def _check_finite(features: Tensor, owners: Sequence[str], what: str, chunk_rows: int = 1 << 16) -> None:
    # In pieces: a whole-table mask would be N x D bytes (512 MB at a million 512-d clips).
    bad = torch.cat([~torch.isfinite(features[start : start + chunk_rows]).all(dim=1)
                     for start in range(0, features.shape[0], chunk_rows)] or [torch.zeros(0, dtype=torch.bool)])
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        names = [owners[r] for r in rows[:5]]
        raise IndexFormatError(
            f"{len(rows)} rows of {what} contain NaN or inf, e.g. {names}; re-embed those clips "
            "(a silent or corrupt audio file is the usual cause)")
