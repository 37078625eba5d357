"""The re-rank pipeline (diffatr.retrieval.rerank): plain == factorised, determinism, fusion by
hand, trajectory, the full matrices evaluation scores, and the one RetrievalConfig it takes."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
import torch.nn.functional as F

from diffatr.config import ConfigError, DenoiserConfig, DiffusionConfig, RetrievalConfig, knob_fields
from diffatr.diffusion.ddim import DDIMScheduler
from diffatr.diffusion.denoiser import Denoiser
from diffatr.diffusion.sampling import ddim_sample
from diffatr.retrieval.rerank import full_fused_scores, full_rerank, rerank, start_noise
from diffatr.retrieval.topk import SearchError, cosine_topk, stable_topk

D = 16
KNOBS = {f.name for f in knob_fields()}


def unit(n, seed, d=D):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def make_denoiser(seed=0, residual=True):
    torch.manual_seed(seed)  # test fixture only: the library never touches global RNG
    return Denoiser(DenoiserConfig(embed_dim=D, width=D, residual=residual)).eval()


@pytest.fixture(scope="module")
def den():
    return make_denoiser()


@pytest.fixture(scope="module")
def sched():
    return DDIMScheduler(DiffusionConfig(num_train_timesteps=50))


def run(q, c, den, sched, **kw):
    """``rerank`` with the knobs among ``kw`` in one RetrievalConfig, the rest as options."""
    config = RetrievalConfig(**{k: v for k, v in kw.items() if k in KNOBS})
    return rerank(q, c, den, sched, config, **{k: v for k, v in kw.items() if k not in KNOBS})


def test_plain_and_factorised_give_the_same_scores_and_ranking(den, sched):
    q, c = unit(20, 6), unit(200, 7)
    # A low temperature makes the diffusion term large enough to re-order items.
    kw = dict(top_k=24, num_inference_steps=20, temperature=0.05)
    plain = run(q, c, den, sched, factorised=False, **kw)
    fact = run(q, c, den, sched, factorised=True, candidate_cache=den.precompute(c), **kw)
    assert (plain.fused - fact.fused).abs().max() <= 1e-5
    assert (plain.diffusion - fact.diffusion).abs().max() <= 1e-5
    assert torch.equal(plain.indices, fact.indices)
    # The diffusion really re-orders something here, so the comparison is not vacuous.
    assert (fact.cosine_rank != torch.arange(24)).any()


def test_result_does_not_depend_on_batch_composition_or_order(den, sched):
    q, c = unit(12, 8), unit(100, 9)
    kw = dict(top_k=16, num_inference_steps=10, seed=3, temperature=0.05)
    batch = run(q, c, den, sched, **kw)
    assert (batch.cosine_rank != torch.arange(16)).any()  # the diffusion moves items
    perm = torch.tensor(random.Random(0).sample(range(12), 12))
    shuffled = run(q[perm], c, den, sched, **kw, batch_size=5)
    for i in range(12):
        alone = run(q[i : i + 1], c, den, sched, **kw)
        j = int((perm == i).nonzero())
        for other in (batch, shuffled):
            row = 0 if other is alone else (i if other is batch else j)
            assert torch.equal(alone.indices[0], other.indices[row])
            assert (alone.fused[0] - other.fused[row]).abs().max() <= 1e-6
            assert (alone.diffusion[0] - other.diffusion[row]).abs().max() <= 1e-6


def test_seed_controls_the_start_noise(den, sched):
    q, c = unit(6, 10), unit(80, 11)
    kw = dict(top_k=16, num_inference_steps=10, return_trajectory=True)
    a, b = run(q, c, den, sched, seed=1, **kw), run(q, c, den, sched, seed=1, **kw)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.fused, b.fused)
    other = run(q, c, den, sched, seed=2, **kw)
    assert not torch.equal(a.trajectory.x_t[0], other.trajectory.x_t[0])
    # x_T is one seeded vector shared by every query.
    assert torch.equal(a.trajectory.x_t[0], start_noise(16, 1).expand(6, 16))
    assert not torch.equal(start_noise(16, 1), start_noise(16, 2))


def test_fused_score_by_hand_on_one_query(den, sched):
    q, c = unit(1, 12), unit(50, 13)
    k, steps, alpha, temp = 8, 7, 0.5, 0.3
    result = run(q, c, den, sched, top_k=k, num_inference_steps=steps, alpha=alpha,
                    temperature=temp, seed=5)
    s = (q @ c.T)[0]  # (N,)
    top = sorted(range(50), key=lambda j: (-float(s[j]), j))[:k]  # cosine order
    own = DDIMScheduler(DiffusionConfig(num_train_timesteps=50))
    cands = c[torch.tensor(top)][None]  # (1, K, D)
    x_T = torch.randn(k, generator=torch.Generator().manual_seed(5))[None]
    with torch.no_grad():
        x0 = ddim_sample(lambda x, t: den(x, torch.full((1,), int(t)), q, cands), own, x_T, steps)
    fused = s[torch.tensor(top)] + alpha * torch.softmax(x0[0] / temp, dim=-1)
    order = sorted(range(k), key=lambda i: -float(fused[i]))
    assert result.indices[0].tolist() == [top[i] for i in order]
    assert torch.allclose(result.fused[0], fused[torch.tensor(order)], atol=1e-5)
    assert torch.allclose(result.cosine[0], s[torch.tensor(top)][torch.tensor(order)])
    assert result.cosine_rank[0].tolist() == order
    assert torch.allclose(result.fused, result.cosine + alpha * result.diffusion)


def test_trajectory_shapes_and_final_state(den, sched):
    q, c = unit(3, 14), unit(40, 15)
    steps, k, temp = 6, 10, 0.7
    result = run(q, c, den, sched, top_k=k, num_inference_steps=steps, temperature=temp,
                    return_trajectory=True, batch_size=2)
    traj = result.trajectory
    assert traj.x_t.shape == (steps + 1, 3, k) and traj.pred_x0.shape == (steps, 3, k)
    x_t, pred = result.query_trajectory(2)
    assert x_t.shape == (steps + 1, k) and pred.shape == (steps, k)
    # The trajectory is in cosine order; its last state is the x0 the fusion used.
    x0_cosine_order = torch.empty_like(result.x0).scatter_(1, result.cosine_rank, result.x0)
    assert torch.equal(traj.x_t[-1], x0_cosine_order)
    diffusion = torch.softmax(traj.x_t[-1] / temp, dim=-1).gather(1, result.cosine_rank)
    assert torch.allclose(diffusion, result.diffusion)
    assert torch.equal(result.cosine_order, cosine_topk(q, c, k)[1])


def test_k_larger_than_n_and_a_single_candidate(den, sched):
    q, c = unit(4, 16), unit(5, 17)
    result = run(q, c, den, sched, top_k=32, num_inference_steps=5)
    assert result.indices.shape == (4, 5)
    assert sorted(result.indices[0].tolist()) == [0, 1, 2, 3, 4]
    one = run(q, c[:1], den, sched, top_k=32, num_inference_steps=5)
    assert one.indices.tolist() == [[0]] * 4
    assert torch.allclose(one.diffusion, torch.ones(4, 1))  # softmax over one entry


def test_scheduler_is_not_modified_and_bad_knobs_are_clear(den, sched):
    before = sched.timesteps.clone()
    q, c = unit(2, 18), unit(20, 19)
    run(q, c, den, sched, top_k=4, num_inference_steps=3)
    assert torch.equal(sched.timesteps, before)
    # A setting is checked once, where the config is made, with one wording; steps above the
    # scheduler's T (which a config cannot know) get the same wording from the scheduler.
    for bad, words in [(dict(num_inference_steps=0), r"Diffusion steps \(num_inference_steps\) must be at least 1"),
                       (dict(temperature=0.0), r"Fusion temperature \(temperature\) must be between"),
                       (dict(top_k=0), r"Candidates re-ranked \(top_k\) must be at least 1"),
                       (dict(num_inference_steps=51), r"must be between 1 and 50 \(T, ")]:
        with pytest.raises(ConfigError, match=words):
            run(q, c, den, sched, **bad)


def test_the_pipeline_has_no_knob_defaults_of_its_own(den, sched):
    q, c = unit(2, 18), unit(20, 19)
    with pytest.raises(TypeError):
        rerank(q, c, den, sched)  # the config is required: no hidden defaults below the entry point
    with pytest.raises(SearchError, match="batch_size"):
        rerank(q, c, den, sched, RetrievalConfig(), batch_size=0)


def test_full_fused_scores_keeps_cosine_outside_the_top_k(den, sched):
    q, c = unit(7, 20), unit(60, 21)
    config = RetrievalConfig(top_k=12, num_inference_steps=8, alpha=1.0, seed=4)
    full = full_fused_scores(q, c, den, sched, config)
    result = rerank(q, c, den, sched, config)
    s = q @ c.T
    assert full.shape == (7, 60)
    in_top = torch.zeros_like(s, dtype=torch.bool).scatter(1, result.indices, True)
    assert torch.equal(full[~in_top], s[~in_top])
    assert torch.allclose(full.gather(1, result.indices), result.fused, atol=1e-6)
    # Ranking the full matrix by score reproduces the re-ranked top K first.
    ranked = stable_topk(full, 12)[1]
    assert torch.equal(ranked, result.indices)


def test_full_rerank_gives_gen_and_gen_dis_from_one_run(den, sched):
    q, c = unit(5, 22), unit(40, 23)
    config = RetrievalConfig(top_k=10, num_inference_steps=6, temperature=0.05, seed=1)
    full = full_rerank(q, c, den, sched, config)
    assert torch.equal(full.cosine, q @ c.T)
    given = full_rerank(q, c, den, sched, config, scores=full.cosine)  # a matrix the caller already has
    assert torch.equal(given.fused, full.fused) and torch.equal(given.generated, full.generated)
    # Gen: the top K ordered by the diffusion term alone (ties in cosine order), above every cosine.
    gen_top = stable_topk(full.generated, 10)[1]
    by_diffusion = torch.sort(full.result.diffusion, dim=1, descending=True, stable=True).indices
    assert torch.equal(gen_top, full.result.indices.gather(1, by_diffusion))
    assert (full.generated.gather(1, gen_top) >= 2).all()


def test_the_fusion_rule_reaches_the_pipeline_and_evaluation():
    """``fusion="zscore"`` gives S + alpha * std(S) * z(x0) on the re-ranked K, through the
    pipeline and through evaluation's Gen+Dis matrix alike; an unknown rule is refused."""
    from diffatr.config import load_model_config
    from diffatr.evaluate import score_matrices
    from diffatr.model import DiffATR
    from diffatr.retrieval.fusion import fuse

    g = torch.Generator().manual_seed(4)
    config = load_model_config("tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DiffATR(config).eval()
    audio = torch.randn(12, config.audio.embed_dim, generator=g)
    text = torch.randn(24, config.text.embed_dim, generator=g)
    knobs = RetrievalConfig(top_k=6, num_inference_steps=5, alpha=0.7, seed=2)
    plain = rerank(model.project_text(text[:3]).detach(), model.project_audio(audio).detach(),
                   model.denoisers["text_to_audio"], model.make_scheduler(), knobs)
    calibrated = rerank(model.project_text(text[:3]).detach(), model.project_audio(audio).detach(),
                        model.denoisers["text_to_audio"], model.make_scheduler(),
                        dataclasses.replace(knobs, fusion="zscore"))
    assert calibrated.settings["fusion"] == "zscore"
    # the same DDIM run (same x0), another rule: recompute it from the cosine order
    x0 = torch.empty_like(plain.x0).scatter_(1, plain.cosine_rank, plain.x0)
    top = torch.empty_like(plain.cosine).scatter_(1, plain.cosine_rank, plain.cosine)
    expected, _ = fuse(top, x0, rule="zscore", alpha=0.7, temperature=1.0)
    got = torch.empty_like(calibrated.fused).scatter_(1, calibrated.cosine_rank, calibrated.fused)
    torch.testing.assert_close(got, expected)
    with pytest.raises(ConfigError, match="fusion"):
        dataclasses.replace(knobs, fusion="magic")
    # evaluation reads the rule from the knobs, and the checkpoint's config gives the default
    zmodel = DiffATR(dataclasses.replace(config, retrieval=dataclasses.replace(config.retrieval, fusion="zscore")))
    zmodel.load_state_dict(model.state_dict())
    zmodel.eval()
    knobs_eval = dict(top_k=6, num_inference_steps=5, alpha=0.7, seed=2)
    by_knob = score_matrices(model, audio, text, model.config.with_retrieval(**knobs_eval, fusion="zscore"),
                             ("gen+dis",))
    by_config = score_matrices(zmodel, audio, text, zmodel.config.with_retrieval(**knobs_eval), ("gen+dis",))
    paper = score_matrices(model, audio, text, model.config.with_retrieval(**knobs_eval), ("gen+dis",))
    torch.testing.assert_close(by_knob["text_to_audio"]["gen+dis"], by_config["text_to_audio"]["gen+dis"])
    assert not torch.allclose(by_knob["text_to_audio"]["gen+dis"], paper["text_to_audio"]["gen+dis"])
