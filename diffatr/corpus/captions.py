"""The hand-written catalog: which source files enter the corpus, how they group, and their
captions (``catalog.tsv`` beside this module).

One row per recording or per family of numbered variants (a glob), keyed by source and
path below the source's root (see ``sources.py``). Columns:

- ``source``, ``path``: where the audio is (fnmatch glob; variants are taken in natural order).
- ``group``: the label group: variants of one sound, edits of one original recording.
  Everything in a group lands in one split; mixtures never combine two clips of a group.
- ``class``: the kind of sound ("dog", "footstep", "rain"); mixtures never combine two
  clips of one class, so a compositional caption never says "a dog barks while a dog barks".
- ``category``: one of ``CATEGORIES``.
- ``caption_1``: a sentence ("a dog barks"); ``caption_2``: a gerund or noun phrase ("a dog
  barking"); ``caption_3``: a richer sentence, only where the metadata supports it.
  Captions state only what the file name, its package's description or its credits
  guarantee: no counts, places or backgrounds they do not state.
- ``options``: ``max=N`` variants (default 1), ``crops=N`` 10-second crops of a long
  recording (default 1), ``ambience`` (a long background: at most one per mixture),
  ``demo`` (the row's first clip is shown by the demo app).

This module reads and validates the catalog; it does not touch audio.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from diffatr.errors import DiffatrError

CATALOG_PATH = Path(__file__).with_name("catalog.tsv")
COLUMNS = ("source", "path", "group", "class", "category", "caption_1", "caption_2", "caption_3", "options")
CATEGORIES = (
    "animals", "vehicles", "weather_water", "fire", "household", "human", "tools_work",
    "impacts_explosions", "music_instruments", "ui_alarm", "other",
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class CatalogError(DiffatrError):
    """A catalog row that breaks the rules; the message names the line."""


@dataclass(frozen=True)
class CatalogRow:
    """One catalog line (see the module docstring for the columns)."""

    line: int
    source: str
    path: str
    group: str
    sound_class: str
    category: str
    captions: tuple[str, ...]
    max_variants: int = 1
    crops: int = 1
    ambience: bool = False
    demo: bool = False
    extra: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def sentence(self) -> str:
        return self.captions[0]

    @property
    def gerund(self) -> str:
        return self.captions[1]


def _parse_options(text: str, where: str) -> dict[str, object]:
    options: dict[str, object] = {"max_variants": 1, "crops": 1, "ambience": False, "demo": False}
    for token in text.split():
        key, _, value = token.partition("=")
        if key in ("max", "crops"):
            if not value.isdigit() or int(value) < 1:
                raise CatalogError(f"{where}: option {token!r} needs a positive integer")
            options["max_variants" if key == "max" else "crops"] = int(value)
        elif key in ("ambience", "demo") and not value:
            options[key] = True
        else:
            raise CatalogError(f"{where}: unknown option {token!r} (known: max=N, crops=N, ambience, demo)")
    return options


def check_caption(caption: str, where: str) -> None:
    """House style: lower-case start (proper nouns aside), no final full stop, no doubled
    spaces, at least two words."""
    if caption != caption.strip() or "  " in caption:
        raise CatalogError(f"{where}: caption {caption!r} has stray spaces")
    if caption.endswith("."):
        raise CatalogError(f"{where}: caption {caption!r} ends with a full stop")
    if len(caption.split()) < 2:
        raise CatalogError(f"{where}: caption {caption!r} is a single word; write a phrase")
    first = caption.split()[0]
    if first[0].isupper() and first not in ("TV", "TNT"):
        raise CatalogError(f"{where}: caption {caption!r} starts with a capital; captions are lower case")


def read_catalog(path: str | Path = CATALOG_PATH) -> list[CatalogRow]:
    """Parse and validate the catalog.

    Raises:
        CatalogError: wrong header, a bad option, a missing caption, an unknown category,
            a malformed group/class name, or a (source, path) listed twice.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    body = [(number, line) for number, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
    if not body:
        raise CatalogError(f"{path}: empty catalog")
    header_number, header = body[0]
    if tuple(header.split("\t")) != COLUMNS:
        raise CatalogError(f"{path}:{header_number}: header must be the tab-separated columns {', '.join(COLUMNS)}")
    rows: list[CatalogRow] = []
    seen: set[tuple[str, str]] = set()
    for number, line in body[1:]:
        where = f"{path.name}:{number}"
        cells = next(csv.reader([line], delimiter="\t", quoting=csv.QUOTE_NONE))
        if len(cells) != len(COLUMNS):
            raise CatalogError(f"{where}: expected {len(COLUMNS)} tab-separated cells, got {len(cells)}")
        record = dict(zip(COLUMNS, (c.strip() for c in cells)))
        for key in ("source", "path", "group", "class", "category", "caption_1", "caption_2"):
            if not record[key]:
                raise CatalogError(f"{where}: empty {key}")
        if record["category"] not in CATEGORIES:
            raise CatalogError(f"{where}: unknown category {record['category']!r} (one of {', '.join(CATEGORIES)})")
        for key in ("group", "class"):
            if not _NAME.match(record[key]):
                raise CatalogError(f"{where}: {key} {record[key]!r} must be lower-case letters, digits and _")
        captions = tuple(c for c in (record["caption_1"], record["caption_2"], record["caption_3"]) if c)
        for caption in captions:
            check_caption(caption, where)
        if len(set(captions)) != len(captions):
            raise CatalogError(f"{where}: repeated caption")
        key = (record["source"], record["path"])
        if key in seen:
            raise CatalogError(f"{where}: {record['source']}:{record['path']} is listed twice")
        seen.add(key)
        options = _parse_options(record["options"], where)
        rows.append(CatalogRow(number, record["source"], record["path"], record["group"], record["class"],
                               record["category"], captions, **options))  # type: ignore[arg-type]
    # A group is one sound: its rows must agree on class and category.
    by_group: dict[str, CatalogRow] = {}
    for row in rows:
        first = by_group.setdefault(row.group, row)
        if (first.sound_class, first.category) != (row.sound_class, row.category):
            raise CatalogError(f"{path.name}:{row.line}: group {row.group!r} has class/category "
                               f"{row.sound_class}/{row.category} here but {first.sound_class}/{first.category} "
                               f"on line {first.line}")
    return rows
