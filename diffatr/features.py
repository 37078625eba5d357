"""The one feature table and the one loop that fills it; frozen-backbone features cached on disk.

Owns ``FeatureSet`` (audio (N, Da), text (M, Dt), caption_to_clip (M,) and the ids, paths,
captions and metadata behind them) with its save/load, the caption cache ``TextFeatureCache``,
and ``build_features``: audio goes through ``encoders.cache.FeatureCache`` (keyed by file hash
+ encoder config), captions through ``TextFeatureCache`` (keyed by caption text + text encoder
config), and a backbone is built only when something misses the cache. ``diffatr index``,
training and evaluation all build their tables here; they never embed files themselves.

Shape legend: N clips, M captions, Da audio feature width, Dt text feature width.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save, save_file
from torch import Tensor
from tqdm.auto import tqdm

from diffatr.config import ModelConfig
from diffatr.data.manifest import ClipRecord
from diffatr.data.sounds import sound_keys, sound_units
from diffatr.encoders.cache import FeatureCache, config_digest, file_sha256
from diffatr.encoders.identity import encoder_mismatches
from diffatr.errors import DiffatrError
from diffatr.fileio import atomic_directory, atomic_write_bytes

__all__ = ["FeatureError", "FeatureSet", "LazyEncoders", "NoUsableClipError", "TextFeatureCache", "build_features",
           "compute_features", "mixture_features", "records_of"]

FEATURES_FILE = "features.safetensors"
INFO_FILE = "features.json"
FORMAT_VERSION = 1


class FeatureError(DiffatrError):
    """Features that cannot be computed or used (no usable clip, mismatched encoders, damage)."""


@dataclass(eq=False)
class FeatureSet:
    """The one feature table: backbone features of N clips and of their M captions, with the
    ids, paths, captions and metadata behind them.

    Clip n has audio row n and the captions ``captions[n]``; text row m is a caption of clip
    ``caption_to_clip[m]`` (``flat_captions[m]``). Training, evaluation and the retrieval index
    (``diffatr.retrieval.index.RetrievalIndex``, this table plus its stricter rules and its
    on-disk format) all read this type; ``build_features`` is the one loop that fills it.

    Attributes:
        audio_features: (N, Da) float audio backbone features (pre-head), or None for a clip
            list that was checked but not embedded (fine-tuning reads the waveforms itself).
        clip_ids: N clip ids.
        paths: N audio paths (None where unknown).
        captions: N lists of captions (a clip may have none).
        text_features: (M, Dt) float text backbone features of the captions, or None (not
            embedded: an audio-only index).
        caption_to_clip: (M,) int64 clip row of each text row. Derived when omitted: the
            captions flattened in clip order (clip 0's, then clip 1's ...). A given order is kept;
            the k-th row of clip n is ``captions[n][k]``.
        metadata: N JSON-able dicts (source, licence, split ...).
        encoders: ``{"audio": AudioEncoderConfig dict, "text": TextEncoderConfig dict or None}``;
            ``{}`` when unknown.
        sound_keys: N sound keys (``diffatr.data.sounds``; None = unknown), or empty when none
            were recorded.
        skipped: (path, reason) of each clip left out (unreadable audio, no captions).
    """

    audio_features: Tensor | None
    clip_ids: list[str]
    paths: list[str | None] | None = None
    captions: list[list[str]] | None = None
    text_features: Tensor | None = None
    caption_to_clip: Tensor | None = None
    metadata: list[dict[str, Any]] | None = None
    encoders: dict[str, Any] = field(default_factory=dict)
    sound_keys: list[str | None] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    # The errors this table raises (an index raises its own: IndexFormatError / IndexMismatchError).
    error: ClassVar[type[Exception]] = FeatureError
    mismatch_error: ClassVar[type[Exception]] = FeatureError
    noun: ClassVar[str] = "feature set"

    def __post_init__(self) -> None:
        n = len(self.clip_ids)
        self.clip_ids = [str(i) for i in self.clip_ids]
        self.paths = [None if p is None else str(p) for p in self.paths] if self.paths is not None else [None] * n
        self.captions = [list(c) for c in self.captions] if self.captions is not None else [[] for _ in range(n)]
        self.metadata = [dict(m) for m in self.metadata] if self.metadata is not None else [{} for _ in range(n)]
        self.encoders = dict(self.encoders or {})
        self.sound_keys = list(self.sound_keys or [])
        self.skipped = [tuple(s) for s in self.skipped or []]
        self._validate()

    def _validate(self) -> None:
        """Raise ``self.error`` unless the fields agree with each other."""
        n, error = len(self.clip_ids), self.error
        audio = self.audio_features
        if audio is not None and (not isinstance(audio, Tensor) or audio.ndim != 2 or audio.shape[0] != n):
            shape = tuple(audio.shape) if isinstance(audio, Tensor) else type(audio).__name__
            raise error(f"audio_features must be a 2-D tensor (N, Da) with one row per clip id (N = {n}), "
                        f"got {shape}")
        for name, values in (("paths", self.paths), ("captions", self.captions), ("metadata", self.metadata)):
            if len(values) != n:
                raise error(f"{name} has {len(values)} entries but there are {n} clip ids")
        if self.sound_keys and len(self.sound_keys) != n:
            raise error(f"sound_keys must hold one key per clip ({n}), got {len(self.sound_keys)}")
        for row, caps in enumerate(self.captions):
            if not all(isinstance(c, str) for c in caps):
                raise error(f"captions of clip {self.clip_ids[row]!r} must be strings")
        counts = torch.tensor([len(c) for c in self.captions], dtype=torch.long)  # (N,)
        m = int(counts.sum())
        if self.caption_to_clip is None:
            self.caption_to_clip = torch.repeat_interleave(torch.arange(n), counts)  # (M,) clip order
        else:
            c2c = torch.as_tensor(self.caption_to_clip)
            if c2c.ndim != 1 or c2c.shape[0] != m or c2c.is_floating_point() or c2c.dtype == torch.bool:
                raise error(f"caption_to_clip must be ({m},) integers (one clip row per caption), got "
                            f"{tuple(c2c.shape)} {c2c.dtype}")
            c2c = c2c.long()
            if m and (int(c2c.min()) < 0 or int(c2c.max()) >= n):
                raise error("caption_to_clip points outside the clips")
            if not torch.equal(torch.bincount(c2c.cpu(), minlength=n), counts):
                raise error("caption_to_clip does not match the captions (rows per clip differ)")
            self.caption_to_clip = c2c
        text = self.text_features
        if text is not None:
            if not isinstance(text, Tensor) or text.ndim != 2:
                raise error("text_features must be a 2-D tensor (M, Dt)")
            if text.shape[0] != m:
                raise error(f"text_features has {text.shape[0]} rows but the clips have {m} captions in total")

    # ------------------------------------------------------------------ accessors

    @property
    def audio(self) -> Tensor | None:
        """``audio_features`` (the name training and evaluation code reads)."""
        return self.audio_features

    @audio.setter
    def audio(self, value: Tensor | None) -> None:
        self.audio_features = value

    @property
    def text(self) -> Tensor | None:
        """``text_features`` (the name training and evaluation code reads)."""
        return self.text_features

    @text.setter
    def text(self, value: Tensor | None) -> None:
        self.text_features = value

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def num_clips(self) -> int:
        return len(self.clip_ids)

    @property
    def num_captions(self) -> int:
        """M: the number of captions over all clips (rows of ``text_features``)."""
        return sum(len(c) for c in self.captions)

    @property
    def flat_captions(self) -> list[str]:
        """The M captions in ``text_features`` row order."""
        flat = [c for caps in self.captions for c in caps]
        derived = torch.repeat_interleave(torch.arange(len(self.captions)),
                                          torch.tensor([len(c) for c in self.captions], dtype=torch.long))
        if torch.equal(self.caption_to_clip.cpu(), derived):  # clip order (every index, most sets)
            return flat
        taken = [0] * len(self.captions)
        out = []
        for clip in self.caption_to_clip.tolist():
            out.append(self.captions[clip][taken[clip]])
            taken[clip] += 1
        return out

    @property
    def audio_dim(self) -> int | None:
        return None if self.audio_features is None else int(self.audio_features.shape[1])

    @property
    def text_dim(self) -> int | None:
        return None if self.text_features is None else int(self.text_features.shape[1])

    def _rows(self) -> dict[str, int]:
        rows = getattr(self, "_row_cache", None)
        if rows is None or len(rows) != len(self.clip_ids):
            rows = {cid: i for i, cid in enumerate(self.clip_ids)}
            self._row_cache = rows
        return rows

    def sound_units(self) -> Tensor:
        """(N,) int64 sound unit of each clip (``diffatr.data.sounds.sound_units``): clips of
        one unit are never each other's negatives, and a hit on any of them is a unit-level hit."""
        return sound_units(self.num_clips, self.flat_captions, self.caption_to_clip, self.sound_keys or None)

    # ------------------------------------------------------------------ combining

    def subset(self, clips: Tensor | Iterable[int] | Iterable[str]) -> FeatureSet:
        """These clips, in this order, with all their captions (in clip order).

        Args:
            clips: clip rows (ints or a tensor) or clip ids (strings), each at most once.
        """
        clips = clips.tolist() if isinstance(clips, Tensor) else list(clips)
        if clips and all(isinstance(c, str) for c in clips):
            missing = [c for c in clips if c not in self._rows()]
            if missing:
                raise ValueError(f"{len(missing)} clip ids are not in this {self.noun}, e.g. {missing[:5]}")
            rows = [self._rows()[c] for c in clips]
        else:
            rows = [int(r) for r in clips]
        if len(set(rows)) != len(rows):
            raise ValueError("subset: each clip may be picked once")
        owners = self.caption_to_clip.tolist()
        by_clip: dict[int, list[int]] = {r: [] for r in rows}
        for m, clip in enumerate(owners):
            if clip in by_clip:
                by_clip[clip].append(m)
        keep = torch.tensor([m for r in rows for m in by_clip[r]], dtype=torch.long)  # caption rows, clip order
        flat = self.flat_captions
        index = torch.tensor(rows, dtype=torch.long)
        return dataclasses.replace(
            self,
            audio_features=None if self.audio_features is None else self.audio_features[index],
            clip_ids=[self.clip_ids[r] for r in rows], paths=[self.paths[r] for r in rows],
            captions=[[flat[m] for m in by_clip[r]] for r in rows],
            text_features=None if self.text_features is None else self.text_features[keep],
            caption_to_clip=None, metadata=[dict(self.metadata[r]) for r in rows], encoders=dict(self.encoders),
            sound_keys=[self.sound_keys[r] for r in rows] if self.sound_keys else [], skipped=list(self.skipped))

    def check_compatible(self, other: FeatureSet) -> None:
        """Raise ``mismatch_error`` if ``other`` came from different backbones (the one rule,
        ``diffatr.encoders.identity``, plus the feature widths)."""
        problems = encoder_mismatches(self.encoders.get("audio"), other.encoders.get("audio"), "audio")
        if self.audio_dim != other.audio_dim:
            problems.append(f"audio feature width {self.audio_dim} != {other.audio_dim}")
        if self.text_features is not None and other.text_features is not None:
            problems += encoder_mismatches(self.encoders.get("text"), other.encoders.get("text"), "text")
            if self.text_dim != other.text_dim:
                problems.append(f"text feature width {self.text_dim} != {other.text_dim}")
        if problems:
            raise self.mismatch_error(f"these {self.noun}s were built with different encoders and cannot be "
                                      "combined: " + "; ".join(problems))

    def concat(self, other: FeatureSet) -> FeatureSet:
        """This table's clips followed by ``other``'s, with their captions (same encoders).

        Raises:
            mismatch_error: different backbones, or only one side has caption features.
            error: a clip id present in both.
        """
        self.check_compatible(other)
        if self.audio_features is None or other.audio_features is None:
            raise self.error(f"only {self.noun}s with audio features can be joined")
        if (self.text_features is None) != (other.text_features is None):
            # Dropping one side's caption features would silently lose audio->text search.
            without = other if self.text_features is not None else self
            if without.num_captions > 0:
                raise self.mismatch_error(
                    f"one {self.noun} has caption text features and the other has captions without "
                    "features; embed both with the same text encoder")
        shared = set(self.clip_ids) & set(other.clip_ids)
        if shared:
            raise self.error(f"clip ids present in both {self.noun}s: {sorted(shared)[:5]}")
        text = None
        if self.text_features is not None or other.text_features is not None:
            width = self.text_dim if self.text_features is not None else other.text_dim
            text = torch.cat([t.text_features if t.text_features is not None else torch.zeros(0, width)
                              for t in (self, other)])
        encoders = dict(self.encoders or other.encoders)
        if encoders.get("text") is None and other.encoders.get("text") is not None:
            encoders["text"] = other.encoders["text"]
        keys = (list(self.sound_keys) or [None] * self.num_clips) + (list(other.sound_keys) or [None] * other.num_clips)
        return dataclasses.replace(
            self,
            audio_features=torch.cat([self.audio_features, other.audio_features]),
            clip_ids=self.clip_ids + other.clip_ids, paths=self.paths + other.paths,
            captions=self.captions + other.captions, text_features=text,
            caption_to_clip=torch.cat([self.caption_to_clip, other.caption_to_clip + self.num_clips]),
            metadata=self.metadata + other.metadata, encoders=encoders,
            sound_keys=keys if any(k is not None for k in keys) else [], skipped=self.skipped + other.skipped)

    __add__ = concat

    @classmethod
    def concatenate(cls, tables: Iterable[FeatureSet]) -> FeatureSet:
        """Several tables joined in order (at least one)."""
        tables = list(tables)
        if not tables:
            raise ValueError("concatenate needs at least one table")
        out = tables[0]
        for table in tables[1:]:
            out = out.concat(table)
        return out

    # ------------------------------------------------------------------ facts

    def digest(self) -> str:
        """A short fingerprint of the features and ids (a resumed run checks it is unchanged).
        A clip list without features is fingerprinted by its ids and captions alone."""
        h = hashlib.sha256()
        if self.audio_features is not None:
            for tensor in (self.audio_features, self.text_features, self.caption_to_clip):
                if tensor is not None:
                    h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        h.update(json.dumps([self.clip_ids, self.flat_captions]).encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """JSON-able facts for logs and checkpoints."""
        return {"num_clips": self.num_clips, "num_captions": self.num_captions,
                "num_skipped": len(self.skipped), "digest": self.digest()}

    def check_encoders(self, config: ModelConfig) -> None:
        """Raise FeatureError if these features cannot feed a model built from ``config``."""
        if self.audio_features is None or self.text_features is None:
            raise FeatureError("these clips have no audio or caption features; compute them with this config")
        if self.audio_dim != config.audio.embed_dim or self.text_dim != config.text.embed_dim:
            raise FeatureError(
                f"features are {self.audio_dim}-d audio / {self.text_dim}-d text, but the model "
                f"expects {config.audio.embed_dim} / {config.text.embed_dim}; recompute them with this config"
            )
        for name, wanted in (("audio", asdict(config.audio)), ("text", asdict(config.text))):
            problems = encoder_mismatches(self.encoders.get(name), wanted, name)  # the one rule
            if problems:
                raise FeatureError(f"the {name} features were computed with another {name} encoder than the "
                                   f"model's ({'; '.join(problems)}); recompute them with this config")

    # ------------------------------------------------------------------ disk (features.json + .safetensors)

    @classmethod
    def from_flat(cls, *, audio: Tensor | None, text: Tensor | None, caption_to_clip: Tensor,
                  clip_ids: Sequence[str], captions: Sequence[str], **fields: Any) -> FeatureSet:
        """A table from captions listed flat, in text row order (M), with their clip rows (M,)
        (the layout of a saved FeatureSet and of ``diffatr.data.datasets.SplitData``)."""
        owners = torch.as_tensor(caption_to_clip)
        n = len(clip_ids)
        if owners.ndim != 1 or owners.shape[0] != len(captions):
            raise cls.error(f"caption_to_clip must be ({len(captions)},), one clip row per caption, got "
                            f"{tuple(owners.shape)}")
        if len(owners) and (int(owners.min()) < 0 or int(owners.max()) >= n):
            raise cls.error("caption_to_clip points outside the clips")
        per_clip: list[list[str]] = [[] for _ in range(n)]
        for caption, clip in zip(captions, owners.tolist()):
            per_clip[clip].append(caption)
        return cls(audio_features=audio, clip_ids=list(clip_ids), captions=per_clip, text_features=text,
                   caption_to_clip=owners, **fields)

    def save(self, folder: str | Path) -> Path:
        """Write ``features.safetensors`` + ``features.json`` into ``folder`` (replaced atomically)."""
        if self.audio_features is None or self.text_features is None:
            raise FeatureError("only embedded clips (audio and caption features) can be saved as a FeatureSet")
        info = {"format_version": FORMAT_VERSION, "clip_ids": self.clip_ids, "captions": self.flat_captions,
                "paths": self.paths, "skipped": [list(s) for s in self.skipped], "encoders": self.encoders,
                "sound_keys": self.sound_keys}
        if any(self.metadata):
            info["metadata"] = self.metadata
        tensors = {"audio": self.audio_features, "text": self.text_features, "caption_to_clip": self.caption_to_clip}
        with atomic_directory(folder) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / FEATURES_FILE))
            (tmp / INFO_FILE).write_text(json.dumps(info))
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> FeatureSet:
        folder = Path(folder)
        try:
            info = json.loads((folder / INFO_FILE).read_text())
            tensors = load_file(str(folder / FEATURES_FILE))
        except FileNotFoundError as err:
            raise FeatureError(f"{folder} is not a saved FeatureSet ({err.filename} is missing)") from err
        except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as err:
            raise FeatureError(f"the features in {folder} are damaged ({err}); compute them again") from err
        if info.get("format_version") != FORMAT_VERSION:
            raise FeatureError(f"{folder}: feature format {info.get('format_version')} is not supported")
        return cls.from_flat(audio=tensors["audio"], text=tensors["text"], caption_to_clip=tensors["caption_to_clip"],
                             clip_ids=list(info["clip_ids"]), captions=list(info["captions"]),
                             paths=list(info["paths"]), metadata=info.get("metadata"),
                             skipped=[tuple(s) for s in info.get("skipped", [])], encoders=info.get("encoders", {}),
                             sound_keys=list(info.get("sound_keys", [])))


def _encoder_key(config: dict[str, Any]) -> dict[str, Any]:
    """The text cache's key: the whole encoder config but download permission (stricter than
    ``diffatr.encoders.identity``: see there)."""
    return {k: v for k, v in config.items() if k != "allow_download"}


# ----------------------------------------------------------------------------- text cache


class TextFeatureCache:
    """Caption features under one text encoder config, in one safetensors file.

    The file holds an (U, Dt) tensor and, in its metadata, the U captions as a JSON list. A
    lookup embeds only the captions not stored yet and rewrites the file atomically (two
    writers at once lose nothing but work: the missing rows are recomputed next time).

    Args:
        root: the cache folder.
        encoder_config: the text encoder config as a dict; part of the file name.
    """

    def __init__(self, root: str | Path, encoder_config: dict[str, Any]):
        self.path = Path(root) / f"text-{config_digest(_encoder_key(encoder_config))}.safetensors"
        self.hits = 0
        self.misses = 0

    def _read(self) -> tuple[list[str], Tensor | None]:
        if not self.path.is_file():
            return [], None
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                captions = json.loads((handle.metadata() or {})["captions"])
                features = handle.get_tensor("features")
        except (SafetensorError, KeyError, OSError, json.JSONDecodeError):
            return [], None  # damaged: recomputed and overwritten
        if not isinstance(captions, list) or len(captions) != features.shape[0]:
            return [], None
        return captions, features

    def get_or_compute(self, captions: Sequence[str], encode: Callable[[list[str]], Tensor]) -> Tensor:
        """Features of ``captions`` (M, Dt), calling ``encode(missing)`` for unseen ones only."""
        stored, features = self._read()
        row = {caption: i for i, caption in enumerate(stored)}
        missing = sorted({c for c in captions if c not in row})
        self.misses += len(missing)
        self.hits += sum(1 for c in captions if c in row)
        if missing:
            new = encode(missing).detach().float().cpu()  # (U', Dt)
            features = new if features is None else torch.cat([features, new])
            for caption in missing:
                row[caption] = len(stored)
                stored.append(caption)
            payload = save({"features": features.contiguous()}, metadata={"captions": json.dumps(stored)})
            atomic_write_bytes(self.path, payload)
        if not captions:
            return torch.zeros(0, 0 if features is None else features.shape[1])
        return features[torch.tensor([row[c] for c in captions], dtype=torch.long)]  # (M, Dt)


# ----------------------------------------------------------------------------- computing


def records_of(split: Any) -> list[ClipRecord]:
    """The ClipRecords of a split: a list of records, or anything with ``.records``."""
    records = getattr(split, "records", split)
    records = list(records)
    if not all(isinstance(r, ClipRecord) for r in records):
        raise FeatureError("a split must be ClipRecords (or an object with .records, e.g. load_split's result)")
    return records


class LazyEncoders:
    """The two backbones of a model config, each built on first use and then reused.

    A split whose features are all cached never loads a backbone; several splits share one.

    Args:
        config: the model config naming both backbones (None: use the encoders given).
        device: where the backbones run.
        audio, text: ready encoders to use instead of building them.
    """

    def __init__(self, config: ModelConfig | None, device: str | torch.device = "cpu", audio: Any = None,
                 text: Any = None):
        self.config = config
        self.device = device
        self._audio = audio
        self._text = text

    @property
    def audio(self) -> Any:
        if self._audio is None:
            from diffatr.encoders.audio import build_audio_encoder

            self._audio = build_audio_encoder(self.config.audio).to(self.device)
        return self._audio

    @property
    def text(self) -> Any:
        if self._text is None:
            from diffatr.encoders.text import TextEncoder

            self._text = TextEncoder(self.config.text).to(self.device)
        return self._text


class NoUsableClipError(FeatureError):
    """Not one clip of the input could be embedded; ``skipped`` says why for each."""

    def __init__(self, message: str, skipped: list[tuple[str, str]]):
        super().__init__(message)
        self.skipped = skipped


def build_features(records: Iterable[ClipRecord], encoders: LazyEncoders, encoder_configs: dict[str, Any], *,
                   audio_cache: FeatureCache | None = None, text_cache: TextFeatureCache | None = None,
                   embed_text: bool = True, keep_uncaptioned: bool = False, strict: bool = False,
                   progress: bool = True, on_progress: Callable[[int, int], None] | None = None,
                   desc: str = "features", workers: int | None = None, ray_address: str | None = None) -> FeatureSet:
    """The one build loop: decode and embed every clip (through the feature cache), then its
    captions (through the caption cache), skipping what cannot be read with its reason.

    Files found in the cache are not decoded; the others are decoded and embedded by
    ``diffatr.extraction.Extractor`` (worker processes, blocks of several clips per forward
    pass), streamed in order, and each is written to the cache as soon as it is done: a run
    that is interrupted and started again continues where it stopped, and says so.

    ``diffatr index`` (``diffatr.indexing.build_index``) and training / evaluation features
    (``compute_features``) both come through here.

    Args:
        records: the clips (path + captions + metadata).
        encoders: the backbones (``.audio.embed_file(path) -> (Da,)``, ``.text.encode(list) -> (M, Dt)``),
            built on first use when lazy.
        encoder_configs: ``{"audio": dict, "text": dict}`` stored with the table.
        audio_cache: per-file audio feature cache (None: embed every file).
        text_cache: caption feature cache (None: embed every caption).
        embed_text: embed the captions (False: ``text_features`` is None, an audio-only table).
        keep_uncaptioned: keep clips without captions (an index may search them) instead of
            skipping them with "no captions".
        strict: raise on the first unusable clip (in record order) instead of skipping it.
        progress: show tqdm bars.
        on_progress: called as ``on_progress(done, total)`` after every clip (the app's bar).
        desc: the bars' label.
        workers: worker processes that decode and embed (0: this process; None: one per core
            when there are enough files and the audio encoder is an ``AudioEncoder`` on the CPU);
            with ``ray_address``, Ray actors (None: one per CPU of the cluster).
        ray_address: embed on this Ray cluster instead (``diffatr.cluster.RayExtractor``).

    Returns:
        A FeatureSet (tensors on the CPU); ``skipped`` lists the clips left out.

    Raises:
        FeatureError: (strict) an unusable clip.
        NoUsableClipError: no clip could be used.
    """
    records = list(records)
    reasons = {i: "no captions" for i, r in enumerate(records) if not (r.captions or keep_uncaptioned)}
    wanted = [i for i in range(len(records)) if i not in reasons]
    rows, groups = _cached_rows(records, wanted, audio_cache, progress, desc)  # record -> (Da,), content -> records
    bar = _BuildProgress(len(records), sum(len(g) for g in groups.values()), progress, on_progress, desc)
    if audio_cache is not None and rows and groups:
        bar.write(f"{desc}: {len(rows)} of {len(wanted)} clips are already in the feature cache "
                  f"({audio_cache.root}), from an earlier or interrupted run; embedding the other {bar.to_embed}")
    uncaptioned = sorted(reasons)

    def raise_if_strict(known_before: float, failed: int | None = None) -> None:
        # strict: the first unusable clip in record order raises, once every clip before it is known
        unusable = [i for i in uncaptioned[:1] if i < known_before] + ([] if failed is None else [failed])
        if strict and unusable:
            first = min(unusable)
            raise FeatureError(f"{records[first].path}: {reasons[first]} (strict mode: fix or remove this clip)")

    if groups:
        with contextlib.closing(_embed_uncached(records, groups, encoders.audio, audio_cache=audio_cache,
                                                workers=workers, ray_address=ray_address)) as embedded:
            for members, result in embedded:  # every record before members[0] is known by now
                if isinstance(result, str):
                    reasons.update((i, result) for i in members)
                    raise_if_strict(members[0], failed=members[0])
                else:
                    raise_if_strict(members[0])
                    rows.update((i, result.reshape(-1).float()) for i in members)
                bar.update(len(members))
    raise_if_strict(float("inf"))
    bar.close()
    return _feature_set(records, rows, reasons, encoders, encoder_configs, text_cache=text_cache,
                        embed_text=embed_text, progress=progress, desc=desc)


def _cached_rows(records: list[ClipRecord], wanted: list[int], audio_cache: FeatureCache | None, progress: bool,
                 desc: str) -> tuple[dict[int, Tensor], dict[str, list[int]]]:
    """The wanted records' features found in the cache (record -> (Da,)), and the others grouped
    by file content (the cache key), so that a file held twice is embedded once; a file that
    cannot even be hashed gets a group of its own and is left to the decoder's message."""
    rows: dict[int, Tensor] = {}
    groups: dict[str, list[int]] = {}
    lookups = tqdm(wanted, desc=f"{desc}: feature cache", unit="file", leave=False,
                   disable=not progress or audio_cache is None)
    for i in lookups:
        key = f"record:{i}"
        if audio_cache is not None:
            try:
                key = file_sha256(records[i].path)
            except OSError:
                pass
            else:
                cached = audio_cache.get(key)
                if cached is not None:
                    audio_cache.hits += 1
                    rows[i] = cached.reshape(-1).float()
                    continue
        groups.setdefault(key, []).append(i)
    return rows, groups


class _BuildProgress:
    """The clips bar (clips per second and an ETA, from tqdm) and the app's ``on_progress``."""

    def __init__(self, total: int, to_embed: int, progress: bool, on_progress: Callable[[int, int], None] | None,
                 desc: str):
        self.total, self.to_embed, self.done, self.on_progress = total, to_embed, total - to_embed, on_progress
        self.show = progress
        self.bar = tqdm(total=total, initial=self.done, desc=desc, unit="clip", disable=not progress, smoothing=0.05)
        if on_progress is not None and total:
            on_progress(self.done, total)

    def write(self, message: str) -> None:
        if self.show:
            self.bar.write(message, file=sys.stderr)

    def update(self, clips: int) -> None:
        self.bar.update(clips)
        self.done += clips
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)

    def close(self) -> None:
        self.bar.close()


def _embed_uncached(records: list[ClipRecord], groups: dict[str, list[int]], encoder: Any, *,
                    audio_cache: FeatureCache | None, workers: int | None,
                    ray_address: str | None) -> Iterator[tuple[list[int], Tensor | str]]:
    """Decode and embed one file of each group (worker processes, or Ray actors with
    ``ray_address``), in group order: yields ``(members, (Da,) features or why it failed)``.
    Each result is written to the cache at once, so an interrupted run resumes from there."""
    from diffatr.extraction import Extractor, default_workers  # the audio stack, only when there is audio to embed

    if ray_address is not None:
        from diffatr.cluster import RayExtractor

        extractor = RayExtractor(encoder, ray_address, workers=workers or None)
    else:
        extractor = Extractor(encoder, default_workers(len(groups), encoder) if workers is None else workers)
    with extractor, contextlib.closing(extractor.map(records[m[0]].path for m in groups.values())) as results:
        for (key, members), result in zip(groups.items(), results):
            if not isinstance(result, str) and audio_cache is not None and not key.startswith("record:"):
                audio_cache.put(key, result)
                audio_cache.misses += 1
                audio_cache.hits += len(members) - 1
            yield members, result


def _feature_set(records: list[ClipRecord], rows: dict[int, Tensor], reasons: dict[int, str],
                 encoders: LazyEncoders, encoder_configs: dict[str, Any], *, text_cache: TextFeatureCache | None,
                 embed_text: bool, progress: bool, desc: str) -> FeatureSet:
    """The table of the kept records (in record order) with their captions' features."""
    kept = [records[i] for i in sorted(rows)]
    skipped = [(records[i].path, reasons[i]) for i in sorted(reasons)]
    if not kept:
        why = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:3])
        raise NoUsableClipError(f"no usable clip among {len(records)} ({why})" if records else "the split is empty",
                                skipped)
    captions = [list(r.captions) for r in kept]
    text = _caption_features(captions, encoders, text_cache, progress, desc) if embed_text else None
    ids, metadata = [r.clip_id for r in kept], [r.metadata for r in kept]
    return FeatureSet(
        audio_features=torch.stack([rows[i] for i in sorted(rows)]), clip_ids=ids, paths=[r.path for r in kept],
        captions=captions, text_features=text,
        metadata=[dict(r.metadata, **({"split": r.split} if r.split else {})) for r in kept],
        encoders={"audio": encoder_configs["audio"], "text": encoder_configs.get("text") if text is not None else None},
        sound_keys=sound_keys(ids, metadata), skipped=skipped)


def _caption_features(captions: list[list[str]], encoders: LazyEncoders, text_cache: TextFeatureCache | None,
                      progress: bool, desc: str) -> Tensor | None:
    """(M, Dt) features of every caption, in clip order (through the caption cache), or None
    when there is no caption."""
    flat = [c for cs in captions for c in cs]  # (M,) in clip order
    if not flat:
        return None

    def encode(texts: list[str], chunk: int = 256) -> Tensor:
        encoder = encoders.text
        parts = [encoder.encode(texts[i : i + chunk]).detach().float().cpu()
                 for i in tqdm(range(0, len(texts), chunk), desc=f"{desc} (text)", unit="batch",
                               disable=not progress)]
        return torch.cat(parts)  # (M, Dt)

    return text_cache.get_or_compute(flat, encode) if text_cache is not None else encode(flat)


def compute_features(
    records: Iterable[ClipRecord],
    config: ModelConfig,
    *,
    cache_dir: str | Path | None = None,
    encoders: LazyEncoders | None = None,
    device: str | torch.device = "cpu",
    strict: bool = False,
    progress: bool = True,
    desc: str = "features",
) -> FeatureSet:
    """Backbone features of every captioned clip in ``records`` (``build_features`` with the
    model config's backbones and the on-disk caches).

    Clips without captions, and audio that cannot be read (``AudioError``, ``OSError``), are
    listed in ``skipped`` (and warned about) and left out; with ``strict=True`` they raise instead.

    Args:
        records: the clips (path + captions).
        config: the model config naming both backbones.
        cache_dir: feature cache folder (None: no caching, everything is embedded).
        encoders: backbones to use (shared between splits); default: built from ``config``
            on ``device`` at the first cache miss, so a fully cached split loads none.
        device: where backbones built here run.
        strict: raise on the first unusable clip instead of skipping it.
        progress: show tqdm bars.
        desc: the bars' label.

    Returns:
        A FeatureSet (tensors on the CPU).

    Raises:
        FeatureError: no usable clip, or (strict) an unusable one.
    """
    encoder_configs = {"audio": asdict(config.audio), "text": asdict(config.text)}
    # Same layout as ``diffatr index`` (diffatr.indexing): one cache serves indexing and training.
    caches = {}
    if cache_dir is not None:
        caches = {"audio_cache": FeatureCache(Path(cache_dir), encoder_configs["audio"]),
                  "text_cache": TextFeatureCache(Path(cache_dir), encoder_configs["text"])}
    features = build_features(records, encoders or LazyEncoders(config, device), encoder_configs, **caches,
                              strict=strict, progress=progress, desc=desc)
    if features.skipped:
        skipped = features.skipped
        warnings.warn(f"{len(skipped)} clip(s) skipped while computing features (first: "
                      f"{skipped[0][0]}: {skipped[0][1]})", stacklevel=2)
    return features


def mixture_features(recipes: Iterable[Any], clip_paths: dict[str, str | Path], config: ModelConfig, *,
                     encoders: LazyEncoders | None = None, device: str | torch.device = "cpu",
                     progress: bool = True) -> FeatureSet:
    """Backbone features of rendered two-clip mixtures (``diffatr.corpus.mixtures`` recipes).

    Each mixture is rendered at the audio encoder's rate from its clips (``clip_paths``:
    clip id -> file) and embedded like a clip; its compositional captions are its captions.
    Each mixture is its own sound (key ``mixture:<id>``). Not cached: rendering is cheap and
    the recipes are few.

    Raises:
        FeatureError: no recipe given.
        MixtureError / AudioError: a recipe names an unknown or unreadable clip.
    """
    from diffatr.corpus.mixtures import render_mixture

    recipes = list(recipes)
    if not recipes:
        raise FeatureError("no mixture recipes to embed")
    encoders = encoders or LazyEncoders(config, device)
    rate = encoders.audio.sample_rate
    audio = [encoders.audio.embed_waveform(render_mixture(r, clip_paths, rate), rate).detach().float().cpu().reshape(-1)
             for r in tqdm(recipes, desc="mixture features", unit="mix", disable=not progress)]
    captions = [list(r.captions) for r in recipes]
    with torch.no_grad():
        text = encoders.text.encode([c for cs in captions for c in cs]).float().cpu()  # (M, Dt)
    return FeatureSet(audio_features=torch.stack(audio), clip_ids=[r.mix_id for r in recipes],
                      paths=[r.mix_id for r in recipes], captions=captions, text_features=text,
                      encoders={"audio": asdict(config.audio), "text": asdict(config.text)},
                      sound_keys=[f"mixture:{r.mix_id}" for r in recipes])
