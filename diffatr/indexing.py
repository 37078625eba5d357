"""Build a RetrievalIndex from audio files and their captions (the I/O side of indexing).

Each file is decoded and embedded by the audio backbone (through the feature cache, so a file
is embedded once per backbone config); captions are embedded by the text backbone. A file that
cannot be read is listed with its reason and skipped: indexing never stops on bad input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from diffatr.audio.io import AudioError
from diffatr.data.manifest import ClipRecord
from diffatr.encoders.cache import FeatureCache
from diffatr.retrieval.index import RetrievalIndex, encoders_from_configs


@dataclass
class IndexReport:
    """What happened while indexing: how many clips went in, which files were skipped and why."""

    indexed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    cache_hits: int = 0


def default_cache_dir() -> Path:
    import os

    root = os.environ.get("DIFFATR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "diffatr")
    return Path(root) / "features"


def build_index(
    records: Sequence[ClipRecord],
    audio_encoder: Any,
    text_encoder: Any | None = None,
    cache: FeatureCache | None = None,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[RetrievalIndex, IndexReport]:
    """Embed ``records`` into an index.

    Args:
        records: clips (path + captions) from a manifest or a folder.
        audio_encoder: an AudioEncoder (``embed_file(path) -> (Da,)`` and ``config``).
        text_encoder: a TextEncoder for the captions; ``None`` indexes audio only.
        cache: feature cache for the frozen audio backbone (``None``: no caching).
        progress: show a tqdm bar.
        on_progress: called as ``on_progress(done, total)`` after every file (the app's bar).
    Returns:
        The index and a report of skipped files.
    Raises:
        AudioError: when no file at all could be indexed.
    """
    report = IndexReport()
    features, kept = [], []
    bar = tqdm(records, desc="indexing", unit="file", disable=not progress)
    for done, record in enumerate(bar, 1):
        try:
            if cache is not None:
                feats = cache.get_or_compute(record.path, audio_encoder.embed_file)
            else:
                feats = audio_encoder.embed_file(record.path)
        except (AudioError, OSError) as err:
            report.skipped.append((record.path, str(err)))
        else:
            features.append(feats.reshape(-1).float())
            kept.append(record)
        if on_progress is not None:
            on_progress(done, len(records))
    if cache is not None:
        report.cache_hits = cache.hits
    if not kept:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in report.skipped[:3])
        raise AudioError(f"no audio file could be indexed ({len(records)} tried). {reasons}")
    report.indexed = len(kept)

    captions = [list(r.captions) for r in kept]
    flat = [c for cs in captions for c in cs]
    text_features = None
    if text_encoder is not None and flat:
        text_features = text_encoder.encode(flat)
    index = RetrievalIndex(
        audio_features=torch.stack(features),
        clip_ids=[r.clip_id for r in kept],
        paths=[str(Path(r.path).resolve()) for r in kept],
        captions=captions,
        text_features=text_features,
        metadata=[dict(r.metadata, **({"split": r.split} if r.split else {})) for r in kept],
        encoders=encoders_from_configs(
            asdict(audio_encoder.config),
            asdict(text_encoder.config) if text_encoder is not None and flat else None,
        ),
    )
    return index, report
