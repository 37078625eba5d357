"""Retrieval engine: cosine top-K, the diffusion re-rank (plain == factorised, determinism,
fusion by hand, trajectory), full fused matrices, and the SearchEngine wrapper."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from diffatr.config import DenoiserConfig, DiffusionConfig
from diffatr.diffusion.denoiser import Denoiser
from diffatr.diffusion.sampling import ddim_sample
from diffatr.diffusion.ddim import DDIMScheduler
from diffatr.retrieval.engine import (
    SearchEngine,
    SearchError,
    cosine_topk,
    full_fused_scores,
    rerank,
    stable_topk,
    start_noise,
)
from diffatr.retrieval.index import IndexMismatchError, RetrievalIndex

D = 16


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


def reference_topk(scores, k):
    """Slow reference: sort by (-score, index)."""
    out_v, out_i = [], []
    for row in scores.tolist():
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        out_i.append(order)
        out_v.append([row[j] for j in order])
    return torch.tensor(out_v), torch.tensor(out_i)


# ----------------------------------------------------------------------------- cosine top-K


@pytest.mark.parametrize("max_elements", [1, 37, 1 << 24])
def test_cosine_topk_matches_brute_force_in_any_chunking(max_elements):
    q, c = unit(13, 1), unit(150, 2)
    scores, indices = cosine_topk(q, c, 10, max_elements=max_elements)
    ref_v, ref_i = reference_topk(q @ c.T, 10)
    assert torch.equal(indices, ref_i)
    assert torch.allclose(scores, ref_v, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=6, max_size=6), min_size=1, max_size=4),
       st.integers(1, 6))
def test_stable_topk_breaks_ties_by_index(rows, k):
    scores = torch.tensor(rows, dtype=torch.float32)  # few distinct values: many ties
    values, indices = stable_topk(scores, k)
    ref_v, ref_i = reference_topk(scores, k)
    assert torch.equal(indices, ref_i)
    assert torch.equal(values, ref_v)


def test_cosine_topk_ties_from_duplicate_candidates():
    base = unit(4, 3)
    c = torch.cat([base, base, base])  # rows j, j+4, j+8 are identical: exact ties
    scores, indices = cosine_topk(base[:1], c, 5)
    assert indices[0, :3].tolist() == [0, 4, 8]
    assert scores[0, 0] == scores[0, 1] == scores[0, 2]


def test_cosine_topk_clamps_k_and_rejects_bad_input():
    q, c = unit(2, 4), unit(3, 5)
    scores, indices = cosine_topk(q, c, 100)
    assert indices.shape == (2, 3) and sorted(indices[0].tolist()) == [0, 1, 2]
    with pytest.raises(SearchError, match="NaN"):
        cosine_topk(q, torch.cat([c, torch.full((1, D), float("nan"))]), 2)
    with pytest.raises(SearchError, match="width"):
        cosine_topk(q, unit(3, 5, d=8), 2)
    with pytest.raises(SearchError, match="empty"):
        cosine_topk(q, c[:0], 2)


# ----------------------------------------------------------------------------- re-rank


def test_plain_and_factorised_give_the_same_scores_and_ranking(den, sched):
    q, c = unit(20, 6), unit(200, 7)
    # A low temperature makes the diffusion term large enough to re-order items.
    kw = dict(top_k=24, num_inference_steps=20, temperature=0.05)
    plain = rerank(q, c, den, sched, factorised=False, **kw)
    fact = rerank(q, c, den, sched, factorised=True, candidate_cache=den.precompute(c), **kw)
    assert (plain.fused - fact.fused).abs().max() <= 1e-5
    assert (plain.diffusion - fact.diffusion).abs().max() <= 1e-5
    assert torch.equal(plain.indices, fact.indices)
    # The diffusion really re-orders something here, so the comparison is not vacuous.
    assert (fact.cosine_rank != torch.arange(24)).any()


def test_result_does_not_depend_on_batch_composition_or_order(den, sched):
    q, c = unit(12, 8), unit(100, 9)
    kw = dict(top_k=16, num_inference_steps=10, seed=3, temperature=0.05)
    batch = rerank(q, c, den, sched, **kw)
    assert (batch.cosine_rank != torch.arange(16)).any()  # the diffusion moves items
    perm = torch.tensor(random.Random(0).sample(range(12), 12))
    shuffled = rerank(q[perm], c, den, sched, **kw, batch_size=5)
    for i in range(12):
        alone = rerank(q[i : i + 1], c, den, sched, **kw)
        j = int((perm == i).nonzero())
        for other in (batch, shuffled):
            row = 0 if other is alone else (i if other is batch else j)
            assert torch.equal(alone.indices[0], other.indices[row])
            assert (alone.fused[0] - other.fused[row]).abs().max() <= 1e-6
            assert (alone.diffusion[0] - other.diffusion[row]).abs().max() <= 1e-6


def test_seed_controls_the_start_noise(den, sched):
    q, c = unit(6, 10), unit(80, 11)
    kw = dict(top_k=16, num_inference_steps=10, return_trajectory=True)
    a, b = rerank(q, c, den, sched, seed=1, **kw), rerank(q, c, den, sched, seed=1, **kw)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.fused, b.fused)
    other = rerank(q, c, den, sched, seed=2, **kw)
    assert not torch.equal(a.trajectory.x_t[0], other.trajectory.x_t[0])
    # x_T is one seeded vector shared by every query.
    assert torch.equal(a.trajectory.x_t[0], start_noise(16, 1).expand(6, 16))
    assert not torch.equal(start_noise(16, 1), start_noise(16, 2))


def test_fused_score_by_hand_on_one_query(den, sched):
    q, c = unit(1, 12), unit(50, 13)
    k, steps, alpha, temp = 8, 7, 0.5, 0.3
    result = rerank(q, c, den, sched, top_k=k, num_inference_steps=steps, alpha=alpha,
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
    result = rerank(q, c, den, sched, top_k=k, num_inference_steps=steps, temperature=temp,
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
    result = rerank(q, c, den, sched, top_k=32, num_inference_steps=5)
    assert result.indices.shape == (4, 5)
    assert sorted(result.indices[0].tolist()) == [0, 1, 2, 3, 4]
    one = rerank(q, c[:1], den, sched, top_k=32, num_inference_steps=5)
    assert one.indices.tolist() == [[0]] * 4
    assert torch.allclose(one.diffusion, torch.ones(4, 1))  # softmax over one entry


def test_scheduler_is_not_modified_and_bad_knobs_are_clear(den, sched):
    before = sched.timesteps.clone()
    q, c = unit(2, 18), unit(20, 19)
    rerank(q, c, den, sched, top_k=4, num_inference_steps=3)
    assert torch.equal(sched.timesteps, before)
    with pytest.raises(SearchError, match="num_inference_steps"):
        rerank(q, c, den, sched, num_inference_steps=0)
    with pytest.raises(SearchError, match="temperature"):
        rerank(q, c, den, sched, temperature=0.0)
    with pytest.raises(SearchError, match="top_k"):
        rerank(q, c, den, sched, top_k=0)


def test_full_fused_scores_keeps_cosine_outside_the_top_k(den, sched):
    q, c = unit(7, 20), unit(60, 21)
    kw = dict(top_k=12, num_inference_steps=8, alpha=1.0, seed=4)
    full = full_fused_scores(q, c, den, sched, **kw)
    result = rerank(q, c, den, sched, **kw)
    s = q @ c.T
    assert full.shape == (7, 60)
    in_top = torch.zeros_like(s, dtype=torch.bool).scatter(1, result.indices, True)
    assert torch.equal(full[~in_top], s[~in_top])
    assert torch.allclose(full.gather(1, result.indices), result.fused, atol=1e-6)
    # Ranking the full matrix by score reproduces the re-ranked top K first.
    ranked = stable_topk(full, 12)[1]
    assert torch.equal(ranked, result.indices)


# ----------------------------------------------------------------------------- SearchEngine


class FakeTextEncoder:
    """Stand-in text tower: a fixed random feature per distinct string."""

    def __init__(self, dim):
        self.dim = dim

    def encode(self, texts):
        feats = []
        for text in texts:
            g = torch.Generator().manual_seed(sum(map(ord, text)) * 7919 + len(text))
            feats.append(torch.randn(self.dim, generator=g))
        return torch.stack(feats)


@pytest.fixture
def model(tiny_config):
    from diffatr.model import DiffATR

    torch.manual_seed(0)
    return DiffATR(tiny_config).eval()


def make_engine_index(config, n=30, captions=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    caps = [[f"clip {i} sound {j}" for j in range(i % 3)] for i in range(n)] if captions else None
    text_enc = FakeTextEncoder(config.text.embed_dim)
    flat = [x for cs in caps for x in cs] if caps else []
    return RetrievalIndex(
        audio_features=torch.randn(n, config.audio.embed_dim, generator=g),
        clip_ids=[f"id{i}" for i in range(n)],
        paths=[f"/sounds/{i}.wav" for i in range(n)],
        captions=caps,
        text_features=text_enc.encode(flat) if flat else None,
        metadata=[{"licence": "CC0", "i": i} for i in range(n)],
        encoders={"audio": dataclasses.asdict(config.audio),
                  "text": dataclasses.asdict(config.text) if flat else None},
    )


def test_engine_text_to_audio_hits(model):
    index = make_engine_index(model.config)
    engine = SearchEngine(model, index, text_encoder=FakeTextEncoder(model.config.text.embed_dim))
    hits = engine.search_text(["a dog barks", "rain"], k=5, top_k=8, num_inference_steps=5)
    assert len(hits) == 2 and [h.rank for h in hits[0]] == [1, 2, 3, 4, 5]  # 1-based, as evaluation's ranks
    for h in hits[0]:
        assert h.clip_id == f"id{h.row}" and h.path == f"/sounds/{h.row}.wav"
        assert h.moved == h.cosine_rank - h.rank
        assert h.metadata == {"licence": "CC0", "i": h.row}
        assert abs(h.fused - (h.cosine + 1.0 * h.diffusion)) < 1e-5
    assert [h.fused for h in hits[0]] == sorted((h.fused for h in hits[0]), reverse=True)
    # Same as the pure function on the projected features with the same knobs.
    feats = FakeTextEncoder(model.config.text.embed_dim).encode(["a dog barks"])
    with torch.no_grad():
        q, c = model.project_text(feats), model.project_audio(index.audio_features)
    ref = rerank(q, c, model.denoisers["text_to_audio"], model.make_scheduler(), top_k=8,
                 num_inference_steps=5, seed=0)
    assert [h.row for h in hits[0]] == ref.indices[0, :5].tolist()


def test_engine_audio_to_text_hits_are_captions(model):
    index = make_engine_index(model.config)
    engine = SearchEngine(model, index)
    hits = engine.search_audio_embeds(index.audio_features[3], k=4, top_k=6, num_inference_steps=4)[0]
    flat = index.flat_captions
    for h in hits:
        assert h.caption == flat[h.row]
        assert h.clip_id == f"id{int(index.caption_to_clip[h.row])}"


def test_engine_k_beyond_top_k_continues_in_cosine_order(model):
    engine = SearchEngine(model, make_engine_index(model.config, n=12))
    hits = engine.search_audio_embeds(torch.randn(model.config.audio.embed_dim), k=20,
                                      top_k=3, num_inference_steps=3)[0]
    assert len(hits) == 12  # clamped to the 12 captions
    assert all(h.diffusion is not None for h in hits[:3])
    assert all(h.diffusion is None and h.moved == 0 and h.fused == h.cosine for h in hits[3:])
    assert [h.cosine_rank for h in hits[3:]] == list(range(4, 13))


def test_engine_errors_are_clear(model):
    no_caps = make_engine_index(model.config, captions=False)
    engine = SearchEngine(model, no_caps, text_encoder=FakeTextEncoder(model.config.text.embed_dim))
    with pytest.raises(SearchError, match="needs captions"):
        engine.search_audio_embeds(torch.randn(1, model.config.audio.embed_dim))
    for bad in ["", "   ", [], ["ok", ""]]:
        with pytest.raises(ValueError, match="empty|non-empty"):
            engine.search_text(bad)
    with pytest.raises(SearchError, match="unknown search options"):
        engine.search_text("a bell", topk=3)
    # every knob is checked once, against the config's bounds, naming the setting
    T = model.config.diffusion.num_train_timesteps
    for knobs, words in [({"num_inference_steps": T + 1}, f"at most T = {T}"), ({"alpha": 11.0}, "alpha must be"),
                         ({"temperature": 0.0}, "temperature must be"), ({"fusion": "max"}, "fusion must be"),
                         ({"seed": -1}, "seed must be"), ({"top_k": 0}, "top_k must be")]:
        with pytest.raises(SearchError, match=words):
            engine.search_text("a bell", **knobs)
    # Text->audio still works on an index without captions.
    assert len(engine.search_text("a bell", k=3)[0]) == 3
    other = dataclasses.replace(model.config.audio, name="cnn14")
    wrong = dataclasses.replace(no_caps, encoders={"audio": dataclasses.asdict(other), "text": None})
    with pytest.raises(IndexMismatchError, match="audio.name"):
        SearchEngine(model, wrong)


def test_engine_single_clip_and_no_diffusion(model):
    index = make_engine_index(model.config, n=1, captions=False)
    engine = SearchEngine(model, index, text_encoder=FakeTextEncoder(model.config.text.embed_dim))
    hits = engine.search_text("anything", k=10)[0]
    assert len(hits) == 1 and hits[0].clip_id == "id0" and hits[0].diffusion == pytest.approx(1.0)
    cosine_only = engine.search_text("anything", k=10, use_diffusion=False)[0]
    assert cosine_only[0].diffusion is None and cosine_only[0].fused == cosine_only[0].cosine


def test_engine_trajectory_for_the_demo(model):
    engine = SearchEngine(model, make_engine_index(model.config))
    result = engine.rerank_features("text_to_audio", FakeTextEncoder(model.config.text.embed_dim).encode(["x"]),
                                    top_k=8, num_inference_steps=6, return_trajectory=True)
    x_t, pred = result.query_trajectory(0)
    assert x_t.shape == (7, 8) and pred.shape == (6, 8)
    assert result.settings["direction"] == "text_to_audio"


def test_the_fusion_knob_reaches_the_engine_and_evaluation():
    """``fusion="zscore"`` gives S + alpha * std(S) * z(x0) on the re-ranked K, through the
    engine and through evaluation's Gen+Dis matrix alike; an unknown rule is refused."""
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
    knobs = dict(top_k=6, num_inference_steps=5, alpha=0.7, seed=2)
    plain = rerank(model.project_text(text[:3]).detach(), model.project_audio(audio).detach(),
                   model.denoisers["text_to_audio"], model.make_scheduler(), **knobs)
    calibrated = rerank(model.project_text(text[:3]).detach(), model.project_audio(audio).detach(),
                        model.denoisers["text_to_audio"], model.make_scheduler(), fusion="zscore", **knobs)
    assert calibrated.settings["fusion"] == "zscore"
    # the same DDIM run (same x0), another rule: recompute it from the cosine order
    x0 = torch.empty_like(plain.x0).scatter_(1, plain.cosine_rank, plain.x0)
    top = torch.empty_like(plain.cosine).scatter_(1, plain.cosine_rank, plain.cosine)
    expected, _ = fuse(top, x0, rule="zscore", alpha=0.7)
    got = torch.empty_like(calibrated.fused).scatter_(1, calibrated.cosine_rank, calibrated.fused)
    torch.testing.assert_close(got, expected)
    with pytest.raises(SearchError, match="fusion"):
        rerank(model.project_text(text[:1]).detach(), model.project_audio(audio).detach(),
               model.denoisers["text_to_audio"], model.make_scheduler(), fusion="magic", **knobs)
    # evaluation reads the rule from the knobs, and the checkpoint's config gives the default
    zmodel = DiffATR(dataclasses.replace(config, retrieval=dataclasses.replace(config.retrieval, fusion="zscore")))
    zmodel.load_state_dict(model.state_dict())
    zmodel.eval()
    knobs_eval = dict(top_k=6, num_inference_steps=5, alpha=0.7, seed=2)
    by_knob = score_matrices(model, audio, text, {**knobs_eval, "fusion": "zscore"}, ("gen+dis",))
    by_config = score_matrices(zmodel, audio, text, knobs_eval, ("gen+dis",))
    paper = score_matrices(model, audio, text, knobs_eval, ("gen+dis",))
    torch.testing.assert_close(by_knob["text_to_audio"]["gen+dis"], by_config["text_to_audio"]["gen+dis"])
    assert not torch.allclose(by_knob["text_to_audio"]["gen+dis"], paper["text_to_audio"]["gen+dis"])


@pytest.mark.parametrize("query", ["\x00\x00", "🐶🐕", "?!...", " \t\x07 "])
def test_queries_without_letters_or_digits_get_a_message(query):
    from diffatr.retrieval.engine import clean_query

    with pytest.raises(SearchError, match="letters or digits|empty"):
        clean_query(query)


def test_clean_query_keeps_words_and_drops_control_characters():
    from diffatr.retrieval.engine import clean_query

    assert clean_query("  a dog\x00 barking 🐶 ") == "a dog barking 🐶"
    assert clean_query("ein Hund bellt") == "ein Hund bellt" and clean_query("犬が吠える") == "犬が吠える"
    assert clean_query("404") == "404"
