"""Frozen-backbone features of a split: computed once, cached by content + config, saved whole."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from diffatr.config import load_model_config
from diffatr.data.manifest import ClipRecord
from diffatr.features import FeatureError, FeatureSet, LazyEncoders, TextFeatureCache, compute_features
from diffatr.indexing import build_index
from diffatr.retrieval.index import IndexFormatError, RetrievalIndex

from conftest import write_tone


class FakeText:
    """A stand-in text encoder: a fixed pseudo-random vector per caption; counts what it embeds."""

    def __init__(self, dim: int = 384):
        self.dim = dim
        self.seen: list[str] = []

    def encode(self, texts):
        self.seen += list(texts)
        rows = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            rows.append(torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)))
        return torch.stack(rows)


@pytest.fixture
def clips(tmp_path):
    records = []
    for i, freq in enumerate((220.0, 660.0, 1500.0)):
        path = write_tone(tmp_path / f"c{i}.wav", freq=freq, seconds=0.5, seed=i)
        records.append(ClipRecord(f"c{i}", str(path), (f"tone {i}", f"sound number {i}")))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    records.append(ClipRecord("broken", str(broken), ("nothing",)))
    records.append(ClipRecord("silent", str(tmp_path / "c0.wav"), ()))  # no captions
    return records


def _never_built(*args, **kwargs):
    raise AssertionError("a backbone was built although everything was cached")


def test_compute_features_layout_and_skips(clips, tiny_config):
    text = FakeText()
    with pytest.warns(UserWarning, match="2 clip"):
        fs = compute_features(clips, tiny_config, encoders=LazyEncoders(tiny_config, text=text), progress=False)
    assert fs.clip_ids == ["c0", "c1", "c2"]
    assert fs.audio.shape == (3, tiny_config.audio.embed_dim) and fs.text.shape == (6, 384)
    assert fs.caption_to_clip.tolist() == [0, 0, 1, 1, 2, 2]
    assert fs.flat_captions[2:4] == ["tone 1", "sound number 1"]
    assert fs.captions[1] == ["tone 1", "sound number 1"]
    assert torch.equal(fs.text[3], FakeText().encode(["sound number 1"])[0])
    assert [p.split("/")[-1] for p, _ in fs.skipped] == ["broken.wav", "c0.wav"]
    assert fs.skipped[1][1] == "no captions"
    assert fs.encoders["audio"]["name"] == "tiny-cnn"


def test_strict_raises_on_the_first_unusable_clip(clips, tiny_config):
    with pytest.raises(FeatureError, match="broken.wav"):
        compute_features(clips, tiny_config, encoders=LazyEncoders(tiny_config, text=FakeText()), strict=True,
                         progress=False)


def test_no_usable_clip_is_an_error(clips, tiny_config):
    with pytest.raises(FeatureError, match="no usable clip"):
        compute_features(clips[3:], tiny_config, encoders=LazyEncoders(tiny_config, text=FakeText()),
                         progress=False)


def test_second_pass_reads_the_cache_and_builds_no_backbone(clips, tiny_config, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    text = FakeText()
    first = compute_features(clips[:3], tiny_config, cache_dir=cache, encoders=LazyEncoders(tiny_config, text=text),
                             progress=False)
    assert len(text.seen) == 6

    import diffatr.encoders.audio as audio_module
    import diffatr.encoders.text as text_module

    monkeypatch.setattr(audio_module, "build_audio_encoder", _never_built)
    monkeypatch.setattr(text_module, "TextEncoder", _never_built)
    again = compute_features(clips[:3], tiny_config, cache_dir=cache, progress=False)
    assert torch.equal(first.audio, again.audio) and torch.equal(first.text, again.text)

    # another text config misses the text cache (and would build the text encoder)
    other = dataclasses.replace(tiny_config, text=dataclasses.replace(tiny_config.text, max_length=64))
    with pytest.raises(AssertionError, match="backbone was built"):
        compute_features(clips[:3], other, cache_dir=cache, progress=False)


def test_text_cache_embeds_only_new_captions(tmp_path):
    text = FakeText(8)
    cache = TextFeatureCache(tmp_path, {"name_or_path": "x"})
    a = cache.get_or_compute(["a", "b", "a"], text.encode)
    assert text.seen == ["a", "b"] and torch.equal(a[0], a[2])
    b = TextFeatureCache(tmp_path, {"name_or_path": "x"}).get_or_compute(["b", "c"], text.encode)
    assert text.seen == ["a", "b", "c"]
    assert torch.equal(b[0], a[1])
    # allow_download does not change the output, so it does not change the key
    TextFeatureCache(tmp_path, {"name_or_path": "x", "allow_download": True}).get_or_compute(["c"], text.encode)
    assert text.seen == ["a", "b", "c"]
    # a damaged file is recomputed
    cache.path.write_bytes(b"junk")
    assert torch.equal(cache.get_or_compute(["a"], text.encode)[0], a[0])
    assert text.seen[-1] == "a"


def _feature_set(n: int = 3) -> FeatureSet:
    return FeatureSet.from_flat(audio=torch.randn(n, 16), text=torch.randn(2 * n, 384),
                                caption_to_clip=torch.arange(n).repeat_interleave(2),
                                clip_ids=[f"k{i}" for i in range(n)], captions=[f"cap {i}" for i in range(2 * n)],
                                paths=[f"/x/{i}.wav" for i in range(n)], skipped=[("/x/bad.wav", "missing")],
                                encoders={"audio": {"name": "tiny-cnn"}})


def test_feature_set_round_trip(tmp_path):
    fs = _feature_set()
    fs.save(tmp_path / "f")
    back = FeatureSet.load(tmp_path / "f")
    for name in ("audio", "text", "caption_to_clip"):
        assert torch.equal(getattr(fs, name), getattr(back, name))
    assert (back.clip_ids, back.captions, back.paths, back.skipped, back.encoders) == \
        (fs.clip_ids, fs.captions, fs.paths, fs.skipped, fs.encoders)
    assert back.digest() == fs.digest()
    back.text[0, 0] += 1
    assert back.digest() != fs.digest()


def test_feature_set_errors(tmp_path):
    with pytest.raises(FeatureError, match="caption_to_clip"):
        FeatureSet.from_flat(audio=torch.randn(2, 4), text=torch.randn(3, 4), caption_to_clip=torch.tensor([0, 1, 2]),
                             clip_ids=["a", "b"], captions=["x", "y", "z"], paths=["a", "b"])
    with pytest.raises(FeatureError, match="caption_to_clip does not match"):
        FeatureSet(audio_features=torch.randn(2, 4), clip_ids=["a", "b"], captions=[["x"], ["y"]],
                   text_features=torch.randn(2, 4), caption_to_clip=torch.tensor([0, 0]))
    with pytest.raises(FeatureError, match="audio_features must be"):
        FeatureSet(audio_features=torch.randn(3, 4), clip_ids=["a", "b"], captions=[["x"], []],
                   text_features=torch.randn(1, 4), paths=["a", "b"])
    with pytest.raises(FeatureError, match="missing"):
        FeatureSet.load(tmp_path)
    _feature_set().save(tmp_path / "f")
    (tmp_path / "f" / "features.safetensors").write_bytes(b"garbage")
    with pytest.raises(FeatureError, match="damaged"):
        FeatureSet.load(tmp_path / "f")


def test_check_encoders(tiny_config):
    fs = _feature_set()
    fs.encoders = {}
    fs.check_encoders(tiny_config)  # widths fit
    fs.encoders = {"audio": dataclasses.asdict(tiny_config.audio)}
    fs.check_encoders(tiny_config)
    other = dataclasses.replace(tiny_config, audio=dataclasses.replace(tiny_config.audio, window_seconds=1.0))
    with pytest.raises(FeatureError, match=r"another audio encoder .*audio.window_seconds"):
        fs.check_encoders(other)
    # the same rule as an index's (diffatr.encoders.identity): a work bound is not an identity,
    # and moved weights (same file name) are the same weights
    same = dataclasses.replace(tiny_config, audio=dataclasses.replace(tiny_config.audio, max_seconds=5.0))
    fs.check_encoders(same)
    fs.encoders = {"audio": {**dataclasses.asdict(tiny_config.audio), "weights": "/old/place/w.safetensors"}}
    fs.check_encoders(dataclasses.replace(tiny_config, audio=dataclasses.replace(
        tiny_config.audio, weights="/new/place/w.safetensors")))
    with pytest.raises(FeatureError, match="expects"):
        fs.check_encoders(load_model_config("default"))


def test_index_and_training_features_come_from_one_loop(clips, tiny_config):
    """``diffatr index`` and training build the same table (same rows, captions, skip reasons);
    the index keeps the clip without captions and stores absolute paths."""
    encoders = LazyEncoders(tiny_config, text=FakeText())
    with pytest.warns(UserWarning):
        fs = compute_features(clips, tiny_config, encoders=encoders, progress=False)
    text = FakeText()
    text.config = tiny_config.text
    index, report = build_index(clips, encoders.audio, text, progress=False)
    assert isinstance(index, RetrievalIndex) and isinstance(index, FeatureSet)
    assert index.clip_ids == ["c0", "c1", "c2", "silent"] and index.captions[3] == []
    assert torch.equal(index.audio_features[:3], fs.audio_features)
    assert torch.equal(index.text_features, fs.text_features) and index.flat_captions == fs.flat_captions
    assert report.indexed == 4 and report.skipped == fs.skipped[:1] == index.skipped
    assert all(p.startswith("/") for p in index.paths)
    assert index.encoders["audio"] == fs.encoders["audio"]


def test_any_caption_order_round_trips_in_the_saved_format(tmp_path):
    """A saved FeatureSet lists captions flat with their clip rows, in any order (the format
    written before the table held captions per clip); text rows keep their order."""
    text = torch.randn(4, 8)
    fs = FeatureSet.from_flat(audio=torch.randn(2, 4), text=text, caption_to_clip=torch.tensor([1, 0, 1, 0]),
                              clip_ids=["a", "b"], captions=["b1", "a1", "b2", "a2"], paths=["a.wav", "b.wav"])
    assert fs.captions == [["a1", "a2"], ["b1", "b2"]] and fs.flat_captions == ["b1", "a1", "b2", "a2"]
    back = FeatureSet.load(fs.save(tmp_path / "f"))
    assert back.flat_captions == fs.flat_captions and torch.equal(back.text_features, text)
    assert back.caption_to_clip.tolist() == [1, 0, 1, 0] and back.digest() == fs.digest()
    picked = back.subset(["b"])  # a subset is in clip order
    assert picked.flat_captions == ["b1", "b2"] and torch.equal(picked.text_features, text[[0, 2]])
    with pytest.raises(IndexFormatError, match="clip order"):
        RetrievalIndex.from_features(fs)  # an index's caption rows are in clip order
