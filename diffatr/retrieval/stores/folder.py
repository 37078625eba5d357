"""An index folder's first-stage stores: built once per (index, checkpoint), found by search.

The stores (``diffatr.retrieval.stores.backends``) hold the index's clips and captions in the shared
space of one checkpoint (its heads project the backbone features), under ids = the index's row
numbers. They live beside the index, in ``DIR/first_stage/``:

    first_stage.json               backend config, checkpoint sha256, row counts, similar space
    text_to_audio/                 the clips' store (candidates of text queries)
    audio_to_text/                 the captions' store (candidates of audio queries)
    audio_to_audio/                the clips in the similar-sound space (``diffatr.retrieval.similar``)

``attach`` returns the stores that fit a model and an index, or None (with the reason) so that
search falls back to exact cosine instead of answering from a store built for other weights.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from diffatr.fileio import atomic_write_text
from diffatr.retrieval.similar import similar_embeddings
from diffatr.retrieval.stores.backends import BackendError, StoreConfig, VectorStore, build_store, load_store

FOLDER = "first_stage"
INFO_FILE = "first_stage.json"
DIRECTIONS = ("text_to_audio", "audio_to_text", "audio_to_audio")
CLIP_STORES = ("text_to_audio", "audio_to_audio")  # one row per clip (the others: per caption)


def weights_digest(model: Any) -> str:
    """A fingerprint of the weights a store's vectors came from (heads included)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(("text_head.", "audio_head.")):  # the projections into the shared space
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def _embeddings(model: Any, index: Any) -> dict[str, torch.Tensor]:
    out = {"text_to_audio": F.normalize(model.project_audio(index.audio_features.float()), dim=-1)}
    if index.text_features is not None and index.num_captions:
        out["audio_to_text"] = F.normalize(model.project_text(index.text_features.float()), dim=-1)
    # Similar sounds, in the space the checkpoint searches them by default (recorded in the info).
    out["audio_to_audio"] = similar_embeddings(model, index.audio_features, model.config.retrieval.similar_space)
    return out


def build(index_dir: str | Path, index: Any, model: Any, config: StoreConfig) -> dict[str, Any]:
    """Build (or rebuild) the first-stage stores of ``index`` (saved in ``index_dir``) for ``model``.

    Returns:
        The description written to ``first_stage.json``.
    """
    root = Path(index_dir) / FOLDER
    counts = {}
    for direction, vectors in _embeddings(model, index).items():
        store = build_store(config, vectors, torch.arange(vectors.shape[0]))
        store.save(root / direction)
        counts[direction] = int(vectors.shape[0])
    for stale in DIRECTIONS:  # a side the index no longer has
        if stale not in counts:
            shutil.rmtree(root / stale, ignore_errors=True)
    info = {"backend": config.backend, "config": vars(config), "weights": weights_digest(model), "counts": counts,
            "similar_space": model.config.retrieval.similar_space}
    atomic_write_text(root / INFO_FILE, json.dumps(info, indent=1))
    return info


def append(index_dir: str | Path, old_count: dict[str, int], index: Any, model: Any) -> dict[str, Any]:
    """Add the rows an index gained at its end to its stores (``diffatr index --add``).

    Raises:
        BackendError: no stores, or stores built for other weights (rebuild them instead).
    """
    root = Path(index_dir) / FOLDER
    info = describe(index_dir)
    if info is None:
        raise BackendError(f"{index_dir} has no first-stage stores to add to")
    if info["weights"] != weights_digest(model):
        raise BackendError("the index's stores were built with other weights: rebuild them with --backend")
    if info.get("similar_space", model.config.retrieval.similar_space) != model.config.retrieval.similar_space:
        raise BackendError("the index's similar-sound store holds another space than the checkpoint's: rebuild the "
                           "stores with --backend")
    for direction, vectors in _embeddings(model, index).items():
        if direction not in info["counts"]:  # stores built before this side existed: built now, whole
            build_store(StoreConfig(**info["config"]), vectors, torch.arange(vectors.shape[0])).save(root / direction)
            info["counts"][direction] = int(vectors.shape[0])
            continue
        store = load_store(root / direction)
        # A clip store starts where the index's clips ended (the caller may name only text_to_audio).
        start = old_count.get(direction, old_count.get("text_to_audio", 0) if direction in CLIP_STORES else 0)
        if len(store) != start:
            raise BackendError(f"the {direction} store holds {len(store)} rows, the index had {start}: rebuild it")
        store.add(vectors[start:], torch.arange(start, vectors.shape[0]))
        store.save(root / direction)
        info["counts"][direction] = int(vectors.shape[0])
    info["similar_space"] = model.config.retrieval.similar_space
    atomic_write_text(root / INFO_FILE, json.dumps(info, indent=1))
    return info


def describe(index_dir: str | Path) -> dict[str, Any] | None:
    """The stores' description, or None when the index has none."""
    path = Path(index_dir) / FOLDER / INFO_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BackendError(f"{path} is damaged ({err}); rebuild the stores with `diffatr index --backend`") from None


def attach(index_dir: str | Path, index: Any, model: Any) -> tuple[dict[str, VectorStore] | None, str]:
    """The stores of ``index_dir`` that fit ``model`` and ``index``, or (None, why not).

    A missing or exact-backend folder gives (None, "") (exact search is the default). The
    similar-sound store is left out (searched exactly instead) when it holds another space than
    the checkpoint's default, or when the stores were built before it existed.
    """
    info = describe(index_dir)
    if info is None or info.get("backend") == "exact":
        return None, ""
    if info.get("weights") != weights_digest(model):
        return None, "its first-stage stores were built for other weights (searching exactly instead)"
    expected = {"text_to_audio": len(index), "audio_to_text": index.num_captions, "audio_to_audio": len(index)}
    stores = {}
    for direction, count in info.get("counts", {}).items():
        if count != expected.get(direction):
            return None, f"its {direction} store is out of date ({count} rows, the index has {expected[direction]})"
        if direction == "audio_to_audio" and info.get("similar_space") != model.config.retrieval.similar_space:
            continue
        stores[direction] = load_store(Path(index_dir) / FOLDER / direction)
    return stores, ""
