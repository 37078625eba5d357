"""The per-candidate context of the "shortlist" denoisers (docs/method.md, "Shortlist context").

Pure tensor functions: a candidate's hubness against a bank of queries, and the features a
candidate carries besides its embedding (its cosine to the query, its mean / max cosine to the
other candidates of the shortlist, its hubness). The paper's denoiser uses none of them.
"""

from __future__ import annotations

import torch
from torch import Tensor


def hubness(candidates: Tensor, bank: Tensor, neighbours: int, exclude: Tensor | None = None) -> Tensor:
    """Each candidate's hubness: the mean of its ``neighbours`` highest cosines to a query bank.

    A candidate close to many queries (a "hub") wins rankings it should not; QB-Norm and CSLS
    correct for this, and the "shortlist+hubness" denoiser sees it as an input.

    Args:
        candidates: (N, D) L2-normalised embeddings.
        bank: (M, D) L2-normalised queries (the training queries).
        neighbours: how many of the highest cosines are averaged (at most the bank's size).
        exclude: optional (N, M) bool, True where a bank query must not count for a candidate
            (in training: the queries of the candidate's own sound, which an unseen candidate
            never has in the bank).

    Returns:
        (N,) float32.
    """
    if bank.shape[0] == 0:
        raise ValueError("the query bank is empty: set it with Denoiser.set_query_bank before use")
    sims = candidates.float() @ bank.float().T  # (N, M)
    if exclude is not None:
        sims = sims.masked_fill(exclude, float("-inf"))
    top = torch.topk(sims, min(neighbours, bank.shape[0]), dim=1).values  # (N, m)
    top = torch.where(torch.isfinite(top), top, top.new_zeros(()))  # a candidate with < m allowed queries
    return top.mean(dim=1)


def shortlist_context(query: Tensor, candidates: Tensor, candidate_hubness: Tensor | None) -> Tensor:
    """The per-candidate context features of the "shortlist" denoisers (docs/method.md).

    Args:
        query: (B, D), candidates: (B, K, D), L2-normalised.
        candidate_hubness: (B, K) hubness of each candidate, or None ("shortlist").

    Returns:
        (B, K, F) float: [cos(q, c_k), mean_{j != k} cos(c_k, c_j), max_{j != k} cos(c_k, c_j)]
        (+ [hubness_k]); with K = 1 the candidate-candidate terms are 0.
    """
    K = candidates.shape[1]
    cos_q = torch.einsum("bd,bkd->bk", query, candidates)  # (B, K)
    cc = torch.einsum("bkd,bjd->bkj", candidates, candidates)  # (B, K, K)
    if K > 1:
        eye = torch.eye(K, dtype=torch.bool, device=cc.device)
        cc_mean = cc.masked_fill(eye, 0.0).sum(-1) / (K - 1)  # (B, K)
        cc_max = cc.masked_fill(eye, float("-inf")).amax(-1)  # (B, K)
    else:
        cc_mean = cc_max = torch.zeros_like(cos_q)
    feats = [cos_q, cc_mean, cc_max]
    if candidate_hubness is not None:
        feats.append(candidate_hubness.to(cos_q.dtype))
    return torch.stack(feats, dim=-1)
