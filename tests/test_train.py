"""Training loops: both phases end to end, batch construction, validation-only model selection,
exact --resume, the temperature cap, and CPU runs that never touch CUDA."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import datagen
from diffatr import cli
from diffatr.checkpoint import load_checkpoint, read_checkpoint
from diffatr.config import ConfigError, TrainConfig, from_dict, load_model_config, to_dict
from diffatr.contrastive import nt_xent_loss
from diffatr.data.datasets import load_split
from diffatr.features import FeatureSet, LazyEncoders, compute_features
from diffatr.metrics import retrieval_metrics
from diffatr.train import (
    TrainError,
    contrastive_pairs,
    diffusion_candidates,
    epoch_batches,
    hardest_first,
    lr_at,
    mined_candidates,
    select_value,
    train_contrastive,
    train_diffusion,
    unique_clip_batches,
)
from diffatr.trainstate import flatten_optimizer_state, unflatten_optimizer_state

METRIC_KEYS = {f"{d}/{m}" for d in ("text_to_audio", "audio_to_text")
               for m in ("R@1", "R@5", "R@10", "mAP@10", "median_rank", "mean_rank")} | {"num_clips", "num_captions"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A generated manifest (8 train / 4 val / 4 test clips, 5 captions each) whose *test* audio
    is corrupt, and the features of train and val, computed once into a shared cache."""
    root = tmp_path_factory.mktemp("data")
    manifest = datagen.make_manifest(root / "ds", n=16)
    for path in (root / "ds" / "audio").glob("*.wav"):
        if path.stem in datagen.read_truth(root / "ds")["test"]:
            datagen.break_audio(path, "garbage")
    config = load_model_config("tiny")
    cache = root / "cache"
    encoders = LazyEncoders(config)
    features = {split: compute_features(load_split(manifest, split).records, config, cache_dir=cache,
                                        encoders=encoders, progress=False)
                for split in ("train", "val")}
    return {"manifest": manifest, "cache": cache, "config": config, "root": root, **features}


def _small(phase: str, **overrides) -> TrainConfig:
    values = dict(epochs=2, batch_size=8, log_every=1, eval_every=1, device="cpu")
    values.update(overrides)
    return TrainConfig.for_phase(phase, **values)


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def phase1(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("phase1") / "run"
    train_contrastive(data["config"], _small("contrastive", epochs=3), data["train"], data["val"], out, progress=False)
    return out


# ----------------------------------------------------------------------------- end to end


def test_both_phases_through_the_cli(data, tmp_path, monkeypatch, capsys):
    embedded: list[str] = []  # every file looked up in the feature cache (read to hash it)
    import diffatr.features as features_module

    original = features_module.file_sha256

    def spy(path, *args, **kwargs):
        embedded.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(features_module, "file_sha256", spy)
    common = ["--data", str(data["manifest"]), "--config", "tiny", "--cache-dir", str(data["cache"]),
              "--device", "cpu", "--quiet", "--strict", "--batch-size", "8", "--log-every", "2"]
    p1, p2 = tmp_path / "p1", tmp_path / "p2"
    monkeypatch.chdir(tmp_path)  # where the runs start: paths inside it are recorded relative to it
    assert cli.main(["train", "--phase", "contrastive", "--out", str(p1), "--epochs", "2",
                     "--learn-temperature", *common]) == 0
    assert cli.main(["train", "--phase", "diffusion", "--init", str(p1 / "best"), "--out", str(p2), "--epochs", "2",
                     "--ce-scale", "50", "--top-k", "4", "--steps", "5", *common]) == 0
    assert "best validation mean/R@1" in capsys.readouterr().out

    # --strict would have failed on the corrupt test audio: selection never read the test split
    test_ids = set(datagen.read_truth(data["manifest"].parent)["test"])
    assert embedded and not any(Path(p).stem in test_ids for p in embedded)

    for run in (p1, p2):
        for name in ("last/config.json", "last/model.safetensors", "best/config.json", "best/model.safetensors",
                     "log.jsonl", "train_state/state.json", "train_state/state.safetensors"):
            assert (run / name).is_file(), f"{run / name} is missing"
        log = _log(run / "log.jsonl")
        assert log[0]["type"] == "start"
        train_lines = [r for r in log if r["type"] == "train"]
        val_lines = [r for r in log if r["type"] == "val"]
        assert train_lines and all({"loss", "lr", "step", "epoch", "grad_norm"} <= set(r) for r in train_lines)
        # phase 2 also reports the diffusion term alone ("gen/..." keys)
        expected = METRIC_KEYS | ({f"gen/{k}" for k in METRIC_KEYS if "/" in k} if run == p2 else set())
        assert len(val_lines) == 2 and all(r["split"] == "val" and set(r["metrics"]) == expected for r in val_lines)
        assert all(r["metrics"]["num_clips"] == 4 and r["metrics"]["num_captions"] == 20 for r in val_lines)

    config1, extra1 = read_checkpoint(p1 / "best")
    assert config1.learn_temperature and extra1["train"]["phase"] == "contrastive"
    assert extra1["data"]["train"]["num_clips"] == 8 and extra1["data"]["kind"] == "manifest"
    assert "logit_scale" in _log(p1 / "log.jsonl")[1]

    config2, extra2 = read_checkpoint(p2 / "last")
    assert config2.diffusion.ce_scale == 50 and config2.retrieval.top_k == 4
    assert config2.learn_temperature  # phase 1's temperature, whatever --config says
    assert config2.retrieval.num_inference_steps == 5
    assert from_dict(TrainConfig, extra2["train"]) == TrainConfig.for_phase(
        "diffusion", epochs=2, batch_size=8, log_every=2, device="cpu")
    # No machine's absolute path in a checkpoint: the init relative to where the run started,
    # the data (outside it) by name, and by content hash wherever it lies.
    assert extra2["init"]["path"] == "p1/best"
    assert extra2["data"]["source"] == data["manifest"].name and extra2["data"]["source_sha256"]
    for run in (p1, p2):
        assert str(tmp_path) not in (run / "best" / "config.json").read_text()
    val2 = [r for r in _log(p2 / "log.jsonl") if r["type"] == "val"]
    assert {"cosine_metrics", "knobs"} <= set(val2[0]) and val2[0]["knobs"]["top_k"] == 4
    assert {"loss_text_to_audio", "loss_audio_to_text"} <= set(_log(p2 / "log.jsonl")[1])
    # phase 2 trains only the denoisers: heads and temperature are the phase-1 ones
    w1, w2 = _weights(p1 / "best"), _weights(p2 / "last")
    assert all(torch.equal(w1[k], w2[k]) for k in w1 if not k.startswith("denoisers."))
    assert any(not torch.equal(w1[k], w2[k]) for k in w1 if k.startswith("denoisers."))


def test_a_final_model_trains_on_every_split_without_validation_and_records_what_it_saw(data, tmp_path, capsys):
    """--train-split train,val --val-split none: a fixed-length run whose best/ is its last/, and
    whose checkpoints list every clip they were fit on; evaluate refuses those clips."""
    common = ["--data", str(data["manifest"]), "--config", "tiny", "--cache-dir", str(data["cache"]),
              "--device", "cpu", "--quiet", "--batch-size", "8", "--train-split", "train,val", "--val-split", "none"]
    p1, p2 = tmp_path / "p1", tmp_path / "p2"
    assert cli.main(["train", "--phase", "contrastive", "--out", str(p1), "--epochs", "2", *common]) == 0
    assert cli.main(["train", "--phase", "diffusion", "--init", str(p1 / "best"), "--out", str(p2), "--epochs", "1",
                     *common]) == 0
    truth = datagen.read_truth(data["manifest"].parent)
    for run, steps in ((p1, 2 * (12 * 5 // 8)), (p2, None)):
        assert _weights(run / "best").keys() == _weights(run / "last").keys()
        assert all(torch.equal(a, b) for a, b in zip(_weights(run / "best").values(), _weights(run / "last").values()))
        _, extra = read_checkpoint(run / "best")
        assert extra["seen_clips"] == sorted([*truth["train"], *truth["val"]])
        assert extra["data"]["split"] == "train+val" and extra["data"]["val"] is None and extra["select_value"] is None
        if steps is not None:
            assert extra["step"] == steps
    assert not [r for r in _log(p1 / "log.jsonl") if r["type"] == "val" and r["metrics"]]

    capsys.readouterr()
    code = cli.main(["evaluate", "--checkpoint", str(p2 / "best"), "--data", str(data["manifest"]), "--split", "val",
                     "--cache-dir", str(data["cache"]), "--quiet", "--scorers", "dis"])
    err = capsys.readouterr().err
    assert code == 2 and "was trained on 4 of these 4 clips" in err and "--allow-seen" in err
    out_json = tmp_path / "seen.json"
    assert cli.main(["evaluate", "--checkpoint", str(p2 / "best"), "--data", str(data["manifest"]), "--split", "val",
                     "--cache-dir", str(data["cache"]), "--quiet", "--scorers", "dis", "--allow-seen",
                     "--out", str(out_json)]) == 0
    assert "SEEN DATA" in capsys.readouterr().out
    result = json.loads(out_json.read_text())
    assert result["seen_data"] is True and result["checkpoints"][0]["seen_clips"] == {"seen": 4, "of": 4}
    # --select-metric means nothing without a validation split
    assert cli.main(["train", "--phase", "contrastive", "--out", str(tmp_path / "p3"), "--select-metric",
                     "mean/R@5", *common]) == 2
    assert "needs a validation split" in capsys.readouterr().err


def test_joined_splits_refuse_a_clip_twice(data):
    from diffatr.data.datasets import DatasetError, join_splits

    train, val = load_split(data["manifest"], "train"), load_split(data["manifest"], "val")
    joined = join_splits([train, val])
    assert joined.split == "train+val" and joined.num_clips == train.num_clips + val.num_clips
    with pytest.raises(DatasetError, match="is in both train and train"):
        join_splits([train, train])


@pytest.mark.parametrize("layout", ["clotho", "audiocaps"])
def test_dataset_layouts_train_both_phases(layout, tmp_path, capsys):
    root = getattr(datagen, f"make_{layout}")(tmp_path / layout)
    common = ["--data", str(root), "--config", "tiny", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
              "--quiet", "--batch-size", "4", "--max-steps", "2"]
    assert cli.main(["train", "--phase", "contrastive", "--out", str(tmp_path / "p1"), *common]) == 0
    assert cli.main(["train", "--phase", "diffusion", "--init", str(tmp_path / "p1/best"), "--out",
                     str(tmp_path / "p2"), *common]) == 0
    _, extra = read_checkpoint(tmp_path / "p2/last")
    assert extra["data"]["kind"] == layout and extra["data"]["split"] == "train"
    assert extra["data"]["val"]["num_clips"] == 4 and extra["step"] == 2


def test_train_needs_init_for_diffusion_and_a_fresh_out(data, phase1, tmp_path, capsys):
    base = ["train", "--data", str(data["manifest"]), "--config", "tiny", "--device", "cpu", "--quiet",
            "--cache-dir", str(data["cache"])]
    assert cli.main([*base, "--phase", "diffusion", "--out", str(tmp_path / "x")]) == 2
    assert "--init" in capsys.readouterr().err
    assert cli.main([*base, "--phase", "contrastive", "--out", str(phase1)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main([*base, "--phase", "contrastive", "--out", str(tmp_path / "y"), "--val-split", "train"]) == 2
    assert "same split" in capsys.readouterr().err


def test_cli_resume_takes_the_saved_settings(data, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--phase", "contrastive", "--data", str(data["manifest"]), "--out", str(out),
            "--cache-dir", str(data["cache"]), "--quiet"]
    assert cli.main([*base, "--config", "tiny", "--device", "cpu", "--epochs", "2", "--batch-size", "8", "--lr",
                     "0.003", "--max-steps", "3"]) == 0
    assert cli.main([*base, "--resume"]) == 0  # config, knobs and device come from the run
    _, extra = read_checkpoint(out / "last")
    assert extra["step"] == 10 and extra["train"]["lr"] == 0.003 and extra["train"]["max_steps"] is None
    assert [r["type"] for r in _log(out / "log.jsonl")].count("resume") == 1
    assert cli.main([*base, "--resume", "--lr", "0.1"]) == 2
    assert "lr" in capsys.readouterr().err


def test_help_explains_every_train_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(TrainConfig):
        if field.name != "phase":
            assert "--" + field.name.replace("_", "-") in text
    for flag in ("--init", "--resume", "--ce-scale", "--residual", "--top-k", "--kind", "--val-split", "--strict"):
        assert flag in text


# ----------------------------------------------------------------------------- batches


def test_duplicate_captions_of_a_clip_are_positives_not_negatives(data):
    fs: FeatureSet = data["train"]
    rows = torch.tensor([0, 1, 5])  # captions 0 and 1 belong to clip 0, caption 5 to clip 1
    assert fs.caption_to_clip[rows].tolist() == [0, 0, 1]
    text, audio, clip_ids = contrastive_pairs(fs, rows)
    assert clip_ids.tolist() == [0, 0, 1]
    assert torch.equal(audio[0], audio[1]) and torch.equal(text[1], fs.text[1])

    # The loss gives the duplicate no negative weight: row 0's softmax holds its positive and
    # clip 1 only, exactly as if the duplicate were absent.
    t, a = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1), torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    a[1] = a[0]
    loss = nt_xent_loss(t, a, 10.0, clip_ids)
    logits = 10.0 * t @ a.T
    masked = logits.clone()
    masked[0, 1] = masked[1, 0] = float("-inf")
    expected = 0.5 * (torch.nn.functional.cross_entropy(masked, torch.arange(3))
                      + torch.nn.functional.cross_entropy(masked.T, torch.arange(3)))
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, nt_xent_loss(t, a, 10.0, None))


def test_epoch_batches_cover_each_caption_once():
    g = torch.Generator().manual_seed(0)
    batches = epoch_batches(23, 5, g)
    assert batches.shape == (4, 5) and len(set(batches.flatten().tolist())) == 20
    assert torch.equal(batches, epoch_batches(23, 5, torch.Generator().manual_seed(0)))
    with pytest.raises(TrainError):
        epoch_batches(3, 5, g)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=2, max_size=12), st.integers(2, 12), st.integers(0, 2**16))
def test_unique_clip_batches_never_repeat_a_clip(captions_per_clip, batch_size, seed):
    owner = torch.arange(len(captions_per_clip)).repeat_interleave(torch.tensor(captions_per_clip))
    g = torch.Generator().manual_seed(seed)
    if batch_size > len(captions_per_clip):
        with pytest.raises(TrainError, match="distinct clips"):
            unique_clip_batches(owner, batch_size, g)
        return
    batches = unique_clip_batches(owner, batch_size, g)
    assert batches.shape == (len(owner) // batch_size, batch_size)
    for batch in batches:
        clips = owner[batch].tolist()
        assert len(set(clips)) == batch_size  # the dedup rule of phase 2
    again = unique_clip_batches(owner, batch_size, torch.Generator().manual_seed(seed))
    assert torch.equal(batches, again)


def test_unique_clip_batches_use_each_caption_at_most_once_when_clips_abound():
    owner = torch.arange(40).repeat_interleave(5)  # 40 clips x 5 captions, batches of 8
    batches = unique_clip_batches(owner, 8, torch.Generator().manual_seed(3))
    assert sorted(batches.flatten().tolist()) == list(range(200))
    # few clips: the last batch is topped up with other captions of clips not in it yet
    owner = torch.arange(3).repeat_interleave(torch.tensor([1, 1, 6]))
    batches = unique_clip_batches(owner, 3, torch.Generator().manual_seed(0))
    assert batches.shape == (2, 3) and all(sorted(owner[b].tolist()) == [0, 1, 2] for b in batches)


def test_hardest_first_puts_the_positive_first_then_by_cosine():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    pool = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    order = hardest_first(q, pool)
    assert order.shape == (6, 6)
    assert torch.equal(order[:, 0], torch.arange(6))
    scores = q @ pool.T
    for i in range(6):
        rest = scores[i, order[i, 1:]]
        assert bool((rest[:-1] >= rest[1:]).all())  # hardest (most similar) negatives first
        assert sorted(order[i].tolist()) == list(range(6))
    # an explicit positive that is not the most similar item still goes first
    positive = scores.argmin(dim=1)
    assert torch.equal(hardest_first(q, pool, positive)[:, 0], positive)
    # ties keep the pool order
    tied = hardest_first(torch.ones(1, 2), torch.ones(4, 2), torch.tensor([2]))
    assert tied.tolist() == [[2, 0, 1, 3]]

    candidates = diffusion_candidates(q, pool)  # (B, K, D)
    assert candidates.shape == (6, 6, 8)
    assert torch.equal(candidates[:, 0], pool)
    assert torch.equal(candidates, pool[order])


def test_mined_candidates_are_the_nearest_items_of_other_clips():
    g = torch.Generator().manual_seed(1)
    pool = torch.nn.functional.normalize(torch.randn(12, 8, generator=g), dim=-1)  # 12 captions
    pool_owner = torch.arange(12) // 3  # 4 clips, 3 captions each
    query = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1)  # 3 audio queries
    query_owner = torch.tensor([0, 2, 3])
    positive = torch.tensor([1, 8, 9])  # one caption of each query's clip
    candidates = mined_candidates(query, query_owner, positive, pool, pool_owner, k=5)  # (B, K, D)
    assert candidates.shape == (3, 5, 8)
    assert torch.equal(candidates[:, 0], pool[positive])
    scores = query @ pool.T
    for i in range(3):
        rows = [int((pool == c).all(dim=1).nonzero()) for c in candidates[i, 1:]]
        # the other captions of the query's own clip are never negatives ...
        assert all(int(pool_owner[r]) != int(query_owner[i]) for r in rows)
        # ... and the negatives are the K-1 most similar of the rest, hardest first
        others = [r for r in range(12) if int(pool_owner[r]) != int(query_owner[i])]
        best = sorted(others, key=lambda r: -float(scores[i, r]))[:4]
        assert rows == best


def test_diffusion_phase_trains_on_mined_negatives(data, phase1, tmp_path):
    out = tmp_path / "mined"
    result = train_diffusion(phase1 / "best", _small("diffusion", negatives="mined", batch_size=4,
                                                     select_metric="gen/mean/R@1"),
                             data["train"], data["val"], out, progress=False)
    log = _log(out / "log.jsonl")
    assert log[0]["train"]["negatives"] == "mined"
    val = [r for r in log if r["type"] == "val"]
    # phase-2 validation reports the diffusion term alone too, and it can pick best/
    assert all(0 <= r["metrics"]["gen/text_to_audio/R@1"] <= 100 for r in val)
    assert select_value(val[0]["metrics"], "gen/mean/R@1") == pytest.approx(
        (val[0]["metrics"]["gen/text_to_audio/R@1"] + val[0]["metrics"]["gen/audio_to_text/R@1"]) / 2)
    assert result.best_value == pytest.approx(max(select_value(r["metrics"], "gen/mean/R@1") for r in val))
    with pytest.raises(TrainError, match="gen/mean/R@1"):  # phase 1 has no diffusion term to select on
        train_contrastive(data["config"], _small("contrastive", select_metric="gen/mean/R@1"), data["train"],
                          data["val"], tmp_path / "p1", progress=False)
    assert all(math.isfinite(r["loss"]) for r in log if r["type"] == "train")
    assert read_checkpoint(out / "best")[1]["train"]["negatives"] == "mined"
    with pytest.raises(ConfigError, match="negatives"):
        TrainConfig.for_phase("diffusion", negatives="random")
    with pytest.raises(ConfigError, match="phase 2"):
        TrainConfig.for_phase("contrastive", negatives="mined")
    assert (result.best / "model.safetensors").exists() and result.step > 0


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[10] == pytest.approx(1.0) and 0 < lrs[-1] < 0.01
    assert lr_at(0, 10, 0, 2.0) == pytest.approx(2.0)


def test_train_config_checks_and_round_trip():
    cfg = TrainConfig.for_phase("diffusion", max_steps=7)
    assert (cfg.lr, cfg.weight_decay, cfg.ema_decay, cfg.epochs, cfg.warmup_fraction, cfg.grad_clip) == \
        (1e-4, 0.2, 0.99, 5, 0.1, 1.0)
    assert from_dict(TrainConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg
    for bad in ({"batch_size": 1}, {"lr": 0}, {"eval_unit": "hour"}, {"ema_decay": 1.0}, {"device": "tpu"},
                {"phase": "diffusion", "finetune": True}, {"max_steps": 0}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)


def test_optimizer_state_flattens_and_restores():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.95))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    assert all(torch.is_tensor(v) for v in tensors.values())
    restored = unflatten_optimizer_state(tensors, json.loads(json.dumps(meta)))
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.1)
    opt2.load_state_dict(restored)
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95)
    for p in model.parameters():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], opt2.state[p][key])


# ----------------------------------------------------------------------------- selection, resume


def test_model_selection_reads_validation_metrics_only(data, phase1):
    log = _log(phase1 / "log.jsonl")
    vals = [r for r in log if r["type"] == "val"]
    assert len(vals) == 3 and {r["split"] for r in vals} == {"val"}
    _, extra = read_checkpoint(phase1 / "best")
    assert extra["select_value"] == max(r["select_value"] for r in vals)
    assert extra["step"] == next(r["step"] for r in vals if r["select_value"] == extra["select_value"])

    # best/'s recorded metrics are those of its weights on the validation features
    model = load_checkpoint(phase1 / "best")
    val: FeatureSet = data["val"]
    with torch.no_grad():
        scores = model.project_text(val.text) @ model.project_audio(val.audio).T
    metrics = retrieval_metrics(scores, None, val.caption_to_clip)
    assert metrics == pytest.approx(extra["validation"]["metrics"])
    r1 = (metrics["text_to_audio/R@1"] + metrics["audio_to_text/R@1"]) / 2
    assert r1 == pytest.approx(extra["select_value"])


def _interrupt_at(monkeypatch, step_to_fail: int):
    """Make the optimizer raise KeyboardInterrupt on its ``step_to_fail``-th step (1-based)."""
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step_to_fail:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)


@pytest.mark.parametrize("phase", ["contrastive", "diffusion"])
def test_resume_continues_exactly(data, phase1, tmp_path, monkeypatch, phase):
    # 40 captions / batch 8 = 5 steps an epoch, 3 epochs; state saved every 3 steps; a crash at
    # step 5 resumes from step 3 (mid epoch 1, mid log interval) and must end on the same
    # weights, bit for bit, and the same log.
    config = _small(phase, epochs=3, eval_unit="step", eval_every=3, log_every=2, seed=5, ema_decay=0.9)
    if phase == "contrastive":
        model_config = dataclasses.replace(data["config"], learn_temperature=True)

        def run(out, cfg, **kw):
            return train_contrastive(model_config, cfg, data["train"], data["val"], out, progress=False, **kw)
    else:
        def run(out, cfg, **kw):
            return train_diffusion(phase1 / "best", cfg, data["train"], data["val"], out, progress=False, **kw)

    straight = run(tmp_path / "straight", config)
    assert straight.step == 15

    with monkeypatch.context() as m:
        _interrupt_at(m, 5)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path / "resumed", config)
    assert json.loads((tmp_path / "resumed/train_state/state.json").read_text())["progress"]["step"] == 3
    resumed = run(tmp_path / "resumed", config, resume=True)
    assert resumed.step == 15
    for name in ("last", "best"):
        a, b = _weights(tmp_path / "straight" / name), _weights(tmp_path / "resumed" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed.best_step == straight.best_step and resumed.metrics == straight.metrics
    # the log reads as if nothing had happened (plus a "resume" line)
    rows = lambda run_dir: [r for r in _log(run_dir / "log.jsonl") if r["type"] in ("train", "val")]  # noqa: E731
    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight")

    # stopping early with max_steps (which may change on resume), then going on: same weights
    half = run(tmp_path / "halves", dataclasses.replace(config, max_steps=7))
    assert half.step == 7
    assert run(tmp_path / "halves", config, resume=True).step == 15
    a, b = _weights(tmp_path / "straight/last"), _weights(tmp_path / "halves/last")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # a changed setting is refused
    with pytest.raises(TrainError, match="lr"):
        run(tmp_path / "resumed", dataclasses.replace(config, lr=1.0), resume=True)


def test_learnable_temperature_stays_capped(data, tmp_path, monkeypatch):
    # Aligned from the start (text features = their clip's audio features, twin heads), the
    # loss falls as the scale grows, so every update pushes the scale up; starting right
    # under the cap (1/0.0102 = 98) with a large lr, the updates overshoot it.
    import diffatr.train.contrastive as train_module

    original = train_module.init_model

    def twin_heads(config, seed):
        model = original(config, seed)
        model.text_head.load_state_dict(model.audio_head.state_dict())
        return model

    monkeypatch.setattr(train_module, "init_model", twin_heads)
    base = data["config"]
    model_config = dataclasses.replace(base, learn_temperature=True, init_temperature=0.0102,
                                       text=dataclasses.replace(base.text, embed_dim=base.audio.embed_dim))

    def aligned(fs: FeatureSet) -> FeatureSet:
        return dataclasses.replace(fs, text_features=fs.audio[fs.caption_to_clip].clone(), encoders={})

    train, val = aligned(data["train"]), aligned(data["val"])
    config = _small("contrastive", epochs=1, lr=0.5, warmup_fraction=0.0, weight_decay=0.0)

    def final_log_scale(out: Path) -> float:
        train_contrastive(model_config, config, train, val, out, progress=False)
        return float(load_file(str(out / "train_state/state.safetensors"))["modules/logit_scale.log_scale"])

    assert final_log_scale(tmp_path / "run") == pytest.approx(math.log(100.0))
    with torch.no_grad():
        assert float(load_checkpoint(tmp_path / "run/last").logit_scale()) == pytest.approx(100.0)

    # without the projection after each step the parameter does overshoot: the test can fail
    from diffatr.contrastive import LogitScale

    monkeypatch.setattr(LogitScale, "clamp_", lambda self: None)
    assert final_log_scale(tmp_path / "unclamped") > math.log(100.0) + 0.1


# ----------------------------------------------------------------------------- devices


def test_cpu_run_makes_no_cuda_call(data, phase1, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a CPU run called torch.cuda")

    for name in ("is_available", "device_count", "current_device", "synchronize", "manual_seed", "manual_seed_all",
                 "init", "_lazy_init", "is_bf16_supported", "get_rng_state", "set_rng_state", "empty_cache",
                 "memory_allocated", "set_device"):
        if hasattr(torch.cuda, name):
            monkeypatch.setattr(torch.cuda, name, boom)
    common = ["--data", str(data["manifest"]), "--config", "tiny", "--cache-dir", str(data["cache"]),
              "--device", "cpu", "--quiet", "--max-steps", "2", "--batch-size", "8"]
    with pytest.warns(UserWarning, match="CUDA only"):
        assert cli.main(["train", "--phase", "contrastive", "--out", str(tmp_path / "a"), "--amp", *common]) == 0
    assert cli.main(["train", "--phase", "diffusion", "--init", str(phase1 / "best"), "--out", str(tmp_path / "b"),
                     *common]) == 0
    with pytest.raises(AssertionError, match="torch.cuda"):
        torch.cuda.is_available()  # the guard itself works


# ----------------------------------------------------------------------------- fine-tuning


def test_finetune_trains_the_backbones_and_saves_them(data, tmp_path):
    split = {s: load_split(data["manifest"], s) for s in ("train", "val")}
    config = _small("contrastive", finetune=True, max_steps=2, batch_size=4, backbone_lr=1e-3, num_workers=2)
    result = train_contrastive(data["config"], config, split["train"], split["val"], tmp_path / "ft", progress=False)
    assert result.step == 2 and set(result.metrics) == METRIC_KEYS

    from diffatr.encoders.audio import build_audio_encoder

    saved_config, extra = read_checkpoint(tmp_path / "ft/last")
    assert extra["finetune"] and Path(saved_config.audio.weights).is_file()
    assert (Path(saved_config.text.name_or_path) / "config.json").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "front end differs": tiny-cnn has no reference weights
        tuned = build_audio_encoder(saved_config.audio).backbone.state_dict()
    initial = build_audio_encoder(data["config"].audio).backbone.state_dict()
    assert any(not torch.equal(tuned[k], initial[k]) for k in tuned if tuned[k].is_floating_point())
    state = load_file(str(tmp_path / "ft/train_state/state.safetensors"))
    assert any(k.startswith("modules/text_backbone.") for k in state)


def test_head_dropout_draws_from_the_run_seed_not_the_global_rng(data, tmp_path):
    config = dataclasses.replace(data["config"], head_hidden_dim=8, head_dropout=0.5)
    runs = []
    for name, global_seed in (("a", 1), ("b", 2)):
        torch.manual_seed(global_seed)
        before = torch.random.get_rng_state()
        result = train_contrastive(config, _small("contrastive", epochs=2), data["train"], data["val"],
                                   tmp_path / name, progress=False)
        assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is untouched
        runs.append(_weights(result.last))
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    # dropout is really on while training (another seed, other masks, other weights) ...
    other = train_contrastive(config, _small("contrastive", epochs=2, seed=5), data["train"], data["val"],
                              tmp_path / "c", progress=False)
    assert not all(torch.equal(runs[0][k], _weights(other.last)[k]) for k in runs[0])
    # ... and off when phase 2 projects the training items once (same run twice, other global RNG)
    phase2 = []
    for name, global_seed in (("p2a", 3), ("p2b", 4)):
        torch.manual_seed(global_seed)
        phase2.append(_weights(train_diffusion(tmp_path / "a" / "last", _small("diffusion", epochs=1, batch_size=4),
                                               data["train"], data["val"], tmp_path / name, progress=False).last))
    assert all(torch.equal(phase2[0][k], phase2[1][k]) for k in phase2[0])


def test_sound_folds_keep_a_sound_in_one_fold():
    from diffatr.train import sound_folds

    units = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])
    folds = sound_folds(units, 3, seed=1)
    assert set(folds.tolist()) == {0, 1, 2}
    for unit in units.unique():
        assert len(set(folds[units == unit].tolist())) == 1  # variants never straddle a fold
    assert torch.equal(folds, sound_folds(units, 3, seed=1))
    with pytest.raises(TrainError, match="folds"):
        sound_folds(units, 7, seed=0)  # 6 sounds
    with pytest.raises(ConfigError, match="cross_fit"):
        TrainConfig.for_phase("diffusion", cross_fit=1)
    with pytest.raises(ConfigError, match="phase 2"):
        TrainConfig.for_phase("contrastive", cross_fit=2)


def test_cross_fitted_phase_2_trains_on_out_of_fold_embeddings(data, phase1, tmp_path, monkeypatch):
    import diffatr.train.diffusion as train_module
    from diffatr.train import cross_fit_embeddings, sound_folds

    train = data["train"]
    text, audio = cross_fit_embeddings(phase1 / "best", train, data["val"], 2, tmp_path / "cf", seed=3, device="cpu",
                                       progress=False)
    folds = sound_folds(train.sound_units(), 2, seed=3)
    full = load_checkpoint(phase1 / "best")
    for fold in (0, 1):
        fold_model = load_checkpoint(tmp_path / "cf" / f"fold{fold}" / "best")
        held = (folds == fold).nonzero().flatten()
        with torch.no_grad():
            assert torch.allclose(audio[held], fold_model.project_audio(train.audio[held]), atol=1e-6)
            assert not torch.allclose(audio[held], full.project_audio(train.audio[held]), atol=1e-3)
        # each fold model trained on the other fold's clips only (and the phase-1 settings of --init)
        fold_log = _log(tmp_path / "cf" / f"fold{fold}" / "log.jsonl")
        assert fold_log[0]["train"]["epochs"] == 3
        summary = json.loads((tmp_path / "cf" / f"fold{fold}" / "best" / "config.json").read_text())
        assert summary["extra"]["data"]["train"]["num_clips"] == int((folds != fold).sum())

    seen = []
    original = train_module.generation_loss
    monkeypatch.setattr(train_module, "generation_loss",
                        lambda den, sch, query, cands, **kw: seen.append(query.clone()) or original(den, sch, query, cands, **kw))
    result = train_diffusion(phase1 / "best", _small("diffusion", epochs=1, batch_size=4, cross_fit=2, seed=3),
                             train, data["val"], tmp_path / "p2", progress=False)
    assert read_checkpoint(result.best)[1]["train"]["cross_fit"] == 2
    # the text->audio queries of every step are out-of-fold caption embeddings
    oof = torch.nn.functional.normalize(text, dim=-1)
    dist = lambda q: torch.cdist(q, oof, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values  # noqa: E731
    assert seen and all(bool((dist(q) < 1e-5).all()) for q in seen[::2])


def test_phase_2_with_shortlist_context_stores_the_bank_and_hides_each_candidates_own_sound(data, phase1, tmp_path,
                                                                                           monkeypatch):
    import diffatr.train.diffusion as train_module
    from diffatr.diffusion.denoiser import hubness

    config = load_model_config("tiny")
    config = dataclasses.replace(config, denoiser=dataclasses.replace(config.denoiser, context="shortlist+hubness",
                                                                      hubness_neighbours=2))
    train = data["train"]
    seen = []
    original = train_module.generation_loss
    monkeypatch.setattr(train_module, "generation_loss",
                        lambda den, sch, query, cands, **kw: seen.append((query, cands, kw["candidate_hubness"]))
                        or original(den, sch, query, cands, **kw))
    result = train_diffusion(phase1 / "best", _small("diffusion", epochs=1, batch_size=4, negatives="mined"), train,
                             data["val"], tmp_path / "ctx", model_config=config, progress=False)
    model = load_checkpoint(result.best)
    assert model.config.denoiser.context == "shortlist+hubness"
    with torch.no_grad():  # inference measures hubness against the training queries
        assert torch.allclose(model.denoisers["text_to_audio"].query_bank, model.project_text(train.text), atol=1e-6)
        assert torch.allclose(model.denoisers["audio_to_text"].query_bank, model.project_audio(train.audio), atol=1e-6)
        text_emb, audio_emb = model.project_text(train.text), model.project_audio(train.audio)
    unit = train.sound_units()  # (N,) per clip
    text_unit = unit[train.caption_to_clip]
    # training hubness: an audio candidate's own captions never count (they are not in an unseen clip's bank)
    expected = hubness(audio_emb, text_emb, 2, exclude=unit[:, None] == text_unit[None, :])
    leaky = hubness(audio_emb, text_emb, 2)
    assert not torch.allclose(expected, leaky, atol=1e-4)
    for query, cands, hub in seen[::2]:  # text -> audio steps
        rows = torch.cdist(cands.reshape(-1, cands.shape[-1]), audio_emb).argmin(dim=1).view(hub.shape)
        assert torch.allclose(hub, expected[rows], atol=1e-5)
    assert len(seen) >= 2


def test_phase_2_trains_on_mixtures_of_training_clips_through_the_cli(data, phase1, tmp_path, monkeypatch, capsys):
    import diffatr.train.diffusion as train_module
    from diffatr.corpus.mixtures import MixClip, MixRecipe, render_mixture, write_recipes
    from diffatr.features import mixture_features

    train_records = load_split(data["manifest"], "train").records
    val_id = load_split(data["manifest"], "val").records[0].clip_id
    a, b, c = (r.clip_id for r in train_records[:3])
    recipe = lambda i, x, y, caps: MixRecipe(f"mix{i}", "train", "overlay", (MixClip(x, 0.0, 0.0),  # noqa: E731
                                             MixClip(y, 0.1, -6.0)), i, 1.0, caps)
    recipes = [recipe(0, a, b, ("a zebra humming while a yak sings", "zebra and yak")),
               recipe(1, b, c, ("two quokkas whistle",)),
               recipe(2, a, val_id, ("mixes a validation clip",))]  # not a training-only mix: left out
    write_recipes(tmp_path / "mix.jsonl", recipes)

    config, encoders = data["config"], LazyEncoders(data["config"])
    paths = {r.clip_id: r.path for r in train_records}
    mixes = mixture_features(recipes[:2], paths, config, encoders=encoders, progress=False)
    assert mixes.num_clips == 2 and mixes.flat_captions == ["a zebra humming while a yak sings", "zebra and yak",
                                                             "two quokkas whistle"]
    assert mixes.caption_to_clip.tolist() == [0, 0, 1] and mixes.sound_keys == ["mixture:mix0", "mixture:mix1"]
    rate = encoders.audio.sample_rate
    assert torch.allclose(mixes.audio[1], encoders.audio.embed_waveform(render_mixture(recipes[1], paths, rate),
                                                                        rate).float().reshape(-1), atol=1e-5)
    joined = data["train"].concat(mixes)
    assert joined.num_clips == data["train"].num_clips + 2
    assert joined.caption_to_clip[-1].item() == data["train"].num_clips + 1
    assert torch.equal(joined.text[-3:], mixes.text) and len(joined.sound_units().unique()) == \
        len(data["train"].sound_units().unique()) + 2

    seen = []
    original = train_module.generation_loss
    monkeypatch.setattr(train_module, "generation_loss",
                        lambda den, sch, query, cands, **kw: seen.append(query.clone()) or original(den, sch, query, cands, **kw))
    out = tmp_path / "p2"
    assert cli.main(["train", "--phase", "diffusion", "--init", str(phase1 / "best"), "--out", str(out),
                     "--epochs", "2", "--batch-size", "4", "--data", str(data["manifest"]), "--cache-dir",
                     str(data["cache"]), "--device", "cpu", "--quiet", "--mixtures", str(tmp_path / "mix.jsonl")]) == 0
    assert "mixtures: 2 recipes" in capsys.readouterr().err
    _, extra = read_checkpoint(out / "last")
    assert extra["data"]["train"]["num_clips"] == data["train"].num_clips + 2
    assert extra["data"]["mixtures"]["count"] == 2
    # the mixtures' captions were text -> audio queries
    with torch.no_grad():
        mix_queries = load_checkpoint(phase1 / "best").project_text(mixes.text)  # (3, D)
    t2a = torch.cat(seen[::2])
    assert (torch.cdist(mix_queries, t2a).min(dim=1).values < 1e-5).any()
    with pytest.raises(TrainError, match="cross-fitting"):
        train_diffusion(phase1 / "best", _small("diffusion", cross_fit=2), data["train"], data["val"],
                        tmp_path / "cf", extra_train=mixes, progress=False)
