"""``--finetune-blocks N``: the audio backbone's last blocks trained on cached outputs of the
frozen ones, over augmented copies of each clip (diffatr.train.partial)."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import datagen
from conftest import load_benchmark
from diffatr import cli
from diffatr.checkpoint import load_checkpoint, read_checkpoint
from diffatr.config import ConfigError, TrainConfig, load_model_config
from diffatr.data.datasets import load_split
from diffatr.encoders.audio import audio_encoder_config, build_audio_encoder, build_backbone, init_backbone
from diffatr.features import LazyEncoders, compute_features
from diffatr.train import TrainError, train_contrastive
from diffatr.train.partial import (
    BlockMaps,
    augment_waveform,
    augmentation_draws,
    draw_rows,
    embed_cached,
    frozen_block_maps,
)

SR = 44100


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A generated manifest (8 train / 4 val / 4 test clips of 5 s, three aisfx blocks each) and a small model on aisfx."""
    root = tmp_path_factory.mktemp("partial")
    manifest = datagen.make_manifest(root / "ds", n=16, seconds=5.0)
    tiny = load_model_config("tiny")
    config = dataclasses.replace(tiny, audio=audio_encoder_config("aisfx-cnn9"))
    return {"manifest": manifest, "config": config, "root": root,
            **{s: load_split(manifest, s) for s in ("train", "val")}}


def _train_config(**overrides) -> TrainConfig:
    values = dict(epochs=2, batch_size=8, log_every=1, device="cpu", finetune_blocks=1, backbone_lr=1e-3,
                  augment_variants=2)
    values.update(overrides)
    return TrainConfig.for_phase("contrastive", **values)


# ----------------------------------------------------------------------------- augmentation


def test_copy_zero_is_clean_and_the_draws_are_the_files_own():
    draws = augmentation_draws(_hash("a"), 4, 6.0, 0.5)
    assert draws[0] == (0.0, 0.0) and len(draws) == 4
    assert all(abs(g) <= 6.0 and abs(s) <= 0.5 for g, s in draws)
    assert len({d for d in draws[1:]}) == 3  # three different copies
    assert augmentation_draws(_hash("a"), 4, 6.0, 0.5) == draws  # the same in every run
    assert augmentation_draws(_hash("b"), 4, 6.0, 0.5) != draws
    assert augmentation_draws(_hash("a"), 4, 0.0, 0.0) == [(0.0, 0.0)] * 4  # 0 turns each off


@settings(max_examples=40, deadline=None)
@given(gain=st.floats(-12, 12), shift=st.floats(-1, 1), length=st.integers(10, 4000))
def test_gain_scales_and_shift_moves_the_sound(gain, shift, length):
    wave = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    out = augment_waveform(wave, 1000, gain, shift)
    factor = 10 ** (gain / 20)
    steps = round(abs(shift) * 1000)
    if shift > 0:  # delayed: silence first, then the whole sound
        assert out.shape[0] == length + steps and not out[:steps].any()
        np.testing.assert_allclose(out[steps:], wave * factor, rtol=1e-5)
    else:  # started later in the recording, never losing more than half
        cut = min(steps, length // 2)
        np.testing.assert_allclose(out, wave[cut:] * factor, rtol=1e-5)


# ----------------------------------------------------------------------------- the block split


def test_cached_maps_finished_give_the_inference_embedding(data):
    """The clean copy through the frozen blocks, then the trained ones and the pooling, is
    exactly what ``embed_file`` computes: validation scores what search will use."""
    encoder = build_audio_encoder(data["config"].audio)
    paths = [r.path for r in data["val"].records]
    maps = frozen_block_maps(paths, encoder, 2, _train_config(), 1, cache_dir=None, progress=False, desc="t")
    assert int(maps.offsets.diff().max()) > 1  # clips of several blocks: their mean is tested too
    reference = torch.stack([encoder.embed_file(p) for p in paths])
    for chunk_rows in (1, 3, 1000):  # one clip per pass ... all at once: the same numbers
        tuned = embed_cached(encoder.backbone, maps, 2, chunk_rows=chunk_rows)
        torch.testing.assert_close(tuned, reference, atol=2e-3, rtol=1e-3)  # float16 maps


def test_the_cache_holds_each_copy_once(data, tmp_path):
    encoder = build_audio_encoder(data["config"].audio)
    paths = [r.path for r in data["val"].records][:2]
    config = _train_config(augment_variants=3)
    first = frozen_block_maps(paths, encoder, 3, config, 3, cache_dir=tmp_path, progress=False, desc="t")
    entries = sorted(tmp_path.rglob("*.safetensors"))
    assert len(entries) == 2 * 3
    again = frozen_block_maps(paths, encoder, 3, config, 3, cache_dir=tmp_path, progress=False, desc="t")
    assert torch.equal(first.maps, again.maps) and torch.equal(first.offsets, again.offsets)
    # another augmentation is another key, not a stale hit
    other = frozen_block_maps(paths, encoder, 3, dataclasses.replace(config, augment_gain_db=3.0), 3,
                              cache_dir=tmp_path, progress=False, desc="t")
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2 * 3 * 2
    assert not torch.equal(first.maps, other.maps)


@settings(max_examples=50, deadline=None)
@given(counts=st.lists(st.integers(1, 6), min_size=2, max_size=12), max_blocks=st.integers(1, 4),
       seed=st.integers(0, 10_000))
def test_a_view_is_a_run_of_consecutive_blocks_of_one_copy(counts, max_blocks, seed):
    variants = 2
    offsets = torch.zeros(len(counts) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(counts).cumsum(0)
    cached = BlockMaps(torch.zeros(int(offsets[-1]), 1, 1, 1), offsets, variants)
    clips = list(range(len(counts) // variants))
    rows, owner = draw_rows(cached, clips, max_blocks, torch.Generator().manual_seed(seed))
    for position, clip in enumerate(clips):
        mine = rows[owner == position].tolist()
        spans = [cached.rows(clip, v) for v in range(variants)]
        span = next(s for s in spans if s[0] <= mine[0] < s[1])
        assert mine == list(range(mine[0], mine[0] + len(mine))) and mine[-1] < span[1]
        assert len(mine) == min(max_blocks, span[1] - span[0])
    again = draw_rows(cached, clips, max_blocks, torch.Generator().manual_seed(seed))
    assert torch.equal(rows, again[0])


# ----------------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "pf"
    result = train_contrastive(data["config"], _train_config(), data["train"], data["val"], out, progress=False,
                               cache_dir=tmp_path_factory.mktemp("cache"))
    return out, result


def test_only_the_last_blocks_train_and_the_checkpoint_searches_with_them(data, run):
    out, result = run
    assert result.step > 0 and result.best_value is not None
    config, extra = read_checkpoint(out / "best")
    assert extra["finetune_blocks"] == 1
    pretrained = build_audio_encoder(data["config"].audio).backbone.state_dict()
    tuned_encoder = build_audio_encoder(config.audio)  # the config points at the tuned weights
    tuned = tuned_encoder.backbone.state_dict()
    changed = {k.split(".")[0] for k in tuned if not torch.equal(tuned[k], pretrained[k])}
    assert changed == {"conv_block4"}  # and BatchNorm's statistics stayed the pretrained ones
    assert all(torch.equal(tuned[k], pretrained[k]) for k in tuned if "running" in k)
    # the folder keeps only the backbones a checkpoint uses
    files = {p.name for p in (out / "backbones").iterdir()}
    used = {read_checkpoint(out / n)[0].audio.weights.rsplit("/", 1)[-1] for n in ("last", "best")}
    assert files == used
    # the logged validation is the checkpoint's own search quality
    model = load_checkpoint(out / "best")
    text = LazyEncoders(config).text.encode([c for r in data["val"].records for c in r.captions])
    with torch.no_grad():
        audio = torch.stack([tuned_encoder.embed_file(r.path) for r in data["val"].records])
        scores = model.project_text(text) @ model.project_audio(audio).T
    from diffatr.metrics import retrieval_metrics

    owner = torch.tensor([i for i, r in enumerate(data["val"].records) for _ in r.captions])
    metrics = retrieval_metrics(scores, None, owner)
    assert abs(metrics["text_to_audio/R@1"] - extra["validation"]["metrics"]["text_to_audio/R@1"]) < 1e-6


def test_a_warm_start_begins_from_the_heads_it_is_given(data, run, tmp_path):
    out, _ = run
    config, _ = read_checkpoint(out / "best")
    start = load_checkpoint(out / "best")
    result = train_contrastive(config, _train_config(max_steps=1, lr=1e-12, backbone_lr=1e-12), data["train"],
                               data["val"], tmp_path / "warm", progress=False, init=out / "best")
    warm = load_checkpoint(result.last)
    for name, value in start.state_dict().items():
        if not name.startswith("denoisers."):
            torch.testing.assert_close(warm.state_dict()[name], value, atol=1e-6, rtol=0)
    assert set(warm.checkpoint_extra["seen_clips"]) >= set(start.checkpoint_extra["seen_clips"])
    with pytest.raises(TrainError, match="differs from the init"):
        train_contrastive(data["config"], _train_config(max_steps=1), data["train"], data["val"], tmp_path / "x",
                          progress=False, init=out / "best")


def test_the_whole_backbone_never_runs_over_the_splits(data, tmp_path, monkeypatch):
    """The frozen blocks read the audio once per copy; no pass of the whole network beside them."""
    from diffatr.encoders.audio import AisfxCNN9
    from diffatr.extraction import Extractor

    def whole(*args, **kwargs):
        pytest.fail("the whole backbone ran")

    for name in ("forward", "embed_blocks"):  # a clip, or blocks of several clips, through every block
        monkeypatch.setattr(AisfxCNN9, name, whole)
    monkeypatch.setattr(Extractor, "map", whole)  # the indexing path (its own folded copy of the network)
    result = train_contrastive(data["config"], _train_config(max_steps=1), data["train"], data["val"],
                               tmp_path / "r", progress=False)
    assert result.step == 1 and result.best_value is not None


def test_bad_settings_are_one_clear_error(data, tmp_path):
    for bad in ({"finetune_blocks": -1}, {"finetune_blocks": 1, "finetune": True}, {"augment_variants": 0},
                {"finetune_max_blocks": 0}, {"augment_gain_db": -1.0}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)
    with pytest.raises(ConfigError, match="phase 1"):
        TrainConfig.for_phase("diffusion", finetune_blocks=1)
    with pytest.raises(TrainError, match="between 1 and 4"):
        train_contrastive(data["config"], _train_config(finetune_blocks=5), data["train"], data["val"],
                          tmp_path / "a", progress=False)
    with pytest.raises(TrainError, match="fixed log-mel blocks"):  # tiny-cnn: a window model
        train_contrastive(load_model_config("tiny"), _train_config(), data["train"], data["val"], tmp_path / "b",
                          progress=False)


def test_cli_init_in_phase_one_needs_finetune_blocks(data, tmp_path, capsys):
    code = cli.main(["train", "--phase", "contrastive", "--data", str(data["manifest"]), "--out", str(tmp_path / "r"),
                     "--init", str(tmp_path), "--quiet", "--no-cache"])
    assert code == 2 and "--finetune-blocks" in capsys.readouterr().err


def test_backbone_stages_compose_to_the_block_embedding():
    backbone = init_backbone(build_backbone("aisfx-cnn9"), torch.Generator().manual_seed(0)).eval()
    blocks = torch.randn(3, 100, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = backbone.embed_blocks(blocks)
        for cut in range(backbone.num_stages + 1):
            maps = backbone.run_stages(blocks.unsqueeze(1), 0, cut)
            torch.testing.assert_close(backbone.pool_blocks(backbone.run_stages(maps, cut, backbone.num_stages)),
                                       whole)


@pytest.fixture(scope="module")
def bench():
    yield from load_benchmark("partial_finetune")


def test_the_benchmark_scores_a_tuned_run_with_its_own_backbone(bench, data, run, tmp_path, monkeypatch):
    """benchmarks/partial_finetune.py: the tuned model's audio features are its own backbone's."""
    monkeypatch.setenv("DIFFATR_CACHE", str(tmp_path))
    out, _ = run
    config, _ = read_checkpoint(out / "best")
    feats = {"train": compute_features(data["val"].records, data["config"], progress=False)}
    gallery = feats["train"].subset([1, 2])
    tuned, tuned_gallery = bench.tuned_features(out / "best", feats, gallery)
    encoder = build_audio_encoder(config.audio)
    reference = torch.stack([encoder.embed_file(p) for p in feats["train"].paths])
    torch.testing.assert_close(tuned["train"].audio, reference, atol=2e-3, rtol=1e-3)
    assert torch.equal(tuned_gallery.audio, tuned["train"].audio[1:3])
    assert not torch.allclose(feats["train"].audio, reference, atol=1e-3)  # the pretrained ones differ


def test_the_fast_frozen_blocks_compute_what_the_backbone_does():
    """The frozen blocks run in the indexing path's folded network (BatchNorm folded, Winograd):
    the same maps at every cut, up to float rounding."""
    from diffatr.encoders.batched import FoldedCNN9

    backbone = build_audio_encoder(audio_encoder_config("aisfx-cnn9")).backbone.eval()
    folded = FoldedCNN9(backbone)
    blocks = torch.rand(3, 100, 96, generator=torch.Generator().manual_seed(2)) * 4
    with torch.no_grad():
        for cut in range(1, backbone.num_stages + 1):
            reference = backbone.run_stages(blocks.unsqueeze(1), 0, cut)
            torch.testing.assert_close(folded.run_stages(blocks, cut), reference, rtol=1e-4,
                                       atol=1e-4 * float(reference.abs().max()))
