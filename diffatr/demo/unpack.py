"""An upload's files into the session's folder: audio copied, zips unpacked (against zip
bombs, floods and "../" names), ``NAME.txt`` captions paired with ``NAME.<audio>``, every byte
charged to the quotas as it is written, and every file that cannot be used listed with a reason.

Owns the disk side of an upload (through ``diffatr.uploads.UploadStore``); it decodes no audio.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

from diffatr.data.manifest import AUDIO_SUFFIXES
from diffatr.demo.messages import reason
from diffatr.demo.settings import MAX_QUERY_CHARS
from diffatr.uploads import QuotaExceeded, UploadStore

ZIP_RATIO_SLACK = 64 << 10  # members this small may compress better than the zip ratio quota
MAX_SKIPPED_ROWS = 100  # files listed as skipped per upload (then one "... more" row)
_UNPACK_ERRORS = (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError, NotImplementedError)


class Skipped:
    """The files an upload could not use, with reasons; ``quota`` is set once a quota stops it."""

    def __init__(self) -> None:
        self._rows: list[dict[str, str]] = []
        self.quota: str | None = None

    def add(self, file: str, reason: str) -> None:
        self._rows.append({"file": file, "reason": reason})

    def stop(self, file: str, reason: str) -> None:
        self.quota = reason
        self.add(file, f"not read: {reason}")

    def rows(self) -> list[dict[str, str]]:
        if len(self._rows) <= MAX_SKIPPED_ROWS:
            return list(self._rows)
        more = len(self._rows) - MAX_SKIPPED_ROWS + 1
        return self._rows[:MAX_SKIPPED_ROWS - 1] + [{"file": f"… and {more:,} more files",
                                                     "reason": self._rows[-1]["reason"]}]


def collect_uploads(paths: list[str], store: UploadStore, session_id: str,
                    skipped: Skipped) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """Copy audio files and unpack zips into the session's folder; pair NAME.txt captions
    with NAME.<audio>.

    Args:
        paths: the uploaded files (audio, zips of audio, caption files).
        store: the app's upload store (its ``quotas`` apply).
        session_id: whose folder and quota.
        skipped: collects the files that cannot be used; its ``quota`` stops the rest.

    Returns:
        (written audio paths in order, captions by path, the user's name of each path).
    """
    batch = _Batch(store, session_id, skipped)
    for path in paths:
        name = Path(path).name
        suffix = Path(path).suffix.lower()
        if skipped.quota:
            skipped.add(name, f"not read: {skipped.quota}")
        elif suffix == ".zip" or (suffix not in AUDIO_SUFFIXES and _is_zip(path)):
            batch.add_zip(path)
        elif not Path(path).is_file():
            skipped.add(name, "the file is missing (the upload did not finish)")
        elif suffix == ".txt":
            batch.add_caption_file(path)
        else:
            # Any other name is tried: libsndfile recognises formats by content, and a
            # file that is not audio is listed with the decoder's reason (and deleted).
            batch.add_audio_file(path)
    return batch.audio, batch.captions(), batch.names


class _Batch:
    """What one upload has written so far: audio paths, the user's names, captions by stem."""

    def __init__(self, store: UploadStore, session_id: str, skipped: Skipped) -> None:
        self.store = store
        self.quotas = store.quotas
        self.session_id = session_id
        self.skipped = skipped
        self.audio: list[str] = []
        self.names: dict[str, str] = {}
        self.sidecars: dict[str, list[str]] = {}  # stem (lower case) -> captions

    def captions(self) -> dict[str, list[str]]:
        return {p: self.sidecars.get(Path(self.names[p]).stem.lower(), []) for p in self.audio}

    def add_caption_file(self, path: str) -> None:
        name = Path(path).name
        try:
            with open(path, "rb") as src:
                text = _read_capped(src, self.quotas.caption_bytes)
        except OSError as err:
            self.skipped.add(name, f"could not be read ({reason(err)})")
            return
        self._add_captions(name, Path(name).stem, text)

    def add_audio_file(self, path: str) -> None:
        name = Path(path).name
        try:
            with open(path, "rb") as src:
                out = self._write_clip(src, name, None)
        except OSError as err:
            self.skipped.add(name, f"could not be read ({reason(err)})")
            return
        except QuotaExceeded as err:
            self.skipped.stop(name, str(err))
            return
        self.audio.append(str(out))
        self.names[str(out)] = name

    def add_zip(self, path: str) -> None:
        zip_name = Path(path).name
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            self.skipped.add(zip_name, f"not a readable zip archive ({reason(err)})")
            return
        with archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            refusal = self._zip_refusal(path, members)
            if refusal:
                self.skipped.add(zip_name, refusal)
                return
            for member in members:
                self._add_member(archive, member, zip_name)

    def _zip_refusal(self, path: str, members: list[zipfile.ZipInfo]) -> str | None:
        """Why a whole archive is refused (too many files, a zip bomb), or None."""
        q = self.quotas
        if len(members) > q.zip_members:
            return f"holds {len(members):,} files; the demo reads zips of at most {q.zip_members}"
        packed = max(1, Path(path).stat().st_size)
        unpacked = sum(m.file_size for m in members)
        if unpacked > q.zip_ratio * packed + ZIP_RATIO_SLACK:
            return (f"unpacks to {unpacked / packed:,.0f} times its size (a zip bomb?); the demo "
                    f"unpacks zips up to {q.zip_ratio:g} times")
        return None

    def _member_refusal(self, member: zipfile.ZipInfo, suffix: str) -> str | None:
        """Why one member is not unpacked (its type, its compression ratio), or None."""
        q = self.quotas
        if self.skipped.quota:
            return f"not unpacked: {self.skipped.quota}"
        if suffix not in AUDIO_SUFFIXES and suffix != ".txt":
            return f"not an audio file type (supported: {', '.join(sorted(AUDIO_SUFFIXES))})"
        if member.file_size > q.zip_ratio * max(1, member.compress_size) + ZIP_RATIO_SLACK:
            return (f"compressed {member.file_size / max(1, member.compress_size):,.0f} to 1 "
                    f"(a zip bomb?); the demo unpacks files up to {q.zip_ratio:g} to 1")
        return None

    def _add_member(self, archive: zipfile.ZipFile, member: zipfile.ZipInfo, zip_name: str) -> None:
        inner = member.filename.replace("\\", "/")
        base = inner.rsplit("/", 1)[-1]
        shown = f"{zip_name}/{inner}"
        suffix = Path(base).suffix.lower()
        if base.startswith(".") or "__MACOSX/" in inner:
            return  # resource forks and hidden files are not the user's sounds
        refusal = self._member_refusal(member, suffix)
        if refusal:
            self.skipped.add(shown, refusal)
            return
        try:
            if suffix == ".txt":  # read into memory, so read at most the cap
                text = None
                if member.file_size <= self.quotas.caption_bytes:
                    with archive.open(member) as src:
                        text = _read_capped(src, self.quotas.caption_bytes)
                self._add_captions(shown, Path(base).stem, text)
                return
            # Never use the member's own path on disk: "../" in a zip must not escape.
            with archive.open(member) as src:
                out = self._write_clip(src, base, member.file_size)
        except QuotaExceeded as err:
            if "unpacks to more than" in str(err):
                self.skipped.add(shown, f"could not be unpacked: {err}")
            else:
                self.skipped.stop(shown, str(err))
            return
        except _UNPACK_ERRORS as err:
            self.skipped.add(shown, f"could not be unpacked ({reason(err)})")
            return
        self.audio.append(str(out))
        self.names[str(out)] = shown

    def _add_captions(self, shown: str, stem: str, text: str | None) -> None:
        if text is None:
            self.skipped.add(shown, f"a caption file larger than {self.quotas.caption_kb:g} KB (the demo's limit)")
        else:
            self.sidecars[stem.lower()] = _caption_lines(text)

    def _write_clip(self, src: Any, name: str, limit: int | None) -> Path:
        """One audio file into the session's folder, counted as a clip and as bytes written."""
        self.store.admit_clip(self.session_id)
        return self.store.write(self.session_id, src, _safe_name(name), limit=limit)


def _is_zip(path: str) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _read_capped(src: Any, cap: int) -> str | None:
    """The text of a caption file, or None if it holds more than ``cap`` bytes (never reads
    more than ``cap + 1`` bytes into memory)."""
    data = src.read(cap + 1)
    if len(data) > cap:
        return None
    return data.decode("utf-8", errors="replace")


def _caption_lines(text: str) -> list[str]:
    return [" ".join(line.split())[:MAX_QUERY_CHARS] for line in text.splitlines() if line.strip()][:20]


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "clip"
    return cleaned[-100:]
