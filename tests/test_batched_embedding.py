"""Indexing many files: blocks of several clips per forward pass, worker processes, streaming,
resuming from the feature cache. The features must be today's (``embed_file`` one file at a
time) within 1e-5 cosine, on real clips of the built-in corpus."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffatr.audio.io import decode_audio
from diffatr.config import AudioEncoderConfig
from diffatr.data.manifest import ClipRecord
from diffatr.encoders.audio import (
    AisfxCNN9,
    audio_encoder_config,
    build_audio_encoder,
    build_backbone,
    embed_file,
    init_backbone,
)
from diffatr.encoders.batched import FoldedCNN9, embed_clips
from diffatr.encoders.cache import FeatureCache
from diffatr.extraction import EncoderRecipe, Extractor, embed_files
from diffatr.features import LazyEncoders, build_features
from diffatr.runtime import shipped

from conftest import write_tone

# Real clips of the corpus, short to long: 0.1 s (padded to one block), 1 s, 3 s (two blocks),
# 10 s (seven blocks), and a stereo 10 s one.
CORPUS_CLIPS = ["sonicpi-hat_bdu.opus", "ufoai-splash2.opus", "tuxpaint-donkey.opus", "0ad-rain_12-c7.opus",
                "gcompris-piano.opus"]


@pytest.fixture(scope="module")
def aisfx():
    return build_audio_encoder(AudioEncoderConfig())


@pytest.fixture(scope="module")
def corpus_paths():
    folder = shipped("corpus") / "clips"
    paths = [str(folder / name) for name in CORPUS_CLIPS]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        pytest.skip(f"the built-in corpus is not here ({missing[0]})")
    return paths


def _cosine_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((1 - F.cosine_similarity(a, b, dim=-1)).abs().max())


def test_the_folded_cnn_equals_the_aisfx_blocks_it_replaces():
    g = torch.Generator().manual_seed(0)
    backbone = init_backbone(build_backbone("aisfx-cnn9"), g)
    with torch.no_grad():  # batch norms with statistics of their own, so the folding is exercised
        for module in backbone.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5, generator=g)
                module.running_var.uniform_(0.5, 2.0, generator=g)
                module.weight.uniform_(0.5, 1.5, generator=g)
                module.bias.uniform_(-0.2, 0.2, generator=g)
    backbone.eval()
    blocks = 2 * torch.rand(5, 100, 96, generator=g)  # (N, block, M) log-mel-like
    with torch.no_grad():
        expected = backbone.embed_blocks(blocks)  # (N, 512)
    folded = FoldedCNN9(backbone)(blocks)
    assert folded.shape == (5, AisfxCNN9.embed_dim)
    assert (folded - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert _cosine_gap(folded, expected) <= 1e-6


@pytest.fixture(scope="module")
def corpus_reference(aisfx, corpus_paths):
    """The clips' waveforms and today's features of each, one file at a time (``embed_file``)."""
    waves = [decode_audio(p, aisfx.sample_rate, max_seconds=aisfx.config.max_seconds).waveform
             for p in corpus_paths]
    return waves, torch.stack([embed_file(aisfx, p) for p in corpus_paths])  # (C, 512)


def test_blocks_of_several_clips_give_each_clip_its_own_features(aisfx, corpus_reference):
    waves, expected = corpus_reference
    for batch_blocks in (1, 3, 64):  # a block at a time, blocks across clip boundaries, all at once
        out = list(embed_clips(aisfx, enumerate(waves), batch_blocks))
        assert [key for key, _ in out] == list(range(len(waves)))  # in order
        got = torch.stack([features for _, features in out])
        assert not got.requires_grad and not got.is_inference()
        assert _cosine_gap(got, expected) <= 1e-5
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_files_embedded_in_worker_processes_match_one_file_at_a_time(aisfx, corpus_paths, corpus_reference,
                                                                     tmp_path):
    _, expected = corpus_reference
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF but not audio")
    paths = [corpus_paths[0], str(broken), *corpus_paths[1:3]]
    with Extractor(aisfx, workers=2, chunk=2) as extractor:
        results = list(extractor.map(paths))
    assert isinstance(results[1], str) and "not a recognised audio format" in results[1]
    got = torch.stack([r for r in results if not isinstance(r, str)])
    assert _cosine_gap(got, expected[:3]) <= 1e-5
    here = embed_files(aisfx, paths)
    assert here[1] == results[1]
    assert _cosine_gap(torch.stack([r for r in here if not isinstance(r, str)]), got) <= 1e-6


def test_a_worker_rebuilds_the_encoder_it_was_given():
    config = audio_encoder_config("tiny-cnn")
    encoder = build_audio_encoder(config, generator=torch.Generator().manual_seed(3))
    rebuilt = EncoderRecipe.of(encoder).build()
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    assert torch.equal(rebuilt.embed_waveform(wave, 16000), encoder.embed_waveform(wave, 16000))


def test_files_stream_through_the_extractor_without_being_read_ahead(tmp_path):
    # Memory stays flat however large the folder: the extractor pulls paths a chunk at a time.
    encoder = build_audio_encoder(audio_encoder_config("tiny-cnn"), generator=torch.Generator().manual_seed(0))
    paths = [str(write_tone(tmp_path / f"t{i}.wav", freq=200.0 + 50 * i, seconds=0.3, seed=i)) for i in range(12)]
    pulled = []

    def listing():
        for path in paths:
            pulled.append(path)
            yield path

    results = Extractor(encoder, workers=0, chunk=4).map(listing())
    first = list(itertools.islice(results, 1))
    assert len(first) == 1 and len(pulled) == 4  # one chunk, not the folder
    rest = list(results)
    assert len(rest) == 11 and len(pulled) == 12


def test_an_interrupted_run_continues_from_the_feature_cache_and_says_so(tmp_path, monkeypatch, capsys):
    config = audio_encoder_config("tiny-cnn")
    encoder = build_audio_encoder(config, generator=torch.Generator().manual_seed(0))
    records = [ClipRecord(clip_id=f"c{i}", path=str(write_tone(tmp_path / f"c{i}.wav", freq=300.0 + 40 * i,
                                                               seconds=0.3, seed=i)), captions=())
               for i in range(10)]
    cache = FeatureCache(tmp_path / "cache", {"audio": config.name})
    embedded: list[str] = []
    original_map = Extractor.map

    def interrupted_map(self, paths):
        for n, result in enumerate(original_map(self, paths)):
            if n == 6:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(Extractor, "map", interrupted_map)
    with pytest.raises(KeyboardInterrupt):
        build_features(records, LazyEncoders(None, audio=encoder), {"audio": {}}, audio_cache=cache,
                       embed_text=False, keep_uncaptioned=True, progress=False, workers=0)
    monkeypatch.setattr(Extractor, "map", original_map)
    monkeypatch.setattr("diffatr.extraction.decode_audio", _spy(embedded, "diffatr.extraction.decode_audio"))
    features = build_features(records, LazyEncoders(None, audio=encoder), {"audio": {}}, audio_cache=cache,
                              embed_text=False, keep_uncaptioned=True, progress=True, workers=0)
    assert [Path(p).stem for p in embedded] == ["c6", "c7", "c8", "c9"]  # the six done before are not decoded again
    err = capsys.readouterr().err
    assert "6 of 10 clips are already in the feature cache" in err and "embedding the other 4" in err
    assert "clip/s" in err  # the bar shows the rate (and an ETA)
    fresh = build_features(records, LazyEncoders(None, audio=encoder), {"audio": {}}, embed_text=False,
                           keep_uncaptioned=True, progress=False, workers=0)
    assert torch.allclose(features.audio_features, fresh.audio_features, atol=1e-6)


def _spy(calls: list[str], target: str):
    import importlib

    module_name, name = target.rsplit(".", 1)
    original = getattr(importlib.import_module(module_name), name)

    def spy(path, *args, **kwargs):
        calls.append(str(path))
        return original(path, *args, **kwargs)

    return spy


def test_the_same_file_twice_is_embedded_once(tmp_path):
    config = audio_encoder_config("tiny-cnn")
    encoder = build_audio_encoder(config, generator=torch.Generator().manual_seed(0))
    one = write_tone(tmp_path / "one.wav", seconds=0.3)
    two = tmp_path / "two.wav"
    two.write_bytes(one.read_bytes())
    records = [ClipRecord(clip_id=p.stem, path=str(p), captions=()) for p in (one, two)]
    cache = FeatureCache(tmp_path / "cache", {"audio": config.name})
    features = build_features(records, LazyEncoders(None, audio=encoder), {"audio": {}}, audio_cache=cache,
                              embed_text=False, keep_uncaptioned=True, progress=False, workers=0)
    assert cache.misses == 1 and cache.hits == 1
    assert torch.equal(features.audio_features[0], features.audio_features[1])


def test_diffatr_index_interrupted_says_how_to_continue(tmp_path, audio_folder, tiny_config, monkeypatch, capsys):
    from diffatr.checkpoint import save_checkpoint
    from diffatr.cli import main
    from diffatr.model import DiffATR

    torch.manual_seed(0)
    checkpoint = save_checkpoint(DiffATR(tiny_config), tmp_path / "ckpt")
    argv = ["index", str(audio_folder), "--out", str(tmp_path / "index"), "--checkpoint", str(checkpoint),
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main([*argv, "--workers", "-1"]) == 2
    assert "--workers must be 0" in capsys.readouterr().err

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("diffatr.indexing.build_index", stopped)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "run the same command again to continue" in err and str(tmp_path / "cache") in err


def test_the_ray_path_without_ray_says_how_to_get_it(monkeypatch):
    import sys

    from diffatr.cluster import ClusterError, RayExtractor

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    encoder = build_audio_encoder(audio_encoder_config("tiny-cnn"), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ClusterError, match=r'pip install "diffatr\[ray\]"'):
        RayExtractor(encoder, "auto")


@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 8, 12, 12), (3, 4, 25, 24), (1, 2, 1, 1)])
def test_winograd_convolutions_equal_direct_ones_at_any_map_size(shape):
    from diffatr.encoders.batched import _winograd_conv3x3_relu, _winograd_kernels

    g = torch.Generator().manual_seed(1)
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(6, c, 3, 3, generator=g), torch.randn(6, generator=g)
    expected = F.conv2d(x, weight, bias, padding=1).relu()
    got = _winograd_conv3x3_relu(x, _winograd_kernels(weight), bias)
    assert got.shape == expected.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
