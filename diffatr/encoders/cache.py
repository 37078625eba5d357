"""On-disk cache of frozen-backbone features, keyed by file content and encoder config.

A frozen backbone is the costly part of indexing and of phase-2 training; its output for a
given file never changes, so it is computed once. Keys are the sha256 of the file's bytes and
of the encoder config's JSON: renaming a file keeps its entry, changing a setting misses.
Entries are small safetensors files written atomically; a damaged entry is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from diffatr.fileio import atomic_write_bytes


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def config_digest(config: Any) -> str:
    """A short stable digest of a JSON-able config (a dict or a dataclass as dict)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


class FeatureCache:
    """Features of files under one encoder config.

    Args:
        root: cache folder (created on first write).
        encoder_config: a JSON-able dict describing the encoder; part of every key.
    """

    def __init__(self, root: str | Path, encoder_config: dict[str, Any]):
        self.root = Path(root) / config_digest(encoder_config)
        self.hits = 0
        self.misses = 0

    def _entry(self, file_hash: str) -> Path:
        return self.root / file_hash[:2] / f"{file_hash}.safetensors"

    def get(self, file_hash: str) -> torch.Tensor | None:
        entry = self._entry(file_hash)
        if not entry.is_file():
            return None
        try:
            return load(entry.read_bytes())["features"]
        except (SafetensorError, KeyError, OSError):
            return None  # a damaged entry is recomputed and overwritten

    def put(self, file_hash: str, features: torch.Tensor) -> None:
        atomic_write_bytes(self._entry(file_hash), save({"features": features.detach().cpu().contiguous()}))

    def get_or_compute(self, path: str | Path, compute: Callable[[Path], torch.Tensor]) -> torch.Tensor:
        """Cached features of ``path``, computing and storing them on a miss."""
        file_hash = file_sha256(path)
        cached = self.get(file_hash)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        features = compute(Path(path))
        self.put(file_hash, features)
        return features
