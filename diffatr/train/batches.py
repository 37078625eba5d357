"""Batch construction of both phases: caption batches, batches of distinct sounds, and
phase 2's candidate lists (hardest first, positive at index 0; in-batch or mined).

Shape legend: B batch (pairs), K candidates per query, D shared width, P pool size.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import Tensor

from diffatr.features import FeatureSet
from diffatr.train.common import TrainError

# ----------------------------------------------------------------------------- batches


def epoch_batches(num_captions: int, batch_size: int, generator: torch.Generator) -> Tensor:
    """Phase-1 batches of one epoch: a random permutation of the captions cut into
    ``num_captions // batch_size`` batches (the remainder is dropped, as CLIP does).

    Two captions of one clip may share a batch; ``contrastive_pairs`` gives them the same
    clip id so the loss treats them as positives, not negatives.

    Returns:
        (S, B) int64 caption rows.
    """
    if not 1 <= batch_size <= num_captions:
        raise TrainError(f"batch_size must be in 1..{num_captions} (the number of captions), got {batch_size}")
    steps = num_captions // batch_size
    perm = torch.randperm(num_captions, generator=generator)  # (M,)
    return perm[: steps * batch_size].view(steps, batch_size)


def unique_clip_batches(caption_to_clip: Tensor, batch_size: int, generator: torch.Generator) -> Tensor:
    """Phase-2 batches of one epoch: every batch holds ``batch_size`` captions of *different* clips.

    The captions are permuted and dealt in order; a caption whose clip is already in the
    batch being filled waits (in order) for the next batch. This is the deduplication rule of
    phase 2 (docs/pitfalls.md: the reference labelled a second copy of the positive as a
    negative): with distinct clips, the in-batch candidates of a text query hold its clip
    exactly once, and those of an audio query hold exactly one of its captions. When the
    waiting captions cannot fill the last batch, it is topped up with a random caption of
    random clips not in it yet. There are always ``M // batch_size`` batches.

    Args:
        caption_to_clip: (M,) int64 owner of each caption: its clip, or its sound unit so that
            a batch never holds two variants of one sound (training passes units).
        batch_size: B, at most the number of distinct owners.
        generator: the only source of randomness.

    Returns:
        (S, B) int64 caption rows.
    """
    owners = caption_to_clip.tolist()
    captions_of: dict[int, list[int]] = {}
    for row, clip in enumerate(owners):
        captions_of.setdefault(clip, []).append(row)
    clips = sorted(captions_of)
    if not 1 <= batch_size <= len(clips):
        raise TrainError(f"batch_size must be in 1..{len(clips)} (the number of clips: phase-2 batches hold "
                         f"distinct clips), got {batch_size}")
    steps = len(owners) // batch_size
    pending = deque(torch.randperm(len(owners), generator=generator).tolist())
    batches = []
    for _ in range(steps):
        batch: list[int] = []
        taken: set[int] = set()
        waiting: list[int] = []
        while pending and len(batch) < batch_size:
            row = pending.popleft()
            if owners[row] in taken:
                waiting.append(row)
            else:
                batch.append(row)
                taken.add(owners[row])
        pending.extendleft(reversed(waiting))  # they lead the next batch, in their order
        if len(batch) < batch_size:
            free = [c for c in clips if c not in taken]
            for j in torch.randperm(len(free), generator=generator)[: batch_size - len(batch)].tolist():
                rows = captions_of[free[j]]
                batch.append(rows[int(torch.randint(len(rows), (1,), generator=generator))])
        batches.append(batch)
    return torch.tensor(batches, dtype=torch.long).view(steps, batch_size)


def contrastive_pairs(features: FeatureSet, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The (caption, clip) pairs of a phase-1 batch.

    Args:
        features: the split's features.
        rows: (B,) caption rows.

    Returns:
        text (B, Dt), audio (B, Da) (a clip with two captions in the batch appears twice) and
        clip_ids (B,): equal ids mark the same clip, which ``nt_xent_loss`` masks out of the
        negatives.
    """
    clip_ids = features.caption_to_clip[rows]  # (B,)
    return features.text[rows], features.audio[clip_ids], clip_ids


@torch.no_grad()
def hardest_first(query: Tensor, pool: Tensor, positive: Tensor | None = None) -> Tensor:
    """The candidate order of each query: its positive first, then every other pool item by
    cosine similarity, highest (hardest) first; ties keep the pool order.

    The positive's fixed slot leaks nothing: the denoiser has no position signal over
    candidates (tests/test_denoiser.py).

    Args:
        query: (B, D) L2-normalised queries.
        pool: (P, D) L2-normalised candidates.
        positive: (B,) pool row of each query's positive; default ``arange(B)`` (row i pairs
            with query i, as in a batch of pairs).

    Returns:
        (B, P) int64 pool rows; column 0 is the positive.
    """
    batch = query.shape[0]
    if positive is None:
        positive = torch.arange(batch, device=query.device)
    scores = (query.float() @ pool.float().T).clone()  # (B, P)
    scores[torch.arange(batch, device=query.device), positive] = float("inf")
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def diffusion_candidates(query: Tensor, pool: Tensor) -> Tensor:
    """Candidates of a phase-2 batch: row i of ``pool`` is the positive of query i; every
    query gets all B pool items, hardest first, positive at index 0.

    Args:
        query: (B, D), pool: (B, D), L2-normalised, with distinct items in ``pool``.

    Returns:
        (B, K = B, D) candidates.
    """
    order = hardest_first(query, pool)  # (B, B)
    return pool[order]  # (B, K, D)


def mined_candidates(query: Tensor, query_owner: Tensor, positive: Tensor, pool: Tensor, pool_owner: Tensor,
                     k: int) -> Tensor:
    """Candidates mined from a whole pool: the positive, then the query's K - 1 nearest pool
    items that belong to another sound, hardest first (what the cosine top-K holds at inference).

    Items of the query's own sound other than the positive (its other captions, the variants
    of its clip) are never negatives.

    Args:
        query: (B, D) L2-normalised queries; query_owner: (B,) the sound unit of each query
            (``diffatr.data.sounds``; clip ids give the clip-only rule).
        positive: (B,) pool row of each query's positive.
        pool: (P, D) L2-normalised candidates; pool_owner: (P,) the sound unit of each pool item.
        k: K, candidates per query (at most 1 + the pool items of other sounds).

    Returns:
        (B, K, D) candidates, the positive at index 0.
    """
    return pool[mined_candidate_rows(query, query_owner, positive, pool, pool_owner, k)]  # (B, K, D)


def mined_candidate_rows(query: Tensor, query_owner: Tensor, positive: Tensor, pool: Tensor, pool_owner: Tensor,
                         k: int) -> Tensor:
    """The (B, K) pool rows behind ``mined_candidates`` (same arguments), the positive in column 0."""
    scores = query.float() @ pool.float().T  # (B, P)
    scores = scores.masked_fill(pool_owner[None, :] == query_owner[:, None], float("-inf"))
    negatives = torch.topk(scores, k - 1, dim=1, sorted=True).indices  # (B, K-1), hardest first
    return torch.cat([positive[:, None], negatives], dim=1)  # (B, K)
