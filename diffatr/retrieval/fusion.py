"""Re-ranking scores in one place: every scorer and fusion rule the engine, evaluation and the
benchmarks use, as pure tensor functions (no I/O, no model, no randomness, no device choice).

Scorers turn similarities into ranking scores:
- ``cosine``: the phase-1 score S (Dis).
- ``inverted_softmax`` / ``dual_softmax``: normalise each candidate over a *set of queries*
  (Bogolin et al. 2022, QB-Norm; Cheng et al. 2021, dual softmax). Over the test queries
  themselves they are transductive: a single query at serving time has no such set.
- ``qb_norm``: the same with a fixed bank of training queries, usable one query at a time.
- ``ensemble``: the mean of several models' scores (e.g. phase-1 seeds).
- ``gen_rank_scores``: the diffusion term alone inside each query's top K, rank-encoded.
Fusion rules combine a top-K of first-stage scores with the diffusion's x0 estimate:
- ``"paper"``: S + alpha * softmax(x0 / temperature), the paper's rule (docs/method.md).
- ``"zscore"``: S + alpha * std_K(S) * z(x0), the diffusion's standardised score on the scale of
  the query's own cosine spread (calibrated: alpha = 1 weighs both equally, whatever the
  spread of x0, which at temperature 1 makes the paper's bonus about 0.003 wide).

Shape legend: Q queries, N candidates, B bank queries, K re-ranked candidates per query.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffatr.config import FUSIONS

__all__ = ["FUSIONS", "cosine", "dual_softmax", "ensemble", "fuse", "gen_rank_scores", "inverted_softmax",
           "qb_norm"]


def cosine(queries: Tensor, candidates: Tensor) -> Tensor:
    """(Q, N) similarities of L2-normalised (Q, D) queries and (N, D) candidates."""
    return queries @ candidates.T


def inverted_softmax(scores: Tensor, temperature: float) -> Tensor:
    """(Q, N) log of each candidate's softmax over the queries: scores / T - logsumexp_q(scores / T).

    A candidate similar to every query (a hub) is pushed down. The set of queries is the rows
    of ``scores`` (transductive when those are the test queries).
    """
    scaled = scores / temperature
    return scaled - torch.logsumexp(scaled, dim=0, keepdim=True)


def dual_softmax(scores: Tensor, temperature: float) -> Tensor:
    """(Q, N) scores * softmax over the queries (dual softmax; transductive like
    ``inverted_softmax``). Ranking each row uses the query's own scores, reweighted by how much
    each candidate prefers this query over the others."""
    return scores * torch.softmax(scores / temperature, dim=0)


def qb_norm(scores: Tensor, bank_scores: Tensor, beta: float) -> Tensor:
    """(Q, N) QB-Norm with a fixed query bank (dynamic inverted softmax without the gating):
    scores - logsumexp_b(beta * bank_scores) / beta, on the cosine scale.

    Args:
        scores: (Q, N) the queries' similarities.
        bank_scores: (B, N) similarities of B bank queries (e.g. training captions) to the same
            candidates; the per-candidate term is computed once per index.
        beta: sharpness (> 0).
    """
    return scores - torch.logsumexp(beta * bank_scores, dim=0, keepdim=True) / beta


def ensemble(score_matrices: list[Tensor]) -> Tensor:
    """The mean of several (Q, N) score matrices (e.g. the cosines of phase-1 seeds)."""
    if not score_matrices:
        raise ValueError("an ensemble needs at least one score matrix")
    return torch.stack(score_matrices).mean(dim=0)


def fuse(top_scores: Tensor, x0: Tensor, *, rule: str, alpha: float, temperature: float) -> tuple[Tensor, Tensor]:
    """Fused scores of each query's top K.

    Args:
        top_scores: (Q, K) first-stage scores S of the re-ranked candidates.
        x0: (Q, K) the final x0 estimates, same order.
        rule: one of ``FUSIONS`` (see the module docstring): ``RetrievalConfig.fusion``.
        alpha: the diffusion term's weight (``RetrievalConfig.alpha``).
        temperature: the paper rule's softmax temperature (> 0; ``RetrievalConfig.temperature``).

    Returns:
        (fused (Q, K), diffusion (Q, K)): the fused score and the diffusion term it added
        divided by alpha (softmax(x0 / T) for "paper", std(S) * z(x0) for "zscore").
    """
    if rule == "paper":
        diffusion = torch.softmax(x0 / temperature, dim=-1)
    elif rule == "zscore":
        # Standardised over the query's K candidates; a constant x0 (or K = 1) adds nothing.
        centred = x0 - x0.mean(dim=-1, keepdim=True)
        spread = x0.std(dim=-1, keepdim=True, unbiased=False) if x0.shape[-1] > 1 else torch.ones_like(x0[..., :1])
        z = torch.where(spread > 0, centred / spread.clamp_min(1e-12), torch.zeros_like(centred))
        scale = top_scores.std(dim=-1, keepdim=True, unbiased=False) if x0.shape[-1] > 1 else torch.zeros_like(spread)
        diffusion = scale * z
    else:
        raise ValueError(f"unknown fusion rule {rule!r}; known: {', '.join(FUSIONS)}")
    return top_scores + alpha * diffusion, diffusion


def gen_rank_scores(scores: Tensor, top_indices: Tensor, diffusion: Tensor) -> Tensor:
    """(Q, N) the diffusion term alone as a ranking: inside each query's top K the candidates
    are ordered by ``diffusion`` (ties in the top-K's own order) and valued 2 + (K - j) / K for
    the j-th, above every cosine; the other entries keep ``scores`` and follow in their order.

    Rank-encoded rather than 2 + diffusion so that exact ties of the diffusion term (a clamped
    x0 saturates) are broken by the cosine order, as the engine's stable sort does, instead of
    by a metric's tie rule.

    Args:
        scores: (Q, N) first-stage scores.
        top_indices: (Q, K) candidate rows of each query's top K, in first-stage order.
        diffusion: (Q, K) the diffusion term of those candidates, same order.
    """
    k = top_indices.shape[1]
    order = torch.sort(diffusion, dim=1, descending=True, stable=True).indices  # (Q, K) positions
    rank_value = 2.0 + (k - torch.arange(k, device=scores.device, dtype=scores.dtype)) / max(k, 1)  # (K,)
    top = torch.empty(diffusion.shape, dtype=scores.dtype, device=scores.device)
    top.scatter_(1, order, rank_value.expand_as(order).contiguous())
    return scores.scatter(1, top_indices, top)
