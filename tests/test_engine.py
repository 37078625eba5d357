"""SearchEngine: hits in both directions, results past K, clear errors, the trajectory view, and
the same ranking as the pipeline (diffatr.retrieval.rerank) on the same settings."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffatr.config import ConfigError
from diffatr.retrieval.engine import SearchEngine, SearchError, SearchResults
from diffatr.retrieval.index import IndexMismatchError, RetrievalIndex
from diffatr.retrieval.rerank import rerank

def reference_topk(scores, k):
    """Slow reference: sort by (-score, index)."""
    out_v, out_i = [], []
    for row in scores.tolist():
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        out_i.append(order)
        out_v.append([row[j] for j in order])
    return torch.tensor(out_v), torch.tensor(out_i)


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
    settings = model.config.with_retrieval(num_results=5, top_k=8, num_inference_steps=5)
    hits = engine.search_text(["a dog barks", "rain"], settings)
    assert isinstance(hits, SearchResults) and hits.config == settings and hits.direction == "text_to_audio"
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
    ref = rerank(q, c, model.denoisers["text_to_audio"], model.make_scheduler(), settings)
    assert [h.row for h in hits[0]] == ref.indices[0, :5].tolist()


def test_engine_audio_to_text_hits_are_captions(model):
    index = make_engine_index(model.config)
    engine = SearchEngine(model, index)
    settings = model.config.with_retrieval(num_results=4, top_k=6, num_inference_steps=4)
    hits = engine.search_audio_embeds(index.audio_features[3], settings)[0]
    flat = index.flat_captions
    for h in hits:
        assert h.caption == flat[h.row]
        assert h.clip_id == f"id{int(index.caption_to_clip[h.row])}"


def test_engine_k_beyond_top_k_continues_in_cosine_order(model):
    engine = SearchEngine(model, make_engine_index(model.config, n=12))
    settings = model.config.with_retrieval(num_results=20, top_k=3, num_inference_steps=3)
    hits = engine.search_audio_embeds(torch.randn(model.config.audio.embed_dim), settings)[0]
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
    with pytest.raises(SearchError, match="RetrievalConfig"):
        engine.search_text("a bell", {"top_k": 3})  # settings travel as one RetrievalConfig
    # every setting is checked once, where the entry point builds the config, naming the setting;
    # steps above T (which only the checkpoint knows) get the same wording
    T = model.config.diffusion.num_train_timesteps
    for knobs, words in [({"num_inference_steps": T + 1}, rf"between 1 and {T} \(T, "),
                         ({"alpha": 11.0}, r"\(alpha\) must be"), ({"temperature": 0.0}, r"\(temperature\) must be"),
                         ({"fusion": "max"}, r"\(fusion\) must be one of"), ({"seed": -1}, r"\(seed\) must be"),
                         ({"top_k": 0}, r"\(top_k\) must be"), ({"num_results": 0}, r"\(num_results\) must be")]:
        with pytest.raises(ConfigError, match=words):
            model.config.with_retrieval(**knobs)
    with pytest.raises(ConfigError, match=rf"between 1 and {T} \(T, "):  # a config made elsewhere, too
        engine.search_text("a bell", dataclasses.replace(model.config.retrieval, num_inference_steps=T + 1))
    # Text->audio still works on an index without captions.
    assert len(engine.search_text("a bell", model.config.with_retrieval(num_results=3))[0]) == 3
    other = dataclasses.replace(model.config.audio, name="cnn14")
    wrong = dataclasses.replace(no_caps, encoders={"audio": dataclasses.asdict(other), "text": None})
    with pytest.raises(IndexMismatchError, match="audio.name"):
        SearchEngine(model, wrong)


def test_engine_single_clip(model):
    index = make_engine_index(model.config, n=1, captions=False)
    engine = SearchEngine(model, index, text_encoder=FakeTextEncoder(model.config.text.embed_dim))
    hits = engine.search_text("anything")[0]  # no settings: the checkpoint's own
    assert len(hits) == 1 and hits[0].clip_id == "id0" and hits[0].diffusion == pytest.approx(1.0)


def test_engine_trajectory_view_for_a_page(model):
    engine = SearchEngine(model, make_engine_index(model.config),
                          text_encoder=FakeTextEncoder(model.config.text.embed_dim))
    settings = model.config.with_retrieval(num_results=3, top_k=8, num_inference_steps=6)
    results = engine.search_text(["x", "a bell"], settings, return_trajectory=True)
    x_t, pred = results.ranking.query_trajectory(1)
    assert x_t.shape == (7, 8) and pred.shape == (6, 8)
    assert results.ranking.settings["direction"] == "text_to_audio"
    view = engine.trajectory_view(results, query=1)
    assert view["query"] == "a bell" and view["direction"] == "text_to_audio" and view["highlight"] == 3
    assert view["x_t"] == [[round(float(v), 6) for v in row] for row in x_t.tolist()]
    assert len(view["distribution"]) == 7 and view["settings"] == dataclasses.asdict(settings)
    # the candidates in cosine order, labelled by clip id; the final top 3 are the hits
    assert view["labels"] == [f"id{r}" for r in view["rows"]]
    top = sorted(range(8), key=lambda i: view["final_rank"][i])[:3]
    assert [view["rows"][i] for i in top] == [h.row for h in results[1]]
    with pytest.raises(SearchError, match="return_trajectory"):
        engine.trajectory_view(engine.search_text("x", settings))


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
