"""Retrieval: the on-disk index, the first stage (exact top-K or a vector store), the diffusion
re-rank, the fusion rules, and the engine that wires them to a model.

Modules: ``index`` (embeddings + save/load), ``topk`` (exact cosine top-K), ``stores`` (FAISS /
Milvus / exact vector stores and an index folder's stores), ``rerank`` (the DDIM re-rank
pipeline and its full-matrix form for evaluation), ``fusion`` (scorers and fusion rules),
``trajectory`` (the view of a re-rank's DDIM path), ``engine`` (``SearchEngine`` and hits).
"""

from diffatr.retrieval.engine import SearchEngine, SearchHit, SearchResults, clean_query
from diffatr.retrieval.index import (
    IndexFormatError,
    IndexMismatchError,
    RetrievalIndex,
    encoder_mismatches,
    encoders_from_configs,
)
from diffatr.retrieval.rerank import (
    FullRerank,
    RerankResult,
    full_fused_scores,
    full_rerank,
    rerank,
    rerank_topk,
    start_noise,
)
from diffatr.retrieval.topk import SearchError, cosine_topk, stable_topk

__all__ = [
    "FullRerank",
    "IndexFormatError",
    "IndexMismatchError",
    "RerankResult",
    "RetrievalIndex",
    "SearchEngine",
    "SearchError",
    "SearchHit",
    "SearchResults",
    "clean_query",
    "cosine_topk",
    "encoder_mismatches",
    "encoders_from_configs",
    "full_fused_scores",
    "full_rerank",
    "rerank",
    "rerank_topk",
    "stable_topk",
    "start_noise",
]
