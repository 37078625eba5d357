"""Build a RetrievalIndex from audio files and their captions (the I/O side of indexing).

Each file is decoded and embedded by the audio backbone (through the feature cache, so a file
is embedded once per backbone config); captions are embedded by the text backbone (through the
caption cache). The loop is ``diffatr.features.build_features``, the one that also computes
training and evaluation features. A file that cannot be read is listed with its reason and
skipped: indexing never stops on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from diffatr.audio.io import AudioError
from diffatr.data.manifest import ClipRecord
from diffatr.encoders.cache import FeatureCache
from diffatr.features import (
    LazyEncoders,
    NoUsableClipError,
    TextFeatureCache,
    build_features,
)
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
    workers: int | None = None,
    ray_address: str | None = None,
) -> tuple[RetrievalIndex, IndexReport]:
    """Embed ``records`` into an index (``diffatr.features.build_features``, the loop training
    and evaluation use, keeping clips without captions).

    Args:
        records: clips (path + captions) from a manifest or a folder.
        audio_encoder: an AudioEncoder (``embed_file(path) -> (Da,)`` and ``config``).
        text_encoder: a TextEncoder for the captions; ``None`` indexes audio only.
        cache: feature cache for the frozen audio backbone (``None``: no caching); the
            captions' cache lies in the same folder.
        progress: show a tqdm bar.
        on_progress: called as ``on_progress(done, total)`` after every file (the app's bar).
        workers: worker processes that decode and embed (``diffatr.extraction``); 0: this
            process; None: one per core when the folder is large enough. With ``ray_address``:
            Ray actors (None: one per CPU of the cluster).
        ray_address: shard the audio embedding over this Ray cluster (``diffatr.cluster``).
    Returns:
        The index and a report of skipped files.
    Raises:
        AudioError: when no file at all could be indexed.
    """
    configs = encoders_from_configs(audio_encoder.config, None if text_encoder is None else text_encoder.config)
    text_cache = None
    if cache is not None and text_encoder is not None:
        text_cache = TextFeatureCache(cache.root.parent, configs["text"])  # beside the audio features
    try:
        table = build_features(records, LazyEncoders(None, audio=audio_encoder, text=text_encoder), configs,
                               audio_cache=cache, text_cache=text_cache, embed_text=text_encoder is not None,
                               keep_uncaptioned=True, progress=progress, on_progress=on_progress, desc="indexing",
                               workers=workers, ray_address=ray_address)
    except NoUsableClipError as err:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in err.skipped[:3])
        raise AudioError(f"no audio file could be indexed ({len(records)} tried). {reasons}") from err
    table.paths = [str(Path(p).resolve()) for p in table.paths]
    report = IndexReport(indexed=table.num_clips, skipped=list(table.skipped),
                         cache_hits=cache.hits if cache is not None else 0)
    return RetrievalIndex.from_features(table), report
