"""Clotho v2.x captions CSVs read into ClipRecords (no audio is opened here).

Layout (the Zenodo release, unpacked into one folder)::

    <root>/clotho_captions_development.csv   file_name, caption_1 .. caption_5
    <root>/clotho_captions_validation.csv
    <root>/clotho_captions_evaluation.csv
    <root>/development/*.wav   <root>/validation/*.wav   <root>/evaluation/*.wav

The common variant ``<root>/clotho_csv_files/*.csv`` + ``<root>/clotho_audio_files/<split>/``
is read too. Split names: train/development/dev, val/validation/valid, test/evaluation/eval;
records carry the canonical ``train`` / ``val`` / ``test``. Audio existence is checked by
``diffatr.data.datasets``; a record's path is where its file should be.
"""

from __future__ import annotations

from pathlib import Path

from diffatr.data.manifest import ClipRecord, DatasetError, canonical_split, find_captions_csv, read_csv_table

# canonical split -> the name Clotho uses in file and folder names.
CLOTHO_SPLITS = {"train": "development", "val": "validation", "test": "evaluation"}
CAPTION_COLUMNS = tuple(f"caption_{k}" for k in range(1, 6))


def clotho_split_name(split: str) -> str:
    """``"train"`` / ``"development"`` / ``"dev"`` -> ``"development"`` (and so on).

    Raises:
        DatasetError: a split Clotho does not have (lists the accepted names).
    """
    canonical = canonical_split(split)
    if canonical not in CLOTHO_SPLITS:
        raise DatasetError(
            f"Clotho has no split {split!r}; use train (development), val (validation) "
            f"or test (evaluation)"
        )
    return CLOTHO_SPLITS[canonical]


def clotho_csv_candidates(root: str | Path, split: str) -> list[Path]:
    """Where the captions CSV of ``split`` may be under ``root``, in order of preference."""
    root = Path(root)
    name = f"clotho_captions_{clotho_split_name(split)}.csv"
    return [root / name, root / "clotho_csv_files" / name]


def is_clotho_root(root: str | Path) -> bool:
    """True when ``root`` holds at least one Clotho captions CSV (either variant)."""
    root = Path(root)
    return any(
        path.is_file() for split in CLOTHO_SPLITS for path in clotho_csv_candidates(root, split)
    )


def read_clotho_csv(csv_path: str | Path, audio_folder: str | Path, split: str) -> list[ClipRecord]:
    """One Clotho captions CSV -> one ClipRecord per row.

    Args:
        csv_path: a ``clotho_captions_<split>.csv``.
        audio_folder: the folder holding that split's audio files.
        split: stored (canonicalised) in each record.
    Returns:
        records in file order; clip_id is the file name's stem, captions the non-empty
        ``caption_1..caption_5`` cells (stripped), metadata ``{"file_name": ...}``.
    Raises:
        DatasetError: missing columns, an empty file name, or a file listed twice.
    """
    csv_path, audio_folder = Path(csv_path), Path(audio_folder)
    rows = read_csv_table(csv_path, ("file_name",), "Clotho captions CSV")
    split = canonical_split(split)
    records: list[ClipRecord] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, 2):
        file_name = row["file_name"].strip()
        if not file_name:
            raise DatasetError(f"{csv_path}:{line}: empty file_name")
        if file_name in seen:
            raise DatasetError(
                f"{csv_path}:{line}: {file_name!r} is listed twice (first on line {seen[file_name]}); "
                f"each clip must appear once"
            )
        seen[file_name] = line
        captions = tuple(
            row[c].strip() for c in sorted(
                (k for k in row if k.startswith("caption_") and k[8:].isdigit()), key=lambda k: int(k[8:])
            ) if row[c].strip()
        )
        records.append(ClipRecord(
            clip_id=Path(file_name).stem,
            path=str(audio_folder / file_name),
            captions=captions,
            split=split,
            metadata={"file_name": file_name},
        ))
    return records


def read_clotho(root: str | Path, split: str, audio_dir: str | Path | None = None) -> list[ClipRecord]:
    """Read one Clotho split from a folder in either layout (see the module docstring).

    Args:
        root: the folder with the captions CSVs (or their ``clotho_csv_files`` parent).
        split: train/development, val/validation or test/evaluation.
        audio_dir: overrides where the audio is: either the split's folder itself or a
            folder containing ``development/``, ``validation/``, ``evaluation/``.
    Raises:
        DatasetError: unknown split, or no captions CSV (names the expected files).
    """
    root = Path(root)
    name = clotho_split_name(split)
    candidates = clotho_csv_candidates(root, split)
    csv_path = find_captions_csv(root, split, candidates, "Clotho",
                                 ". Nothing is downloaded: get Clotho v2.1 from Zenodo (record 4783391) "
                                 "and point at the folder holding its CSVs")
    if audio_dir is not None:
        audio_dir = Path(audio_dir)
        audio_folder = audio_dir / name if (audio_dir / name).is_dir() else audio_dir
    elif csv_path.parent.name == "clotho_csv_files":
        audio_folder = csv_path.parent.parent / "clotho_audio_files" / name
    else:
        audio_folder = root / name
    return read_clotho_csv(csv_path, audio_folder, split)
