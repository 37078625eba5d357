"""Audio features of many files: decoded and embedded in worker processes, streamed back in order.

``Extractor(encoder, workers=W).map(paths)`` yields, per path and in order, its (Da,) features
or the reason it could not be read. Each worker process rebuilds the encoder once from an
``EncoderRecipe`` (config + weights), runs torch on one thread, and takes chunks of files:
decodes each through ``diffatr.audio.io`` and embeds them with
``diffatr.encoders.batched.embed_clips`` (blocks of several clips per forward pass). While one
worker decodes, the other's CNN runs. The parent keeps at most two chunks per worker in flight,
so memory stays flat however many files there are. ``workers=0`` runs the same code in this
process. ``embed_files`` is also what the Ray path (``diffatr.cluster``) runs on its workers.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
from torch import Tensor

from diffatr.audio.io import AudioError, AudioTruncatedWarning, decode_audio
from diffatr.config import AudioEncoderConfig
from diffatr.encoders.audio import AudioEncoder, build_backbone
from diffatr.encoders.batched import DEFAULT_BATCH_BLOCKS, FoldedCNN9, batches_blocks, embed_clips

# Files per task sent to a worker: enough clips for full batches of blocks, few enough that
# the progress bar moves and an interrupted run loses little (at most a chunk per worker).
DEFAULT_CHUNK = 16
# Below this many files a worker pool costs more than it saves (a worker rebuilds the encoder,
# and oneDNN prepares its kernels anew: about a second).
MIN_FILES_FOR_WORKERS = 32


@dataclass(frozen=True)
class EncoderRecipe:
    """What a worker process needs to rebuild an ``AudioEncoder``: its config and weights.

    Attributes:
        config: the encoder config.
        state: the backbone's state dict (CPU tensors).
    """

    config: AudioEncoderConfig
    state: dict[str, Tensor]

    @classmethod
    def of(cls, encoder: AudioEncoder) -> EncoderRecipe:
        return cls(encoder.config, {k: v.detach().cpu() for k, v in encoder.backbone.state_dict().items()})

    def build(self) -> AudioEncoder:
        backbone = build_backbone(self.config.name, self.config)
        backbone.load_state_dict(self.state)
        return AudioEncoder(self.config, backbone).eval()


def embed_files(encoder: AudioEncoder, paths: Sequence[str], batch_blocks: int = DEFAULT_BATCH_BLOCKS,
                net: FoldedCNN9 | None = None) -> list[Tensor | str]:
    """Decode and embed files, blocks of several files per forward pass.

    At most ``encoder.config.max_seconds`` of each file are decoded (an
    ``AudioTruncatedWarning`` says when one was cut), at the encoder's sample rate: the same
    features as ``diffatr.encoders.audio.embed_file`` one file at a time, up to float rounding.

    Args:
        net: the encoder's ``FoldedCNN9``, for a caller that embeds many chunks (default: built here).

    Returns:
        Per path, its (Da,) float32 CPU features or the reason it could not be read.
    """
    results: list[Tensor | str] = [""] * len(paths)

    def decoded() -> Iterator[tuple[int, Any]]:
        for i, path in enumerate(paths):
            try:
                audio = decode_audio(path, encoder.sample_rate, max_seconds=encoder.config.max_seconds)
            except (AudioError, OSError) as err:
                results[i] = str(err) or type(err).__name__
                continue
            if audio.truncated:
                max_seconds = encoder.config.max_seconds
                warnings.warn(f"{path} is longer than {max_seconds:g} s; only its first {max_seconds:g} s are "
                              "embedded", AudioTruncatedWarning, stacklevel=2)
            yield i, audio.waveform

    for i, features in embed_clips(encoder, decoded(), batch_blocks, net):
        results[i] = features.detach().float().cpu()
    return results


# ----------------------------------------------------------------------------- worker processes

_WORKER: dict[str, Any] = {}  # in a worker process: its encoder and batch size


def _start_worker(recipe: EncoderRecipe, threads: int, batch_blocks: int) -> None:
    # The parent decides when to stop (Ctrl-C reaches the whole process group): a worker
    # finishes its chunk and is shut down instead of printing a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    encoder = recipe.build()
    _WORKER.update(encoder=encoder, batch_blocks=batch_blocks, net=_folded(encoder))


def _embed_chunk(paths: list[str]) -> list[Tensor | str]:
    return embed_files(_WORKER["encoder"], paths, _WORKER["batch_blocks"], _WORKER["net"])


def _folded(encoder: Any) -> FoldedCNN9 | None:
    return FoldedCNN9(encoder.backbone) if batches_blocks(encoder) else None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers(num_files: int, encoder: Any) -> int:
    """Worker processes for ``num_files`` files: one per core for a CPU ``AudioEncoder`` and
    enough files, else 0 (embed in this process)."""
    if not isinstance(encoder, AudioEncoder) or encoder._device().type != "cpu":
        return 0
    if num_files < MIN_FILES_FOR_WORKERS:
        return 0
    return max(1, min(usable_cores(), math.ceil(num_files / DEFAULT_CHUNK)))


class Extractor:
    """Features of audio files, in worker processes (``workers`` > 0) or in this one.

    Args:
        encoder: an ``AudioEncoder`` (a worker rebuilds it from its config and weights) or,
            in this process only, any object with ``embed_file(path) -> (Da,)``.
        workers: worker processes; 0 embeds in this process.
        chunk: files per task sent to a worker.
        batch_blocks: blocks per forward pass.
        threads: torch threads per worker (default: the cores shared out between workers).

    Use as a context manager, or call ``close()``: the workers stop then.
    """

    def __init__(self, encoder: Any, workers: int = 0, *, chunk: int = DEFAULT_CHUNK,
                 batch_blocks: int = DEFAULT_BATCH_BLOCKS, threads: int | None = None) -> None:
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, got {workers}")
        if workers and not isinstance(encoder, AudioEncoder):
            raise ValueError("worker processes rebuild an AudioEncoder; this encoder can only run in this process")
        self.encoder, self.workers, self.chunk, self.batch_blocks = encoder, workers, max(1, chunk), batch_blocks
        self._pool: ProcessPoolExecutor | None = None
        self._net = _folded(encoder) if not workers else None  # built once, for every chunk embedded here
        if workers:
            threads = threads or max(1, usable_cores() // workers)
            self._pool = ProcessPoolExecutor(workers, mp_context=_start_method(threads), initializer=_start_worker,
                                             initargs=(EncoderRecipe.of(encoder), threads, batch_blocks))

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(self, paths: Iterable[str]) -> Iterator[Tensor | str]:
        """Per path, in order: its (Da,) float32 CPU features, or the reason it could not be read."""
        chunks = _chunks(paths, self.chunk)
        if self._pool is None:
            for chunk in chunks:
                yield from self._embed_here(chunk)
            return
        in_flight: deque[Future] = deque(self._pool.submit(_embed_chunk, c) for c in islice(chunks, 2 * self.workers))
        while in_flight:
            results = in_flight.popleft().result()
            following = next(chunks, None)
            if following is not None:
                in_flight.append(self._pool.submit(_embed_chunk, following))
            yield from results

    def _embed_here(self, paths: list[str]) -> list[Tensor | str]:
        if isinstance(self.encoder, AudioEncoder):
            return embed_files(self.encoder, paths, self.batch_blocks, self._net)
        results: list[Tensor | str] = []
        for path in paths:  # any object with embed_file (the demo's checked uploads)
            try:
                results.append(self.encoder.embed_file(path).detach().float().cpu())
            except (AudioError, OSError) as err:
                results.append(str(err) or type(err).__name__)
        return results


def _start_method(threads: int) -> multiprocessing.context.BaseContext:
    """How worker processes start. A fork starts at once and never runs the caller's script
    again (a fork server or spawn imports ``__main__`` anew, which breaks a script without an
    ``if __name__ == "__main__":`` guard); but a forked child that runs torch on more than one
    thread can hang in OpenMP when this process has used its thread pool, so a fork only for
    one thread per worker (the default), a fork server otherwise."""
    methods = multiprocessing.get_all_start_methods()
    if threads == 1 and "fork" in methods:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["diffatr.extraction"])  # imported once for every worker
        return context
    return multiprocessing.get_context("spawn")


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
