"""The first stage: each query's top K candidates by cosine, exactly, with ties broken by index.

Pure tensor code: it follows the device of its inputs, reads no files and draws no random
numbers. A vector store (``diffatr.retrieval.stores``) answers the same question approximately
for large libraries; the exact store uses ``cosine_topk``.

Shape legend: Q queries, N candidates (the corpus), K candidates kept per query, D embedding width.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffatr.errors import DiffatrError

__all__ = ["SearchError", "check_finite_scores", "check_pair", "cosine_topk", "stable_topk"]

# Score-matrix elements held at once by ``cosine_topk`` (float32: 64 MiB).
_MAX_SCORE_ELEMENTS = 1 << 24


class SearchError(DiffatrError):
    """A search that cannot run as asked (empty query, missing captions, mismatched shapes ...)."""


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
    check_pair(query_embeds, candidate_embeds)
    if k < 1:
        raise SearchError(f"k must be >= 1, got {k}")
    n = candidate_embeds.shape[0]
    k = min(int(k), n)
    chunk = max(1, max_elements // n)
    out_scores, out_indices = [], []
    for start in range(0, query_embeds.shape[0], chunk):
        scores = query_embeds[start : start + chunk] @ candidate_embeds.T  # (chunk, N)
        check_finite_scores(scores)
        values, indices = stable_topk(scores, k)
        out_scores.append(values)
        out_indices.append(indices)
    if not out_scores:  # Q = 0
        return query_embeds.new_zeros(0, k), torch.zeros(0, k, dtype=torch.long, device=query_embeds.device)
    return torch.cat(out_scores), torch.cat(out_indices)


def check_pair(query_embeds: Tensor, candidate_embeds: Tensor) -> None:
    if query_embeds.ndim != 2 or candidate_embeds.ndim != 2:
        raise SearchError(f"expected query (Q, D) and candidates (N, D), got {tuple(query_embeds.shape)} "
                          f"and {tuple(candidate_embeds.shape)}")
    if query_embeds.shape[1] != candidate_embeds.shape[1]:
        raise SearchError(f"query width {query_embeds.shape[1]} != candidate width {candidate_embeds.shape[1]}")
    if candidate_embeds.shape[0] == 0:
        raise SearchError("the candidate set is empty: index some audio (or captions) first")


def check_finite_scores(scores: Tensor) -> None:
    # A NaN in either input reaches the scores, so checking the (chunk, N) output is enough and
    # costs far less than scanning the (N, D) candidates on every call.
    if not bool(torch.isfinite(scores).all()):
        raise SearchError("similarities contain NaN or inf: a query embedding or an index row is "
                          "not finite (re-embed the query; rebuild the index if it persists)")
