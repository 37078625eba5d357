"""Official AudioCaps CSVs (one row per caption) grouped into one ClipRecord per clip.

CSV files ``train.csv``, ``val.csv``, ``test.csv`` (columns ``audiocap_id, youtube_id,
start_time, caption``) in ``<root>`` or ``<root>/dataset`` (the official repository's
layout). A clip is (youtube_id, start_time): rows of one clip become one record with all
its captions (train: 1, val/test: 5); one video cut at two start times stays two clips.
clip_id is ``<youtube_id>_<start_time>``.

Audio is found by file name, first match wins, in this order:
  names:   ``<youtube_id>_<start_time>.<ext>``, then ``<youtube_id>.<ext>`` (the second only
           when no other clip of the split comes from the same video, since the name
           cannot say which cut it is);
  ext:     wav, flac, ogg, mp3;
  folders: ``audio_dir`` and ``audio_dir/<split>`` when given, else ``<root>/<split>``,
           ``<root>/audio/<split>``, ``<root>/audio``, ``<root>``.
A clip whose file is not found keeps the first expected path (checked and reported as missing
by ``diffatr.data.datasets``). Nothing is downloaded and no audio is opened here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from diffatr.data.manifest import ClipRecord, DatasetError, canonical_split, find_captions_csv, read_csv_table

AUDIOCAPS_SPLITS = ("train", "val", "test")
AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3")
REQUIRED_COLUMNS = ("youtube_id", "start_time", "caption")


def audiocaps_split_name(split: str) -> str:
    """``"validation"`` -> ``"val"`` etc.

    Raises:
        DatasetError: a split AudioCaps does not have.
    """
    canonical = canonical_split(split)
    if canonical not in AUDIOCAPS_SPLITS:
        raise DatasetError(f"AudioCaps has no split {split!r}; use train, val or test")
    return canonical


def audiocaps_csv_candidates(root: str | Path, split: str) -> list[Path]:
    root = Path(root)
    name = f"{audiocaps_split_name(split)}.csv"
    return [root / name, root / "dataset" / name]


def looks_like_audiocaps_csv(path: str | Path) -> bool:
    """True when ``path``'s header has the AudioCaps columns (reads only the first line)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            header = {c.strip() for c in f.readline().split(",")}
    except OSError:
        return False
    return set(REQUIRED_COLUMNS) <= header


def is_audiocaps_root(root: str | Path) -> bool:
    """True when ``root`` (or ``root/dataset``) holds an AudioCaps-style train/val/test CSV."""
    return any(
        looks_like_audiocaps_csv(p)
        for split in AUDIOCAPS_SPLITS for p in audiocaps_csv_candidates(root, split) if p.is_file()
    )


def _start_key(value: str, where: str) -> str:
    """The start time as file names spell it: ``"30"`` and ``"30.0"`` both -> ``"30"``."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        raise DatasetError(f"{where}: start_time {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise DatasetError(f"{where}: start_time {value!r} must be a non-negative number")
    return str(int(number)) if number.is_integer() else text


class _AudioFinder:
    """File names in a list of folders, each folder listed once (49k clips x several name
    patterns would otherwise be hundreds of thousands of stat calls)."""

    def __init__(self, folders: Sequence[Path]):
        self.folders = [Path(f) for f in folders]
        self._names: dict[Path, set[str]] = {}

    def _listing(self, folder: Path) -> set[str]:
        if folder not in self._names:
            try:
                self._names[folder] = {e.name for e in os.scandir(folder) if e.is_file()}
            except OSError:
                self._names[folder] = set()
        return self._names[folder]

    def find(self, stems: Sequence[str]) -> Path | None:
        for stem in stems:
            for folder in self.folders:
                names = self._listing(folder)
                for ext in AUDIO_EXTENSIONS:
                    if f"{stem}.{ext}" in names:
                        return folder / f"{stem}.{ext}"
        return None


def audio_folders(root: str | Path, split: str, audio_dir: str | Path | None = None) -> list[Path]:
    """The folders searched for a split's audio, in order (see the module docstring)."""
    split = audiocaps_split_name(split)
    if audio_dir is not None:
        audio_dir = Path(audio_dir)
        return [audio_dir, audio_dir / split]
    root = Path(root)
    return [root / split, root / "audio" / split, root / "audio", root]


def read_audiocaps_csv(csv_path: str | Path, split: str, folders: Sequence[str | Path]) -> list[ClipRecord]:
    """One AudioCaps CSV -> one ClipRecord per (youtube_id, start_time).

    Args:
        csv_path: ``train.csv`` / ``val.csv`` / ``test.csv`` (or any file with those columns).
        split: stored (canonicalised) in each record.
        folders: where to look for audio, in order.
    Returns:
        records in order of each clip's first row; captions ordered by ``audiocap_id`` when
        every row has a numeric one, else in file order. metadata: youtube_id, start_time,
        audiocap_ids, and ``searched`` (the folders) when no file was found.
    Raises:
        DatasetError: missing columns, an empty youtube_id or a non-numeric start_time.
    """
    csv_path = Path(csv_path)
    rows = read_csv_table(csv_path, REQUIRED_COLUMNS, "AudioCaps captions CSV")
    split = canonical_split(split)
    clips: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for line, row in enumerate(rows, 2):
        where = f"{csv_path}:{line}"
        youtube_id = row["youtube_id"].strip()
        if not youtube_id:
            raise DatasetError(f"{where}: empty youtube_id")
        key = (youtube_id, _start_key(row["start_time"], where))
        clips.setdefault(key, []).append((row.get("audiocap_id", "").strip(), row["caption"].strip(), line))

    videos: dict[str, int] = {}
    for youtube_id, _ in clips:
        videos[youtube_id] = videos.get(youtube_id, 0) + 1
    finder = _AudioFinder([Path(f) for f in folders])
    records = []
    for (youtube_id, start), entries in clips.items():
        numeric_ids = all(a.isdigit() for a, _, _ in entries)
        if numeric_ids:
            entries = sorted(entries, key=lambda e: int(e[0]))
        clip_id = f"{youtube_id}_{start}"
        stems = [clip_id] if videos[youtube_id] > 1 else [clip_id, youtube_id]
        found = finder.find(stems)
        metadata: dict[str, object] = {
            "youtube_id": youtube_id,
            "start_time": start,
            "audiocap_ids": [int(a) if numeric_ids else a for a, _, _ in entries],
        }
        if found is None:
            metadata["searched"] = [str(f) for f in finder.folders]
        path = found if found is not None else finder.folders[0] / f"{clip_id}.{AUDIO_EXTENSIONS[0]}"
        records.append(ClipRecord(
            clip_id=clip_id,
            path=str(path),
            captions=tuple(c for _, c, _ in entries if c),
            split=split,
            metadata=metadata,
        ))
    return records


def read_audiocaps(root: str | Path, split: str, audio_dir: str | Path | None = None) -> list[ClipRecord]:
    """Read one AudioCaps split from the folder holding the official CSVs.

    Args:
        root: folder with ``train.csv`` / ``val.csv`` / ``test.csv`` (or ``root/dataset/``).
        split: train, val/validation or test.
        audio_dir: the folder with the audio (or with per-split subfolders of it).
    Raises:
        DatasetError: unknown split, or the CSV is missing (names the expected files).
    """
    root = Path(root)
    candidates = audiocaps_csv_candidates(root, split)
    csv_path = find_captions_csv(root, split, candidates, "AudioCaps",
                                 " (columns audiocap_id, youtube_id, start_time, caption, from "
                                 "github.com/cdjkim/audiocaps). Nothing is downloaded")
    return read_audiocaps_csv(csv_path, split, audio_folders(root, split, audio_dir))
