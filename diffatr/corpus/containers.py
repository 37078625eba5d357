"""Unpackers for the game-data containers the corpus sources ship their sounds in.

Each reader takes the container's bytes and returns its members as ``{inner path: bytes}``
(or, for OpenSFX, entries with their titles). Formats, all little-endian unless noted:

- OpenTTD ``opensfx.cat``: a table of (u32 offset, u32 size) pairs (the top bit of the
  offset marks the "named" layout; the first offset / 8 is the entry count); each entry is
  a u8 name length, the NUL-terminated name (OpenSFX stores title + credits there), then a
  RIFF WAV file.
- Qt resource bundles (``.rcc``, big-endian): ``qres`` magic, version, offsets of the tree,
  data and names sections; tree nodes of 14 (v1) or 22 (v2+) bytes; names are u16 length +
  u32 hash + UTF-16BE; data blobs are u32 length + bytes, zlib-compressed ones start with
  the u32 uncompressed length (flag 1), zstd ones are not supported (flag 4).
- OpenClonk C4Group (``.ocg``/``.ocd``...): a gzip stream whose magic is 1e 8c instead of
  1f 8b; inside, a 204-byte header scrambled by XOR 237 and a swap of bytes 0 and 2 in
  every 3-byte triple, then one 316-byte entry record per member, then the member data
  (offsets relative to the end of the entry table). Child groups are nested groups stored
  without the gzip layer.
- Doom WADs: ``IWAD``/``PWAD``, lump count, directory offset; 16-byte directory entries.
  ``DS*`` sound lumps are DMX: u16 format 3, u16 rate, u32 sample count, 8-bit unsigned PCM
  with 16 padding bytes at each end.
- Zip-based containers (``public.zip``, ``.pk3``, wheels): Python's ``zipfile``.

Nothing here decodes compressed audio or writes files. Bad input raises ``ContainerError``.
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
import soundfile

from diffatr.errors import DiffatrError


class ContainerError(DiffatrError):
    """A container that cannot be parsed; the message says which format and what is wrong."""


# ----------------------------------------------------------------------------- OpenSFX .cat


@dataclass(frozen=True)
class CatEntry:
    """One sound of an OpenTTD ``.cat`` file: its index, its stored name and its WAV bytes."""

    index: int
    name: str
    wav: bytes


def read_opensfx_cat(data: bytes) -> list[CatEntry]:
    """All entries of an OpenTTD sound catalogue (``opensfx.cat``), empty ones included.

    Raises:
        ContainerError: a truncated table or an entry that points outside the file.
    """
    if len(data) < 8:
        raise ContainerError("opensfx.cat: shorter than one table entry")
    first = struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF
    if first % 8 or not 8 <= first <= len(data):
        raise ContainerError(f"opensfx.cat: first offset {first} is not a valid table size")
    entries = []
    for index in range(first // 8):
        offset, size = struct.unpack_from("<II", data, index * 8)
        named = bool(offset >> 31)
        offset &= 0x7FFFFFFF
        if offset + size > len(data):
            raise ContainerError(f"opensfx.cat: entry {index} ends past the end of the file")
        body = data[offset:offset + size]
        name = ""
        if named:
            if not body:
                raise ContainerError(f"opensfx.cat: entry {index} has no name length byte")
            length = body[0]
            name = body[1:1 + length].split(b"\0", 1)[0].decode("utf-8", "replace")
            body = body[1 + length:]
        entries.append(CatEntry(index, name, bytes(body)))
    return entries


# ----------------------------------------------------------------------------- Qt .rcc

_RCC_COMPRESSED = 0x01
_RCC_DIRECTORY = 0x02
_RCC_COMPRESSED_ZSTD = 0x04


def read_qt_rcc(data: bytes) -> dict[str, bytes]:
    """Every file of a Qt binary resource bundle, keyed by its resource path (no leading ``/``).

    Raises:
        ContainerError: bad magic, offsets outside the file, a loop in the tree, or a
            zstd-compressed member (not supported).
    """
    if data[:4] != b"qres" or len(data) < 20:
        raise ContainerError("rcc: missing 'qres' magic (not a Qt binary resource file)")
    version, tree_off, data_off, names_off = struct.unpack_from(">IIII", data, 4)
    if version not in (1, 2, 3):
        raise ContainerError(f"rcc: unsupported format version {version}")
    node_size = 14 if version == 1 else 22
    for what, off in (("tree", tree_off), ("data", data_off), ("names", names_off)):
        if off >= len(data):
            raise ContainerError(f"rcc: {what} offset {off} is past the end of the file")

    def name_at(offset: int) -> str:
        pos = names_off + offset
        if pos + 6 > len(data):
            raise ContainerError("rcc: a name points past the end of the file")
        (length,) = struct.unpack_from(">H", data, pos)
        raw = data[pos + 6:pos + 6 + 2 * length]
        if len(raw) != 2 * length:
            raise ContainerError("rcc: a name is truncated")
        return raw.decode("utf-16-be")

    def node(index: int) -> tuple[int, int, bytes]:
        pos = tree_off + index * node_size
        if pos + 14 > len(data):
            raise ContainerError(f"rcc: tree node {index} is past the end of the file")
        name_offset, flags = struct.unpack_from(">IH", data, pos)
        return name_offset, flags, data[pos + 6:pos + 14]

    files: dict[str, bytes] = {}
    seen: set[int] = set()

    def walk(index: int, prefix: str) -> None:
        if index in seen:
            raise ContainerError("rcc: the directory tree has a loop")
        seen.add(index)
        name_offset, flags, rest = node(index)
        name = "" if index == 0 else name_at(name_offset)
        path = f"{prefix}/{name}" if prefix else name
        if flags & _RCC_DIRECTORY:
            count, first = struct.unpack(">II", rest)
            for child in range(first, first + count):
                walk(child, path)
            return
        _country, _language, blob_off = struct.unpack(">HHI", rest)
        pos = data_off + blob_off
        if pos + 4 > len(data):
            raise ContainerError(f"rcc: data of {path!r} is past the end of the file")
        (size,) = struct.unpack_from(">I", data, pos)
        blob = data[pos + 4:pos + 4 + size]
        if len(blob) != size:
            raise ContainerError(f"rcc: data of {path!r} is truncated")
        if flags & _RCC_COMPRESSED_ZSTD:
            raise ContainerError(f"rcc: {path!r} is zstd-compressed, which this reader does not support")
        if flags & _RCC_COMPRESSED:
            try:
                blob = zlib.decompress(blob[4:])
            except zlib.error as err:
                raise ContainerError(f"rcc: {path!r} does not inflate ({err})") from err
        files[path] = blob

    walk(0, "")
    return files


# ----------------------------------------------------------------------------- C4Group

C4GROUP_MAGIC = b"\x1e\x8c"
C4GROUP_ID = b"RedWolf Design GrpFolder"
_C4_HEADER_SIZE = 204
_C4_ENTRY_SIZE = 316
_C4_SCRAMBLE_XOR = 237


def c4group_scramble(header: bytes) -> bytes:
    """OpenClonk's header scrambling: XOR 237, then swap bytes 0 and 2 of every triple.

    The two steps commute and each is its own inverse, so this also unscrambles.
    """
    out = bytearray(b ^ _C4_SCRAMBLE_XOR for b in header)
    for i in range(0, len(out) - 2, 3):
        out[i], out[i + 2] = out[i + 2], out[i]
    return bytes(out)


def read_c4group(data: bytes, _depth: int = 0) -> dict[str, bytes]:
    """Every file of an OpenClonk group, child groups flattened to ``Child.ocg/Name``.

    ``data`` is either the file as shipped (gzip with the 1e 8c magic) or an already
    inflated group (as child groups are stored).

    Raises:
        ContainerError: a bad magic or header id, or entries that point outside the data.
    """
    if _depth > 32:
        raise ContainerError("c4group: child groups nested more than 32 deep")
    if data[:2] == C4GROUP_MAGIC:
        patched = b"\x1f\x8b" + data[2:]
        try:
            data = gzip.decompress(patched)
        except (OSError, EOFError, zlib.error) as err:
            raise ContainerError(f"c4group: the gzip stream does not inflate ({err})") from err
    if len(data) < _C4_HEADER_SIZE:
        raise ContainerError("c4group: shorter than a group header")
    header = c4group_scramble(data[:_C4_HEADER_SIZE])
    if not header.startswith(C4GROUP_ID):
        raise ContainerError("c4group: header id is not 'RedWolf Design GrpFolder' "
                             "(not an OpenClonk group, or not unscrambled)")
    (entries,) = struct.unpack_from("<i", header, 36)
    table_end = _C4_HEADER_SIZE + entries * _C4_ENTRY_SIZE
    if entries < 0 or table_end > len(data):
        raise ContainerError(f"c4group: entry table of {entries} entries runs past the end")
    files: dict[str, bytes] = {}
    for k in range(entries):
        record = data[_C4_HEADER_SIZE + k * _C4_ENTRY_SIZE:_C4_HEADER_SIZE + (k + 1) * _C4_ENTRY_SIZE]
        name = record[:260].split(b"\0", 1)[0].decode("latin-1")
        _packed, child, size, _reserved, offset = struct.unpack_from("<iiiii", record, 260)
        start = table_end + offset
        if offset < 0 or size < 0 or start + size > len(data):
            raise ContainerError(f"c4group: entry {name!r} points outside the group")
        body = data[start:start + size]
        if child:
            for inner, blob in read_c4group(body, _depth + 1).items():
                files[f"{name}/{inner}"] = blob
        else:
            files[name] = body
    return files


# ----------------------------------------------------------------------------- WAD / DMX


def read_wad(data: bytes) -> dict[str, bytes]:
    """The lumps of a Doom WAD keyed by name (a later lump of the same name wins).

    Raises:
        ContainerError: bad magic or a directory outside the file.
    """
    if data[:4] not in (b"IWAD", b"PWAD") or len(data) < 12:
        raise ContainerError("wad: missing IWAD/PWAD magic")
    count, dir_off = struct.unpack_from("<ii", data, 4)
    if count < 0 or dir_off < 0 or dir_off + 16 * count > len(data):
        raise ContainerError("wad: the lump directory runs past the end of the file")
    lumps: dict[str, bytes] = {}
    for k in range(count):
        offset, size, raw = struct.unpack_from("<ii8s", data, dir_off + 16 * k)
        if offset < 0 or size < 0 or offset + size > len(data):
            raise ContainerError(f"wad: lump {k} points outside the file")
        lumps[raw.split(b"\0", 1)[0].decode("ascii", "replace")] = data[offset:offset + size]
    return lumps


def dmx_sound_to_pcm(lump: bytes) -> tuple[np.ndarray, int]:
    """Decode a DMX sound lump (Doom ``DS*``) to float32 mono in [-1, 1) and its rate.

    The 16 padding samples at each end (part of the stored count) are dropped.

    Raises:
        ContainerError: not a format-3 DMX lump, or a sample count past the lump's end.
    """
    if len(lump) < 8:
        raise ContainerError("dmx: lump shorter than its header")
    fmt, rate, count = struct.unpack_from("<HHI", lump, 0)
    if fmt != 3:
        raise ContainerError(f"dmx: format {fmt} is not a digitised sound (3)")
    if 8 + count > len(lump) or count < 32 or rate <= 0:
        raise ContainerError("dmx: sample count or rate is inconsistent with the lump")
    pcm = np.frombuffer(lump, dtype=np.uint8, count=count - 32, offset=8 + 16)
    return (pcm.astype(np.float32) - 128.0) / 128.0, int(rate)


# ----------------------------------------------------------------------------- SoundFont 2

_SF2_SAMPLE_HEADER = struct.Struct("<20sIIIIIBbHH")  # shdr records: 46 bytes each


def _riff_chunks(data: bytes, start: int, end: int, where: str) -> dict[str, tuple[int, int]]:
    """Chunk id (``LIST`` chunks as ``LIST:<type>``) -> (body offset, body size) in [start, end)."""
    chunks: dict[str, tuple[int, int]] = {}
    offset = start
    while offset + 8 <= end:
        tag, size = data[offset:offset + 4].decode("latin-1"), struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if body + size > end:
            raise ContainerError(f"sf2: {where} chunk {tag!r} runs past the end of the file")
        if tag == "LIST":
            chunks[f"LIST:{data[body:body + 4].decode('latin-1')}"] = (body + 4, size - 4)
        else:
            chunks[tag] = (body, size)
        offset = body + size + (size & 1)
    return chunks


def read_sf2(data: bytes) -> dict[str, bytes]:
    """The samples of a SoundFont 2 bank as mono 16-bit WAV files, keyed
    ``NNNN-<sample name>.wav`` (NNNN: the sample's index in the bank, since names repeat).

    Raises:
        ContainerError: not a RIFF ``sfbk`` file, a missing ``smpl`` / ``shdr`` chunk, or a
            sample outside the sample data.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise ContainerError("sf2: missing the RIFF sfbk header")
    top = _riff_chunks(data, 12, min(len(data), 8 + struct.unpack_from("<I", data, 4)[0]), "top-level")
    if "LIST:sdta" not in top or "LIST:pdta" not in top:
        raise ContainerError("sf2: missing the sdta or pdta list")
    sdta = _riff_chunks(data, top["LIST:sdta"][0], sum(top["LIST:sdta"]), "sdta")
    pdta = _riff_chunks(data, top["LIST:pdta"][0], sum(top["LIST:pdta"]), "pdta")
    if "smpl" not in sdta or "shdr" not in pdta:
        raise ContainerError("sf2: missing the smpl or shdr chunk")
    smpl_offset, smpl_size = sdta["smpl"]
    pcm = np.frombuffer(data, dtype="<i2", count=smpl_size // 2, offset=smpl_offset)
    shdr_offset, shdr_size = pdta["shdr"]
    samples: dict[str, bytes] = {}
    # The last record is the terminal "EOS" sample.
    for index in range(shdr_size // _SF2_SAMPLE_HEADER.size - 1):
        raw, start, end, _loop_start, _loop_end, rate, *_ = _SF2_SAMPLE_HEADER.unpack_from(
            data, shdr_offset + index * _SF2_SAMPLE_HEADER.size)
        name = raw.split(b"\0", 1)[0].decode("latin-1").strip()
        if not (0 <= start < end <= len(pcm)) or rate <= 0:
            raise ContainerError(f"sf2: sample {index} ({name!r}) lies outside the sample data")
        buffer = io.BytesIO()
        soundfile.write(buffer, pcm[start:end], int(rate), format="WAV", subtype="PCM_16")
        samples[f"{index:04d}-{name}.wav"] = buffer.getvalue()
    return samples


# ----------------------------------------------------------------------------- zip


def read_zip_members(data_or_path: bytes | str, names: list[str] | None = None) -> dict[str, bytes]:
    """Members of a zip (also ``.pk3`` and wheels), all or only ``names``.

    Raises:
        ContainerError: not a zip, or a requested member is missing.
    """
    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    try:
        with zipfile.ZipFile(source) as archive:
            wanted = names if names is not None else [n for n in archive.namelist() if not n.endswith("/")]
            return {name: archive.read(name) for name in wanted}
    except zipfile.BadZipFile as err:
        raise ContainerError(f"zip: not a zip archive ({err})") from err
    except KeyError as err:
        raise ContainerError(f"zip: no member {err}") from err
