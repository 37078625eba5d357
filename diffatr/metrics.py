"""Retrieval metrics of the audio-text retrieval protocol (docs/docs/protocol.md): ranks, R@k, mAP@10.

Pure functions: score matrices in (torch or numpy), python numbers out. No I/O, no device
choice (tensors stay where they are given), no randomness.

Shape legend: Q text queries (captions), N audio clips, M captions as candidates (M = Q).

Tie rule ("pessimistic", the default): a relevant item is ranked *after* every non-relevant
candidate with exactly the same score; ties among one query's own relevant items are broken by
candidate index. Equivalently, candidates are sorted by (score descending, relevant last,
index ascending). Why this and not a plain stable sort by index: with it every metric is
invariant to the order of the candidates even when scores tie, and a collapsed model (constant
scores, or an fp16 index that rounds scores together) cannot earn credit from where the
dataset happened to put its positives. ``ties="stable"`` gives the plain stable descending
sort (ties broken by candidate index alone) for comparison with code that does that.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from diffatr.errors import DiffatrError

__all__ = [
    "MetricsError",
    "text_to_audio_ranks",
    "audio_to_text_ranks",
    "retrieval_metrics",
]

TieRule = Literal["pessimistic", "stable"]

# Elements of the (q, P, C) comparison tensor built per chunk: bounds memory at a few tens of
# MB whatever the corpus size, while 957 x 5 x 4785 still runs in two chunks.
_CHUNK_ELEMENTS = 1 << 24


class MetricsError(DiffatrError):
    """Scores or labels that cannot be evaluated (wrong shape, NaN, clip id out of range)."""


# ----------------------------------------------------------------------------- input checks


def _as_scores(scores, name: str) -> Tensor:
    scores = torch.as_tensor(scores)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise MetricsError(
            f"{name} must be a non-empty 2-D matrix (queries x candidates), got shape {tuple(scores.shape)}"
        )
    if scores.dtype == torch.bool or scores.is_complex():
        raise MetricsError(f"{name} must hold real scores, got dtype {scores.dtype}")
    if scores.is_floating_point():
        nan_rows = torch.isnan(scores).any(dim=1)
        if bool(nan_rows.any()):
            bad = nan_rows.nonzero().flatten()[:5].tolist()
            raise MetricsError(
                f"{name} contains NaN in {int(nan_rows.sum())} row(s) (first: {bad}); ranks are "
                "undefined for NaN scores: fix the model output (e.g. a zero-norm embedding "
                "normalised without eps) or replace NaN with -inf before evaluating"
            )
    return scores


def _as_caption_to_clip(caption_to_clip, length: int, num_clips: int, device) -> Tensor:
    labels = torch.as_tensor(caption_to_clip)
    if labels.ndim != 1 or labels.dtype in (torch.bool,) or labels.is_floating_point() or labels.is_complex():
        raise MetricsError(
            f"caption_to_clip must be a 1-D integer vector (the clip index of each caption), "
            f"got shape {tuple(labels.shape)} and dtype {labels.dtype}"
        )
    if labels.shape[0] != length:
        raise MetricsError(
            f"caption_to_clip has {labels.shape[0]} entries but the scores have {length} captions"
        )
    labels = labels.to(device=device, dtype=torch.long)
    if length and (int(labels.min()) < 0 or int(labels.max()) >= num_clips):
        raise MetricsError(
            f"caption_to_clip values must lie in [0, {num_clips}) (one per clip column/row of "
            f"the scores), got range [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels


def _check_ties(ties: str) -> None:
    if ties not in ("pessimistic", "stable"):
        raise MetricsError(f"ties must be 'pessimistic' or 'stable', got {ties!r}")


# ----------------------------------------------------------------------------- ranks


def _ranks_of_relevant(scores: Tensor, relevant: Tensor, valid: Tensor, ties: TieRule) -> Tensor:
    """0-based rank of each listed relevant candidate in its query's ranking.

    Compares every candidate's score against each relevant item's score instead of sorting
    the rows (a row sort costs several times more here): rank = the number of candidates
    ranked ahead of the item under the tie rule.

    Args:
        scores: (Q, C) scores, higher = better.
        relevant: (Q, P) candidate indices of each query's relevant items; padding slots
            must repeat a real relevant index of the same query.
        valid: (Q, P) bool, False on padding.
        ties: the tie rule (module docstring).

    Returns:
        (Q, P) long ranks; padding slots hold -1.
    """
    num_queries, num_candidates = scores.shape
    num_relevant = relevant.shape[1]
    rel_scores = scores.gather(1, relevant)  # (Q, P)
    ranks = torch.empty(num_queries, num_relevant, dtype=torch.long, device=scores.device)
    candidate_index = torch.arange(num_candidates, device=scores.device)  # (C,)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, num_relevant * num_candidates))
    for start in range(0, num_queries, chunk):
        s = scores[start : start + chunk].unsqueeze(1)  # (q, 1, C)
        v = rel_scores[start : start + chunk].unsqueeze(-1)  # (q, P, 1)
        if ties == "pessimistic":
            # Every candidate scoring >= the item is ahead of it, except the item itself and
            # its fellow relevant items that tie with it and have a higher index (fixed below
            # on the small (q, P, P) block). int32 sums are ~2x faster than the default int64.
            ahead = (s >= v).sum(dim=-1, dtype=torch.int32)  # (q, P)
        else:
            r = relevant[start : start + chunk].unsqueeze(-1)  # (q, P, 1)
            ahead = ((s > v) | ((s == v) & (candidate_index < r))).sum(dim=-1, dtype=torch.int32)
        ranks[start : start + chunk] = ahead
    if ties == "pessimistic":
        # Relevant j (real, not padding) tying with relevant i at index j >= i, i itself included.
        not_ahead = (
            (rel_scores.unsqueeze(2) == rel_scores.unsqueeze(1))
            & (relevant.unsqueeze(1) >= relevant.unsqueeze(2))
            & valid.unsqueeze(1)
        )  # (Q, P, P)
        ranks = ranks - not_ahead.sum(dim=-1)
    return ranks.masked_fill(~valid, -1)


def text_to_audio_ranks(scores, caption_to_clip, ties: TieRule = "pessimistic") -> Tensor:
    """0-based rank of each caption's own clip among all clips (text -> audio).

    Args:
        scores: (Q, N) scores of Q caption queries against N clips (torch or numpy).
        caption_to_clip: (Q,) integer clip index of each caption.
        ties: "pessimistic" (default) or "stable"; see the module docstring.

    Returns:
        (Q,) long tensor of ranks in [0, N), on the scores' device.

    Raises:
        MetricsError (a ValueError): bad shapes, NaN scores, clip index out of range.
    """
    _check_ties(ties)
    scores = _as_scores(scores, "scores")
    labels = _as_caption_to_clip(caption_to_clip, scores.shape[0], scores.shape[1], scores.device)
    valid = torch.ones(labels.shape[0], 1, dtype=torch.bool, device=scores.device)
    return _ranks_of_relevant(scores, labels.unsqueeze(1), valid, ties).squeeze(1)  # (Q,)


def audio_to_text_ranks(scores, caption_to_clip, ties: TieRule = "pessimistic") -> tuple[Tensor, Tensor]:
    """Ranks of each clip's captions among all captions (audio -> text).

    A clip may have any number (>= 1) of captions; the protocol uses 5.

    Args:
        scores: (N, M) scores of N clip queries against M captions (torch or numpy).
        caption_to_clip: (M,) integer clip index of each caption.
        ties: "pessimistic" (default) or "stable"; see the module docstring.

    Returns:
        best_ranks: (N,) long, the 0-based rank of the clip's best-ranked caption.
        positions: (N, P) long, P = the largest caption count of any clip: the 1-based
            positions of each clip's captions in its ranking, sorted ascending, padded with 0
            on the right for clips with fewer captions (so ``positions > 0`` marks real ones).

    Raises:
        MetricsError (a ValueError): bad shapes, NaN scores, clip index out of range, or a clip
        without any caption (its audio -> text query would have nothing to find).
    """
    _check_ties(ties)
    scores = _as_scores(scores, "scores")
    num_clips, num_captions = scores.shape
    labels = _as_caption_to_clip(caption_to_clip, num_captions, num_clips, scores.device)
    counts = torch.bincount(labels, minlength=num_clips)  # (N,)
    if bool((counts == 0).any()):
        missing = (counts == 0).nonzero().flatten()[:5].tolist()
        raise MetricsError(
            f"{int((counts == 0).sum())} clip(s) have no caption (first: {missing}); every clip "
            "row of the audio -> text scores needs at least one caption in caption_to_clip"
        )
    # Captions grouped by clip: the stable sort keeps each clip's captions in index order.
    order = torch.sort(labels, stable=True).indices  # (M,)
    starts = torch.cumsum(counts, 0) - counts  # (N,)
    max_count = int(counts.max())
    slot = torch.arange(max_count, device=scores.device)  # (P,)
    valid = slot.unsqueeze(0) < counts.unsqueeze(1)  # (N, P)
    # Padding slots point at the clip's first caption, so they index a real relevant item.
    take = starts.unsqueeze(1) + torch.where(valid, slot.unsqueeze(0), torch.zeros_like(slot).unsqueeze(0))
    relevant = order[take]  # (N, P)
    ranks = _ranks_of_relevant(scores, relevant, valid, ties)  # (N, P), -1 on padding
    # Padding sorts last by mapping it above any real rank, then back to 0.
    positions = torch.where(valid, ranks + 1, torch.full_like(ranks, num_captions + 1))
    positions = torch.sort(positions, dim=1).values
    positions = positions.masked_fill(positions > num_captions, 0)
    best_ranks = positions[:, 0] - 1  # (N,)
    return best_ranks, positions


# ----------------------------------------------------------------------------- summaries


def _rank_summary(best_ranks: Tensor, ks: Sequence[int]) -> dict[str, float]:
    r = best_ranks.detach().cpu().to(torch.float64)  # (Q,)
    out = {f"R@{k}": 100.0 * float((r < k).to(torch.float64).mean()) for k in ks}
    # The protocol's median: the true median (mean of the two middle ranks for an even
    # count; torch.median would return the lower one), floored, made 1-based.
    sorted_r = torch.sort(r).values
    n = sorted_r.shape[0]
    median = float(sorted_r[n // 2]) if n % 2 else 0.5 * float(sorted_r[n // 2 - 1] + sorted_r[n // 2])
    out["median_rank"] = float(math.floor(median) + 1)
    out["mean_rank"] = float(r.mean()) + 1.0
    return out


def _check_ks(ks: Sequence[int], map_k: int) -> tuple[int, ...]:
    ks = tuple(ks)
    for k in (*ks, map_k):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise MetricsError(f"cut-offs must be positive integers, got ks={ks}, map_k={map_k}")
    return tuple(int(k) for k in ks)


def retrieval_metrics(
    scores_t2a,
    scores_a2t=None,
    caption_to_clip=None,
    ks: Sequence[int] = (1, 5, 10),
    map_k: int = 10,
    ties: TieRule = "pessimistic",
) -> dict[str, float | int]:
    """All protocol metrics for both directions (docs/protocol.md, "Retrieval metrics").

    Text -> audio, rank r of the caption's own clip: R@k = 100 * share(r < k);
    mAP@10 = 100 * mean(1 / (r + 1) if r < 10 else 0).
    Audio -> text, per clip: R@k uses the best rank of its captions; AP@10 takes the sorted
    1-based positions P_1 < P_2 < ... of its captions within the top 10 and is
    (sum_j j / P_j) / min(n, 10), n = the clip's caption count. For the protocol's 5 captions
    this divides by 5 whether or not all were found (never by the number found); min(n, 10)
    generalises it so that a perfect ranking scores 100 for any caption count.
    Both directions: median rank = floor(median(r)) + 1, mean rank = mean(r) + 1 (best rank
    for audio -> text).

    Args:
        scores_t2a: (Q, N) caption-to-clip scores.
        scores_a2t: (N, Q) clip-to-caption scores; None uses scores_t2a.T (fused diffusion
            scores differ per direction, so both are accepted).
        caption_to_clip: (Q,) integer clip index of each caption (required).
        ks: the R@k cut-offs.
        map_k: the mAP cut-off (the protocol: 10).
        ties: "pessimistic" (default) or "stable"; see the module docstring.

    Returns:
        {"text_to_audio/R@1": ..., ..., "text_to_audio/mAP@10", "text_to_audio/median_rank",
        "text_to_audio/mean_rank", the same under "audio_to_text/", "num_clips",
        "num_captions"}; metric values are python floats (percent for R@k and mAP), the
        counts ints.

    Raises:
        MetricsError (a ValueError) on inconsistent shapes, NaN scores or bad labels.
    """
    if caption_to_clip is None:
        raise MetricsError("caption_to_clip is required: the clip index of each caption (row of scores_t2a)")
    ks = _check_ks(ks, map_k)
    scores_t2a = _as_scores(scores_t2a, "scores_t2a")
    num_captions, num_clips = scores_t2a.shape
    if scores_a2t is None:
        scores_a2t = scores_t2a.T.contiguous()  # rows are scanned in chunks: a copy is faster
    else:
        scores_a2t = _as_scores(scores_a2t, "scores_a2t")
        if tuple(scores_a2t.shape) != (num_clips, num_captions):
            raise MetricsError(
                f"scores_a2t must be (num_clips, num_captions) = ({num_clips}, {num_captions}) to "
                f"match scores_t2a {tuple(scores_t2a.shape)}, got {tuple(scores_a2t.shape)}"
            )

    metrics: dict[str, float | int] = {}

    t2a = text_to_audio_ranks(scores_t2a, caption_to_clip, ties=ties)  # (Q,)
    summary = _rank_summary(t2a, ks)
    rr = torch.where(t2a < map_k, 1.0 / (t2a.to(torch.float64) + 1.0), torch.zeros((), dtype=torch.float64))
    summary[f"mAP@{map_k}"] = 100.0 * float(rr.mean())
    for name in [f"R@{k}" for k in ks] + [f"mAP@{map_k}", "median_rank", "mean_rank"]:
        metrics[f"text_to_audio/{name}"] = summary[name]

    best, positions = audio_to_text_ranks(scores_a2t, caption_to_clip, ties=ties)  # (N,), (N, P)
    summary = _rank_summary(best, ks)
    positions = positions.to(torch.float64)
    found = (positions > 0) & (positions <= map_k)  # (N, P)
    # Positions are sorted, so the j-th found caption (1-based) sits in slot j - 1.
    j = torch.arange(1, positions.shape[1] + 1, dtype=torch.float64, device=positions.device)
    precision = torch.where(found, j / positions.clamp(min=1.0), torch.zeros((), dtype=torch.float64))
    counts = (positions > 0).sum(dim=1).clamp(max=map_k).to(torch.float64)  # (N,)
    ap = precision.sum(dim=1) / counts  # (N,)
    summary[f"mAP@{map_k}"] = 100.0 * float(ap.mean())
    for name in [f"R@{k}" for k in ks] + [f"mAP@{map_k}", "median_rank", "mean_rank"]:
        metrics[f"audio_to_text/{name}"] = summary[name]

    metrics["num_clips"] = int(num_clips)
    metrics["num_captions"] = int(num_captions)
    return metrics
