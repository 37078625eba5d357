"""Evaluation: the Dis / Gen / Gen+Dis scorers against hand-made and reference rankings,
mean +- std over seeds and checkpoints, the out-of-domain flag, the sweep, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffatr.checkpoint import save_checkpoint
from diffatr.config import ConfigError, load_model_config
from diffatr.diffusion.ddim import DDIMScheduler
from diffatr.evaluate import (
    DIRECTIONS,
    METRICS,
    SCORERS,
    EvaluationError,
    dataset_identity,
    evaluate_model,
    format_results,
    format_sweep,
    is_out_of_domain,
    with_source_sha256,
    score_matrices,
    sweep,
    training_data,
)
from diffatr.model import DiffATR
from diffatr.retrieval.rerank import full_fused_scores

# ----------------------------------------------------------------------------- fixtures


def knobs(model=None, **values):
    """The settings an entry point would build: the model's (or the tiny config's) defaults with ``values``."""
    config = model.config if model is not None else load_model_config("tiny")
    return config.with_retrieval(**values)


class CoordinateDenoiser(nn.Module):
    """A stand-in denoiser whose x0 estimate is a chosen coordinate of each candidate, whatever
    x_t and t: the DDIM loop then ends on exactly that (in [-1, 1] for unit vectors)."""

    def __init__(self, coordinate: int):
        super().__init__()
        self.coordinate = coordinate

    def forward(self, x_t, t, query, candidates):  # (B, K), (B,), (B, D), (B, K, D)
        return candidates[..., self.coordinate].clone()  # (B, K)


class HandModel(nn.Module):
    """Identity heads (features are the embeddings) and coordinate denoisers."""

    def __init__(self, dim: int, t2a_coordinate: int = 1, a2t_coordinate: int = 2):
        super().__init__()
        base = load_model_config("tiny")
        self.config = dataclasses.replace(
            base, embed_dim=dim, text=dataclasses.replace(base.text, embed_dim=dim),
            audio=dataclasses.replace(base.audio, embed_dim=dim))
        self.denoisers = nn.ModuleDict({"text_to_audio": CoordinateDenoiser(t2a_coordinate),
                                        "audio_to_text": CoordinateDenoiser(a2t_coordinate)})

    def project_text(self, features):
        return F.normalize(features, dim=-1)

    def project_audio(self, features):
        return F.normalize(features, dim=-1)

    def make_scheduler(self):
        return DDIMScheduler(self.config.diffusion)


def tiny_model(seed: int = 0) -> DiffATR:
    torch.manual_seed(seed)  # test fixture only: the library never touches global RNG
    return DiffATR(load_model_config("tiny")).eval()


def random_features(num_clips=12, per_clip=3, seed=0, da=16, dt=384):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(num_clips, da, generator=g)
    labels = torch.arange(num_clips).repeat_interleave(per_clip)
    # Captions near their clip in the projected space would need the heads; noise is enough
    # for ranking tests.
    text = torch.randn(num_clips * per_clip, dt, generator=g)
    return {"audio": audio, "text": text, "caption_to_clip": labels}


def order(row: torch.Tensor) -> list[int]:
    """Candidate indices best first (ties by index), from a score row."""
    return sorted(range(row.shape[0]), key=lambda j: (-float(row[j]), j))


def reference_rankings(queries, candidates, x0_coordinate, top_k, alpha, temperature):
    """Slow reference of the three rankings of docs/method.md for a coordinate denoiser."""
    q = F.normalize(queries, dim=-1)
    c = F.normalize(candidates, dim=-1)
    out = {"dis": [], "gen": [], "gen+dis": []}
    for row in (q @ c.T):
        by_cos = order(row)
        top, rest = by_cos[:top_k], by_cos[top_k:]
        logits = [float(c[j, x0_coordinate]) / temperature for j in top]
        z = sum(math.exp(v) for v in logits)
        diffusion = {j: math.exp(v) / z for j, v in zip(top, logits)}
        gen_top = sorted(top, key=lambda j: (-diffusion[j], top.index(j)))
        fused = {j: float(row[j]) + alpha * diffusion[j] for j in top}
        fused.update({j: float(row[j]) for j in rest})
        out["dis"].append(by_cos)
        out["gen"].append(gen_top + rest)
        out["gen+dis"].append(sorted(fused, key=lambda j: (-fused[j], by_cos.index(j))))
    return out


# ----------------------------------------------------------------------------- scorers


def hand_case():
    # Clips (unit vectors): cosine to the query [1, 0, 0] is 1, .8, .6, 0; the t2a denoiser's
    # x0 is the second coordinate: 0, .6, -.8, 1.
    audio = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.6, -0.8, 0.0], [0.0, 1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.6, -0.8, 0.0]])
    return audio, text


def test_hand_made_rankings_of_the_three_scorers():
    audio, text = hand_case()
    model = HandModel(3)
    m = score_matrices(model, audio, text, knobs(model, **{"top_k": 3, "alpha": 1.0, "temperature": 1.0,
                                            "num_inference_steps": 5}))["text_to_audio"]
    assert order(m["dis"][0]) == [0, 1, 2, 3]
    # Diffusion alone over the top 3 (x0 = 0, .6, -.8): clip 1, clip 0, clip 2; clip 3 (x0 = 1,
    # the best diffusion value) is outside the top 3 and stays last.
    assert order(m["gen"][0]) == [1, 0, 2, 3]
    # Fused: 1 + .306 < .8 + .557, so clip 1 passes clip 0.
    soft = [math.exp(v) for v in (0.0, 0.6, -0.8)]
    soft = [v / sum(soft) for v in soft]
    expected = torch.tensor([1.0 + soft[0], 0.8 + soft[1], 0.6 + soft[2], 0.0])
    torch.testing.assert_close(m["gen+dis"][0], expected)
    assert order(m["gen+dis"][0]) == [1, 0, 2, 3]
    # Entries outside the top-K keep the cosine in both diffusion scorers.
    assert float(m["gen"][0, 3]) == pytest.approx(0.0, abs=1e-7)
    assert torch.equal(m["dis"], text @ audio.T)

    # A small alpha keeps the cosine order; a larger K lets clip 3 in, and Gen puts it first.
    m = score_matrices(model, audio, text, knobs(model, **{"top_k": 3, "alpha": 0.1, "num_inference_steps": 5}))["text_to_audio"]
    assert order(m["gen+dis"][0]) == [0, 1, 2, 3]
    m = score_matrices(model, audio, text, knobs(model, **{"top_k": 4, "num_inference_steps": 5}))["text_to_audio"]
    assert order(m["gen"][0]) == [3, 1, 0, 2]


def test_gen_breaks_diffusion_ties_by_cosine_order():
    # All top-K candidates have the same x0 (0): Gen must keep the cosine order, not reorder by
    # index or by the metrics' pessimistic tie rule.
    audio = torch.tensor([[0.6, 0.0, 0.8], [1.0, 0.0, 0.0], [0.8, 0.0, 0.6]])  # cosine .6, 1, .8
    text = torch.tensor([[1.0, 0.0, 0.0]])
    m = score_matrices(HandModel(3), audio, text, knobs(HandModel(3), **{"top_k": 3, "num_inference_steps": 3}))["text_to_audio"]
    assert order(m["gen"][0]) == [1, 2, 0]


@pytest.mark.parametrize("top_k,alpha,temperature", [(1, 1.0, 1.0), (4, 1.0, 1.0), (6, 3.0, 0.5), (50, 1.0, 2.0)])
def test_scorers_match_a_slow_reference_in_both_directions(top_k, alpha, temperature):
    g = torch.Generator().manual_seed(top_k)
    audio = torch.randn(9, 5, generator=g)
    text = torch.randn(14, 5, generator=g)
    model = HandModel(5, t2a_coordinate=1, a2t_coordinate=3)
    got = score_matrices(model, audio, text, knobs(model, top_k=top_k, alpha=alpha, temperature=temperature,
                                                   num_inference_steps=4))
    for direction, queries, candidates, coordinate in [("text_to_audio", text, audio, 1),
                                                       ("audio_to_text", audio, text, 3)]:
        ref = reference_rankings(queries, candidates, coordinate, min(top_k, candidates.shape[0]), alpha, temperature)
        for scorer in SCORERS:
            matrix = got[direction][scorer]
            assert matrix.shape == (queries.shape[0], candidates.shape[0])
            assert [order(row) for row in matrix] == ref[scorer], (direction, scorer)


def test_gen_reorders_only_within_the_top_k():
    model = tiny_model()
    feats = random_features()
    k = 4
    m = score_matrices(model, feats["audio"], feats["text"], knobs(model, **{"top_k": k, "num_inference_steps": 5}))
    for direction in DIRECTIONS:
        dis, gen = m[direction]["dis"], m[direction]["gen"]
        for d_row, g_row in zip(dis, gen):
            d_order, g_order = order(d_row), order(g_row)
            assert set(g_order[:k]) == set(d_order[:k])
            assert g_order[k:] == d_order[k:]


def test_alpha_zero_makes_gen_dis_equal_dis():
    model = tiny_model()
    feats = random_features()
    m = score_matrices(model, feats["audio"], feats["text"], knobs(model, **{"alpha": 0.0, "top_k": 5}))
    for direction in DIRECTIONS:
        assert torch.equal(m[direction]["gen+dis"], m[direction]["dis"])
        assert not torch.equal(m[direction]["gen"], m[direction]["dis"])


def test_each_direction_uses_its_own_denoiser():
    model = tiny_model()
    feats = random_features()
    settings = knobs(model, top_k=6, num_inference_steps=7, alpha=2.0, temperature=0.5, seed=3)
    m = score_matrices(model, feats["audio"], feats["text"], settings)
    with torch.no_grad():
        a = model.project_audio(feats["audio"])
        t = model.project_text(feats["text"])
    sched = model.make_scheduler()
    # The plain (non-factorised) path of the engine as an independent check of the wiring.
    t2a = full_fused_scores(t, a, model.denoisers["text_to_audio"], sched, settings, factorised=False)
    a2t = full_fused_scores(a, t, model.denoisers["audio_to_text"], sched, settings, factorised=False)
    torch.testing.assert_close(m["text_to_audio"]["gen+dis"], t2a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m["audio_to_text"]["gen+dis"], a2t, atol=1e-5, rtol=1e-5)
    wrong = full_fused_scores(a, t, model.denoisers["text_to_audio"], sched, settings, factorised=False)
    assert not torch.allclose(m["audio_to_text"]["gen+dis"], wrong, atol=1e-5)


def test_dis_only_runs_no_diffusion():
    model = tiny_model()
    model.denoisers = None  # any use of a denoiser would fail
    feats = random_features()
    m = score_matrices(model, feats["audio"], feats["text"], model.config.retrieval, ("dis",))
    assert set(m["text_to_audio"]) == {"dis"} and set(m["audio_to_text"]) == {"dis"}
    torch.testing.assert_close(m["audio_to_text"]["dis"], m["text_to_audio"]["dis"].T)


# ----------------------------------------------------------------------------- knobs


def test_evaluation_takes_the_settings_as_they_are():
    """No defaults and no second check below the entry point: the config is required, and a bad
    setting is the config's own error (steps above T: the scheduler's, in the same words)."""
    model = tiny_model()
    feats = random_features()
    with pytest.raises(TypeError):
        score_matrices(model, feats["audio"], feats["text"])
    with pytest.raises(TypeError):
        evaluate_model(model, feats)
    too_many = dataclasses.replace(model.config.retrieval, num_inference_steps=51)  # T = 50
    with pytest.raises(ConfigError, match=r"Diffusion steps \(num_inference_steps\) must be between 1 and 50"):
        score_matrices(model, feats["audio"], feats["text"], too_many)
    with pytest.raises(ConfigError, match=r"between 1 and 50"):  # the whole sweep grid is checked first
        sweep(model, feats, model.config.retrieval, steps=(1, 51), top_ks=(2,))


def test_features_that_do_not_fit_the_model_are_a_clear_error():
    feats = random_features(dt=32)
    with pytest.raises(EvaluationError, match="text features are 32-d"):
        evaluate_model(tiny_model(), feats, knobs())
    with pytest.raises(EvaluationError, match="caption_to_clip"):
        evaluate_model(tiny_model(), {"audio": feats["audio"], "text": feats["text"]}, knobs())


# ----------------------------------------------------------------------------- evaluate_model


def test_result_has_every_metric_for_every_scorer_and_direction():
    feats = random_features()
    result = evaluate_model(tiny_model(), feats, knobs(**{"top_k": 4}))
    assert set(result["scorers"]) == set(SCORERS)
    expected = {f"{d}/{m}" for d in DIRECTIONS for m in METRICS}
    for scorer in SCORERS:
        assert set(result["scorers"][scorer]) == expected
        assert set(result["std"][scorer]) == expected
        assert all(v == 0.0 for v in result["std"][scorer].values())
    assert result["num_clips"] == 12 and result["num_captions"] == 36
    assert result["knobs"]["top_k"] == 4 and result["seeds"] == [0]
    assert result["std_over"] == "none" and result["out_of_domain"] is None
    json.loads(json.dumps(result))  # JSON-able as is
    table = format_results(result)
    assert "12 clips, 36 captions" in table
    for word in ("dis", "gen+dis", "text->audio", "audio->text", "R@1", "mAP@10", "medR", "meanR"):
        assert word in table


def test_mean_and_std_over_seeds():
    feats = random_features()
    model = tiny_model()
    result = evaluate_model(model, feats, knobs(**{"top_k": 6, "num_inference_steps": 3}), seeds=[0, 1, 2, 3])
    assert result["std_over"] == "seeds" and result["num_runs"] == 4 and result["seeds"] == [0, 1, 2, 3]
    key = "text_to_audio/mean_rank"
    values = [run["scorers"]["gen"][key] for run in result["runs"]]
    assert len(set(values)) > 1  # the seed matters for the diffusion scorers
    assert result["scorers"]["gen"][key] == pytest.approx(statistics.mean(values))
    assert result["std"]["gen"][key] == pytest.approx(statistics.stdev(values))  # sample std
    # Dis does not use the diffusion: no spread over seeds.
    assert all(v == 0.0 for v in result["std"]["dis"].values())
    assert "±" in format_results(result)
    # Diffusion switched off in the fusion (alpha = 0): Gen+Dis == Dis, std 0.
    off = evaluate_model(model, feats, knobs(**{"top_k": 6, "num_inference_steps": 3, "alpha": 0.0}), seeds=[0, 1, 2])
    assert off["scorers"]["gen+dis"] == off["scorers"]["dis"]
    assert all(v == 0.0 for v in off["std"]["gen+dis"].values())


def test_same_seed_same_result_and_caption_order_does_not_matter():
    feats = random_features()
    model = tiny_model()
    settings = knobs(top_k=5, num_inference_steps=4)
    a = evaluate_model(model, feats, settings)
    b = evaluate_model(model, feats, settings)
    assert a["scorers"] == b["scorers"]
    perm = torch.randperm(feats["text"].shape[0], generator=torch.Generator().manual_seed(1))
    shuffled = {"audio": feats["audio"], "text": feats["text"][perm], "caption_to_clip": feats["caption_to_clip"][perm]}
    c = evaluate_model(model, shuffled, settings)
    for scorer in SCORERS:
        for key, value in a["scorers"][scorer].items():
            assert c["scorers"][scorer][key] == pytest.approx(value, abs=1e-9), (scorer, key)


def test_several_checkpoints_give_mean_and_std_over_checkpoints(tmp_path):
    feats = random_features()
    paths = []
    for seed in range(3):
        paths.append(save_checkpoint(tiny_model(seed), tmp_path / f"run{seed}",
                                     extra={"train_data": {"kind": "clotho", "split": "development"}}))
    settings = knobs(top_k=4, num_inference_steps=2)
    result = evaluate_model(paths, feats, settings, seeds=[0, 1], data_info={"kind": "clotho", "split": "evaluation"})
    assert result["std_over"] == "checkpoints" and result["num_runs"] == 6
    assert result["checkpoint"] == [str(p) for p in paths]
    key = "audio_to_text/R@5"
    singles = [evaluate_model(p, feats, settings, seeds=[0, 1])["scorers"]["dis"][key] for p in paths]
    assert result["scorers"]["dis"][key] == pytest.approx(statistics.mean(singles))
    assert result["std"]["dis"][key] == pytest.approx(statistics.stdev(singles))
    assert result["out_of_domain"] is False  # Clotho development -> Clotho evaluation
    assert "3 checkpoints" in format_results(result)


# ----------------------------------------------------------------------------- out of domain


def test_out_of_domain_flag_from_the_checkpoint_training_data(tmp_path):
    feats = random_features()
    ckpt = save_checkpoint(tiny_model(), tmp_path / "clotho_model",
                           extra={"train_data": {"source": "/data/clotho", "kind": "clotho", "split": "development"}})
    ood = evaluate_model(ckpt, feats, knobs(**{"top_k": 3}), data_info={"source": "/data/audiocaps", "kind": "audiocaps", "split": "test"})
    assert ood["out_of_domain"] is True
    assert ood["train_data"]["kind"] == "clotho" and ood["data"]["kind"] == "audiocaps"
    assert ood["checkpoints"][0]["out_of_domain"] is True
    assert "out of domain: trained on clotho, evaluated on audiocaps" in format_results(ood)
    same = evaluate_model(ckpt, feats, knobs(**{"top_k": 3}), data_info={"kind": "clotho", "split": "evaluation"})
    assert same["out_of_domain"] is False
    unknown = evaluate_model(tiny_model(), feats, knobs(**{"top_k": 3}), data_info={"kind": "audiocaps"})
    assert unknown["out_of_domain"] is None and unknown["train_data"] is None


def test_a_copied_manifest_is_in_domain(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "manifest.csv").write_text("path,caption,split\nx.wav,a dog,train\n")
    ckpt = save_checkpoint(tiny_model(), tmp_path / "model",
                           extra={"data": {"kind": "manifest", "source": str(tmp_path / "a" / "manifest.csv"),
                                           "source_sha256": with_source_sha256(
                                               {"source": str(tmp_path / "a" / "manifest.csv")})["source_sha256"]}})
    copy = {"kind": "manifest", "source": str(tmp_path / "b" / "manifest.csv"), "split": "test"}
    assert evaluate_model(ckpt, random_features(), knobs(**{"top_k": 3}), data_info=copy)["out_of_domain"] is False
    (tmp_path / "b" / "manifest.csv").write_text("path,caption,split\ny.wav,a cat,test\n")  # other data
    assert evaluate_model(ckpt, random_features(), knobs(**{"top_k": 3}), data_info=copy)["out_of_domain"] is True


def test_a_split_declared_out_of_domain_is_out_of_domain_within_one_manifest(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,caption,split\nx.wav,a dog,train\ny.wav,a cat,ood\n")
    source = {"kind": "manifest", "source": str(manifest)}
    ckpt = save_checkpoint(tiny_model(), tmp_path / "model", extra={"data": {**source, "split": "train"}})
    verdict = {split: evaluate_model(ckpt, random_features(), knobs(**{"top_k": 3}), data_info={**source, "split": split})
               ["out_of_domain"] for split in ("test", "ood")}
    assert verdict == {"test": False, "ood": True}


def test_dataset_identity():
    assert dataset_identity({"kind": "aac-clotho", "split": "dev"}) == "clotho"
    assert dataset_identity({"kind": "AudioCaps"}) == "audiocaps"
    assert dataset_identity({"kind": "manifest", "source": "/x/own/train.csv"}) == \
        dataset_identity({"kind": "manifest", "source": "/x/own/test.csv"})
    assert dataset_identity({"name": "MyData", "kind": "clotho"}) == "mydata"
    assert dataset_identity(None) is None
    assert is_out_of_domain({"kind": "manifest", "source": "/a/m.csv"}, {"kind": "manifest", "source": "/b/m.csv"})
    assert is_out_of_domain({"kind": "clotho"}, None) is None
    # one manifest (same content hash) is one dataset wherever it lies; different content is not
    assert is_out_of_domain({"kind": "manifest", "source": "/a/m.csv", "source_sha256": "ab"},
                            {"kind": "manifest", "source": "/b/m.csv", "source_sha256": "ab"}) is False
    assert is_out_of_domain({"kind": "manifest", "source": "/a/m.csv", "source_sha256": "ab"},
                            {"kind": "manifest", "source": "/b/m.csv", "source_sha256": "cd"}) is True
    assert training_data({"data": "/data/clotho"}) == {"source": "/data/clotho"}
    assert training_data({"step": 3}) is None
    # train.py's layout: data facts with per-split summaries under "train" / "val".
    extra = {"data": {"train": {"source": "/d/clotho", "kind": "clotho", "split": "train", "num_clips": 6},
                      "val": {"split": "val", "num_clips": 4}}}
    assert training_data(extra) == {"source": "/d/clotho", "kind": "clotho", "split": "train"}
    assert training_data({"data": {"kind": "audiocaps", "train": {"num_clips": 3}}}) == {"kind": "audiocaps"}


# ----------------------------------------------------------------------------- sweep


def test_sweep_table_shape_and_consistency():
    model = tiny_model()
    feats = random_features()
    rows = sweep(model, feats, knobs(model, alpha=1.0), steps=(1, 5, 10), top_ks=(2, 4))
    assert [(r["num_inference_steps"], r["top_k"]) for r in rows] == [(s, k) for s in (1, 5, 10) for k in (2, 4)]
    keys = {f"{d}/R@{k}" for d in DIRECTIONS for k in (1, 5, 10)}
    for row in rows:
        assert keys <= set(row) and set(row["std"]) == keys
    # A sweep point equals the full evaluation at the same knobs.
    full = evaluate_model(model, feats, knobs(**{"num_inference_steps": 5, "top_k": 4, "alpha": 1.0}), scorers=("gen+dis",))
    point = rows[3]
    for key in keys:
        assert point[key] == pytest.approx(full["scorers"]["gen+dis"][key])
    text = format_sweep(rows)
    assert len(text.splitlines()) == 3 + len(rows)
    with pytest.raises(ConfigError, match=r"\(num_inference_steps\) must be between 1 and 50"):
        sweep(model, feats, model.config.retrieval, steps=(1, 100), top_ks=(2,))


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    """A Clotho-layout and an AudioCaps-layout dataset, two tiny checkpoints 'trained on Clotho',
    and a shared feature cache."""
    import datagen

    root = tmp_path_factory.mktemp("eval_cli")
    clotho = datagen.make_clotho(root / "clotho", clips_per_split=(2, 2, 5), seed=1)
    audiocaps = datagen.make_audiocaps(root / "audiocaps", clips_per_split=(2, 2, 4), seed=2)
    extra = {"train_data": {"source": str(clotho), "kind": "clotho", "split": "train"}}
    ckpts = [save_checkpoint(tiny_model(seed), root / f"ckpt{seed}", extra=extra) for seed in (0, 1)]
    return {"root": root, "clotho": clotho, "audiocaps": audiocaps, "ckpts": ckpts, "cache": root / "cache"}


def run_cli(args, capsys):
    from diffatr.cli import main

    code = main(["evaluate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_json_and_prints_the_table(cli_setup, capsys, tmp_path):
    s = cli_setup
    out = tmp_path / "results" / "clotho.json"
    code, stdout, err = run_cli(["--checkpoint", s["ckpts"][0], "--data", s["clotho"], "--split", "test",
                                 "--top-k", "3", "--steps", "4", "--seeds", "0", "1",
                                 "--out", out, "--cache-dir", s["cache"], "--quiet", "--device", "cpu"], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["num_clips"] == 5 and result["num_captions"] == 25
    assert result["knobs"] == {"top_k": 3, "num_inference_steps": 4, "alpha": 1.0, "temperature": 1.0, "seed": 0,
                              "fusion": "paper", "expansion": 1.0, "expansion_neighbours": 3}
    assert result["seeds"] == [0, 1] and result["std_over"] == "seeds"
    expected = {f"{d}/{m}" for d in DIRECTIONS for m in METRICS}
    assert set(result["scorers"]) == set(SCORERS)
    assert all(set(result["scorers"][s_]) == expected for s_ in SCORERS)
    assert result["data"]["kind"] == "clotho" and result["data"]["split"] == "test"
    assert result["out_of_domain"] is False  # trained on Clotho train, evaluated on Clotho test
    assert "5 clips, 25 captions" in stdout and "mean ± std over 2 seeds" in stdout
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("scorer"))
    assert header.split()[2:] == ["R@1", "R@5", "R@10", "mAP@10", "medR", "meanR"]
    rows = [line for line in lines if line.split()[:1] and line.split()[0] in SCORERS]
    assert len(rows) == 6 and all("±" in row for row in rows)
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, nothing left behind


def test_cli_out_of_domain_several_checkpoints_sweep_and_skipped_audio(cli_setup, capsys, tmp_path):
    import datagen

    s = cli_setup
    data = datagen.make_audiocaps(tmp_path / "audiocaps", clips_per_split=(2, 2, 4), seed=2)
    datagen.break_audio(next((data / "audio" / "test").glob("*.wav")), "missing")
    out = tmp_path / "ood.json"
    code, stdout, err = run_cli(["--checkpoint", s["ckpts"][0], "--checkpoint", s["ckpts"][1], "--data", data,
                                 "--top-k", "2", "--steps", "3", "--sweep", "--sweep-steps", "1", "2",
                                 "--sweep-top-k", "2", "3", "--out", out, "--cache-dir", s["cache"], "--quiet"],
                                capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["out_of_domain"] is True
    assert result["train_data"]["kind"] == "clotho" and result["data"]["kind"] == "audiocaps"
    assert result["std_over"] == "checkpoints" and len(result["checkpoint"]) == 2
    assert result["num_clips"] == 3 and result["data"]["num_skipped"] == 1
    assert "skipped 1 clip" in stdout and stdout.index("skipped 1 clip") < stdout.index("R@1")  # before the table
    assert "out of domain: trained on clotho, evaluated on audiocaps" in stdout
    assert "mean ± std over 2 checkpoints" in stdout
    rows = result["sweep"]["rows"]
    assert [(r["num_inference_steps"], r["top_k"]) for r in rows] == [(1, 2), (1, 3), (2, 2), (2, 3)]
    assert "Gen+Dis sweep" in stdout


def test_cli_reads_saved_features_and_reports_user_errors(cli_setup, capsys, tmp_path):
    from diffatr.data.datasets import load_split
    from diffatr.features import compute_features

    s = cli_setup
    config = tiny_model().config
    features = compute_features(load_split(s["clotho"], "test").records, config, cache_dir=s["cache"], progress=False)
    features.save(tmp_path / "feats")
    code, stdout, err = run_cli(["--checkpoint", s["ckpts"][0], "--data", tmp_path / "feats", "--top-k", "2",
                                 "--scorers", "dis", "--out", tmp_path / "f.json"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "f.json").read_text())
    assert list(result["scorers"]) == ["dis"] and result["num_clips"] == 5
    assert result["out_of_domain"] is None  # saved features do not say which dataset they are

    for args, message in [
        (["--checkpoint", tmp_path / "nope", "--data", s["clotho"]], "does not exist"),
        (["--checkpoint", s["ckpts"][0], "--data", s["clotho"], "--steps", "99"], "--steps: Diffusion steps (num_inference_steps) must be between 1 and 50"),
        (["--checkpoint", s["ckpts"][0], "--data", s["clotho"], "--split", "bogus"], "bogus"),
        (["--checkpoint", s["ckpts"][0], "--data", s["clotho"], "--device", "tpu"], "--device"),
    ]:
        code, stdout, err = run_cli([*args, "--cache-dir", s["cache"], "--quiet"], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)


def test_cli_refuses_to_average_checkpoints_with_other_settings():
    from diffatr.cli import UsageError, _evaluation_settings

    a = load_model_config("tiny")
    b = dataclasses.replace(a, retrieval=dataclasses.replace(a.retrieval, alpha=2.0, seed=5))
    with pytest.raises(UsageError, match="different default settings"):
        _evaluation_settings([a, b], {})
    settings = _evaluation_settings([a, b], {"alpha": 0.5})  # the flags make them agree; seeds may differ
    assert settings == a.with_retrieval(alpha=0.5)
