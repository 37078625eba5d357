"""Search: cosine top-K, then the diffusion re-rank of docs/method.md "Inference", and a thin engine.

The core is pure tensor code (``cosine_topk``, ``rerank``, ``full_fused_scores``): it takes the
denoiser and the scheduler explicitly, draws its start noise from its own seeded generator, and
follows the device of its inputs. ``SearchEngine`` wires a DiffATR model, an index and the
encoders together, caching what depends only on (index, checkpoint). No file I/O here besides
what the encoders do when handed a path.

Shape legend: Q queries, B a batch of queries, N candidates (the corpus), K candidates re-ranked
per query, D embedding width, S DDIM steps.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diffatr.config import DEFAULT_RESULTS, ConfigError, ModelConfig, RetrievalConfig
from diffatr.diffusion.sampling import Trajectory, ddim_sample
from diffatr.errors import DiffatrError
from diffatr.retrieval.index import (
    IndexMismatchError,
    RetrievalIndex,
    encoder_mismatches,
)
from diffatr.retrieval.fusion import FUSIONS, fuse

__all__ = [
    "RerankResult",
    "SearchEngine",
    "SearchError",
    "SearchHit",
    "cosine_topk",
    "full_fused_scores",
    "rerank",
    "rerank_topk",
    "stable_topk",
    "start_noise",
]

DIRECTIONS = ("text_to_audio", "audio_to_text")
# Score-matrix elements held at once by ``cosine_topk`` (float32: 64 MiB).
_MAX_SCORE_ELEMENTS = 1 << 24


class SearchError(DiffatrError):
    """A search that cannot run as asked (empty query, missing captions, bad knob ...)."""


# ----------------------------------------------------------------------------- cosine top-K


def stable_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of each row, highest first, ties broken by the lower index (deterministic).

    ``torch.topk`` picks arbitrarily among equal scores; here the k-th value is found first,
    every entry above it is kept, and the entries equal to it are taken lowest index first.

    Args:
        scores: (Q, N) finite scores.
        k: 1 <= k <= N.

    Returns:
        (values (Q, k), indices (Q, k) int64), sorted by value descending then index ascending.
    """
    q, n = scores.shape
    kth = torch.topk(scores, k, dim=1, sorted=False).values.min(dim=1, keepdim=True).values  # (Q, 1)
    above = scores > kth  # (Q, N)
    at = scores == kth  # (Q, N)
    need = k - above.sum(dim=1, keepdim=True)  # (Q, 1): how many of the tied entries to take
    keep = above | (at & (torch.cumsum(at, dim=1) <= need))  # exactly k per row
    indices = keep.nonzero()[:, 1].view(q, k)  # (Q, k), ascending index within a row
    values = scores.gather(1, indices)  # (Q, k)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices  # ties keep index order
    return values.gather(1, order), indices.gather(1, order)


def cosine_topk(query_embeds: Tensor, candidate_embeds: Tensor, k: int,
                max_elements: int = _MAX_SCORE_ELEMENTS) -> tuple[Tensor, Tensor]:
    """The k most similar candidates of each query (docs/method.md Inference, steps 1-2).

    Inputs must already be L2-normalised (the model's projections are), so the dot product is
    the cosine. Queries are processed in chunks so that at most ``max_elements`` scores exist at
    once (N = 100k does not materialise a (Q, N) matrix).

    Args:
        query_embeds: (Q, D) unit vectors.
        candidate_embeds: (N, D) unit vectors.
        k: how many to return; clamped to N.
        max_elements: memory bound on one chunk of the score matrix.

    Returns:
        (scores (Q, k'), indices (Q, k') int64) with k' = min(k, N), highest score first, ties by
        candidate index.

    Raises:
        SearchError: shapes that do not match, k < 1, an empty corpus, non-finite scores.
    """
    _check_pair(query_embeds, candidate_embeds)
    if k < 1:
        raise SearchError(f"k must be >= 1, got {k}")
    n = candidate_embeds.shape[0]
    k = min(int(k), n)
    chunk = max(1, max_elements // n)
    out_scores, out_indices = [], []
    for start in range(0, query_embeds.shape[0], chunk):
        scores = query_embeds[start : start + chunk] @ candidate_embeds.T  # (chunk, N)
        _check_finite_scores(scores)
        values, indices = stable_topk(scores, k)
        out_scores.append(values)
        out_indices.append(indices)
    if not out_scores:  # Q = 0
        return query_embeds.new_zeros(0, k), torch.zeros(0, k, dtype=torch.long, device=query_embeds.device)
    return torch.cat(out_scores), torch.cat(out_indices)


def _check_pair(query_embeds: Tensor, candidate_embeds: Tensor) -> None:
    if query_embeds.ndim != 2 or candidate_embeds.ndim != 2:
        raise SearchError(f"expected query (Q, D) and candidates (N, D), got {tuple(query_embeds.shape)} "
                          f"and {tuple(candidate_embeds.shape)}")
    if query_embeds.shape[1] != candidate_embeds.shape[1]:
        raise SearchError(f"query width {query_embeds.shape[1]} != candidate width {candidate_embeds.shape[1]}")
    if candidate_embeds.shape[0] == 0:
        raise SearchError("the candidate set is empty: index some audio (or captions) first")


def _check_finite_scores(scores: Tensor) -> None:
    # A NaN in either input reaches the scores, so checking the (chunk, N) output is enough and
    # costs far less than scanning the (N, D) candidates on every call.
    if not bool(torch.isfinite(scores).all()):
        raise SearchError("similarities contain NaN or inf: a query embedding or an index row is "
                          "not finite (re-embed the query; rebuild the index if it persists)")


# ----------------------------------------------------------------------------- diffusion re-rank


@dataclass
class RerankResult:
    """The re-ranked top-K of each query. Columns are sorted by ``fused`` (best first).

    Attributes:
        indices: (Q, K) int64 candidate rows.
        cosine: (Q, K) the phase-1 cosine S.
        diffusion: (Q, K) softmax(x0 / temperature) over the query's K candidates.
        fused: (Q, K) cosine + alpha * diffusion.
        cosine_rank: (Q, K) int64 position of each item in the cosine order (0 = most similar);
            ``cosine_rank - arange(K)`` is how far the diffusion moved it (positive = up).
        x0: (Q, K) the final x0 estimate the diffusion term was computed from.
        trajectory: if asked, the DDIM path over the K candidates in *cosine* order:
            x_t (S+1, Q, K) from x_T to x0 (``x_t[-1]`` is the final x0), pred_x0 (S, Q, K).
        settings: the knobs used (top_k, num_inference_steps, alpha, temperature, seed, ...).
    """

    indices: Tensor
    cosine: Tensor
    diffusion: Tensor
    fused: Tensor
    cosine_rank: Tensor
    x0: Tensor
    trajectory: Trajectory | None
    settings: dict[str, Any]

    @property
    def cosine_order(self) -> Tensor:
        """(Q, K) the candidate rows in cosine order (the order the trajectory uses)."""
        out = torch.empty_like(self.indices)
        out.scatter_(1, self.cosine_rank, self.indices)
        return out

    def query_trajectory(self, q: int) -> tuple[Tensor, Tensor]:
        """One query's trajectory: (x_t (S+1, K), pred_x0 (S, K)), candidates in cosine order."""
        if self.trajectory is None:
            raise SearchError("no trajectory was recorded: pass return_trajectory=True")
        return self.trajectory.x_t[:, q], self.trajectory.pred_x0[:, q]


def start_noise(k: int, seed: int, *, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """x_T: one (K,) standard normal vector from ``torch.Generator().manual_seed(seed)``.

    Drawn on the CPU (the same numbers on every device) and shared by every query, so a query's
    result never depends on the other queries in its batch or on their order.
    """
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(k, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)  # (K,)


def rerank(
    query_embeds: Tensor,
    candidate_embeds: Tensor,
    denoiser: Any,
    scheduler: Any,
    *,
    top_k: int = 32,
    num_inference_steps: int = 50,
    alpha: float = 1.0,
    temperature: float = 1.0,
    seed: int = 0,
    fusion: str = "paper",
    candidate_cache: Any = None,
    factorised: bool = True,
    return_trajectory: bool = False,
    batch_size: int = 256,
) -> RerankResult:
    """Cosine top-K, then DDIM over those K and fusion (docs/method.md "Inference").

    S = cosine; each query's top-K by S (hardest first, the order used in training); DDIM
    (eta = 0) from a seeded x_T to x0 with the denoiser conditioned on the query and its K
    candidates; fused = S + alpha * softmax(x0 / temperature); sorted by fused (ties keep the
    cosine order).

    Args:
        query_embeds: (Q, D) L2-normalised queries.
        candidate_embeds: (N, D) L2-normalised candidates.
        denoiser: a ``Denoiser`` (``forward``, ``precompute``, ``prepare_queries``,
            ``forward_cached``) for this direction.
        scheduler: a ``DDIMScheduler``; it is copied, so the caller's object is not changed.
        top_k: K, clamped to N.
        num_inference_steps: S DDIM steps (1..T).
        alpha: weight of the diffusion term.
        temperature: softmax temperature of the diffusion term (> 0).
        seed: seed of the start noise x_T (see ``start_noise``).
        fusion: how the diffusion term joins the cosine (``diffatr.retrieval.fusion.fuse``).
        candidate_cache: ``denoiser.precompute(candidate_embeds)``, computed once per
            (index, checkpoint) and reused; computed here when ``None`` and factorised.
        factorised: use the exact factorised path (``precompute`` / ``ddim_sample_cached``)
            instead of ``forward`` in ``ddim_sample``; the same result up to float rounding.
        return_trajectory: keep x_t and pred_x0 of every step (memory: (S+1) * Q * K floats).
        batch_size: queries per denoiser batch (speed/memory only; results do not depend on it).

    Returns:
        RerankResult (see its docstring).
    """
    _check_pair(query_embeds, candidate_embeds)
    k = _check_knobs(top_k, temperature, batch_size, candidate_embeds.shape[0])
    scores, indices = cosine_topk(query_embeds, candidate_embeds, k)  # (Q, K) each
    return rerank_topk(query_embeds, candidate_embeds, scores, indices, denoiser, scheduler,
                        num_inference_steps=num_inference_steps, alpha=alpha,
                        temperature=temperature, seed=seed, fusion=fusion, candidate_cache=candidate_cache,
                        factorised=factorised, return_trajectory=return_trajectory,
                        batch_size=batch_size)


def full_fused_scores(
    query_embeds: Tensor,
    candidate_embeds: Tensor,
    denoiser: Any,
    scheduler: Any,
    **knobs: Any,
) -> Tensor:
    """The (Q, N) fused score matrix for evaluation: S everywhere, S + alpha * softmax(x0 / temp)
    on each query's re-ranked top K.

    Args:
        query_embeds: (Q, D), candidate_embeds: (N, D), L2-normalised.
        denoiser, scheduler, knobs: as for ``rerank`` (``return_trajectory`` is ignored).

    Returns:
        (Q, N) float32 fused scores.
    """
    _check_pair(query_embeds, candidate_embeds)
    knobs.pop("return_trajectory", None)
    k = _check_knobs(knobs.get("top_k", 32), knobs.get("temperature", 1.0),
                     knobs.get("batch_size", 256), candidate_embeds.shape[0])
    knobs["top_k"] = k
    scores = query_embeds @ candidate_embeds.T  # (Q, N)
    _check_finite_scores(scores)
    # The top-K and the unchanged entries come from this one matrix, so they agree exactly.
    top_scores, top_indices = stable_topk(scores, k)  # (Q, K)
    knobs.pop("top_k")
    result = rerank_topk(query_embeds, candidate_embeds, top_scores, top_indices, denoiser,
                          scheduler, **knobs)
    return scores.scatter(1, result.indices, result.fused)


def _check_knobs(top_k: int, temperature: float, batch_size: int, n: int) -> int:
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1:
        raise SearchError(f"top_k must be a positive integer, got {top_k!r}")
    if not temperature > 0:
        raise SearchError(f"temperature must be > 0, got {temperature!r}")
    if batch_size < 1:
        raise SearchError(f"batch_size must be >= 1, got {batch_size!r}")
    return min(int(top_k), n)


@torch.no_grad()
def rerank_topk(
    query_embeds: Tensor,
    candidate_embeds: Tensor,
    top_scores: Tensor,
    top_indices: Tensor,
    denoiser: Any,
    scheduler: Any,
    *,
    num_inference_steps: int = 50,
    alpha: float = 1.0,
    temperature: float = 1.0,
    seed: int = 0,
    fusion: str = "paper",
    candidate_cache: Any = None,
    factorised: bool = True,
    return_trajectory: bool = False,
    batch_size: int = 256,
) -> RerankResult:
    """``rerank`` from a cosine top-K the caller already has (e.g. from one score matrix).

    Args:
        query_embeds: (Q, D), candidate_embeds: (N, D), L2-normalised.
        top_scores: (Q, K) cosine scores of each query's top K, in cosine order (best first).
        top_indices: (Q, K) int64 their candidate rows (the order the denoiser sees).
        denoiser, scheduler, knobs: as for ``rerank``.

    Returns:
        RerankResult.
    """
    if top_indices.ndim != 2 or top_scores.shape != top_indices.shape or top_indices.shape[0] != query_embeds.shape[0]:
        raise SearchError(f"top_scores and top_indices must both be (Q, K) with Q = {query_embeds.shape[0]}, "
                          f"got {tuple(top_scores.shape)} and {tuple(top_indices.shape)}")
    q, k = top_indices.shape
    _check_knobs(max(k, 1), temperature, batch_size, max(k, 1))
    if fusion not in FUSIONS:
        raise SearchError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    scheduler = copy.copy(scheduler)  # set_timesteps must not change the caller's scheduler
    try:
        scheduler.set_timesteps(int(num_inference_steps))
    except ValueError as err:
        raise SearchError(str(err)) from err
    if factorised and candidate_cache is None:
        candidate_cache = denoiser.precompute(candidate_embeds)
    noise = start_noise(k, seed, device=query_embeds.device, dtype=query_embeds.dtype)  # (K,)

    x0_parts, traj_parts = [], []
    for start in range(0, q, batch_size):
        queries = query_embeds[start : start + batch_size]  # (B, D)
        ids = top_indices[start : start + batch_size]  # (B, K)
        start_noise_b = noise.expand(queries.shape[0], k).contiguous()  # (B, K)
        if factorised:  # the fused loop: same result as ddim_sample over forward_cached
            out = denoiser.ddim_sample_cached(scheduler, start_noise_b, denoiser.prepare_queries(queries),
                                              candidate_cache, ids, int(num_inference_steps),
                                              return_trajectory=return_trajectory)
        else:
            candidates = candidate_embeds[ids]  # (B, K, D), gathered once per batch

            def denoise_fn(x_t: Tensor, t: int) -> Tensor:
                steps = torch.full((x_t.shape[0],), int(t), dtype=torch.long, device=x_t.device)
                return denoiser(x_t, steps, queries, candidates)

            out = ddim_sample(denoise_fn, scheduler, start_noise_b, int(num_inference_steps),
                              return_trajectory=return_trajectory)
        if return_trajectory:
            x0, traj = out
            traj_parts.append(traj)
        else:
            x0 = out
        x0_parts.append(x0)  # (B, K)
    x0 = torch.cat(x0_parts) if x0_parts else top_scores.new_zeros(0, k)  # (Q, K), cosine order

    fused, diffusion = fuse(top_scores, x0, rule=fusion, alpha=alpha, temperature=temperature)  # (Q, K) each
    # Stable: equal fused scores keep the cosine order (itself ties-by-index).
    order = torch.sort(fused, dim=1, descending=True, stable=True).indices  # (Q, K)
    trajectory = None
    if return_trajectory:
        if traj_parts:
            trajectory = Trajectory(timesteps=traj_parts[0].timesteps,
                                    x_t=torch.cat([t.x_t for t in traj_parts], dim=1),
                                    pred_x0=torch.cat([t.pred_x0 for t in traj_parts], dim=1))
        else:
            s = len(scheduler.timesteps)
            trajectory = Trajectory(timesteps=scheduler.timesteps.clone(),
                                    x_t=x0.new_zeros(s + 1, 0, k), pred_x0=x0.new_zeros(s, 0, k))
    return RerankResult(
        indices=top_indices.gather(1, order),
        cosine=top_scores.gather(1, order),
        diffusion=diffusion.gather(1, order),
        fused=fused.gather(1, order),
        cosine_rank=order,
        x0=x0.gather(1, order),
        trajectory=trajectory,
        settings={"top_k": k, "num_inference_steps": int(num_inference_steps), "alpha": float(alpha),
                  "temperature": float(temperature), "seed": int(seed), "fusion": fusion,
                  "factorised": bool(factorised),
                  "clip_x0": bool(getattr(scheduler, "clip_x0", True))},
    )


# ----------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class SearchHit:
    """One result of a search.

    Attributes:
        rank: final position, 1-based (the first hit is rank 1, as in evaluation's ranks).
        row: the row in the index (a clip for text->audio, a caption for audio->text).
        clip_id: the clip (for audio->text: the clip the caption belongs to).
        caption: the matched caption (audio->text), or the clip's first caption (or None).
        captions: all captions of the clip.
        path: the clip's audio path, if known.
        cosine: phase-1 similarity S.
        diffusion: softmax(x0 / temp) of this item, ``None`` beyond the re-ranked top K.
        fused: the final score (S + alpha * diffusion; S beyond the top K).
        cosine_rank: 1-based position by cosine alone.
        moved: cosine_rank - rank: how many places the diffusion moved it up.
        metadata: the clip's metadata.
    """

    rank: int
    row: int
    clip_id: str
    caption: str | None
    captions: list[str]
    path: str | None
    cosine: float
    diffusion: float | None
    fused: float
    cosine_rank: int
    moved: int
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field (``diffusion`` may be None)."""
        return dataclasses.asdict(self)


class SearchEngine:
    """Text->audio and audio->text search over a ``RetrievalIndex`` with a DiffATR model.

    Projects the index's backbone features once, precomputes each denoiser's candidate cache
    once, and answers queries. Build a new engine after changing the model's weights (the
    caches are snapshots). Computation follows the model's device. Call ``model.eval()`` first.

    Args:
        model: a DiffATR (``project_text``, ``project_audio``, ``denoisers``, ``make_scheduler``,
            ``config``).
        index: the index to search.
        text_encoder: turns query strings (and, if the index lacks caption features, its
            captions) into text backbone features (``encode(list[str]) -> (Q, Dt)``).
        audio_encoder: turns audio queries into audio backbone features (``embed_file(path)``,
            ``embed_waveform(array, sr)``).
        batch_size: queries per denoiser batch.
        first_stage: per direction, a vector store that answers the first stage (FAISS, Milvus:
            ``diffatr.retrieval.stores.folder.attach``); the re-rank on top is unchanged.
    """

    def __init__(self, model: Any, index: RetrievalIndex, text_encoder: Any = None,
                 audio_encoder: Any = None, batch_size: int = 256,
                 first_stage: dict[str, Any] | None = None) -> None:
        self.model = model
        self.index = index
        # direction -> a VectorStore (diffatr.retrieval.stores.backends) over this index's rows in this
        # model's space, searched instead of the exact cosine top-K; None = exact.
        self.first_stage = dict(first_stage or {})
        self.text_encoder = text_encoder
        self.audio_encoder = audio_encoder
        self.batch_size = batch_size
        self._check_backbones()
        self.scheduler = model.make_scheduler()
        self._caption_owner = index.caption_to_clip.tolist()
        self._first_caption = [c[0] if c else None for c in index.captions]
        self._flat_captions = index.flat_captions
        # With a vector store for a direction, its candidates' embeddings come from the store,
        # K per query: nothing of size N is projected or precomputed here (large libraries).
        self._caches: dict[str, Any] = {}
        self.audio_embeds: Tensor | None = None  # (N, D), exact first stage only
        if "text_to_audio" not in self.first_stage:
            with torch.no_grad():
                self.audio_embeds = self._project(model.project_audio, index.audio_features)
                self._caches["text_to_audio"] = model.denoisers["text_to_audio"].precompute(self.audio_embeds)
        self.text_embeds: Tensor | None = None  # (M, D), built on first need
        if index.text_features is not None and "audio_to_text" not in self.first_stage:
            self._build_text_side(index.text_features)

    # ------------------------------------------------------------------ setup

    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except (StopIteration, AttributeError):
            return torch.device("cpu")

    def _check_backbones(self) -> None:
        config = getattr(self.model, "config", None)
        if config is None:
            return
        problems = encoder_mismatches(self.index.encoders.get("audio"), dataclasses.asdict(config.audio), "audio")
        if self.index.audio_dim != config.audio.embed_dim:
            problems.append(f"index audio features are {self.index.audio_dim}-d, the model expects "
                            f"{config.audio.embed_dim}-d")
        if self.index.text_features is not None:
            problems += encoder_mismatches(self.index.encoders.get("text"), dataclasses.asdict(config.text), "text")
            if self.index.text_dim != config.text.embed_dim:
                problems.append(f"index caption features are {self.index.text_dim}-d, the model "
                                f"expects {config.text.embed_dim}-d")
        if problems:
            raise IndexMismatchError(
                "this index was built with other backbones than the model's: " + "; ".join(problems)
                + ". Rebuild the index with this checkpoint's encoders (`diffatr index ... --out DIR`).")

    def _project(self, project: Callable[[Tensor], Tensor], features: Tensor, chunk: int = 8192) -> Tensor:
        features = features.to(self.device, torch.float32)
        parts = [project(features[i : i + chunk]) for i in range(0, features.shape[0], chunk)]
        return torch.cat(parts) if parts else features.new_zeros(0, self.model.config.embed_dim)

    def _build_text_side(self, text_features: Tensor) -> None:
        with torch.no_grad():
            self.text_embeds = self._project(self.model.project_text, text_features)  # (M, D)
            self._caches["audio_to_text"] = self.model.denoisers["audio_to_text"].precompute(self.text_embeds)

    def _ensure_text_side(self) -> None:
        if self.text_embeds is not None or "audio_to_text" in self.first_stage:
            return
        if self.index.num_captions == 0:
            raise SearchError("audio->text search needs captions in the index, and this index has "
                              "none: index clips with captions (a manifest with a caption column), "
                              "or search text->audio instead")
        if self.text_encoder is None:
            raise SearchError("the index has captions but no caption features: pass text_encoder= "
                              "to the SearchEngine, or rebuild the index with a text encoder")
        self._build_text_side(torch.as_tensor(self.text_encoder.encode(self.index.flat_captions)))

    # ------------------------------------------------------------------ knobs

    def _knobs(self, knobs: dict[str, Any]) -> dict[str, Any]:
        known = {"top_k", "num_inference_steps", "alpha", "temperature", "seed", "fusion", "use_diffusion"}
        unknown = sorted(set(knobs) - known)
        if unknown:
            raise SearchError(f"unknown search options {unknown}; known: {sorted(known)}")
        config = getattr(self.model, "config", None)
        defaults = getattr(config, "retrieval", None) or RetrievalConfig()
        use_diffusion = knobs.pop("use_diffusion", True)
        try:  # the one validation of the knobs (bounds in diffatr.config.KNOB_BOUNDS; steps <= T)
            merged = dataclasses.replace(defaults, **knobs)
            if isinstance(config, ModelConfig):
                dataclasses.replace(config, retrieval=merged)
        except ConfigError as err:
            raise SearchError(str(err)) from None
        return {**dataclasses.asdict(merged), "use_diffusion": use_diffusion}

    # ------------------------------------------------------------------ ranking

    def rerank_features(self, direction: str, features: Tensor, *, projected: bool = False,
                        k: int = DEFAULT_RESULTS, return_trajectory: bool = False, **knobs: Any) -> RerankResult:
        """Rank the index for query features; the low-level call under ``search_*``.

        Args:
            direction: "text_to_audio" (queries are text) or "audio_to_text".
            features: (Q, Dt|Da) backbone features (or (Q, D) embeddings when ``projected``).
            k: at least this many results are ranked (the top K re-ranked, more by cosine).
            return_trajectory: record the DDIM path (for the demo).
            knobs: top_k, num_inference_steps, alpha, temperature, seed, use_diffusion.

        Returns:
            RerankResult with max(K, k) columns, clamped to the corpus size; columns beyond the
            re-ranked top K keep their cosine order and have diffusion = NaN, fused = cosine.
        """
        if direction not in DIRECTIONS:
            raise SearchError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise SearchError(f"k must be a positive integer, got {k!r}")
        opts = self._knobs(knobs)
        features = torch.as_tensor(features)
        if features.ndim == 1:
            features = features[None]
        if direction == "audio_to_text":
            self._ensure_text_side()
            candidates = self.text_embeds
            project = self.model.project_audio
        else:
            candidates = self.audio_embeds
            project = self.model.project_text
        with torch.no_grad():
            if projected:
                queries = F.normalize(features.to(self.device, torch.float32), dim=-1)
            else:
                expected = getattr(self.model.config, "audio" if direction == "audio_to_text" else "text").embed_dim
                if features.ndim != 2 or features.shape[1] != expected:
                    raise SearchError(f"query features must be (Q, {expected}), got {tuple(features.shape)}")
                queries = self._project(project, features)  # (Q, D)
        store = self.first_stage.get(direction)
        n = len(store) if store is not None else candidates.shape[0]
        top_k = _check_knobs(opts["top_k"], opts["temperature"], self.batch_size, n)
        width = min(max(top_k, int(k)), n)
        if store is not None:  # a vector store's (maybe approximate) top, rows = store ids
            scores, indices = store.search(queries.float().cpu(), width)
            scores, indices = scores.to(queries.device), indices.to(queries.device)
        else:
            scores, indices = cosine_topk(queries, candidates, width)  # (Q, width)
        if not opts["use_diffusion"]:
            nan = torch.full_like(scores, float("nan"))
            ranks = torch.arange(width, device=scores.device).expand_as(indices).contiguous()
            return RerankResult(indices=indices, cosine=scores, diffusion=nan, fused=scores.clone(),
                                cosine_rank=ranks, x0=nan.clone(), trajectory=None,
                                settings={"top_k": 0, "use_diffusion": False})
        top_indices, cache, rows = indices[:, :top_k], self._caches.get(direction), None
        if store is not None:  # only the shortlisted rows, from the store's exact vectors
            rows, top_indices = torch.unique(top_indices, return_inverse=True)  # (U,), (Q, K) into rows
            candidates = store.vectors(rows.cpu()).to(queries.device)  # (U, D)
        result = rerank_topk(
            queries, candidates, scores[:, :top_k], top_indices, self.model.denoisers[direction],
            self.scheduler, num_inference_steps=opts["num_inference_steps"], alpha=opts["alpha"],
            temperature=opts["temperature"], seed=opts["seed"], fusion=opts.get("fusion", "paper"),
            candidate_cache=cache,
            factorised=True, return_trajectory=return_trajectory, batch_size=self.batch_size)
        if rows is not None:  # back to index rows
            result = dataclasses.replace(result, indices=rows.to(result.indices.device)[result.indices])
        result.settings["direction"] = direction
        if width > top_k:  # the tail beyond the re-ranked K, in cosine order
            tail = slice(top_k, width)
            nan = torch.full_like(scores[:, tail], float("nan"))
            ranks = torch.arange(top_k, width, device=scores.device).expand_as(indices[:, tail])
            result = dataclasses.replace(
                result,
                indices=torch.cat([result.indices, indices[:, tail]], 1),
                cosine=torch.cat([result.cosine, scores[:, tail]], 1),
                diffusion=torch.cat([result.diffusion, nan], 1),
                fused=torch.cat([result.fused, scores[:, tail]], 1),
                cosine_rank=torch.cat([result.cosine_rank, ranks], 1),
                x0=torch.cat([result.x0, nan], 1))
        return result

    def hits(self, result: RerankResult, direction: str, k: int = DEFAULT_RESULTS) -> list[list[SearchHit]]:
        """Turn the first ``k`` columns of a ``RerankResult`` into ``SearchHit`` lists."""
        out = []
        idx, cos, dif, fus, crank = (t.cpu().tolist() for t in (
            result.indices, result.cosine, result.diffusion, result.fused, result.cosine_rank))
        for qi in range(len(idx)):
            row_hits = []
            for rank in range(min(k, len(idx[qi]))):
                row = idx[qi][rank]
                if direction == "audio_to_text":
                    clip = self._caption_owner[row]
                    caption = self._flat_captions[row]
                else:
                    clip = row
                    caption = self._first_caption[row]
                d = dif[qi][rank]
                row_hits.append(SearchHit(
                    rank=rank + 1, row=row, clip_id=self.index.clip_ids[clip], caption=caption,
                    captions=list(self.index.captions[clip]),
                    path=self.index.paths[clip], cosine=cos[qi][rank],
                    diffusion=None if d != d else d, fused=fus[qi][rank],
                    cosine_rank=crank[qi][rank] + 1, moved=crank[qi][rank] - rank,
                    metadata=dict(self.index.metadata[clip])))
            out.append(row_hits)
        return out

    # ------------------------------------------------------------------ public search

    def search_text(self, queries: str | Sequence[str], k: int = DEFAULT_RESULTS, **knobs: Any) -> list[list[SearchHit]]:
        """Text -> audio: the k best clips for each query string.

        Args:
            queries: one string or a list of strings (not empty, not blank).
            k: results per query (clamped to the number of clips).
            knobs: top_k, num_inference_steps, alpha, temperature, seed, use_diffusion.

        Returns:
            One list of ``SearchHit`` per query, best first.
        """
        texts = _clean_queries(queries)
        if self.text_encoder is None:
            raise SearchError("search_text needs a text encoder: pass text_encoder= to SearchEngine "
                              "(or use search_text_embeds with precomputed features)")
        features = torch.as_tensor(self.text_encoder.encode(texts))
        return self.search_text_embeds(features, k=k, **knobs)

    def search_text_embeds(self, features: Tensor, k: int = DEFAULT_RESULTS, *, projected: bool = False,
                           **knobs: Any) -> list[list[SearchHit]]:
        """Text -> audio for precomputed text backbone features (Q, Dt) (or embeddings (Q, D)
        when ``projected``)."""
        result = self.rerank_features("text_to_audio", features, projected=projected, k=k, **knobs)
        return self.hits(result, "text_to_audio", k)

    def search_audio(self, audio: Any, k: int = DEFAULT_RESULTS, *, sample_rate: int | None = None,
                     **knobs: Any) -> list[list[SearchHit]]:
        """Audio -> text: the k best captions of the index for each audio query.

        Args:
            audio: an audio file path, or a waveform (np.ndarray or tensor shaped (S,), (S, C)
                or (C, S)) at ``sample_rate``, or a list of either. UI formats (Gradio's
                ``(sample_rate, array)`` value, FileData dicts) are converted by the UI.
            k: results per query (clamped to the number of captions).
            sample_rate: the rate of the waveforms, in Hz (required with waveforms).
            knobs: as for ``search_text``.

        Returns:
            One list of ``SearchHit`` per query (``caption`` = the matched caption).
        """
        if self.index.num_captions == 0:
            self._ensure_text_side()  # raises the clear "needs captions" error
        if self.audio_encoder is None:
            raise SearchError("search_audio needs an audio encoder: pass audio_encoder= to "
                              "SearchEngine (or use search_audio_embeds with precomputed features)")
        items = _audio_items(audio)
        feats = [self._embed_audio(item, sample_rate) for item in items]
        features = torch.stack([torch.as_tensor(f, dtype=torch.float32).reshape(-1) for f in feats])
        return self.search_audio_embeds(features, k=k, **knobs)

    def search_audio_embeds(self, features: Tensor, k: int = DEFAULT_RESULTS, *, projected: bool = False,
                            **knobs: Any) -> list[list[SearchHit]]:
        """Audio -> text for precomputed audio backbone features (Q, Da) (or embeddings (Q, D)
        when ``projected``)."""
        result = self.rerank_features("audio_to_text", features, projected=projected, k=k, **knobs)
        return self.hits(result, "audio_to_text", k)

    def _embed_audio(self, item: Any, sample_rate: int | None) -> Tensor:
        if isinstance(item, (str, os.PathLike)):
            return self.audio_encoder.embed_file(item)
        if sample_rate is None:
            raise SearchError("a waveform needs its sample rate: pass sample_rate=")
        return self.audio_encoder.embed_waveform(item, int(sample_rate))


def _clean_queries(queries: str | Sequence[str]) -> list[str]:
    if isinstance(queries, str):
        queries = [queries]
    if not isinstance(queries, (list, tuple)) or not queries:
        raise SearchError("give a query string (or a non-empty list of them)")
    return [clean_query(query) for query in queries]


def clean_query(query: Any) -> str:
    """A text query without control characters (NULs included) or outer spaces.

    Raises:
        SearchError: not a string, empty, or without a single letter or digit (only symbols,
            punctuation or emoji: the encoder would still return a confident ranking).
    """
    if not isinstance(query, str):
        raise SearchError(f"a text query must be a string, got {type(query).__name__}")
    query = "".join(ch for ch in query if ch.isprintable() or ch.isspace()).strip()
    if not query:
        raise SearchError("the query is empty: type a few words describing a sound")
    if not any(ch.isalnum() for ch in query):
        raise SearchError("the query has no letters or digits: type a few words describing a sound, "
                          "e.g. 'a dog barking'")
    return query


def _audio_items(audio: Any) -> list[Any]:
    """The queries of ``search_audio``: paths and waveforms, one per item (no UI formats)."""
    if isinstance(audio, (str, os.PathLike, np.ndarray, Tensor)):
        return [audio]
    if isinstance(audio, (list, tuple)) and audio and all(
            isinstance(a, (str, os.PathLike, np.ndarray, Tensor)) for a in audio):
        return list(audio)
    raise SearchError("give an audio path or a waveform with sample_rate= (or a non-empty list "
                      f"of them), got {type(audio).__name__}")
