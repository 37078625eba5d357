"""Recording groups, for "one result per sound": which clips of an index are variants of one recording.

A clip's group is its metadata's sound key (a manifest's ``label_group``: the built-in corpus
names every clip's recording, dog_01 ... dog_05 share one; ``diffatr.data.sounds.sound_keys``).
A clip without one (a folder of the user's own sounds) is grouped by its audio: clips whose
backbone embeddings are near-duplicates (cosine >= ``NEAR_DUPLICATE_COSINE`` to the group's
first clip) are one group. The threshold was chosen on the built-in corpus's known groups
(``benchmarks/similar.py``, docs/method.md "One result per sound").

``collapse`` keeps the best-ranked row of each group in a ranking and counts what it hides.
Pure tensor code: no files, no randomness; it follows the device of its inputs.

Shape legend: N clips, U clips without a sound key, D backbone width, W ranked rows of a query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from diffatr.data.sounds import sound_keys
from diffatr.retrieval.topk import SearchError

__all__ = ["MAX_UNNAMED_CLIPS", "NEAR_DUPLICATE_COSINE", "RecordingGroups", "collapse", "near_duplicate_groups"]

# A clip without a sound key joins a group when its backbone cosine to the group's first clip is
# at least this. Chosen on the built-in corpus's label groups (benchmarks/similar.py sweeps it):
# grouping all 2,575 clips of its second release by their audio alone, 0.94 gives the best pair
# F0.5 against the label groups (precision 0.69, recall 0.22; on the 1,195-clip first release
# 0.92 did, precision 0.73). F0.5 counts precision twice: hiding a different sound as
# a "variant" costs a user more than seeing one recording twice (at 0.89, the best F1, five of
# the ten different animals of assets/examples became one group; at 0.90, three).
NEAR_DUPLICATE_COSINE = 0.94
# Clips without a sound key grouped by their audio at most (each is compared with every group's
# first clip, U x G x D multiply-adds, once per index: 10,000 clips take seconds).
MAX_UNNAMED_CLIPS = 10_000
_CHUNK = 2048  # rows of the pairwise cosine matrix held at once


def near_duplicate_groups(features: Tensor, threshold: float) -> list[int]:
    """Leader clustering of (U, D) backbone features: in row order, a clip joins the group whose
    first clip (its leader) is most similar to it, if that cosine is >= ``threshold``, and
    otherwise starts a group. Every member is a near-duplicate of its leader, so a group never
    grows by a chain of small steps (connected components did: one group of 120 clips on the
    built-in corpus at 0.92).

    Returns:
        U group numbers, 0, 1, ... in order of first appearance.
    """
    unit = F.normalize(features.float(), dim=-1)  # (U, D)
    leaders = unit.new_zeros(0, unit.shape[1])  # (G, D)
    out: list[int] = []
    for start in range(0, unit.shape[0], _CHUNK):
        block = unit[start : start + _CHUNK]  # (chunk, D)
        inner = block @ block.T  # (chunk, chunk): the leaders this chunk itself starts
        outer = block @ leaders.T  # (chunk, G): the leaders of earlier chunks
        first_new = leaders.shape[0]
        new_rows: list[int] = []  # rows of this chunk that lead a group
        for i in range(block.shape[0]):
            best, group = -2.0, -1
            if outer.shape[1]:
                value, index = outer[i].max(dim=0)
                best, group = float(value), int(index)
            if new_rows:
                value, index = inner[i, new_rows].max(dim=0)
                if float(value) > best:
                    best, group = float(value), first_new + int(index)
            if best < threshold:
                group = first_new + len(new_rows)
                new_rows.append(i)
            out.append(group)
        leaders = torch.cat([leaders, block[new_rows]])
    return out


@dataclass(frozen=True)
class RecordingGroups:
    """The recording group of every clip of an index.

    Attributes:
        ids: (N,) int64 group number of each clip.
        sizes: (G,) int64 clips per group.
        names: G names: the sound key, or ``"near:<clip id>"`` (the group's first clip) for
            clips grouped by their audio.
    """

    ids: Tensor
    sizes: Tensor
    names: list[str]

    @classmethod
    def of_index(cls, clip_ids: Sequence[str], metadata: Sequence[dict[str, Any]], audio_features: Tensor,
                 threshold: float) -> RecordingGroups:
        """Group an index's clips: by sound key, else by near-duplicate backbone features.

        Args:
            clip_ids, metadata: the index's (N).
            audio_features: (N, D) backbone features (only the rows without a key are read).
            threshold: the near-duplicate cosine (``NEAR_DUPLICATE_COSINE``).

        Raises:
            SearchError: more than ``MAX_UNNAMED_CLIPS`` clips without a sound key.
        """
        keys = sound_keys(clip_ids, metadata)
        unnamed = [row for row, key in enumerate(keys) if key is None]
        if len(unnamed) > MAX_UNNAMED_CLIPS:
            raise SearchError(
                f"one result per sound groups clips by their label_group, and {len(unnamed):,} clips of this "
                f"index have none: grouping them by their audio compares every pair, which is allowed up to "
                f"{MAX_UNNAMED_CLIPS:,}. Index a manifest with a label_group column, or search without "
                "--one-per-sound")
        names = [f"key:{key}" if key is not None else "" for key in keys]
        if unnamed:
            component = near_duplicate_groups(audio_features[unnamed], threshold)
            first: dict[int, str] = {}
            for row, comp in zip(unnamed, component):
                names[row] = first.setdefault(comp, f"near:{clip_ids[row]}")
        number: dict[str, int] = {}
        ids = torch.tensor([number.setdefault(name, len(number)) for name in names], dtype=torch.long)
        sizes = torch.bincount(ids, minlength=len(number)) if len(ids) else torch.zeros(0, dtype=torch.long)
        return cls(ids=ids, sizes=sizes, names=[name[len("key:"):] if name.startswith("key:") else name for name in number])


def collapse(groups: Tensor, k: int, excluded: Tensor | None = None,
             sizes: Tensor | None = None) -> tuple[list[int], list[int]]:
    """The first ``k`` positions of a ranking with one row per group, and what each hides.

    Args:
        groups: (W,) the group of each ranked row, best first.
        k: how many groups to keep.
        excluded: group numbers of rows that are never shown (the query clip itself), each
            entry one row (repeats count), so that a kept group does not count them.
        sizes: (G,) clips per group in the whole index: a kept row's hidden count is its
            group's size less one (less its excluded rows). None: the rows of ``groups`` that
            share its group are counted instead.

    Returns:
        (kept positions into ``groups``, ascending; the hidden count of each).
    """
    ranked = groups.tolist()
    kept: list[int] = []
    seen: dict[int, int] = {}
    for position, group in enumerate(ranked):
        if group not in seen:
            if len(kept) == k:
                if sizes is not None:
                    break
                continue  # still counting the rows of the kept groups
            seen[group] = len(kept)
            kept.append(position)
    if sizes is not None:
        totals = {group: int(sizes[group]) for group in seen}
    else:
        totals = {group: sum(1 for g in ranked if g == group) for group in seen}
    if excluded is not None:
        for group in excluded.tolist():
            if group in totals:
                totals[group] -= 1
    hidden = [max(0, totals[ranked[position]] - 1) for position in kept]
    return kept, hidden
