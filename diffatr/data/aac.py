"""The on-disk layout written by the ``aac-datasets`` package, read without depending on it.

    <root>/CLOTHO_v2.1/clotho_csv_files/clotho_captions_<development|validation|evaluation>.csv
    <root>/CLOTHO_v2.1/clotho_audio_files/<development|validation|evaluation>/*.wav
    <root>/AUDIOCAPS/csv_files_v1/<train|val|test>.csv      (newer releases: AUDIOCAPS/<split>.csv)
    <root>/AUDIOCAPS/audio_32000Hz/<train|val|test>/<youtube_id>_<start_time>.flac

``root`` may also be the ``CLOTHO_v2.1`` or ``AUDIOCAPS`` folder itself. Audio folders for
other rates (``audio_<sr>Hz``) are used when no 32 kHz folder exists. Parsing is delegated to
the plain Clotho / AudioCaps readers; this module only knows where the files are.
"""

from __future__ import annotations

import re
from pathlib import Path

from diffatr.data.audiocaps import audiocaps_split_name, read_audiocaps_csv
from diffatr.data.clotho import clotho_split_name, read_clotho_csv
from diffatr.data.manifest import ClipRecord, DatasetError

CLOTHO_DIR = "CLOTHO_v2.1"
AUDIOCAPS_DIR = "AUDIOCAPS"


def _base(root: Path, name: str) -> Path:
    return root if root.name == name else root / name


def has_aac_clotho(root: str | Path) -> bool:
    return (_base(Path(root), CLOTHO_DIR) / "clotho_csv_files").is_dir()


def has_aac_audiocaps(root: str | Path) -> bool:
    """``AUDIOCAPS/csv_files_v1/``, or split CSVs directly in ``AUDIOCAPS/`` next to an
    ``audio_<sr>Hz`` folder (without one it is just the official CSVs in a folder that
    happens to be called AUDIOCAPS, which the plain AudioCaps reader handles)."""
    base = _base(Path(root), AUDIOCAPS_DIR)
    if (base / "csv_files_v1").is_dir():
        return True
    return bool(_rate_folders(base)) and any((base / f"{s}.csv").is_file() for s in ("train", "val", "test"))


def detect_aac(root: str | Path) -> list[str]:
    """The aac-datasets layouts present under ``root``: a sublist of
    ``["aac-clotho", "aac-audiocaps"]``."""
    found = []
    if has_aac_clotho(root):
        found.append("aac-clotho")
    if has_aac_audiocaps(root):
        found.append("aac-audiocaps")
    return found


def read_aac_clotho(root: str | Path, split: str, audio_dir: str | Path | None = None) -> list[ClipRecord]:
    """One Clotho split from the aac-datasets layout (see the module docstring).

    Raises:
        DatasetError: unknown split or missing CSV (names the expected path).
    """
    base = _base(Path(root), CLOTHO_DIR)
    name = clotho_split_name(split)
    csv_path = base / "clotho_csv_files" / f"clotho_captions_{name}.csv"
    if not csv_path.is_file():
        raise DatasetError(
            f"no Clotho captions file for split {split!r}: expected {csv_path} "
            f"(aac-datasets layout). Nothing is downloaded"
        )
    if audio_dir is not None:
        audio_dir = Path(audio_dir)
        folder = audio_dir / name if (audio_dir / name).is_dir() else audio_dir
    else:
        folder = base / "clotho_audio_files" / name
    return read_clotho_csv(csv_path, folder, split)


def _rate_folders(base: Path) -> list[Path]:
    """``audio_32000Hz`` first (aac-datasets' default), then other rates in ascending order."""
    folders = [p for p in base.glob("audio_*Hz") if p.is_dir() and re.fullmatch(r"audio_\d+Hz", p.name)]
    return sorted(folders, key=lambda p: (p.name != "audio_32000Hz", int(p.name[6:-2])))


def read_aac_audiocaps(root: str | Path, split: str, audio_dir: str | Path | None = None) -> list[ClipRecord]:
    """One AudioCaps split from the aac-datasets layout (see the module docstring).

    Audio is looked up as ``<youtube_id>_<start_time>.<ext>`` in ``audio_dir`` (and its
    ``<split>`` subfolder) when given, else in ``AUDIOCAPS/audio_<sr>Hz/<split>/``.

    Raises:
        DatasetError: unknown split or missing CSV (names the expected paths).
    """
    base = _base(Path(root), AUDIOCAPS_DIR)
    split_name = audiocaps_split_name(split)
    candidates = [base / "csv_files_v1" / f"{split_name}.csv", base / f"{split_name}.csv"]
    csv_path = next((p for p in candidates if p.is_file()), None)
    if csv_path is None:
        raise DatasetError(
            f"no AudioCaps captions file for split {split!r}: expected "
            + " or ".join(str(p) for p in candidates) + " (aac-datasets layout). Nothing is downloaded"
        )
    if audio_dir is not None:
        folders = [Path(audio_dir), Path(audio_dir) / split_name]
    else:
        folders = [f / split_name for f in _rate_folders(base)] or [base / "audio_32000Hz" / split_name]
    return read_audiocaps_csv(csv_path, split, folders)
