"""First-stage vector stores: the candidates' top K by cosine, from a laptop to a cluster.

``backends`` holds the stores themselves (exact, FAISS, Milvus) behind one interface,
``VectorStore``; ``folder`` keeps an index folder's stores for one checkpoint (build, append,
attach). The re-rank on top of a store is the same whatever the store.
"""

from diffatr.retrieval.stores.backends import (
    BACKENDS,
    BackendError,
    ExactStore,
    FaissStore,
    MilvusStore,
    StoreConfig,
    VectorStore,
    build_store,
    load_store,
)
from diffatr.retrieval.stores.folder import append, attach, build, describe, weights_digest

__all__ = [
    "BACKENDS",
    "BackendError",
    "ExactStore",
    "FaissStore",
    "MilvusStore",
    "StoreConfig",
    "VectorStore",
    "append",
    "attach",
    "build",
    "build_store",
    "describe",
    "load_store",
    "weights_digest",
]
