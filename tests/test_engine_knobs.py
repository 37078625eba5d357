"""Every retrieval setting reaches the ranking through ``SearchEngine`` (no Gradio, no CLI).

For each knob, a search with a value other than the checkpoint's must (a) differ from the search
at the checkpoint's value and (b) equal the pipeline (``diffatr.retrieval.rerank.rerank``) run
by hand with that value. An engine that ignored the knob, or took it from the checkpoint
instead, fails (a) and (b). Both directions are searched; one result per sound and the similar
space also audio -> audio.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffatr.config import load_model_config
from diffatr.model import DiffATR
from diffatr.retrieval.engine import SearchEngine
from diffatr.retrieval.index import RetrievalIndex
from diffatr.retrieval.rerank import rerank
from diffatr.retrieval.similar import similar_embeddings

QUERIES = ["a dog barks", "rain on a tin roof", "a church bell"]
# knob -> a value other than the tiny config's (top_k 8, steps 10, alpha 1, temperature 1,
# seed 0, fusion "paper", 10 results).
CHANGES = {
    "fusion": "zscore",
    "temperature": 0.05,
    "alpha": 4.0,
    "num_inference_steps": 3,
    "top_k": 5,
    "seed": 7,
    "num_results": 4,
}


class FakeTextEncoder:
    """Stand-in text tower: a fixed random feature per distinct string."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def encode(self, texts: list[str]) -> torch.Tensor:
        feats = []
        for text in texts:
            g = torch.Generator().manual_seed(sum(map(ord, text)) * 7919 + len(text))
            feats.append(torch.randn(self.dim, generator=g))
        return torch.stack(feats)


@pytest.fixture(scope="module")
def engine() -> SearchEngine:
    config = load_model_config("tiny")
    assert config.retrieval.fusion == "paper" and config.retrieval.seed == 0  # CHANGES differ from these
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DiffATR(config).eval()
    g = torch.Generator().manual_seed(1)
    n = 40
    captions = [[f"clip {i} take {j}" for j in range(1 + i % 2)] for i in range(n)]
    text = FakeTextEncoder(config.text.embed_dim)
    index = RetrievalIndex(
        audio_features=torch.randn(n, config.audio.embed_dim, generator=g), clip_ids=[f"id{i}" for i in range(n)],
        paths=[None] * n, captions=captions, text_features=text.encode([c for cs in captions for c in cs]),
        metadata=[{"label_group": f"g{i % 13}"} for i in range(n)],  # recordings of 3 or 4 clips
        encoders={"audio": dataclasses.asdict(config.audio), "text": dataclasses.asdict(config.text)})
    return SearchEngine(model, index, text_encoder=text)


def _search(engine: SearchEngine, direction: str, settings) -> list[list[tuple[int, float, float | None]]]:
    if direction == "text_to_audio":
        results = engine.search_text(QUERIES, settings)
    else:
        results = engine.search_audio_embeds(engine.index.audio_features[[2, 11, 30]], settings)
    return [[(h.row, h.fused, h.diffusion) for h in hits] for hits in results]


@torch.no_grad()
def _by_hand(engine: SearchEngine, direction: str, settings) -> list[list[tuple[int, float]]]:
    """The pipeline on the projected features: the hits' rows and fused scores (re-ranked top K,
    then the cosine order)."""
    model, index = engine.model, engine.index
    if direction == "text_to_audio":
        queries = model.project_text(FakeTextEncoder(model.config.text.embed_dim).encode(QUERIES))
        candidates = model.project_audio(index.audio_features)
    else:
        queries = model.project_audio(index.audio_features[[2, 11, 30]])
        candidates = model.project_text(index.text_features)
    result = rerank(queries, candidates, model.denoisers[direction], model.make_scheduler(), settings)
    cosine = queries @ candidates.T  # (Q, N)
    out = []
    for q in range(queries.shape[0]):
        rows = result.indices[q].tolist()
        fused = result.fused[q].tolist()
        rest = [int(j) for j in torch.sort(cosine[q], descending=True, stable=True).indices if int(j) not in rows]
        rows, fused = rows + rest, fused + [float(cosine[q, j]) for j in rest]
        out.append(list(zip(rows, fused))[: settings.num_results])
    return out


@pytest.mark.parametrize("direction", ["text_to_audio", "audio_to_text"])
@pytest.mark.parametrize("knob", list(CHANGES))
def test_each_knob_reaches_the_ranking(engine: SearchEngine, knob: str, direction: str) -> None:
    base = engine.model.config.retrieval
    changed = engine.model.config.with_retrieval(**{knob: CHANGES[knob]})
    assert getattr(changed, knob) != getattr(base, knob)
    at_base, got = _search(engine, direction, base), _search(engine, direction, changed)
    assert got != at_base, f"{knob} = {CHANGES[knob]!r} changed nothing: the engine ignores it"
    expected = _by_hand(engine, direction, changed)
    for hits, reference in zip(got, expected):
        assert [row for row, _, _ in hits] == [row for row, _ in reference]
        assert [fused for _, fused, _ in hits] == pytest.approx([fused for _, fused in reference], abs=1e-5)
    if knob == "top_k":  # past K the hits keep the cosine order, without a diffusion term
        assert all(d is None for hits in got for _, _, d in hits[CHANGES["top_k"]:])
    if knob == "num_results":
        assert all(len(hits) == CHANGES["num_results"] for hits in got)


def test_same_settings_same_ranking(engine: SearchEngine) -> None:
    settings = engine.model.config.with_retrieval(seed=3, temperature=0.1)
    assert _search(engine, "text_to_audio", settings) == _search(engine, "text_to_audio", settings)


def _by_hand_per_sound(engine: SearchEngine, direction: str, settings) -> list[list[int]]:
    """One result per sound by hand: the pipeline's whole ranking, the first row of each group."""
    everything = dataclasses.replace(settings, one_per_sound=False, num_results=200)
    groups = [m["label_group"] for m in engine.index.metadata]
    owner = engine.index.caption_to_clip.tolist()
    out = []
    for hits in _by_hand(engine, direction, everything):
        seen, rows = set(), []
        for row, _ in hits:
            group = groups[owner[row] if direction == "audio_to_text" else row]
            if group not in seen:
                seen.add(group)
                rows.append(row)
        out.append(rows[: settings.num_results])
    return out


@pytest.mark.parametrize("direction", ["text_to_audio", "audio_to_text"])
def test_one_result_per_sound_reaches_the_ranking(engine: SearchEngine, direction: str) -> None:
    base = engine.model.config.retrieval
    changed = engine.model.config.with_retrieval(one_per_sound=True)
    assert base.one_per_sound is False
    got = _search(engine, direction, changed)
    assert got != _search(engine, direction, base), "one_per_sound = True changed nothing: the engine ignores it"
    assert [[row for row, _, _ in hits] for hits in got] == _by_hand_per_sound(engine, direction, changed)


@pytest.mark.parametrize("knob, value", [("similar_space", "backbone"), ("one_per_sound", True)])
def test_audio_to_audio_settings_reach_the_ranking(engine: SearchEngine, knob: str, value) -> None:
    base = engine.model.config.retrieval
    changed = engine.model.config.with_retrieval(**{knob: value})
    assert getattr(base, knob) != value

    def rows(settings) -> list[int]:
        return [h.row for h in engine.search_similar("id4", settings)[0]]

    assert rows(changed) != rows(base), f"{knob} = {value!r} changed nothing: the engine ignores it"
    with torch.no_grad():  # by hand: every other clip in the space, best first
        vectors = similar_embeddings(engine.model, engine.index.audio_features, changed.similar_space)
    order = [int(j) for j in torch.sort(vectors @ vectors[4], descending=True, stable=True).indices if int(j) != 4]
    if changed.one_per_sound:
        groups, seen, kept = [m["label_group"] for m in engine.index.metadata], set(), []
        for j in order:
            if groups[j] not in seen:
                seen.add(groups[j])
                kept.append(j)
        order = kept
    assert rows(changed) == order[: changed.num_results]
