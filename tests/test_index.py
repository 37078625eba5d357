"""RetrievalIndex: construction checks, disk round trip, every corruption case, concat/subset."""

from __future__ import annotations

import json
import os

import pytest
import torch

from diffatr.retrieval.index import (
    EMBEDDINGS_FILE,
    INDEX_FILE,
    IndexFormatError,
    IndexMismatchError,
    RetrievalIndex,
    encoder_mismatches,
)

DA, DT = 16, 12
ENCODERS = {
    "audio": {"name": "tiny-cnn", "weights": "/a/b/tiny.safetensors", "embed_dim": DA,
              "frontend": {"sample_rate": 16000}, "window_seconds": 10.0, "window_hop_seconds": None},
    "text": {"name_or_path": "tiny-bert", "pooling": "mean", "embed_dim": DT, "max_length": 32},
}


def make_index(n=5, prefix="c", seed=0, with_text=True, captions_per_clip=None, encoders=ENCODERS):
    g = torch.Generator().manual_seed(seed)
    counts = captions_per_clip or [(i % 3) for i in range(n)]  # 0, 1 or 2 captions per clip
    captions = [[f"{prefix}{i} caption {j} é" for j in range(c)] for i, c in enumerate(counts)]
    m = sum(counts)
    return RetrievalIndex(
        audio_features=torch.randn(n, DA, generator=g),
        clip_ids=[f"{prefix}{i}" for i in range(n)],
        paths=[f"/audio/{prefix}{i}.wav" if i % 2 == 0 else None for i in range(n)],
        captions=captions,
        text_features=torch.randn(m, DT, generator=g) if with_text else None,
        metadata=[{"source": "test", "licence": "CC0", "n": i, "tags": ["x", "y"]} for i in range(n)],
        encoders=encoders,
    )


def assert_same(a: RetrievalIndex, b: RetrievalIndex) -> None:
    assert torch.equal(a.audio_features, b.audio_features)
    assert a.audio_features.dtype == b.audio_features.dtype == torch.float32
    assert a.clip_ids == b.clip_ids
    assert a.paths == b.paths
    assert a.captions == b.captions
    assert a.metadata == b.metadata
    assert a.encoders == b.encoders
    assert torch.equal(a.caption_to_clip, b.caption_to_clip)
    if a.text_features is None:
        assert b.text_features is None
    else:
        assert torch.equal(a.text_features, b.text_features)


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("with_text", [True, False])
def test_round_trip_is_identical(tmp_path, with_text):
    index = make_index(with_text=with_text)
    index.save(tmp_path / "ix")
    loaded = RetrievalIndex.load(tmp_path / "ix")
    assert_same(index, loaded)
    assert len(loaded) == 5
    assert loaded.caption_to_clip.tolist() == [1, 2, 2, 4]  # counts 0,1,2,0,1


def test_index_without_captions_round_trips(tmp_path):
    index = RetrievalIndex(audio_features=torch.randn(3, DA), clip_ids=["a", "b", "c"])
    assert index.captions == [[], [], []] and index.num_captions == 0
    index.save(tmp_path / "ix")
    loaded = RetrievalIndex.load(tmp_path / "ix")
    assert_same(index, loaded)
    assert loaded.paths == [None, None, None]


def test_save_overwrites_existing_index_and_leaves_no_temp_files(tmp_path):
    make_index(seed=1).save(tmp_path / "ix")
    second = make_index(n=7, seed=2)
    second.save(tmp_path / "ix")
    assert_same(second, RetrievalIndex.load(tmp_path / "ix"))
    assert sorted(os.listdir(tmp_path)) == ["ix"]
    assert sorted(os.listdir(tmp_path / "ix")) == [EMBEDDINGS_FILE, INDEX_FILE]


def test_save_rejects_metadata_that_would_not_round_trip(tmp_path):
    index = make_index()
    index.metadata[0] = {"pair": (1, 2)}  # a tuple would come back as a list
    with pytest.raises(ValueError, match="JSON-able"):
        index.save(tmp_path / "ix")
    assert not (tmp_path / "ix").exists()


# ----------------------------------------------------------------------------- corruption


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "ix"
    make_index().save(path)
    return path


def load_error(path) -> str:
    with pytest.raises(IndexFormatError) as info:
        RetrievalIndex.load(path)
    message = str(info.value)
    assert "diffatr index" in message and "--out DIR" in message  # says how to rebuild
    return message


def test_missing_folder(tmp_path):
    assert "no such folder" in load_error(tmp_path / "nope")


@pytest.mark.parametrize("name", [EMBEDDINGS_FILE, INDEX_FILE])
def test_missing_file(saved, name):
    (saved / name).unlink()
    assert f"{name} is missing" in load_error(saved)


@pytest.mark.parametrize("keep", [0.5, 0.99, 8 / 10_000])
def test_truncated_safetensors(saved, keep):
    data = (saved / EMBEDDINGS_FILE).read_bytes()
    (saved / EMBEDDINGS_FILE).write_bytes(data[: max(1, int(len(data) * keep))])
    assert "truncated or corrupt" in load_error(saved)


def test_flipped_byte_in_tensor_data_is_caught_by_checksum(saved):
    data = bytearray((saved / EMBEDDINGS_FILE).read_bytes())
    data[-3] ^= 0x01  # inside the last float: still a valid file, different numbers
    (saved / EMBEDDINGS_FILE).write_bytes(bytes(data))
    assert "checksum" in load_error(saved)


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2, 3]", '{"format": "something-else"}'])
def test_garbage_json(saved, text):
    (saved / INDEX_FILE).write_text(text)
    message = load_error(saved)
    assert "not valid JSON" in message or "not a diffatr index" in message


def edit_json(path, fn):
    info = json.loads((path / INDEX_FILE).read_text())
    fn(info)
    (path / INDEX_FILE).write_text(json.dumps(info))


def test_json_clip_count_disagrees_with_its_own_list(saved):
    edit_json(saved, lambda info: info.update(num_clips=info["num_clips"] + 1))
    assert "num_clips=6" in load_error(saved)


def test_json_lists_fewer_clips_than_tensor_rows(saved):
    def drop_last(info):
        gone = info["clips"].pop()
        info["num_clips"] -= 1
        info["num_captions"] -= len(gone["captions"])

    edit_json(saved, drop_last)
    assert "shape (5, 16)" in load_error(saved)


def test_json_caption_count_mismatch(saved):
    def add_caption(info):
        info["clips"][0]["captions"].append("extra")
        info["num_captions"] += 1

    edit_json(saved, add_caption)
    assert "text_features of shape (4, 12)" in load_error(saved)


def test_json_missing_key(saved):
    edit_json(saved, lambda info: info.pop("clips"))
    assert "malformed" in load_error(saved)


def test_embeddings_from_another_index_are_rejected(tmp_path, saved):
    other = make_index(seed=9)
    other.save(tmp_path / "other")
    os.replace(tmp_path / "other" / EMBEDDINGS_FILE, saved / EMBEDDINGS_FILE)
    assert "checksum" in load_error(saved)


def test_nan_rows_are_rejected_on_load(saved, tmp_path):
    # Write a valid file pair whose tensor holds a NaN row (bypassing the constructor check).
    from safetensors.torch import load, save
    import hashlib

    tensors = load((saved / EMBEDDINGS_FILE).read_bytes())
    tensors["audio_features"][3, 2] = float("nan")
    blob = save(tensors)
    (saved / EMBEDDINGS_FILE).write_bytes(blob)
    edit_json(saved, lambda info: info.update(embeddings_sha256=hashlib.sha256(blob).hexdigest()))
    message = load_error(saved)
    assert "NaN" in message and "'c3'" in message


def test_constructor_rejects_nan_and_duplicates_and_bad_counts():
    with pytest.raises(IndexFormatError, match="NaN"):
        RetrievalIndex(audio_features=torch.tensor([[0.0, float("inf")]]), clip_ids=["a"])
    with pytest.raises(IndexFormatError, match="unique"):
        RetrievalIndex(audio_features=torch.zeros(2, 3), clip_ids=["a", "a"])
    with pytest.raises(IndexFormatError, match="paths has 1 entries"):
        RetrievalIndex(audio_features=torch.zeros(2, 3), clip_ids=["a", "b"], paths=["x"])
    with pytest.raises(IndexFormatError, match="3 rows but the clips have 2 captions"):
        RetrievalIndex(audio_features=torch.zeros(2, 3), clip_ids=["a", "b"],
                       captions=[["x"], ["y"]], text_features=torch.zeros(3, 4))
    with pytest.raises(IndexFormatError, match="caption_to_clip"):
        RetrievalIndex(audio_features=torch.zeros(2, 3), clip_ids=["a", "b"],
                       captions=[["x"], ["y"]], text_features=torch.zeros(2, 4),
                       caption_to_clip=torch.tensor([1, 0]))


# ----------------------------------------------------------------------------- combining


def test_concat_and_subset():
    a, b = make_index(n=4, prefix="a", seed=1), make_index(n=3, prefix="b", seed=2)
    ab = a.concat(b)
    assert len(ab) == 7 and ab.clip_ids == a.clip_ids + b.clip_ids
    assert torch.equal(ab.audio_features, torch.cat([a.audio_features, b.audio_features]))
    assert ab.flat_captions == a.flat_captions + b.flat_captions
    assert torch.equal(ab.text_features, torch.cat([a.text_features, b.text_features]))
    assert ab.caption_to_clip.tolist() == a.caption_to_clip.tolist() + [i + 4 for i in b.caption_to_clip.tolist()]
    assert_same(ab, a + b)

    # The subset brings back exactly the pieces it came from, in the requested order.
    assert_same(ab.subset(b.clip_ids), b)
    assert_same(ab.subset(a.clip_ids), a)
    picked = ab.subset(["b2", "a1"])
    assert picked.clip_ids == ["b2", "a1"]
    assert torch.equal(picked.audio_features[0], b.audio_features[2])
    assert picked.captions == [b.captions[2], a.captions[1]]
    assert picked.flat_captions == b.captions[2] + a.captions[1]
    assert torch.equal(picked.text_features[: len(b.captions[2])], b.text_features[b.caption_to_clip == 2])
    with pytest.raises(ValueError, match="not in this index"):
        ab.subset(["zzz"])


def test_add_appends_clips():
    a = make_index(n=3, with_text=False)
    grown = a.add(torch.ones(2, DA), ["new1", "new2"], paths=["/x.wav", None])
    assert grown.clip_ids[-2:] == ["new1", "new2"] and len(grown) == 5
    assert torch.equal(grown.audio_features[-1], torch.ones(DA))
    assert grown.captions[-1] == [] and grown.metadata[-1] == {}
    assert len(a) == 3  # a new index, the old one is untouched


def test_concat_refuses_duplicates_and_other_backbones():
    a = make_index(prefix="a")
    with pytest.raises(IndexFormatError, match="present in both"):
        a.concat(make_index(prefix="a", seed=3))
    other = dict(ENCODERS, audio=dict(ENCODERS["audio"], name="cnn14"))
    with pytest.raises(IndexMismatchError, match="audio.name"):
        a.concat(make_index(prefix="b", encoders=other))
    with pytest.raises(IndexMismatchError, match="caption text features"):
        a.concat(make_index(prefix="b", with_text=False))
    # Same backbone with the weights file moved elsewhere is still compatible.
    moved = dict(ENCODERS, audio=dict(ENCODERS["audio"], weights="/elsewhere/tiny.safetensors"))
    assert len(a.concat(make_index(prefix="b", encoders=moved))) == 10


def test_encoder_mismatches_unknown_side_is_compatible():
    assert encoder_mismatches({}, ENCODERS["audio"], "audio") == []
    assert encoder_mismatches(ENCODERS["text"], dict(ENCODERS["text"], pooling="cls"), "text") == [
        "text.pooling: 'mean' != 'cls'"]


def test_relative_paths_resolve_against_the_index_folder(tmp_path):
    import os

    from diffatr.retrieval.index import RetrievalIndex

    index = RetrievalIndex(audio_features=torch.ones(2, 3), clip_ids=["a", "b"],
                           paths=["../clips/a.wav", "/abs/b.wav"])
    index.save(tmp_path / "idx")
    loaded = RetrievalIndex.load(tmp_path / "idx")
    assert loaded.paths == [os.path.normpath(str(tmp_path / "clips" / "a.wav")), "/abs/b.wav"]


def test_shipped_example_index_points_at_the_shipped_clips():
    import os
    from pathlib import Path

    from diffatr.retrieval.index import RetrievalIndex

    index = RetrievalIndex.load(Path(__file__).resolve().parents[1] / "assets" / "examples" / "index")
    assert len(index) == 10 and index.num_captions == 20
    assert all(os.path.isfile(p) for p in index.paths)


# ----------------------------------------------------------------------------- large indexes


def test_the_finite_check_looks_at_every_piece():
    from diffatr.retrieval.index import _check_finite

    features = torch.zeros(11, 3)
    _check_finite(features, [f"c{i}" for i in range(11)], "audio_features", chunk_rows=2)
    features[9, 1] = float("inf")  # in the fifth piece of two rows
    with pytest.raises(IndexFormatError, match=r"1 rows of audio_features .*'c9'"):
        _check_finite(features, [f"c{i}" for i in range(11)], "audio_features", chunk_rows=2)
    _check_finite(torch.zeros(0, 3), [], "audio_features")  # an empty table has nothing to check


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the process's memory from /proc")
def test_loading_a_large_index_maps_its_features_instead_of_copying_them(tmp_path):
    # 192 MB of features: read whole (and copied by the parser), anonymous memory grew by twice
    # that; memory-mapped, it grows by the small JSON's objects only.
    import subprocess
    import sys

    n = 50_000
    RetrievalIndex(audio_features=torch.randn(n, 960), clip_ids=[f"c{i}" for i in range(n)]).save(tmp_path / "big")
    code = (
        "import torch\n"
        "from diffatr.retrieval.index import RetrievalIndex\n"
        "def anon():\n"
        "    return int(open('/proc/self/status').read().split('RssAnon:')[1].split()[0]) / 1024\n"
        "before = anon()\n"
        f"index = RetrievalIndex.load({str(tmp_path / 'big')!r})\n"
        "print(anon() - before, float(index.audio_features[-1].abs().sum()) > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "True"
    assert float(out[0]) < 60, f"loading grew anonymous memory by {out[0]} MB for 192 MB of features"
