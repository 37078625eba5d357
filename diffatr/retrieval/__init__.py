"""Retrieval: the on-disk index of clip embeddings, and search (cosine top-K + diffusion re-rank)."""

from diffatr.retrieval.engine import (
    RerankResult,
    SearchEngine,
    SearchError,
    SearchHit,
    cosine_topk,
    full_fused_scores,
    rerank,
    rerank_topk,
    stable_topk,
    start_noise,
)
from diffatr.retrieval.index import (
    IndexFormatError,
    IndexMismatchError,
    RetrievalIndex,
    encoder_mismatches,
    encoders_from_configs,
)

__all__ = [
    "IndexFormatError",
    "IndexMismatchError",
    "RerankResult",
    "RetrievalIndex",
    "SearchEngine",
    "SearchError",
    "SearchHit",
    "cosine_topk",
    "encoder_mismatches",
    "encoders_from_configs",
    "full_fused_scores",
    "rerank",
    "rerank_topk",
    "stable_topk",
    "start_noise",
]
