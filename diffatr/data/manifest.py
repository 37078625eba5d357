"""The generic manifest (CSV or JSONL) and plain folders of audio, read into ClipRecords.

CSV columns: ``path`` (or ``audio`` / ``file_name``), captions as ``caption`` or
``caption_1`` .. ``caption_N`` (or one ``captions`` cell joined by `` | ``), optional
``clip_id`` and ``split``; any other column is kept as metadata. JSONL: one object a line
with the same keys, ``captions`` may be a list. Relative paths are resolved against the
manifest's folder. Nothing here decodes audio.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from diffatr.errors import DiffatrError

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64"}
PATH_KEYS = ("path", "audio", "audio_path", "file_name", "filename", "file")
CAPTION_SEPARATOR = " | "


class ManifestError(DiffatrError):
    """A manifest that cannot be read; the message names the file and line."""


class DatasetError(ManifestError):
    """A dataset split that cannot be read (missing CSV, bad row, missing or corrupt audio in
    strict mode, duplicate clip ids); the message names the file and says what to do."""


# Split names as the datasets spell them -> the canonical train / val / test.
SPLIT_ALIASES = {
    "train": "train", "training": "train", "dev": "train", "development": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}


def find_captions_csv(root: Path, split: str, candidates: list[Path], dataset: str, hint: str) -> Path:
    """The first of ``candidates`` that exists; else a DatasetError naming all of them.

    Args:
        root: the dataset folder (paths in the message are relative to it).
        split: the split asked for.
        candidates: where the captions CSV may be, in order of preference.
        dataset: its name for the message ("Clotho", "AudioCaps").
        hint: what to do, appended to the message.
    """
    csv_path = next((p for p in candidates if p.is_file()), None)
    if csv_path is None:
        raise DatasetError(
            f"no {dataset} captions file for split {split!r} under {root}: expected "
            + " or ".join(str(p.relative_to(root)) for p in candidates) + hint
        )
    return csv_path


def canonical_split(name: str) -> str:
    """``"development"`` -> ``"train"``, ``"validation"`` -> ``"val"``, ``"evaluation"`` ->
    ``"test"`` (any case); names outside ``SPLIT_ALIASES`` come back stripped, as given."""
    key = str(name).strip()
    return SPLIT_ALIASES.get(key.lower(), key)


def read_csv_table(path: str | Path, required: Iterable[str], what: str) -> list[dict[str, str]]:
    """Rows of a CSV with a header, as dicts keyed by stripped column names.

    UTF-8 (with or without BOM) is tried first; Latin-1 is the fallback because some
    published dataset CSVs were saved from spreadsheet tools in a legacy encoding.

    Raises:
        DatasetError: unreadable file or a missing required column (names the file).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read {what} {path}: {err}") from err
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [str(h).strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(
            f"{path} is not a {what}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(header) or 'no header'})"
        )
    return [{str(k).strip(): (v if v is not None else "") for k, v in row.items() if k is not None}
            for row in reader]


@dataclass(frozen=True)
class ClipRecord:
    """One audio clip and its captions (possibly none)."""

    clip_id: str
    path: str
    captions: tuple[str, ...] = ()
    split: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def _captions_from_row(row: dict[str, Any]) -> tuple[str, ...]:
    captions: list[str] = []
    value = row.get("captions")
    if isinstance(value, list):
        captions += [str(c) for c in value]
    elif isinstance(value, str) and value.strip():
        captions += value.split(CAPTION_SEPARATOR.strip())
    if isinstance(row.get("caption"), str):
        captions.append(row["caption"])
    numbered = sorted(
        (int(m.group(1)), k) for k in row if (m := re.fullmatch(r"caption_(\d+)", str(k)))
    )
    captions += [str(row[k]) for _, k in numbered if row[k] is not None]
    return tuple(c.strip() for c in captions if str(c).strip())


def _record_from_row(row: dict[str, Any], base: Path, where: str) -> ClipRecord:
    path_key = next((k for k in PATH_KEYS if row.get(k)), None)
    if path_key is None:
        raise ManifestError(f"{where}: no audio path column (one of {', '.join(PATH_KEYS)})")
    path = Path(str(row[path_key])).expanduser()
    if not path.is_absolute():
        path = base / path
    reserved = set(PATH_KEYS) | {"captions", "caption", "clip_id", "split"}
    metadata = {
        k: v for k, v in row.items()
        if k not in reserved and not re.fullmatch(r"caption_\d+", str(k)) and v not in (None, "")
    }
    clip_id = str(row.get("clip_id") or path.stem)
    return ClipRecord(clip_id, str(path), _captions_from_row(row), row.get("split") or None, metadata)


def read_manifest(path: str | Path) -> list[ClipRecord]:
    """Read a CSV, TSV or JSONL manifest.

    Raises:
        ManifestError: unreadable file, bad JSON line, no path column, duplicate clip ids.
    """
    path = Path(path)
    base = path.parent
    records: list[ClipRecord] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot read manifest {path}: {err}") from err
    if path.suffix.lower() in (".jsonl", ".json"):
        numbered = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
        for number, line in numbered:  # blank lines skipped, the others numbered as in the file
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{path}:{number}: not valid JSON ({err})") from err
            if not isinstance(row, dict):
                raise ManifestError(f"{path}:{number}: expected a JSON object")
            records.append(_record_from_row(row, base, f"{path}:{number}"))
    else:
        lines = text.splitlines()
        # Tab-separated when the name says so, or when the header has tabs and no commas.
        header = lines[0] if lines else ""
        tabs = path.suffix.lower() == ".tsv" or ("\t" in header and "," not in header)
        reader = csv.DictReader(lines, delimiter="\t" if tabs else ",")
        if not reader.fieldnames:
            raise ManifestError(f"{path}: empty {'TSV' if tabs else 'CSV'} (expected a header with a 'path' column)")
        for number, row in enumerate(reader, 2):
            records.append(_record_from_row(row, base, f"{path}:{number}"))
    _check_unique(records, str(path))
    return records


def scan_audio_folder(folder: str | Path) -> list[ClipRecord]:
    """Every audio file under ``folder`` (recursive, sorted). A sidecar ``NAME.txt`` next to
    ``NAME.wav`` gives captions, one per line; without one the clip has no captions."""
    folder = Path(folder)
    records = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES):
        sidecar = path.with_suffix(".txt")
        captions: tuple[str, ...] = ()
        if sidecar.is_file():
            try:
                captions = tuple(l.strip() for l in sidecar.read_text().splitlines() if l.strip())
            except (OSError, UnicodeDecodeError):
                captions = ()
        clip_id = str(path.relative_to(folder).with_suffix(""))
        records.append(ClipRecord(clip_id, str(path), captions))
    return records


def read_records(source: str | Path) -> list[ClipRecord]:
    """A folder of audio, a manifest (.csv / .jsonl), or a single audio file."""
    source = Path(source)
    if source.is_dir():
        return scan_audio_folder(source)
    if not source.exists():
        raise ManifestError(f"{source} does not exist")
    if source.suffix.lower() in AUDIO_SUFFIXES:
        return [ClipRecord(source.stem, str(source))]
    return read_manifest(source)


def _check_unique(records: Iterable[ClipRecord], where: str) -> None:
    seen: set[str] = set()
    for record in records:
        if record.clip_id in seen:
            raise ManifestError(f"{where}: clip id {record.clip_id!r} appears twice; clip ids must be unique")
        seen.add(record.clip_id)
