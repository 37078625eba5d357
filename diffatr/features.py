"""Frozen-backbone features of a data split, computed once and cached on disk.

Owns ``FeatureSet`` (audio (N, Da), text (M, Dt), caption_to_clip (M,) and the ids behind
them) with its save/load, the caption cache ``TextFeatureCache``, and ``compute_features``:
audio goes through ``encoders.cache.FeatureCache`` (keyed by file hash + encoder config),
captions through ``TextFeatureCache`` (keyed by caption text + text encoder config), and a
backbone is built only when something misses the cache. Training and evaluation read
FeatureSets; they never embed files themselves.

Shape legend: N clips, M captions, Da audio feature width, Dt text feature width.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save, save_file
from torch import Tensor
from tqdm.auto import tqdm

from diffatr.audio.io import AudioError
from diffatr.config import ModelConfig
from diffatr.data.manifest import ClipRecord
from diffatr.data.sounds import sound_keys, sound_units
from diffatr.encoders.cache import FeatureCache, config_digest
from diffatr.encoders.identity import encoder_mismatches
from diffatr.errors import DiffatrError
from diffatr.fileio import atomic_directory, atomic_write_bytes

__all__ = ["FeatureError", "FeatureSet", "LazyEncoders", "TextFeatureCache", "compute_features", "records_of"]

FEATURES_FILE = "features.safetensors"
INFO_FILE = "features.json"
FORMAT_VERSION = 1


class FeatureError(DiffatrError):
    """Features that cannot be computed or used (no usable clip, mismatched encoders, damage)."""


@dataclass
class FeatureSet:
    """Backbone features of one split: clip n has audio row n; caption m belongs to clip
    ``caption_to_clip[m]``.

    Attributes:
        audio: (N, Da) float32 audio backbone features.
        text: (M, Dt) float32 text backbone features.
        caption_to_clip: (M,) int64 clip row of each caption.
        clip_ids: N clip ids.
        captions: M captions (the text that was embedded).
        paths: N audio paths.
        skipped: (path, reason) of each clip left out (unreadable audio, no captions).
        encoders: {"audio": AudioEncoderConfig dict, "text": TextEncoderConfig dict}.
        sound_keys: N sound keys (``diffatr.data.sounds``; None = unknown), or empty when
            none were recorded.
    """

    audio: Tensor
    text: Tensor
    caption_to_clip: Tensor
    clip_ids: list[str]
    captions: list[str]
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    encoders: dict[str, Any] = field(default_factory=dict)
    sound_keys: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n, m = len(self.clip_ids), len(self.captions)
        if self.sound_keys and len(self.sound_keys) != n:
            raise FeatureError(f"sound_keys must hold one key per clip ({n}), got {len(self.sound_keys)}")
        if self.audio.ndim != 2 or self.audio.shape[0] != n or len(self.paths) != n:
            raise FeatureError(f"audio must be (N, Da) with N = {n} clip ids and paths, got "
                               f"{tuple(self.audio.shape)} and {len(self.paths)} paths")
        if self.text.ndim != 2 or self.text.shape[0] != m:
            raise FeatureError(f"text must be (M, Dt) with M = {m} captions, got {tuple(self.text.shape)}")
        if tuple(self.caption_to_clip.shape) != (m,) or self.caption_to_clip.dtype != torch.int64:
            raise FeatureError(f"caption_to_clip must be ({m},) int64, got {tuple(self.caption_to_clip.shape)} "
                               f"{self.caption_to_clip.dtype}")
        if m and (int(self.caption_to_clip.min()) < 0 or int(self.caption_to_clip.max()) >= n):
            raise FeatureError("caption_to_clip points outside the clips")

    @property
    def num_clips(self) -> int:
        return len(self.clip_ids)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    def sound_units(self) -> Tensor:
        """(N,) int64 sound unit of each clip (``diffatr.data.sounds.sound_units``): clips of
        one unit are never each other's negatives, and a hit on any of them is a unit-level hit."""
        return sound_units(self.num_clips, self.captions, self.caption_to_clip, self.sound_keys or None)

    def subset(self, clip_rows: Tensor | Sequence[int]) -> "FeatureSet":
        """These clips (in this order) with all their captions."""
        rows = [int(r) for r in torch.as_tensor(clip_rows).tolist()]
        new_row = {old: new for new, old in enumerate(rows)}
        owners = self.caption_to_clip.tolist()
        keep = [m for m, clip in enumerate(owners) if clip in new_row]
        keep.sort(key=lambda m: (new_row[owners[m]], m))
        return FeatureSet(
            audio=self.audio[rows], text=self.text[keep],
            caption_to_clip=torch.tensor([new_row[owners[m]] for m in keep], dtype=torch.long),
            clip_ids=[self.clip_ids[r] for r in rows], captions=[self.captions[m] for m in keep],
            paths=[self.paths[r] for r in rows], skipped=list(self.skipped), encoders=dict(self.encoders),
            sound_keys=[self.sound_keys[r] for r in rows] if self.sound_keys else [])

    def concat(self, other: "FeatureSet") -> "FeatureSet":
        """These clips then ``other``'s, with their captions (both from the same encoders)."""
        if self.audio.shape[1] != other.audio.shape[1] or self.text.shape[1] != other.text.shape[1]:
            raise FeatureError(f"cannot join {self.audio.shape[1]}/{self.text.shape[1]}-d features with "
                               f"{other.audio.shape[1]}/{other.text.shape[1]}-d ones")
        if other.encoders and self.encoders and other.encoders != self.encoders:
            raise FeatureError("cannot join features computed with different encoder configs")
        if set(self.clip_ids) & set(other.clip_ids):
            raise FeatureError(f"the feature sets share clip ids (e.g. {sorted(set(self.clip_ids) & set(other.clip_ids))[0]})")
        keys = (list(self.sound_keys) or [None] * self.num_clips) + (list(other.sound_keys) or [None] * other.num_clips)
        return FeatureSet(
            audio=torch.cat([self.audio, other.audio]), text=torch.cat([self.text, other.text]),
            caption_to_clip=torch.cat([self.caption_to_clip, other.caption_to_clip + self.num_clips]),
            clip_ids=[*self.clip_ids, *other.clip_ids], captions=[*self.captions, *other.captions],
            paths=[*self.paths, *other.paths], skipped=[*self.skipped, *other.skipped],
            encoders=dict(self.encoders or other.encoders),
            sound_keys=keys if any(k is not None for k in keys) else [])

    def digest(self) -> str:
        """A short fingerprint of the features and ids (a resumed run checks it is unchanged)."""
        h = hashlib.sha256()
        for tensor in (self.audio, self.text, self.caption_to_clip):
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        h.update(json.dumps([self.clip_ids, self.captions]).encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """JSON-able facts for logs and checkpoints."""
        return {"num_clips": self.num_clips, "num_captions": self.num_captions,
                "num_skipped": len(self.skipped), "digest": self.digest()}

    def check_encoders(self, config: ModelConfig) -> None:
        """Raise FeatureError if these features cannot feed a model built from ``config``."""
        if self.audio.shape[1] != config.audio.embed_dim or self.text.shape[1] != config.text.embed_dim:
            raise FeatureError(
                f"features are {self.audio.shape[1]}-d audio / {self.text.shape[1]}-d text, but the model "
                f"expects {config.audio.embed_dim} / {config.text.embed_dim}; recompute them with this config"
            )
        for name, wanted in (("audio", asdict(config.audio)), ("text", asdict(config.text))):
            problems = encoder_mismatches(self.encoders.get(name), wanted, name)  # the one rule
            if problems:
                raise FeatureError(f"the {name} features were computed with another {name} encoder than the "
                                   f"model's ({'; '.join(problems)}); recompute them with this config")

    def save(self, folder: str | Path) -> Path:
        """Write ``features.safetensors`` + ``features.json`` into ``folder`` (replaced atomically)."""
        info = {"format_version": FORMAT_VERSION, "clip_ids": self.clip_ids, "captions": self.captions,
                "paths": self.paths, "skipped": [list(s) for s in self.skipped], "encoders": self.encoders,
                "sound_keys": self.sound_keys}
        tensors = {"audio": self.audio, "text": self.text, "caption_to_clip": self.caption_to_clip}
        with atomic_directory(folder) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / FEATURES_FILE))
            (tmp / INFO_FILE).write_text(json.dumps(info))
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "FeatureSet":
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
        return cls(audio=tensors["audio"], text=tensors["text"], caption_to_clip=tensors["caption_to_clip"],
                   clip_ids=list(info["clip_ids"]), captions=list(info["captions"]), paths=list(info["paths"]),
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
        config: the model config naming both backbones.
        device: where the backbones run.
        audio, text: ready encoders to use instead of building them.
    """

    def __init__(self, config: ModelConfig, device: str | torch.device = "cpu", audio: Any = None,
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
    """Backbone features of every captioned clip in ``records``.

    Clips without captions, and audio that cannot be read (``AudioError``, ``OSError``), are
    listed in ``skipped`` and left out; with ``strict=True`` they raise instead.

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
    records = list(records)
    encoders = encoders or LazyEncoders(config, device)
    encoder_configs = {"audio": asdict(config.audio), "text": asdict(config.text)}

    def embed(path: Path) -> Tensor:
        return encoders.audio.embed_file(path).detach().float().cpu()

    # Same layout as ``diffatr index`` (diffatr.indexing): one cache serves indexing and training.
    audio_cache = FeatureCache(Path(cache_dir), encoder_configs["audio"]) if cache_dir is not None else None
    skipped: list[tuple[str, str]] = []
    kept: list[ClipRecord] = []
    rows: list[Tensor] = []
    for record in tqdm(records, desc=desc, unit="clip", disable=not progress):
        if not record.captions:
            reason = "no captions"
        else:
            try:
                feats = audio_cache.get_or_compute(record.path, embed) if audio_cache else embed(Path(record.path))
            except (AudioError, OSError) as err:
                reason = str(err) or type(err).__name__
            else:
                rows.append(feats.reshape(-1).float())
                kept.append(record)
                continue
        if strict:
            raise FeatureError(f"{record.path}: {reason} (strict mode: fix or remove this clip)")
        skipped.append((record.path, reason))
    if not kept:
        why = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:3])
        raise FeatureError(f"no usable clip among {len(records)} ({why})" if records else "the split is empty")
    if skipped:
        warnings.warn(f"{len(skipped)} clip(s) skipped while computing features (first: "
                      f"{skipped[0][0]}: {skipped[0][1]})", stacklevel=2)

    captions = [c for r in kept for c in r.captions]
    owner = torch.tensor([i for i, r in enumerate(kept) for _ in r.captions], dtype=torch.long)  # (M,)

    def encode(texts: list[str], chunk: int = 256) -> Tensor:
        encoder = encoders.text
        parts = [encoder.encode(texts[i : i + chunk]).float().cpu()
                 for i in tqdm(range(0, len(texts), chunk), desc=f"{desc} (text)", unit="batch",
                               disable=not progress)]
        return torch.cat(parts)  # (M, Dt)

    if cache_dir is not None:
        text = TextFeatureCache(Path(cache_dir), encoder_configs["text"]).get_or_compute(captions, encode)
    else:
        text = encode(captions)
    return FeatureSet(audio=torch.stack(rows), text=text, caption_to_clip=owner,
                      clip_ids=[r.clip_id for r in kept], captions=captions, paths=[r.path for r in kept],
                      skipped=skipped, encoders=encoder_configs,
                      sound_keys=sound_keys([r.clip_id for r in kept], [r.metadata for r in kept]))


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
    captions = [c for r in recipes for c in r.captions]
    owner = torch.tensor([i for i, r in enumerate(recipes) for _ in r.captions], dtype=torch.long)  # (M,)
    with torch.no_grad():
        text = encoders.text.encode(captions).float().cpu()  # (M, Dt)
    return FeatureSet(audio=torch.stack(audio), text=text, caption_to_clip=owner,
                      clip_ids=[r.mix_id for r in recipes], captions=captions, paths=[r.mix_id for r in recipes],
                      encoders={"audio": asdict(config.audio), "text": asdict(config.text)},
                      sound_keys=[f"mixture:{r.mix_id}" for r in recipes])
