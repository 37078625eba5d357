"""One entry point for every supported dataset: ``load_split(source, split) -> SplitData``.

Owns layout detection, split filtering, the audio sanity check (exists, not empty, header
readable by libsndfile), duplicate-id checks and optional caption normalisation. Parsing is in
clotho.py / audiocaps.py / aac.py / manifest.py. Nothing is downloaded and no audio is
decoded beyond its header.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import soundfile

from diffatr.data.aac import detect_aac, read_aac_audiocaps, read_aac_clotho
from diffatr.data.audiocaps import is_audiocaps_root, looks_like_audiocaps_csv, read_audiocaps
from diffatr.data.clotho import is_clotho_root, read_clotho
from diffatr.data.manifest import (
    AUDIO_SUFFIXES,
    ClipRecord,
    DatasetError,
    ManifestError,
    canonical_split,
    read_manifest,
    scan_audio_folder,
)
from diffatr.data.sounds import read_near_duplicate_links, sound_keys
from diffatr.data.text import normalize_caption

Kind = Literal["clotho", "audiocaps", "aac-clotho", "aac-audiocaps", "manifest", "folder", "auto"]
KINDS: tuple[str, ...] = ("clotho", "audiocaps", "aac-clotho", "aac-audiocaps", "manifest", "folder", "auto")
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json")


@dataclass
class SplitData:
    """The usable clips of one split and what was left out.

    Attributes:
        records: clips whose audio passed the check, in the source's order.
        skipped: ``(path, reason)`` for each clip left out (missing, empty or unreadable audio).
        kind: the layout that was read (never ``"auto"``).
        split: canonical split name (``train`` / ``val`` / ``test`` or a manifest's own name);
            None when the source has no splits (a folder, a manifest without a split column).
        source: the path that was read.
    """

    records: list[ClipRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    kind: str = "manifest"
    split: str | None = None
    source: str = ""

    @property
    def num_clips(self) -> int:
        return len(self.records)

    @property
    def num_captions(self) -> int:
        return sum(len(r.captions) for r in self.records)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @property
    def captions(self) -> list[str]:
        """Every caption, clip by clip (the text-query order of the retrieval protocol)."""
        return [c for r in self.records for c in r.captions]

    @property
    def caption_to_clip(self) -> list[int]:
        """(num_captions,) index into ``records`` of each caption in ``captions``: the
        ``caption_to_clip`` argument of ``diffatr.metrics.retrieval_metrics``."""
        return [i for i, r in enumerate(self.records) for _ in r.captions]

    def summary(self) -> str:
        """One line for logs, e.g. ``clotho test: 1045 clips, 5225 captions, 0 skipped``."""
        name = f"{self.kind} {self.split}" if self.split else self.kind
        text = f"{name}: {self.num_clips} clips, {self.num_captions} captions, {self.num_skipped} skipped"
        if self.skipped:
            path, reason = self.skipped[0]
            text += f" (first: {path}: {reason})"
        return text


def check_audio_file(path: str | Path, *, read_header: bool = True) -> str | None:
    """Why ``path`` is unusable as audio, or None when it looks fine.

    Args:
        path: the audio file.
        read_header: also ask libsndfile (``soundfile.info``) to parse the header; without it
            only existence and size are checked.
    Returns:
        a short reason ("missing", "empty file (0 bytes)", "not readable as audio: ...",
        "no audio frames") or None.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"cannot access: {err.strerror or err}"
    if not path.is_file():
        return "not a file"
    if stat.st_size == 0:
        return "empty file (0 bytes)"
    if read_header:
        try:
            info = soundfile.info(str(path))
        except Exception as err:  # libsndfile raises LibsndfileError / RuntimeError / TypeError
            detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            return f"not readable as audio: {detail}"
        if info.frames == 0:
            return "no audio frames"
    return None


def detect_kind(source: str | Path) -> str:
    """The layout of ``source`` (what ``kind="auto"`` resolves to).

    Directories, in order: the aac-datasets layout (``CLOTHO_v2.1/`` or ``AUDIOCAPS/``; both
    present is ambiguous), Clotho captions CSVs, AudioCaps CSVs, else a folder of audio.
    Files: ``.csv`` / ``.jsonl`` / ``.json`` -> manifest; an audio file -> folder (one clip).

    Raises:
        DatasetError: a missing source, an ambiguous folder, or a dataset CSV passed as a
            file (which needs its folder).
    """
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"{source} does not exist")
    if source.is_dir():
        aac = detect_aac(source)
        if len(aac) > 1:
            raise DatasetError(
                f"{source} holds both CLOTHO_v2.1 and AUDIOCAPS (aac-datasets layout); "
                f"say which with kind='aac-clotho' or kind='aac-audiocaps' (--kind)"
            )
        if aac:
            return aac[0]
        if is_clotho_root(source):
            return "clotho"
        if is_audiocaps_root(source):
            return "audiocaps"
        return "folder"
    suffix = source.suffix.lower()
    if suffix in MANIFEST_SUFFIXES:
        if suffix == ".csv" and source.name.startswith("clotho_captions_"):
            raise DatasetError(
                f"{source} is a Clotho captions file; pass the folder that holds it "
                f"({source.parent}) with the split name instead"
            )
        if suffix == ".csv" and looks_like_audiocaps_csv(source):
            raise DatasetError(
                f"{source} is an AudioCaps captions file; pass the folder that holds it "
                f"({source.parent}) with the split name instead"
            )
        return "manifest"
    if suffix in AUDIO_SUFFIXES:
        return "folder"
    raise DatasetError(
        f"cannot tell what {source} is: expected a dataset folder, a .csv/.jsonl manifest or an audio file"
    )


def _read_manifest_split(source: Path, split: str | None, audio_dir: Path | None) -> tuple[list[ClipRecord], str | None]:
    try:
        records = read_manifest(source)
    except DatasetError:
        raise
    except ManifestError as err:
        raise DatasetError(str(err)) from err
    # Every row's sound key (label group merged across recorded near-duplicates), before the
    # split filter: "same sound" is one definition for training, mining and evaluation.
    keys = sound_keys([r.clip_id for r in records], [r.metadata for r in records], read_near_duplicate_links(source))
    records = [r if k is None else dataclasses.replace(r, metadata={**r.metadata, "sound_key": k})
               for r, k in zip(records, keys)]
    if audio_dir is not None:
        # audio_dir replaces the manifest's folder as the base of relative paths.
        base = source.parent
        rebased = []
        for r in records:
            try:
                relative = Path(r.path).relative_to(base)
            except ValueError:
                rebased.append(r)
                continue
            rebased.append(dataclasses.replace(r, path=str(audio_dir / relative)))
        records = rebased
    records = [dataclasses.replace(r, split=canonical_split(r.split)) if r.split else r for r in records]
    present = sorted({r.split for r in records if r.split})
    if split is None or not present:
        # No split asked for, or the manifest has no split column: every row.
        return records, None
    wanted = canonical_split(split)
    chosen = [r for r in records if r.split and r.split.lower() == wanted.lower()]
    if not chosen:
        raise DatasetError(
            f"{source} has no rows with split {split!r}; its splits are: {', '.join(present)}"
        )
    return chosen, wanted


def _require_split(kind: str, split: str | None) -> str:
    if split is None:
        raise DatasetError(f"a {kind} dataset needs a split: train, val or test")
    return split


def join_splits(parts: list[SplitData]) -> SplitData:
    """Several splits of one source as one (a final model trained on every clip): records in
    the given order, split names joined by ``+``.

    Raises:
        DatasetError: no split given, or a clip id in two of them.
    """
    if not parts:
        raise DatasetError("no split to join")
    if len(parts) == 1:
        return parts[0]
    seen: dict[str, str | None] = {}
    for part in parts:
        for record in part.records:
            if record.clip_id in seen:
                raise DatasetError(f"clip {record.clip_id!r} is in both {seen[record.clip_id]} and {part.split}")
            seen[record.clip_id] = part.split
    return SplitData(records=[r for part in parts for r in part.records],
                     skipped=[s for part in parts for s in part.skipped], kind=parts[0].kind,
                     split="+".join(str(part.split) for part in parts), source=parts[0].source)


def load_split(
    source: str | Path,
    split: str | None = None,
    *,
    kind: Kind = "auto",
    audio_dir: str | Path | None = None,
    strict: bool = False,
    normalize_captions: bool = False,
    check_audio: bool = True,
) -> SplitData:
    """Read one split of a dataset and check its audio files.

    Args:
        source: a dataset folder (Clotho, AudioCaps, aac-datasets root), a manifest file
            (.csv / .jsonl; its optional ``split`` column filters rows) or a folder of audio
            (every clip; ``split`` is ignored).
        split: ``train`` / ``val`` / ``test`` or a dataset's own name for it (``development``,
            ``validation``, ``evaluation``, ...); required for dataset layouts.
        kind: one of ``KINDS``; ``"auto"`` detects it (see ``detect_kind``).
        audio_dir: where the audio is when it is not in the layout's default place (a
            split's folder or the folder above the split folders; for a manifest, the base of
            relative paths). Not used for a folder source.
        strict: raise on the first missing / empty / unreadable audio file instead of
            skipping it.
        normalize_captions: apply ``normalize_caption`` to every caption (empty results dropped).
        check_audio: parse each file's header with libsndfile; False checks only that the
            file exists and is not empty (faster on very large datasets).
    Returns:
        SplitData with the usable records and the skipped ``(path, reason)`` list.
    Raises:
        DatasetError: unknown kind or split, missing CSV (names the expected files), bad
            rows, duplicate clip ids, every clip unusable, or (strict) any bad audio file.
    """
    if kind not in KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose from {', '.join(KINDS)}")
    source = Path(source).expanduser()
    if not source.exists():
        raise DatasetError(f"{source} does not exist")
    audio_dir = Path(audio_dir).expanduser() if audio_dir is not None else None
    if kind == "auto":
        kind = detect_kind(source)

    records, resolved_split = _read_records(kind, source, split, audio_dir)
    if not records:
        raise DatasetError(f"{source}: split {split!r} lists no clips")
    _check_unique_ids(records, source, resolved_split)

    if normalize_captions:
        records = [
            dataclasses.replace(r, captions=tuple(c for c in map(normalize_caption, r.captions) if c))
            for r in records
        ]

    usable, skipped = _usable_audio(records, strict=strict, check_audio=check_audio)
    if not usable:
        path, reason = skipped[0]
        raise DatasetError(
            f"{source}: none of the {len(skipped)} clips of split {resolved_split or split!r} has usable "
            f"audio (first: {path}: {reason}); point audio_dir (--audio-dir) at the folder with the audio"
        )
    return SplitData(records=usable, skipped=skipped, kind=kind, split=resolved_split, source=str(source))


_DATASET_READERS = {"clotho": read_clotho, "audiocaps": read_audiocaps, "aac-clotho": read_aac_clotho,
                    "aac-audiocaps": read_aac_audiocaps}


def _read_records(kind: str, source: Path, split: str | None,
                  audio_dir: Path | None) -> tuple[list[ClipRecord], str | None]:
    """The records of one split of a source of a known ``kind``, and the split's canonical name."""
    if kind in _DATASET_READERS:
        return _DATASET_READERS[kind](source, _require_split(kind, split), audio_dir), canonical_split(split)
    if kind == "manifest":
        if source.is_dir():
            raise DatasetError(f"{source} is a folder; kind='manifest' needs a .csv or .jsonl file")
        return _read_manifest_split(source, split, audio_dir)
    if audio_dir is not None:  # a folder of audio
        raise DatasetError("audio_dir does not apply to a folder of audio; pass that folder as the source")
    records = scan_audio_folder(source) if source.is_dir() else [ClipRecord(source.stem, str(source))]
    if not records:
        raise DatasetError(
            f"no audio files under {source}, and it is not a Clotho, AudioCaps or aac-datasets "
            f"folder (expected clotho_captions_<split>.csv, <split>.csv with AudioCaps columns, "
            f"CLOTHO_v2.1/ or AUDIOCAPS/)"
        )
    return records, None


def _usable_audio(records: list[ClipRecord], *, strict: bool,
                  check_audio: bool) -> tuple[list[ClipRecord], list[tuple[str, str]]]:
    """(the records whose audio file is usable, the others as (path, reason))."""
    usable: list[ClipRecord] = []
    skipped: list[tuple[str, str]] = []
    for record in records:
        reason = check_audio_file(record.path, read_header=check_audio)
        if reason is None:
            usable.append(record)
            continue
        if reason == "missing" and record.metadata.get("searched"):
            reason = f"missing (looked in {', '.join(record.metadata['searched'])})"
        if strict:
            raise DatasetError(
                f"audio for clip {record.clip_id!r} is unusable: {record.path}: {reason}. "
                f"Restore or re-download the file, point audio_dir (--audio-dir) at the folder "
                f"that holds the audio, or run without strict to skip and count such clips"
            )
        skipped.append((record.path, reason))
    return usable, skipped


def _check_unique_ids(records: list[ClipRecord], source: Path, split: str | None) -> None:
    seen: dict[str, str] = {}
    for r in records:
        if r.clip_id in seen:
            raise DatasetError(
                f"{source}: clip id {r.clip_id!r} appears twice in split {split!r} "
                f"({seen[r.clip_id]} and {r.path}); clip ids must be unique within a split"
            )
        seen[r.clip_id] = r.path
