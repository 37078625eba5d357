"""Known-caption expansion (docs/method.md): the pure maths, the bank a model keeps and its
checkpoint file, training fills it with the train split alone, and the engine and evaluation
rank with the expanded query while the denoiser keeps the plain one."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import datagen
from diffatr.checkpoint import BANK_FILE, CheckpointError, load_checkpoint, save_checkpoint
from diffatr.config import ConfigError, TrainConfig, load_model_config
from diffatr.data.datasets import load_split
from diffatr.evaluate import score_matrices
from diffatr.features import LazyEncoders, compute_features
from diffatr.model import DiffATR
from diffatr.retrieval.engine import SearchEngine
from diffatr.retrieval.expansion import expand_queries, expand_text_queries, expansion_weights, nearest_captions
from diffatr.retrieval.rerank import rerank_topk
from diffatr.retrieval.topk import stable_topk
from diffatr.train import train_contrastive, train_diffusion
from test_engine import FakeTextEncoder, make_engine_index


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ----------------------------------------------------------------------------- the maths


def test_zero_weights_leave_the_queries_as_they_are():
    q, bank = unit(4, 8), unit(6, 8, seed=1)
    nearest = torch.zeros(4, 2, dtype=torch.long)
    assert torch.allclose(expand_queries(q, nearest, bank, bank, 0.0, 0.0), q)


def test_the_expanded_query_is_the_normalised_sum_of_the_query_and_the_neighbour_centres():
    q, bank_text, bank_audio = unit(3, 8), unit(5, 8, seed=1), unit(5, 8, seed=2)
    nearest = torch.tensor([[0, 1], [2, 2], [4, 3]])
    out = expand_queries(q, nearest, bank_text, bank_audio, 0.7, 0.3)
    for i, rows in enumerate(nearest.tolist()):
        t = F.normalize(bank_text[rows].mean(0), dim=0)
        a = F.normalize(bank_audio[rows].mean(0), dim=0)
        assert torch.allclose(out[i], F.normalize(q[i] + 0.7 * t + 0.3 * a, dim=0), atol=1e-6)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3))


def test_more_weight_moves_the_query_toward_the_captions_sound():
    q, bank_text, bank_audio = unit(1, 16), unit(4, 16, seed=1), unit(4, 16, seed=2)
    nearest = torch.tensor([[2]])
    closeness = [float(expand_queries(q, nearest, bank_text, bank_audio, 0.0, w)[0] @ bank_audio[2])
                 for w in (0.0, 0.5, 1.0, 4.0)]
    assert closeness == sorted(closeness) and closeness[-1] > 0.9


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 15), st.integers(0, 10_000))
def test_nearest_captions_are_the_highest_cosines_ties_to_the_lower_row(num_bank, neighbours, seed):
    g = torch.Generator().manual_seed(seed)
    distinct = torch.randn(4, 3, generator=g)
    bank = distinct[torch.randint(0, 4, (num_bank,), generator=g)]  # repeated rows: exact ties
    query = torch.randn(2, 3, generator=g)
    got = nearest_captions(query, F.normalize(bank, dim=-1), neighbours)
    assert got.shape == (2, min(neighbours, num_bank))
    sims = F.normalize(query, dim=-1) @ F.normalize(bank, dim=-1).T
    for i in range(2):
        ref = sorted(range(num_bank), key=lambda j: (-float(sims[i, j]), j))[: got.shape[1]]
        assert got[i].tolist() == ref


def test_the_knob_splits_its_weight_between_captions_and_sounds_and_is_checked():
    assert expansion_weights(1.0) == (0.5, 0.5)
    config = load_model_config("tiny")
    for name, bad in (("expansion", -0.1), ("expansion", float("nan")), ("expansion_neighbours", 0),
                      ("expansion_neighbours", 2.5)):
        with pytest.raises(ConfigError, match=name):
            config.with_retrieval(**{name: bad})


# ----------------------------------------------------------------------------- the model's bank


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    return DiffATR(tiny_config).eval()


def set_bank(model, captions=10, clips=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    model.set_caption_bank(torch.randn(captions, model.config.text.embed_dim, generator=g),
                           torch.randn(clips, model.config.audio.embed_dim, generator=g),
                           torch.arange(captions) % clips)


def test_without_a_bank_or_at_zero_weight_the_query_is_unchanged(model):
    text = torch.randn(3, model.config.text.embed_dim)
    embeds = model.project_text(text)
    assert not model.has_caption_bank
    assert torch.equal(expand_text_queries(model, text, embeds, model.config.retrieval), embeds)
    set_bank(model)
    assert torch.equal(expand_text_queries(model, text, embeds, model.config.with_retrieval(expansion=0)), embeds)
    expanded = expand_text_queries(model, text, embeds, model.config.with_retrieval(expansion=1.0))
    assert not torch.allclose(expanded, embeds)


def test_the_bank_follows_the_heads_when_they_change(model):
    set_bank(model)
    before = model.caption_bank_embeds()[2].clone()
    with torch.no_grad():
        next(model.audio_head.parameters()).add_(0.5)  # what an optimiser step does: in place
    after = model.caption_bank_embeds()[2]
    assert not torch.allclose(before, after)
    assert torch.allclose(after, model.project_audio(model.caption_bank_audio.float())[model.caption_bank_clip])


@pytest.mark.parametrize("text_shape, audio_shape, owners, words", [
    ((5, 7), (2, None), [0, 1, 0, 1, 0], "text"),
    ((5, None), (2, None), [0, 1, 0, 2, 0], "row of the bank's clips"),
    ((5, None), (2, None), [0, 1], "row of the bank's clips"),
])
def test_a_bank_that_does_not_fit_is_refused(model, text_shape, audio_shape, owners, words):
    dt, da = model.config.text.embed_dim, model.config.audio.embed_dim
    text = torch.randn(text_shape[0], text_shape[1] or dt)
    audio = torch.randn(audio_shape[0], audio_shape[1] or da)
    with pytest.raises(ValueError, match=words):
        model.set_caption_bank(text, audio, torch.tensor(owners))
    text = torch.randn(5, dt)
    text[2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.set_caption_bank(text, torch.randn(2, da), torch.tensor([0, 1, 0, 1, 0]))


def test_the_bank_has_a_file_of_its_own_in_the_checkpoint(model, tmp_path):
    save_checkpoint(model, tmp_path / "plain")
    assert not (tmp_path / "plain" / BANK_FILE).exists()  # an older checkpoint: no bank, loads as before
    assert not load_checkpoint(tmp_path / "plain").has_caption_bank
    set_bank(model, captions=9, clips=3)
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.caption_bank_text.dtype == torch.float16
    for name in ("caption_bank_text", "caption_bank_audio", "caption_bank_clip"):
        assert torch.equal(getattr(loaded, name), getattr(model, name))
    text = torch.randn(2, model.config.text.embed_dim)
    config = model.config.retrieval
    assert torch.allclose(expand_text_queries(loaded, text, loaded.project_text(text), config),
                          expand_text_queries(model, text, model.project_text(text), config))
    bank = tmp_path / "ckpt" / BANK_FILE
    bank.write_bytes(bank.read_bytes()[: bank.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt.*delete it"):
        load_checkpoint(tmp_path / "ckpt")


# ----------------------------------------------------------------------------- training keeps the train split


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("expansion")
    manifest = datagen.make_manifest(root / "ds", n=12)
    config = load_model_config("tiny")
    encoders = LazyEncoders(config)
    feats = {split: compute_features(load_split(manifest, split).records, config, encoders=encoders,
                                     progress=False) for split in ("train", "val")}
    return {"config": config, "root": root, **feats}


def test_training_keeps_the_train_captions_alone_and_phase_2_keeps_them(data):
    small = dict(epochs=1, batch_size=4, log_every=1, eval_every=1, device="cpu")
    phase1 = data["root"] / "phase1"
    train_contrastive(data["config"], TrainConfig.for_phase("contrastive", **small), data["train"], data["val"],
                      phase1, progress=False)
    model = load_checkpoint(phase1 / "best")
    train = data["train"]
    assert torch.equal(model.caption_bank_text, train.text.half())  # train captions, not val's
    assert torch.equal(model.caption_bank_audio, train.audio.half())
    assert torch.equal(model.caption_bank_clip, train.caption_to_clip)
    phase2 = data["root"] / "phase2"
    train_diffusion(phase1 / "best", TrainConfig.for_phase("diffusion", **small), data["train"], data["val"], phase2,
                    progress=False)
    assert torch.equal(load_checkpoint(phase2 / "best").caption_bank_text, model.caption_bank_text)


# ----------------------------------------------------------------------------- search and evaluation


def test_the_engine_ranks_with_the_expanded_query_and_the_denoiser_sees_the_plain_one(model):
    index = make_engine_index(model.config, n=20)
    encoder = FakeTextEncoder(model.config.text.embed_dim)
    set_bank(model, captions=12, clips=6)
    engine = SearchEngine(model, index, text_encoder=encoder)
    settings = model.config.with_retrieval(expansion=4.0, expansion_neighbours=2, top_k=5, num_inference_steps=2,
                                           num_results=20)
    hits = engine.search_text(["a dog barks"], settings)[0]
    feats = encoder.encode(["a dog barks"])
    with torch.no_grad():
        plain = model.project_text(feats)
        expanded = expand_text_queries(model, feats, plain, settings)
        audio = model.project_audio(index.audio_features)
    first_stage = expanded @ audio.T  # (1, N)
    for h in hits:  # every hit's first-stage score is the expanded query's cosine
        assert abs(h.cosine - float(first_stage[0, h.row])) < 1e-5
    top_scores, top_rows = stable_topk(first_stage, 5)
    assert sorted(h.row for h in hits if h.cosine_rank <= 5) == sorted(top_rows[0].tolist())

    def diffusion_terms(query):
        result = rerank_topk(query, audio, top_scores, top_rows, model.denoisers["text_to_audio"],
                             model.make_scheduler(), settings)
        return dict(zip(result.indices[0].tolist(), result.diffusion[0].tolist()))

    with_plain, with_expanded = diffusion_terms(plain), diffusion_terms(expanded)
    got = {h.row: h.diffusion for h in hits if h.diffusion is not None}
    assert got.keys() == with_plain.keys()
    assert all(abs(got[r] - with_plain[r]) < 1e-5 for r in got)  # the denoiser was given q ...
    assert any(abs(got[r] - with_expanded[r]) > 1e-4 for r in got)  # ... and q' would differ
    off = engine.search_text(["a dog barks"], dataclasses.replace(settings, expansion=0.0))[0]
    plain_scores = (plain @ audio.T)[0]
    assert all(abs(h.cosine - float(plain_scores[h.row])) < 1e-5 for h in off)


def test_evaluation_expands_text_queries_and_leaves_audio_queries_alone(model):
    set_bank(model, captions=12, clips=6)
    g = torch.Generator().manual_seed(3)
    audio = torch.randn(8, model.config.audio.embed_dim, generator=g)
    text = torch.randn(16, model.config.text.embed_dim, generator=g)
    on = model.config.with_retrieval(expansion=2.0, expansion_neighbours=3)
    scores = score_matrices(model, audio, text, on, ("dis",))
    with torch.no_grad():
        t, a = model.project_text(text), model.project_audio(audio)
        expected = expand_text_queries(model, text, t, on) @ a.T
    assert torch.allclose(scores["text_to_audio"]["dis"], expected, atol=1e-6)
    assert torch.allclose(scores["audio_to_text"]["dis"], (t @ a.T).T, atol=1e-6)
    off = score_matrices(model, audio, text, dataclasses.replace(on, expansion=0.0), ("dis",))
    assert torch.allclose(off["text_to_audio"]["dis"], t @ a.T, atol=1e-6)


def test_info_reports_the_bank_from_the_header(model, tmp_path):
    from diffatr.checkpoint import caption_bank_size

    save_checkpoint(model, tmp_path / "plain")
    assert caption_bank_size(tmp_path / "plain") is None
    set_bank(model, captions=9, clips=3)
    save_checkpoint(model, tmp_path / "ckpt")
    assert caption_bank_size(tmp_path / "ckpt") == {"captions": 9, "clips": 3}


def test_the_shipped_bank_is_the_captions_of_the_clips_it_saw():
    import csv
    from pathlib import Path

    from diffatr.checkpoint import caption_bank_size, read_checkpoint
    from diffatr.runtime import default_checkpoint_dir

    root = Path(__file__).resolve().parents[1]
    with (root / "assets" / "corpus" / "manifest.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    _, extra = read_checkpoint(default_checkpoint_dir())
    captions = sum(1 for row in rows if row["clip_id"] in set(extra["seen_clips"])
                   for i in (1, 2, 3) if row[f"caption_{i}"].strip())
    assert caption_bank_size(default_checkpoint_dir()) == {"captions": captions, "clips": len(extra["seen_clips"])}
