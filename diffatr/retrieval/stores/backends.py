"""First-stage vector stores: the candidates' top K by cosine, from a laptop to a cluster.

The diffusion re-rank needs, per query, only the ids of its top-K candidates and their
embeddings; everything before that (find the K nearest of N unit vectors) is this module's job,
behind one small interface, ``VectorStore``:

- ``ExactStore``: every score computed (torch matmul, the engine's ``cosine_topk``): exact,
  fast up to ~100k vectors, memory 4 bytes x D per vector;
- ``FaissStore``: FAISS on one machine: ``HNSW32`` (graph, exact vectors kept, ~recall 0.99)
  or ``IVF<lists>,PQ<m>`` (compressed: 1M x 512-d in ~70 MB), any FAISS ``index_factory``
  string; memory-mapped on load where the index type allows;
- ``MilvusStore``: Milvus, embedded (Milvus Lite, a file inside the store folder) by default,
  or a Milvus standalone / distributed cluster given by URI.

Vectors are addressed by stable int64 ids (not positions), so ``add`` and ``remove`` never
renumber the others. Every store keeps the exact float32 vectors it was given
(``vectors(ids)``), memory-mapped from ``vectors.npy``, so the re-rank sees the same embeddings
whatever the approximate index does. A store folder holds ``store.json`` (the backend and its
parameters), ``ids.npy`` / ``vectors.npy`` and the backend's own files; it is written to a
temporary folder and renamed, so an interrupted write leaves the previous store as it was.

Optional dependencies: ``pip install "diffatr[faiss]"`` or ``"diffatr[milvus]"``.
Shape legend: Q queries, N stored vectors, D width, k results per query.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffatr.errors import DiffatrError
from diffatr.fileio import atomic_directory
from diffatr.retrieval.topk import cosine_topk

__all__ = ["BACKENDS", "BackendError", "ExactStore", "FaissStore", "MilvusStore", "StoreConfig", "VectorStore",
           "build_store", "load_store"]

BACKENDS = ("exact", "faiss", "milvus")
STORE_FILE = "store.json"  # the backend and its parameters
IDS_FILE = "ids.npy"  # (N,) int64: the stable ids, in row order
VECTORS_FILE = "vectors.npy"  # (N, D) float32: the exact vectors, memory-mapped on load
FORMAT_VERSION = 1


class BackendError(DiffatrError):
    """A store that is missing, damaged, of another kind, or whose library is not installed."""


@dataclass(frozen=True)
class StoreConfig:
    """How a first-stage store is built (saved in ``store.json``).

    Attributes:
        backend: one of ``BACKENDS``.
        faiss_factory: a FAISS ``index_factory`` string, inner-product metric ("HNSW32",
            "IVF1024,PQ32", "Flat", ...).
        faiss_ef_search: HNSW's search breadth (recall vs speed).
        faiss_nprobe: IVF lists visited per query (recall vs speed).
        faiss_refine: refined indexes re-score this many x k candidates with finer codes.
        faiss_train_size: how many vectors (a seeded sample) train an IVF / PQ index.
        milvus_uri: None = Milvus Lite in the store folder; else a server, e.g.
            "http://localhost:19530".
        milvus_collection: the collection's name.
        milvus_index: Milvus index type ("FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX").
    """

    backend: str = "exact"
    faiss_factory: str = "HNSW32"
    faiss_ef_search: int = 128
    faiss_nprobe: int = 32
    faiss_refine: int = 4  # refined indexes (",RFlat" / ",Refine(SQ8)") re-score this many x k candidates
    faiss_train_size: int = 100_000  # vectors a FAISS index trains on (a random sample past this)
    milvus_uri: str | None = None
    milvus_collection: str = "diffatr"
    milvus_index: str = "FLAT"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise BackendError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.faiss_ef_search < 1 or self.faiss_nprobe < 1:
            raise BackendError("faiss_ef_search and faiss_nprobe must be >= 1")


def _require(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise BackendError(f"the {extra} backend needs the {module!r} package: pip install \"diffatr[{extra}]\" "
                           f"(or pip install {module if module != 'pymilvus' else 'pymilvus milvus-lite'})") from err


def _check_vectors(vectors: Tensor | np.ndarray, ids: Tensor | np.ndarray | None, dim: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    vecs = np.ascontiguousarray(torch.as_tensor(vectors).detach().cpu().float().numpy())
    if vecs.ndim != 2 or (dim is not None and vecs.shape[1] != dim):
        raise BackendError(f"vectors must be (n, {dim or 'D'}), got {vecs.shape}")
    if not np.isfinite(vecs).all():
        raise BackendError("vectors must be finite")
    if ids is None:
        return vecs, None
    id_arr = np.ascontiguousarray(torch.as_tensor(ids).cpu().numpy().astype(np.int64).reshape(-1))
    if id_arr.shape[0] != vecs.shape[0]:
        raise BackendError(f"{id_arr.shape[0]} ids for {vecs.shape[0]} vectors")
    if len(np.unique(id_arr)) != len(id_arr):
        raise BackendError("ids must be unique")
    return vecs, id_arr


class VectorStore:
    """The interface (and the id / vector bookkeeping every store shares).

    Subclasses implement ``_search``, ``_add``, ``_remove``, ``_save_backend`` and
    ``_load_backend``.
    """

    def __init__(self, config: StoreConfig, dim: int) -> None:
        self.config = config
        self.dim = int(dim)
        self._ids = np.zeros(0, dtype=np.int64)  # (N,)
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)  # (N, D), maybe a read-only memmap
        self._order = np.zeros(0, dtype=np.int64)  # argsort of the ids: id -> row by binary search

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    # ------------------------------------------------------------------ the interface

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The k highest inner products of each (unit) query.

        Args:
            queries: (Q, D) float, L2-normalised (the model's projections are).
            k: results per query (clamped to the store's size).

        Returns:
            (scores (Q, k'), ids (Q, k') int64), best first; k' = min(k, N).
        """
        q, _ = _check_vectors(queries, None, self.dim)
        if len(self) == 0:
            raise BackendError("the store is empty: add vectors first")
        if k < 1:
            raise BackendError(f"k must be >= 1, got {k}")
        scores, ids = self._search(q, min(int(k), len(self)))
        return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)), \
            torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))

    def vectors(self, ids: Tensor | np.ndarray) -> Tensor:
        """The exact stored vectors of ``ids`` (any shape) -> (*ids.shape, D) float32."""
        arr = torch.as_tensor(ids).cpu().numpy().astype(np.int64)
        rows, found = self._rows_of(arr.reshape(-1))
        if not found.all():
            raise BackendError(f"id {int(arr.reshape(-1)[~found][0])} is not in the store")
        return torch.from_numpy(np.asarray(self._vectors[rows], dtype=np.float32)).view(*arr.shape, self.dim)

    def add(self, vectors: Tensor, ids: Tensor | np.ndarray) -> None:
        """Store (n, D) vectors under n new ids (an id already stored is an error)."""
        vecs, id_arr = _check_vectors(vectors, ids, self.dim)
        clash = id_arr[self._rows_of(id_arr)[1]].tolist()
        if clash:
            raise BackendError(f"ids already stored: {clash[:5]}; remove them first")
        self._add(vecs, id_arr)
        self._ids = np.concatenate([self._ids, id_arr])
        self._vectors = np.concatenate([np.asarray(self._vectors), vecs])
        self._reindex()

    def remove(self, ids: Tensor | np.ndarray) -> None:
        """Forget these ids (unknown ids are an error, nothing is removed then)."""
        id_arr = np.unique(torch.as_tensor(ids).cpu().numpy().astype(np.int64).reshape(-1))
        missing = id_arr[~self._rows_of(id_arr)[1]].tolist()
        if missing:
            raise BackendError(f"ids not in the store: {missing[:5]}")
        self._remove(id_arr)
        keep = ~np.isin(self._ids, id_arr)
        self._ids = self._ids[keep]
        self._vectors = np.asarray(self._vectors)[keep]
        self._reindex()

    def save(self, folder: str | Path) -> Path:
        """Write the store into ``folder`` (replaced atomically)."""
        info = {"format": "diffatr-store", "version": FORMAT_VERSION, "dim": self.dim, "count": len(self),
                "config": asdict(self.config)}
        with atomic_directory(folder) as tmp:
            np.save(tmp / IDS_FILE, self._ids)
            np.save(tmp / VECTORS_FILE, np.asarray(self._vectors, dtype=np.float32))
            self._save_backend(tmp, Path(folder))
            (tmp / STORE_FILE).write_text(json.dumps(info, indent=1))
        return Path(folder)

    # ------------------------------------------------------------------ shared helpers

    def _reindex(self) -> None:
        # One argsort instead of a dict of N Python ints: opening a 1M-vector store stays cheap.
        self._order = np.argsort(self._ids, kind="stable")
        self._sorted_ids = self._ids[self._order]
        self._table_cache: Tensor | None = None

    def _rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows (n,), found (n,) bool) of int64 ``ids`` (rows of missing ids are meaningless)."""
        if len(self._ids) == 0:
            return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
        sorted_ids = self._sorted_ids
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
        return self._order[pos], sorted_ids[pos] == ids

    def _table(self) -> Tensor:
        """The (N, D) vectors as one in-memory tensor, for exact search (built once per change)."""
        if getattr(self, "_table_cache", None) is None:
            self._table_cache = torch.from_numpy(np.array(self._vectors, dtype=np.float32))
        return self._table_cache

    def _load_common(self, folder: Path) -> None:
        try:
            self._ids = np.load(folder / IDS_FILE)
            self._vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")  # only the rows asked for are read
        except (OSError, ValueError) as err:
            raise BackendError(f"the store in {folder} is damaged ({err}); rebuild it with `diffatr index`") from None
        if self._vectors.shape != (self._ids.shape[0], self.dim):
            raise BackendError(f"the store in {folder} is damaged (ids and vectors disagree); rebuild it")
        self._reindex()

    # ------------------------------------------------------------------ per backend

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        raise NotImplementedError

    def _remove(self, ids: np.ndarray) -> None:
        raise NotImplementedError

    def _save_backend(self, tmp: Path, final: Path) -> None:
        raise NotImplementedError

    def _load_backend(self, folder: Path) -> None:
        raise NotImplementedError


class ExactStore(VectorStore):
    """Every inner product, computed in chunks (the engine's exact ``cosine_topk``)."""

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = cosine_topk(torch.from_numpy(queries), self._table(), k)
        return scores.numpy(), self._ids[rows.numpy()]

    def _add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        pass  # the shared vector table is the index

    def _remove(self, ids: np.ndarray) -> None:
        pass

    def _save_backend(self, tmp: Path, final: Path) -> None:
        pass

    def _load_backend(self, folder: Path) -> None:
        pass  # searched whole: the first search reads the vectors into memory (``_table``)


class FaissStore(VectorStore):
    """FAISS with stable ids (IVF indexes keep them; others sit in an ``IndexIDMap2``) and the
    inner-product metric.

    HNSW graphs (and refined indexes) cannot delete: removed ids are kept as tombstones,
    filtered from results (each search asks for more), and the index is rebuilt from the kept
    vectors once a quarter of it is dead.
    """

    INDEX_FILE = "faiss.index"

    def __init__(self, config: StoreConfig, dim: int) -> None:
        super().__init__(config, dim)
        self.faiss = _require("faiss", "faiss")
        self._index = self._new_index()
        self._dead: set[int] = set()
        self._mapped: Path | None = None  # the folder whose file is memory-mapped, if any

    def _new_index(self) -> Any:
        faiss = self.faiss
        try:
            inner = faiss.index_factory(self.dim, self.config.faiss_factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise BackendError(f"FAISS cannot build {self.config.faiss_factory!r}: {str(err).splitlines()[-1]}") from None
        if isinstance(faiss.downcast_index(inner), faiss.IndexIVF):
            return inner  # IVF stores ids itself (an id map over it breaks on removal)
        return faiss.IndexIDMap2(inner)

    def _can_remove(self) -> bool:
        """Plain IVF and flat indexes delete; graphs and refined indexes get tombstones."""
        index = self.faiss.downcast_index(self._index)
        if isinstance(index, self.faiss.IndexIVF):
            return True
        return isinstance(self.faiss.downcast_index(index.index), self.faiss.IndexFlat)

    def _tune(self) -> None:
        """Set the search-time knobs on whatever the index is wrapped in (id map, refinement)."""
        faiss = self.faiss
        index = faiss.downcast_index(self._index)
        if hasattr(index, "id_map"):
            index = faiss.downcast_index(index.index)
        if isinstance(index, faiss.IndexRefine):
            index.k_factor = float(self.config.faiss_refine)
            index = faiss.downcast_index(index.base_index)
        if hasattr(index, "hnsw"):
            index.hnsw.efSearch = self.config.faiss_ef_search
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = self.config.faiss_nprobe
            quantizer = faiss.downcast_index(ivf.quantizer)
            if hasattr(quantizer, "hnsw"):
                # An HNSW coarse quantizer ("IVF4096_HNSW32,...") assigns every added vector to a
                # list and picks the lists a query visits with this breadth. FAISS's default
                # (16) misassigned vectors: recall stopped at 0.92 at 2M and 0.90 at 10M
                # whatever nprobe and the refinement depth were.
                quantizer.hnsw.efSearch = max(self.config.faiss_ef_search, 2 * self.config.faiss_nprobe)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self._tune()
        ask = min(k + len(self._dead), self._index.ntotal)
        scores, ids = self._index.search(queries, ask)  # (Q, ask); -1 where fewer were found
        if self._dead or (ids < 0).any():
            dead = np.array(sorted(self._dead), dtype=np.int64)
            out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
            out_i = np.full((len(queries), k), -1, dtype=np.int64)
            for q in range(len(queries)):
                ok = (ids[q] >= 0) & ~np.isin(ids[q], dead)
                s, i = scores[q][ok][:k], ids[q][ok][:k]
                out_s[q, : len(s)], out_i[q, : len(i)] = s, i
            if (out_i < 0).any():  # an approximate index may return fewer than k: fill exactly
                return ExactStore._search(self, queries, k)
            return out_s, out_i
        return scores[:, :k], ids[:, :k]

    def _writable(self) -> None:
        if self._mapped:  # a memory-mapped index is read-only: read it whole before changing it
            self._index = self.faiss.read_index(str(self._mapped / self.INDEX_FILE))
            self._mapped = None

    def _add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self._writable()
        self._tune()  # the quantizer's breadth matters when adding too (see _tune)
        if not self._index.is_trained:
            if len(vectors) < 1:
                raise BackendError("an untrained FAISS index needs vectors to train on")
            sample = vectors
            if len(vectors) > self.config.faiss_train_size:  # k-means on a seeded sample: minutes, not hours
                rows = np.random.default_rng(0).choice(len(vectors), self.config.faiss_train_size, replace=False)
                sample = np.ascontiguousarray(vectors[np.sort(rows)])
            try:
                self._index.train(sample)
            except RuntimeError as err:
                raise BackendError(f"FAISS could not train {self.config.faiss_factory!r} on {len(vectors)} vectors "
                                   f"({str(err).splitlines()[-1]}); add more vectors at once or pick a smaller "
                                   "index") from None
        self._index.add_with_ids(vectors, ids)

    def _remove(self, ids: np.ndarray) -> None:
        self._writable()
        if self._can_remove():
            self._index.remove_ids(ids)
            return
        self._dead.update(int(i) for i in ids)
        if len(self._dead) * 4 > self._index.ntotal:  # rebuild the graph from what is kept
            keep = ~np.isin(self._ids, ids)
            self._index = self._new_index()
            self._dead.clear()
            if keep.any():  # trained again on what is kept
                self._add(np.ascontiguousarray(np.asarray(self._vectors)[keep]), self._ids[keep])

    def _save_backend(self, tmp: Path, final: Path) -> None:
        self.faiss.write_index(self._index, str(tmp / self.INDEX_FILE))
        (tmp / "tombstones.json").write_text(json.dumps(sorted(self._dead)))

    def _load_backend(self, folder: Path) -> None:
        faiss = self.faiss
        path = str(folder / self.INDEX_FILE)
        try:
            self._index = faiss.read_index(path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            self._mapped = folder
        except RuntimeError:
            try:  # not every index type maps: read it whole
                self._index = faiss.read_index(path)
            except RuntimeError as err:
                raise BackendError(f"the FAISS index in {folder} is damaged ({str(err).splitlines()[-1]}); "
                                   "rebuild it with `diffatr index`") from None
        self._dead = set(json.loads((folder / "tombstones.json").read_text()))
        if self._index.ntotal - len(self._dead) != len(self):
            raise BackendError(f"the FAISS index in {folder} disagrees with its id list; rebuild it")


class MilvusStore(VectorStore):
    """Milvus through pymilvus: Milvus Lite (a file in the store folder) or a server by URI.

    Changes are applied when the store is saved: until then, searches of a changed store are
    exact (over the vectors held), so a search never sees half an add. Milvus Lite rebuilds its
    file in the new folder (the old store stays intact until the rename); a server gets the
    pending deletions and insertions, then a flush.
    """

    LITE_FILE = "milvus.db"

    def __init__(self, config: StoreConfig, dim: int, folder: Path | None = None) -> None:
        super().__init__(config, dim)
        self.pymilvus = _require("pymilvus", "milvus")
        self._folder = folder  # where the saved store lives (None: never saved)
        self._client: Any = None
        self._pending_add: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_remove: list[np.ndarray] = []

    @property
    def _dirty(self) -> bool:
        return bool(self._pending_add or self._pending_remove) or self._folder is None

    def _uri(self, folder: Path) -> str:
        return self.config.milvus_uri or str(folder / self.LITE_FILE)

    def _connect(self, folder: Path, create: bool) -> Any:
        client = self.pymilvus.MilvusClient(self._uri(folder))
        name = self.config.milvus_collection
        if create and client.has_collection(name):
            client.drop_collection(name)
        if not client.has_collection(name):
            if not create:
                client.close()
                raise BackendError(f"the Milvus collection {name!r} is missing at {self._uri(folder)}; rebuild the index")
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", self.pymilvus.DataType.INT64, is_primary=True)
            schema.add_field("vector", self.pymilvus.DataType.FLOAT_VECTOR, dim=self.dim)
            params = client.prepare_index_params()
            params.add_index(field_name="vector", index_type=self.config.milvus_index, metric_type="IP")
            client.create_collection(name, schema=schema, index_params=params)
        client.load_collection(name)
        return client

    def _insert(self, client: Any, vectors: np.ndarray, ids: np.ndarray, batch: int = 5000) -> None:
        for start in range(0, len(ids), batch):
            rows = [{"id": int(i), "vector": v.tolist()} for i, v in zip(ids[start:start + batch],
                                                                       vectors[start:start + batch])]
            client.insert(self.config.milvus_collection, rows)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._dirty:  # unsaved changes: exact over what is held
            return ExactStore._search(self, queries, k)
        if self._client is None:
            self._client = self._connect(self._folder, create=False)
        hits = self._client.search(self.config.milvus_collection, data=queries.tolist(), limit=k,
                                   search_params={"metric_type": "IP"}, output_fields=["id"])
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for q, row in enumerate(hits):
            for j, hit in enumerate(row[:k]):
                scores[q, j], ids[q, j] = hit["distance"], hit["id"]
        if (ids < 0).any():
            return ExactStore._search(self, queries, k)
        return scores, ids

    def _add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self._pending_add.append((vectors, ids))

    def _remove(self, ids: np.ndarray) -> None:
        self._pending_remove.append(ids)

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            if self.config.milvus_uri is None and self._folder is not None:
                self._release_lite(self._folder)

    def _release_lite(self, folder: Path) -> None:
        """Stop Milvus Lite's in-process server for this file: it holds a lock on the data until
        then, which would stop the store from being reopened once its folder is renamed."""
        try:
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:
            return
        server_manager_instance.release_server(self._uri(folder))

    def _save_backend(self, tmp: Path, final: Path) -> None:
        self._close()
        if self.config.milvus_uri is None:  # Lite: a fresh file in the new folder, from every vector held
            client = self._connect(tmp, create=True)
            if len(self):
                self._insert(client, np.ascontiguousarray(np.asarray(self._vectors)), self._ids)
            client.flush(self.config.milvus_collection)
            client.close()
            self._release_lite(tmp)
        else:  # a server: apply the changes (or build the collection the first time)
            client = self._connect(final, create=self._folder is None)
            if self._folder is None:
                if len(self):
                    self._insert(client, np.ascontiguousarray(np.asarray(self._vectors)), self._ids)
            else:
                for ids in self._pending_remove:
                    client.delete(self.config.milvus_collection, ids=[int(i) for i in ids])
                for vectors, ids in self._pending_add:
                    self._insert(client, vectors, ids)
            client.flush(self.config.milvus_collection)
            client.close()
        self._pending_add.clear()
        self._pending_remove.clear()
        self._folder = final

    def _load_backend(self, folder: Path) -> None:
        self._folder = folder
        if self.config.milvus_uri is None and not (folder / self.LITE_FILE).exists():  # a file or a folder
            raise BackendError(f"the Milvus Lite file is missing from {folder}; rebuild the index")


_STORES = {"exact": ExactStore, "faiss": FaissStore, "milvus": MilvusStore}


def build_store(config: StoreConfig, vectors: Tensor, ids: Tensor | np.ndarray) -> VectorStore:
    """A new store of ``config.backend`` holding (N, D) ``vectors`` under ``ids``."""
    store = _STORES[config.backend](config, int(torch.as_tensor(vectors).shape[1]))
    store.add(vectors, ids)
    return store


def load_store(folder: str | Path) -> VectorStore:
    """Open a saved store (the backend and its parameters come from ``store.json``)."""
    folder = Path(folder)
    try:
        info = json.loads((folder / STORE_FILE).read_text())
    except FileNotFoundError:
        raise BackendError(f"no first-stage store in {folder} ({STORE_FILE} is missing); rebuild it with "
                           "`diffatr index`") from None
    except (OSError, ValueError) as err:
        raise BackendError(f"the store description {folder / STORE_FILE} is damaged ({err}); rebuild it") from None
    if info.get("format") != "diffatr-store" or info.get("version") != FORMAT_VERSION:
        raise BackendError(f"{folder} holds no diffatr store of version {FORMAT_VERSION}")
    config = StoreConfig(**info["config"])
    cls = _STORES[config.backend]
    store = cls(config, int(info["dim"]), folder) if cls is MilvusStore else cls(config, int(info["dim"]))
    store._load_common(folder)
    store._load_backend(folder)
    return store
