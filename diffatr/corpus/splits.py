"""Train / val / test / out-of-domain splits, by label group and source recording.

The unit of assignment is never a file: it is a label group (numbered variants of one
sound, edits of one original recording, the crops of one long recording) merged with
every group it shares near-duplicate audio with. Units from the held-out packages form the
``ood`` split (train on the other packages, test on these: the paper's Clotho -> AudioCaps
transfer in miniature). The other units are dealt to ``test`` and ``val`` per category, in
a seeded order (units of at most a few clips first), until each holds its share of the
category's units; the rest train.

A corpus that grows keeps its earlier splits: clips of an earlier release are *pinned* to
their split (so the old test numbers stay comparable), and only the new units are dealt, by
the fractions given for the new units (``test_new`` by default: a second test set of sounds
new to this release).

Evaluation splits keep one clip per unit, so a caption never has several identical
answers (variants of one sound share their captions). Pure Python; no audio, no files.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from diffatr.errors import DiffatrError

SPLITS = ("train", "val", "test", "test_new", "ood")
EVAL_SPLITS = ("val", "test", "test_new", "ood")
DEFAULT_FRACTIONS = {"test": 0.20, "val": 0.10}
# The deal of units new to a release whose earlier clips are pinned.
NEW_UNIT_FRACTIONS = {"test_new": 0.15, "val": 0.08}


class SplitError(DiffatrError):
    """Inconsistent split input: a unit that mixes held-out and in-domain packages."""


@dataclass(frozen=True)
class SplitItem:
    """What the split needs to know about a clip."""

    clip_id: str
    group: str
    category: str
    source: str


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


PINNED_SPLITS_PATH = Path(__file__).with_name("pinned_splits.tsv")


def read_pinned_splits(path: str | Path = PINNED_SPLITS_PATH) -> dict[str, str]:
    """clip id -> split of an earlier release (``pinned_splits.tsv``: ``clip_id``, ``split``)."""
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    if not lines or lines[0].split("\t") != ["clip_id", "split"]:
        raise SplitError(f"{path}: expected a tab-separated header 'clip_id<TAB>split'")
    pinned = {}
    for number, line in enumerate(lines[1:], 2):
        cells = line.split("\t")
        if len(cells) != 2 or cells[1] not in SPLITS:
            raise SplitError(f"{path}: line {number} must be a clip id and one of {', '.join(SPLITS)}")
        pinned[cells[0]] = cells[1]
    return pinned


def split_units(items: Iterable[SplitItem], links: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    """clip id -> unit id: the clip's group, merged across ``links`` (clip id pairs)."""
    items = list(items)
    sets = _UnionFind()
    group_of = {item.clip_id: item.group for item in items}
    for item in items:
        sets.find(item.group)
    for a, b in links:
        if a in group_of and b in group_of:
            sets.union(group_of[a], group_of[b])
    return {item.clip_id: sets.find(item.group) for item in items}


def _order(unit: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{unit}".encode()).hexdigest()


def assign_splits(items: Iterable[SplitItem], ood_sources: Iterable[str], links: Iterable[tuple[str, str]] = (),
                  fractions: dict[str, float] | None = None, seed: int = 0,
                  max_eval_unit_clips: int = 4, pinned: dict[str, str] | None = None) -> dict[str, str]:
    """clip id -> split name.

    Args:
        items: every clip.
        ood_sources: source keys held out as the ``ood`` split.
        links: clip id pairs that must share a split (near-duplicates).
        fractions: share of each category's (new) units per evaluation split, dealt in the
            dict's order; the rest train. Default ``DEFAULT_FRACTIONS``, or
            ``NEW_UNIT_FRACTIONS`` when ``pinned`` is given.
        seed: changes the deal, deterministically.
        max_eval_unit_clips: units with more clips than this go to evaluation splits only
            when a category has too few smaller units.
        pinned: clip id -> split of an earlier release. A unit holding a pinned clip keeps
            that split; only units with no pinned clip are dealt.

    Raises:
        SplitError: a unit holds clips of a held-out source and of an in-domain one, or
            pinned clips of two different splits.
    """
    items = list(items)
    pinned = dict(pinned or {})
    if fractions is None:
        fractions = NEW_UNIT_FRACTIONS if pinned else DEFAULT_FRACTIONS
    fractions = dict(fractions)
    unknown = sorted(set(fractions) - set(EVAL_SPLITS)) + sorted(set(pinned.values()) - set(SPLITS))
    if unknown:
        raise SplitError(f"unknown split name(s) {', '.join(unknown)}; splits are {', '.join(SPLITS)}")
    ood_sources = set(ood_sources)
    unit_of = split_units(items, links)
    members: dict[str, list[SplitItem]] = defaultdict(list)
    for item in items:
        members[unit_of[item.clip_id]].append(item)

    unit_split: dict[str, str] = {}
    by_category: dict[str, list[str]] = defaultdict(list)
    for unit, clips in members.items():
        held_out = {clip.source in ood_sources for clip in clips}
        if held_out == {True, False}:
            names = ", ".join(sorted(c.clip_id for c in clips))
            raise SplitError(f"unit {unit!r} mixes held-out and in-domain sources ({names}); drop one side")
        kept = {pinned[clip.clip_id] for clip in clips if clip.clip_id in pinned}
        if len(kept) > 1:
            names = ", ".join(sorted(f"{c.clip_id} ({pinned[c.clip_id]})" for c in clips if c.clip_id in pinned))
            raise SplitError(f"unit {unit!r} joins clips pinned to different splits ({names}); "
                             f"drop the clip that links them")
        if kept:
            unit_split[unit] = kept.pop()
        elif held_out == {True}:
            unit_split[unit] = "ood"
        else:
            by_category[clips[0].category].append(unit)

    for category in sorted(by_category):
        # Evaluation splits keep one clip per unit, so a big family of variants dealt to
        # them would lose all but one clip: deal small units first, big ones only when a
        # category has too few small ones.
        units = sorted(by_category[category],
                       key=lambda u: (len(members[u]) > max_eval_unit_clips, _order(u, seed)))
        total = len(units)
        cursor = 0
        for split in fractions:
            # Round half up, but never empty the training side of a category.
            quota = int(fractions.get(split, 0.0) * total + 0.5)
            quota = min(quota, max(0, total - cursor - 1))
            for unit in units[cursor:cursor + quota]:
                unit_split[unit] = split
            cursor += quota
        for unit in units[cursor:]:
            unit_split[unit] = "train"
    return {item.clip_id: unit_split[unit_of[item.clip_id]] for item in items}


def thin_evaluation_splits(items: Iterable[SplitItem], splits: dict[str, str],
                           links: Iterable[tuple[str, str]] = ()) -> set[str]:
    """Clip ids to drop so that each unit in an evaluation split keeps only its first clip."""
    items = list(items)
    unit_of = split_units(items, links)
    kept: set[str] = set()
    dropped: set[str] = set()
    for item in items:
        if splits[item.clip_id] not in EVAL_SPLITS:
            continue
        unit = unit_of[item.clip_id]
        if unit in kept:
            dropped.add(item.clip_id)
        else:
            kept.add(unit)
    return dropped


def separate_identical_captions(items: Iterable[SplitItem], splits: dict[str, str], captions: dict[str, str],
                                links: Iterable[tuple[str, str]] = ()) -> tuple[dict[str, str], set[str]]:
    """Make every caption of an evaluation split point at one unit only.

    Two units with the same caption in one evaluation split (two different dogs captioned
    "a dog barks") would make that query ambiguous. The later unit (in ``items`` order)
    moves to ``train``; in ``ood``, where training is not an option, its clips are dropped.

    Returns:
        (new clip id -> split, clip ids to drop).
    """
    items = list(items)
    unit_of = split_units(items, links)
    splits = dict(splits)
    owner: dict[tuple[str, str], str] = {}
    moved: dict[str, str] = {}
    for item in items:
        split = splits[item.clip_id]
        unit = unit_of[item.clip_id]
        if split not in EVAL_SPLITS or unit in moved:
            continue
        key = (split, captions[item.clip_id])
        if owner.setdefault(key, unit) != unit:
            moved[unit] = "drop" if split == "ood" else "train"
    dropped = set()
    for item in items:
        fate = moved.get(unit_of[item.clip_id])
        if fate == "drop":
            dropped.add(item.clip_id)
        elif fate == "train":
            splits[item.clip_id] = "train"
    return splits, dropped

