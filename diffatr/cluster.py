"""Audio features of many files on a Ray cluster, with Ray Data (``diffatr index FOLDER --ray ADDRESS``).

``RayExtractor`` has ``Extractor``'s interface (``map(paths)``: per path, in order, its features
or the reason it could not be read), so the rest of indexing is the local run's: this process
lists and hashes the files, reads and writes the feature cache, embeds the captions, and writes
the index and its first-stage stores. Only the audio embedding is sharded: a Ray Data pipeline
of paths whose ``map_batches`` runs on a pool of actors, one per CPU (by default), each holding
the audio encoder rebuilt once from an ``EncoderRecipe`` and running
``diffatr.extraction.embed_files`` on one thread: the same code, so the same features.

Every node must read the files at the paths this process gives (a shared or mounted folder) and
have diffatr installed with the ``[ray]`` extra (docs/speed.md, "Indexing on a Ray cluster").
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffatr.encoders.audio import AudioEncoder
from diffatr.encoders.batched import FoldedCNN9, batches_blocks
from diffatr.errors import DiffatrError
from diffatr.extraction import DEFAULT_CHUNK, EncoderRecipe, embed_files

RAY_HOW_TO = 'Ray is an optional dependency: pip install "diffatr[ray]"'


class ClusterError(DiffatrError):
    """Ray is missing, or the cluster cannot be reached or used."""


class _EmbedFiles:
    """A Ray Data actor: the encoder, built once, embedding batches of paths."""

    def __init__(self, recipe: EncoderRecipe, threads: int, batch_blocks: int) -> None:
        torch.set_num_threads(threads)
        self.encoder = recipe.build()
        self.batch_blocks = batch_blocks
        self.net = FoldedCNN9(self.encoder.backbone) if batches_blocks(self.encoder) else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        results = embed_files(self.encoder, paths, self.batch_blocks, self.net)
        width = self.encoder.embed_dim
        features = np.zeros((len(paths), width), dtype=np.float32)  # (n, Da); zeros where a file failed
        reasons = []
        for row, result in enumerate(results):
            if isinstance(result, str):
                reasons.append(result)
            else:
                features[row] = result.numpy()
                reasons.append("")
        return {"row": batch["row"], "features": features, "reason": np.array(reasons, dtype=object)}


class RayExtractor:
    """Features of audio files computed on a Ray cluster; the interface of ``Extractor``.

    Args:
        encoder: the ``AudioEncoder`` (its config and weights are shipped to the actors).
        address: the cluster: ``"auto"`` (one started with ``ray start`` on this machine),
            ``"HOST:PORT"`` (its GCS), ``"ray://HOST:10001"`` (Ray Client) or ``"local"`` (a
            cluster started here, for this run only).
        workers: actors (default: one per CPU the cluster has, divided by ``threads``).
        threads: CPUs (and torch threads) per actor.
        chunk: files per batch handed to an actor.
        batch_blocks: blocks per forward pass.

    Raises:
        ClusterError: Ray is not installed, or the cluster cannot be reached.
    """

    def __init__(self, encoder: AudioEncoder, address: str, *, workers: int | None = None, threads: int = 1,
                 chunk: int = DEFAULT_CHUNK, batch_blocks: int = 8) -> None:
        try:
            import ray
        except ImportError:
            raise ClusterError(f"--ray needs Ray. {RAY_HOW_TO}") from None
        if not isinstance(encoder, AudioEncoder):
            raise ClusterError("the Ray path rebuilds an AudioEncoder on its workers; this encoder is not one")
        self._ray = ray
        self._started_here = False
        if not ray.is_initialized():
            _check_reachable(address)
            try:
                ray.init(address=None if address == "local" else address, logging_level="ERROR",
                         log_to_driver=False, include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise ClusterError(f"cannot reach the Ray cluster at {address!r} ({err}); start one with "
                                   "`ray start --head` or give its address (HOST:PORT or ray://HOST:10001)") from err
            self._started_here = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers or max(1, cpus // max(1, threads))
        self.threads, self.chunk, self.batch_blocks = threads, max(1, chunk), batch_blocks
        self.recipe = EncoderRecipe.of(encoder)

    def __enter__(self) -> RayExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()
        self._started_here = False

    def map(self, paths: Iterable[str]) -> Iterator[Tensor | str]:
        """Per path, in order: its (Da,) float32 CPU features, or the reason it could not be read."""
        ray = self._ray
        items = [{"row": row, "path": str(path)} for row, path in enumerate(paths)]  # paths only: small
        if not items:
            return
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # results stream back in file order
        context.enable_progress_bars = False
        # Enough blocks of paths for every actor, each at most a chunk, at most a few per actor
        # at a time (Ray Data streams them).
        blocks = max(min(len(items), self.workers), math.ceil(len(items) / self.chunk))
        dataset = ray.data.from_items(items, override_num_blocks=blocks)
        embedded = dataset.map_batches(
            _EmbedFiles, fn_constructor_kwargs={"recipe": self.recipe, "threads": self.threads,
                                                "batch_blocks": self.batch_blocks},
            batch_size=self.chunk, batch_format="numpy", num_cpus=self.threads,
            compute=ray.data.ActorPoolStrategy(size=self.workers))
        expected = 0
        for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            for row, features, reason in zip(batch["row"], batch["features"], batch["reason"]):
                if int(row) != expected:
                    raise ClusterError(f"Ray returned file {int(row)} where {expected} was expected")
                expected += 1
                yield str(reason) if reason else torch.from_numpy(np.array(features, dtype=np.float32))


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on an address nothing listens at (Ray itself retries for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except ValueError:
        raise ClusterError(f"--ray {address!r}: give auto, local, HOST:PORT or ray://HOST:PORT") from None
    except OSError as err:
        raise ClusterError(f"cannot reach the Ray cluster at {address!r} ({err.strerror or err}); start one with "
                           "`ray start --head` or give its address (HOST:PORT or ray://HOST:10001)") from None


def describe_cluster() -> dict[str, Any]:
    """CPUs and nodes of the cluster this process is connected to (for the benchmark)."""
    import ray

    return {"cpus": ray.cluster_resources().get("CPU", 0), "nodes": len([n for n in ray.nodes() if n["Alive"]])}
