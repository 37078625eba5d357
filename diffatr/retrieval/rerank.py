"""The diffusion re-rank of docs/method.md "Inference": DDIM over each query's top K, then fusion.

Pure tensor code: it takes the denoiser, the scheduler and one ``RetrievalConfig`` explicitly,
draws its start noise from its own seeded generator, and follows the device of its inputs. It
has no defaults for the knobs (the entry point's config carries them) and checks none of them
again. ``rerank_topk`` re-ranks a top K the caller already has (from a store or one score
matrix); ``rerank`` finds the top K first; ``full_rerank`` gives evaluation its (Q, N) matrices.

Shape legend: Q queries, B a batch of queries, N candidates (the corpus), K candidates re-ranked
per query, D embedding width, S DDIM steps.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffatr.config import DEFAULT_BATCH_SIZE, RetrievalConfig
from diffatr.diffusion.sampling import Trajectory, ddim_sample
from diffatr.retrieval.fusion import fuse, gen_rank_scores
from diffatr.retrieval.topk import SearchError, check_finite_scores, check_pair, cosine_topk, stable_topk

__all__ = ["FullRerank", "RerankResult", "full_fused_scores", "full_rerank", "rerank",
           "rerank_topk", "start_noise"]


@dataclass
class RerankResult:
    """The re-ranked top-K of each query. Columns are sorted by ``fused`` (best first).

    Attributes:
        indices: (Q, K) int64 candidate rows.
        cosine: (Q, K) the phase-1 cosine S.
        diffusion: (Q, K) the diffusion term (``fusion.fuse``: softmax(x0 / temperature) for
            the paper's rule) over the query's K candidates.
        fused: (Q, K) cosine + alpha * diffusion.
        cosine_rank: (Q, K) int64 position of each item in the cosine order (0 = most similar);
            ``cosine_rank - arange(K)`` is how far the diffusion moved it (positive = up).
        x0: (Q, K) the final x0 estimate the diffusion term was computed from.
        trajectory: if asked, the DDIM path over the K candidates in *cosine* order:
            x_t (S+1, Q, K) from x_T to x0 (``x_t[-1]`` is the final x0), pred_x0 (S, Q, K).
        settings: what was used (top_k after clamping, num_inference_steps, alpha, ...).
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


def rerank(query_embeds: Tensor, candidate_embeds: Tensor, denoiser: Any, scheduler: Any,
           config: RetrievalConfig, **options: Any) -> RerankResult:
    """Cosine top-K, then DDIM over those K and fusion (docs/method.md "Inference").

    S = cosine; each query's top-K by S (hardest first, the order used in training); DDIM
    (eta = 0) from a seeded x_T to x0 with the denoiser conditioned on the query and its K
    candidates; fused = S + alpha * softmax(x0 / temperature) (``config.fusion``); sorted by
    fused (ties keep the cosine order).

    Args:
        query_embeds: (Q, D) L2-normalised queries.
        candidate_embeds: (N, D) L2-normalised candidates.
        denoiser, scheduler: as for ``rerank_topk``.
        config: the knobs; ``top_k`` is clamped to N.
        options: ``rerank_topk``'s keyword options (candidate_cache, factorised, ...).

    Returns:
        RerankResult (see its docstring).
    """
    check_pair(query_embeds, candidate_embeds)
    scores, indices = cosine_topk(query_embeds, candidate_embeds, config.top_k)  # (Q, K) each
    return rerank_topk(query_embeds, candidate_embeds, scores, indices, denoiser, scheduler, config, **options)


@torch.no_grad()
def rerank_topk(query_embeds: Tensor, candidate_embeds: Tensor, top_scores: Tensor, top_indices: Tensor,
                denoiser: Any, scheduler: Any, config: RetrievalConfig, *, candidate_cache: Any = None,
                factorised: bool = True, return_trajectory: bool = False,
                batch_size: int = DEFAULT_BATCH_SIZE) -> RerankResult:
    """The re-rank of a cosine top-K the caller already has (from a store or one score matrix).

    Args:
        query_embeds: (Q, D) L2-normalised queries.
        candidate_embeds: (N, D) L2-normalised candidates (the rows ``top_indices`` points at).
        top_scores: (Q, K) cosine scores of each query's top K, in cosine order (best first).
        top_indices: (Q, K) int64 their candidate rows (the order the denoiser sees).
        denoiser: a ``Denoiser`` (``forward``, ``precompute``, ``prepare_queries``,
            ``ddim_sample_cached``) for this direction.
        scheduler: a ``DDIMScheduler``; it is copied, so the caller's object is not changed.
        config: num_inference_steps, alpha, temperature, seed and fusion are used (K is the
            width of ``top_indices``); steps above the scheduler's T raise ``ConfigError``.
        candidate_cache: ``denoiser.precompute(candidate_embeds)``, computed once per
            (index, checkpoint) and reused; computed here when ``None`` and factorised.
        factorised: use the exact factorised path (``precompute`` / ``ddim_sample_cached``)
            instead of ``forward`` in ``ddim_sample``; the same result up to float rounding.
        return_trajectory: keep x_t and pred_x0 of every step (memory: (S+1) * Q * K floats).
        batch_size: queries per denoiser batch (speed/memory only; results do not depend on it).

    Returns:
        RerankResult.
    """
    if top_indices.ndim != 2 or top_scores.shape != top_indices.shape or top_indices.shape[0] != query_embeds.shape[0]:
        raise SearchError(f"top_scores and top_indices must both be (Q, K) with Q = {query_embeds.shape[0]}, "
                          f"got {tuple(top_scores.shape)} and {tuple(top_indices.shape)}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise SearchError(f"batch_size must be a positive integer, got {batch_size!r}")
    scheduler = copy.copy(scheduler)  # set_timesteps must not change the caller's scheduler
    scheduler.set_timesteps(config.num_inference_steps)
    if factorised and candidate_cache is None:
        candidate_cache = denoiser.precompute(candidate_embeds)
    x0, trajectory = _denoise(query_embeds, candidate_embeds, top_indices, denoiser, scheduler, config,
                              candidate_cache if factorised else None, return_trajectory, int(batch_size))
    fused, diffusion = fuse(top_scores, x0, rule=config.fusion, alpha=config.alpha,
                            temperature=config.temperature)  # (Q, K) each
    # Stable: equal fused scores keep the cosine order (itself ties-by-index).
    order = torch.sort(fused, dim=1, descending=True, stable=True).indices  # (Q, K)
    settings = {name: value for name, value in dataclasses.asdict(config).items() if name != "num_results"}
    settings.update(top_k=top_indices.shape[1], factorised=bool(factorised),
                    clip_x0=bool(getattr(scheduler, "clip_x0", True)))
    return RerankResult(indices=top_indices.gather(1, order), cosine=top_scores.gather(1, order),
                        diffusion=diffusion.gather(1, order), fused=fused.gather(1, order), cosine_rank=order,
                        x0=x0.gather(1, order), trajectory=trajectory, settings=settings)


def _denoise(query_embeds: Tensor, candidate_embeds: Tensor, top_indices: Tensor, denoiser: Any,
             scheduler: Any, config: RetrievalConfig, candidate_cache: Any, return_trajectory: bool,
             batch_size: int) -> tuple[Tensor, Trajectory | None]:
    """DDIM from the seeded x_T to x0 over each query's K candidates, in batches of queries.

    Returns:
        (x0 (Q, K) in cosine order, the trajectory or None).
    """
    q, k = top_indices.shape
    steps = config.num_inference_steps
    noise = start_noise(k, config.seed, device=query_embeds.device, dtype=query_embeds.dtype)  # (K,)
    x0_parts, traj_parts = [], []
    for start in range(0, q, batch_size):
        queries = query_embeds[start : start + batch_size]  # (B, D)
        ids = top_indices[start : start + batch_size]  # (B, K)
        start_noise_b = noise.expand(queries.shape[0], k).contiguous()  # (B, K)
        if candidate_cache is not None:  # the fused loop: same result as ddim_sample over forward_cached
            out = denoiser.ddim_sample_cached(scheduler, start_noise_b, denoiser.prepare_queries(queries),
                                              candidate_cache, ids, steps, return_trajectory=return_trajectory)
        else:
            candidates = candidate_embeds[ids]  # (B, K, D), gathered once per batch

            def denoise_fn(x_t: Tensor, t: int, queries: Tensor = queries, candidates: Tensor = candidates) -> Tensor:
                timesteps = torch.full((x_t.shape[0],), int(t), dtype=torch.long, device=x_t.device)
                return denoiser(x_t, timesteps, queries, candidates)

            out = ddim_sample(denoise_fn, scheduler, start_noise_b, steps, return_trajectory=return_trajectory)
        x0, traj = out if return_trajectory else (out, None)
        x0_parts.append(x0)  # (B, K)
        traj_parts.append(traj)
    x0 = torch.cat(x0_parts) if x0_parts else query_embeds.new_zeros(0, k)  # (Q, K), cosine order
    if not return_trajectory:
        return x0, None
    if traj_parts:
        return x0, Trajectory(timesteps=traj_parts[0].timesteps, x_t=torch.cat([t.x_t for t in traj_parts], dim=1),
                              pred_x0=torch.cat([t.pred_x0 for t in traj_parts], dim=1))
    s = len(scheduler.timesteps)
    return x0, Trajectory(timesteps=scheduler.timesteps.clone(), x_t=x0.new_zeros(s + 1, 0, k),
                          pred_x0=x0.new_zeros(s, 0, k))


@dataclass
class FullRerank:
    """Every query scored against every candidate: the cosine matrix and its re-ranked top K.

    Attributes:
        cosine: (Q, N) the phase-1 cosine S (Dis).
        result: the re-ranked top K of each query (``RerankResult``).
    """

    cosine: Tensor
    result: RerankResult

    @property
    def fused(self) -> Tensor:
        """(Q, N) Gen+Dis: S + alpha * diffusion on each query's top K, S elsewhere."""
        return self.cosine.scatter(1, self.result.indices, self.result.fused)

    @property
    def generated(self) -> Tensor:
        """(Q, N) Gen: the diffusion term alone orders each query's top K (``fusion.gen_rank_scores``:
        rank-encoded above every cosine, ties in cosine order); S elsewhere."""
        result = self.result
        diffusion = torch.empty_like(result.diffusion).scatter_(1, result.cosine_rank, result.diffusion)  # cosine order
        return gen_rank_scores(self.cosine, result.cosine_order, diffusion)


def full_rerank(query_embeds: Tensor, candidate_embeds: Tensor, denoiser: Any, scheduler: Any,
                config: RetrievalConfig, *, scores: Tensor | None = None, **options: Any) -> FullRerank:
    """The re-rank for evaluation: the (Q, N) cosine matrix and each query's re-ranked top K.

    The top K and the untouched entries come from one matrix, so they agree exactly.

    Args:
        query_embeds: (Q, D), candidate_embeds: (N, D), L2-normalised.
        denoiser, scheduler, config: as for ``rerank_topk`` (``config.top_k`` is clamped to N).
        scores: (Q, N) ``query_embeds @ candidate_embeds.T`` when the caller already has it
            (evaluation reuses one matrix across seeds); computed here when None.
        options: ``rerank_topk``'s keyword options (candidate_cache, factorised, batch_size).

    Returns:
        FullRerank (``.fused`` is Gen+Dis, ``.generated`` Gen, ``.cosine`` Dis).
    """
    check_pair(query_embeds, candidate_embeds)
    if scores is None:
        scores = query_embeds @ candidate_embeds.T  # (Q, N)
        check_finite_scores(scores)
    top_scores, top_indices = stable_topk(scores, min(config.top_k, candidate_embeds.shape[0]))  # (Q, K)
    result = rerank_topk(query_embeds, candidate_embeds, top_scores, top_indices, denoiser, scheduler, config,
                         **options)
    return FullRerank(cosine=scores, result=result)


def full_fused_scores(query_embeds: Tensor, candidate_embeds: Tensor, denoiser: Any, scheduler: Any,
                      config: RetrievalConfig, **options: Any) -> Tensor:
    """(Q, N) Gen+Dis scores: ``full_rerank(...).fused`` (S + alpha * diffusion on the top K, S elsewhere)."""
    return full_rerank(query_embeds, candidate_embeds, denoiser, scheduler, config, **options).fused
