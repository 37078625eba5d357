"""What counts as "the same sound": the one definition that training negatives, mined
candidates and unit-level evaluation all use.

Two clips are the same sound (one *sound unit*) when they share a sound key (a manifest's
``label_group``, merged across the near-duplicate links a corpus build records), or share a
caption after ``normalize_caption``, or are linked through a chain of such pairs. A pair of
the same unit is never a negative: numbered variants of one recording (dog_01 ... dog_05)
carry the same captions, and labelling one as the other's negative contradicts the data.

Pure bookkeeping: reads no audio; ``read_near_duplicate_links`` is the only file access.

Shape legend: N clips, M captions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor

from diffatr.data.text import normalize_caption

__all__ = ["LINKS_FILE", "SOUND_KEY_FIELDS", "one_clip_per_sound", "read_near_duplicate_links", "sound_keys",
           "sound_units"]

# Metadata fields that name a clip's sound, first found wins (the built-in corpus: label_group).
SOUND_KEY_FIELDS = ("sound_key", "label_group")
# The corpus build's report beside its manifest; its "near_duplicate_links" join two clips'
# label groups into one sound.
LINKS_FILE = "build_report.json"


def read_near_duplicate_links(manifest: str | Path) -> list[tuple[str, str]]:
    """The (clip id, clip id) near-duplicate pairs recorded beside a manifest, if any.

    A missing or unreadable report means no links (a user's own manifest has none).
    """
    path = Path(manifest).parent / LINKS_FILE
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        return [(str(link["a"]), str(link["b"])) for link in report.get("near_duplicate_links", [])]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []


class _Union:
    """Union-find over 0..n-1 with path halving."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def sound_keys(clip_ids: Sequence[str], metadata: Sequence[dict], links: Iterable[tuple[str, str]] = ()) -> list[str | None]:
    """Each clip's sound key: its first ``SOUND_KEY_FIELDS`` value, with the groups that linked
    clips belong to merged into one (named by the smallest of their keys), transitively.

    A linked clip without a key of its own gets its partner's (or ``"link:<clip id>"`` when no
    linked clip has one). Clips with no key and no link get None (their captions may still join
    them to other clips in ``sound_units``).
    """
    keys = [next((str(m[f]) for f in SOUND_KEY_FIELDS if m.get(f) not in (None, "")), None) for m in metadata]
    row = {clip: i for i, clip in enumerate(clip_ids)}
    union = _Union(len(clip_ids))
    first_of_key: dict[str, int] = {}
    for i, key in enumerate(keys):  # clips of one group are one sound ...
        if key is not None:
            union.union(i, first_of_key.setdefault(key, i))
    linked = set()
    for a, b in links:  # ... and a near-duplicate link joins two whole groups
        if a in row and b in row:
            union.union(row[a], row[b])
            linked.update((row[a], row[b]))
    members: dict[int, list[int]] = {}
    for i in range(len(clip_ids)):
        members.setdefault(union.find(i), []).append(i)
    merged = list(keys)
    for group in members.values():
        if not any(i in linked for i in group):
            continue  # untouched by links: keys stay as they are
        named = sorted({keys[i] for i in group if keys[i] is not None})
        target = named[0] if named else f"link:{clip_ids[group[0]]}"
        for i in group:
            merged[i] = target
    return merged


def sound_units(num_clips: int, captions: Sequence[str], caption_to_clip: Tensor | Sequence[int],
                keys: Sequence[str | None] | None = None) -> Tensor:
    """The sound unit of each clip: clips sharing a key or a normalised caption, transitively.

    Args:
        num_clips: N.
        captions: the M captions.
        caption_to_clip: (M,) clip row of each caption.
        keys: N sound keys (None = unknown); None = no keys, captions alone decide.

    Returns:
        (N,) int64 unit ids, numbered 0, 1, ... in order of first appearance, so that a split
        of distinct sounds gets ``arange(N)``.
    """
    owners = torch.as_tensor(caption_to_clip).tolist()
    if len(owners) != len(captions):
        raise ValueError(f"{len(captions)} captions but {len(owners)} caption owners")
    if keys is not None and len(keys) != num_clips:
        raise ValueError(f"{num_clips} clips but {len(keys)} sound keys")
    union = _Union(num_clips)
    first: dict[tuple[str, str], int] = {}

    def join(kind: str, value: str, clip: int) -> None:
        seen = first.setdefault((kind, value), clip)
        if seen != clip:
            union.union(clip, seen)

    for clip, key in enumerate(keys or []):
        if key is not None:
            join("key", key, clip)
    for caption, clip in zip(captions, owners):
        text = normalize_caption(caption)
        if text:
            join("caption", text, clip)
    number: dict[int, int] = {}
    return torch.tensor([number.setdefault(union.find(i), len(number)) for i in range(num_clips)], dtype=torch.long)


def one_clip_per_sound(units: Tensor, size: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """A gallery with one clip per sound: the first clip of each unit, then (if ``size`` is
    smaller than the number of units) ``size`` of them drawn with ``generator``, in clip order.

    On such a gallery a clip-level hit is a sound-level hit, which is what makes R@1 on a
    training split with numbered variants meaningful.

    Returns:
        (G,) int64 clip rows, ascending.
    """
    firsts: dict[int, int] = {}
    for row, unit in enumerate(units.tolist()):
        firsts.setdefault(unit, row)
    rows = torch.tensor(sorted(firsts.values()), dtype=torch.long)
    if size is not None:
        if size < 1:
            raise ValueError(f"the gallery size must be positive, got {size}")
        if size < len(rows):
            pick = torch.randperm(len(rows), generator=generator)[:size]
            rows = rows[pick.sort().values]
    return rows
