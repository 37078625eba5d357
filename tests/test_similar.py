"""Sounds like this one (audio -> audio) and one result per sound, on tiny fixtures.

The engine: never the query clip itself, the same ranking as a slow reference in each similar
space, the settings reach the ranking; recording groups from label groups or near-duplicate
audio; one result per sound keeps the best row of each recording and counts what it hides, in
every direction; the CLI (--like, --audio --similar, --one-per-sound, --json); FAISS and Milvus
stores answer audio -> audio with the exact ranking.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import write_tone
from diffatr.checkpoint import save_checkpoint
from diffatr.cli import main
from diffatr.config import SIMILAR_SPACES, load_model_config
from diffatr.model import DiffATR
from diffatr.retrieval import stores
from diffatr.retrieval.engine import SearchEngine, SearchError
from diffatr.retrieval.groups import NEAR_DUPLICATE_COSINE, RecordingGroups, collapse, near_duplicate_groups
from diffatr.retrieval.index import RetrievalIndex
from diffatr.retrieval.similar import similar_embeddings

N = 24


class FakeTextEncoder:
    """Stand-in text tower: a fixed random feature per distinct string."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def encode(self, texts: list[str]) -> torch.Tensor:
        out = []
        for text in texts:
            g = torch.Generator().manual_seed(sum(map(ord, text)) * 7919 + len(text))
            out.append(torch.randn(self.dim, generator=g))
        return torch.stack(out)


@pytest.fixture(scope="module")
def model():
    config = load_model_config("tiny")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return DiffATR(config).eval()


def _index(config, grouped: bool = True) -> RetrievalIndex:
    """N clips: recordings of 1, 2, 3 or 4 variants (variants = one sound plus a little noise),
    named by ``label_group`` when ``grouped``, else not named at all."""
    g = torch.Generator().manual_seed(3)
    feats, meta, sizes = [], [], [1, 2, 3, 4]
    recording = 0
    while len(feats) < N:
        base = torch.randn(config.audio.embed_dim, generator=g)
        for _ in range(min(sizes[recording % 4], N - len(feats))):
            feats.append(base + 0.05 * torch.randn(config.audio.embed_dim, generator=g))
            meta.append({"label_group": f"rec{recording}"} if grouped else {})
        recording += 1
    captions = [[f"clip {i}", f"clip {i} again"] for i in range(N)]
    text = FakeTextEncoder(config.text.embed_dim)
    return RetrievalIndex(
        audio_features=torch.stack(feats), clip_ids=[f"c{i}" for i in range(N)], paths=[None] * N,
        captions=captions, text_features=text.encode([c for cs in captions for c in cs]), metadata=meta,
        encoders={"audio": dataclasses.asdict(config.audio), "text": dataclasses.asdict(config.text)})


@pytest.fixture(scope="module")
def engine(model) -> SearchEngine:
    return SearchEngine(model, _index(model.config), text_encoder=FakeTextEncoder(model.config.text.embed_dim))


def _groups(index: RetrievalIndex) -> list[str]:
    return [m.get("label_group") for m in index.metadata]


# ----------------------------------------------------------------------------- audio -> audio


def _reference(model, index, row: int, space: str) -> list[tuple[int, float]]:
    """Slow reference: every other clip scored in the space by hand, sorted by (-score, row)."""
    feats = index.audio_features
    if space == "backbone":
        vectors = F.normalize(feats, dim=-1)
    elif space == "head":
        vectors = F.normalize(model.audio_head(feats), dim=-1)
    else:
        vectors = torch.cat([F.normalize(feats, dim=-1), F.normalize(model.audio_head(feats), dim=-1)], 1)
    scores = (vectors @ vectors[row]).tolist()
    if space == "backbone+head":
        scores = [s / 2 for s in scores]
    return sorted(((j, s) for j, s in enumerate(scores) if j != row), key=lambda x: (-x[1], x[0]))


@pytest.mark.parametrize("space", SIMILAR_SPACES)
@torch.no_grad()
def test_similar_by_clip_id_matches_a_slow_reference_and_never_returns_the_clip(engine, space):
    settings = engine.model.config.with_retrieval(num_results=6, similar_space=space)
    for row in (0, 5, N - 1):
        results = engine.search_similar(f"c{row}", settings)
        hits = results[0]
        assert results.direction == "audio_to_audio" and len(hits) == 6
        assert all(h.clip_id != f"c{row}" for h in hits)
        reference = _reference(engine.model, engine.index, row, space)[:6]
        assert [h.row for h in hits] == [j for j, _ in reference]
        assert [h.cosine for h in hits] == pytest.approx([s for _, s in reference], abs=1e-5)
        assert all(h.fused == h.cosine and h.diffusion is None and h.moved == 0 for h in hits)
        assert [h.rank for h in hits] == list(range(1, 7))


def test_the_space_reaches_the_ranking_and_the_embeddings_are_unit_vectors(engine):
    rankings = {space: [h.row for h in engine.search_similar(
        "c7", engine.model.config.with_retrieval(num_results=N - 1, similar_space=space))[0]]
        for space in SIMILAR_SPACES}
    assert len({tuple(r) for r in rankings.values()}) == len(SIMILAR_SPACES)  # three spaces, three rankings
    for space in SIMILAR_SPACES:
        vectors = similar_embeddings(engine.model, engine.index.audio_features, space)
        assert vectors.norm(dim=-1) == pytest.approx(torch.ones(N), abs=1e-5)


def test_similar_by_audio_leaves_out_the_very_audio_and_agrees_with_the_clip_id(engine):
    settings = engine.model.config.with_retrieval(num_results=5)
    by_id = engine.search_similar("c9", settings)[0]
    same_audio = engine.search_similar_embeds(engine.index.audio_features[9], settings)[0]
    assert [h.row for h in same_audio] == [h.row for h in by_id] and 9 not in [h.row for h in same_audio]
    # a query that is no clip of the index keeps every clip, the nearest first; one that differs
    # from a clip by float noise only is that clip
    noise = torch.randn(engine.index.audio_dim, generator=torch.Generator().manual_seed(1))
    hits = engine.search_similar_embeds(engine.index.audio_features[9] + 0.05 * noise, settings)[0]
    assert hits[0].row == 9 and len(hits) == 5
    hits = engine.search_similar_embeds(engine.index.audio_features[9] + 1e-4 * noise, settings)[0]
    assert [h.row for h in hits] == [h.row for h in by_id]
    # several queries at once, each as alone
    both = engine.search_similar(["c9", "c2"], settings)
    assert [h.row for h in both[1]] == [h.row for h in engine.search_similar("c2", settings)[0]]


def test_similar_search_errors_are_clear(engine, tmp_path):
    settings = engine.model.config.retrieval
    with pytest.raises(SearchError, match="'nope' is neither a clip id of this index nor an audio file"):
        engine.search_similar("nope", settings)
    with pytest.raises(SearchError, match="needs an audio encoder"):
        engine.search_similar(str(write_tone(tmp_path / "a.wav")), settings)
    with pytest.raises(SearchError, match="non-empty list"):
        engine.search_similar([], settings)
    with pytest.raises(SearchError, match=r"must be \(Q, "):
        engine.search_similar_embeds(torch.zeros(3, 5), settings)


def test_a_one_clip_index_has_nothing_like_its_clip(model):
    index = _index(model.config).subset([0])
    engine = SearchEngine(model, RetrievalIndex.from_features(index))
    assert engine.search_similar("c0", model.config.retrieval)[0] == []


# ----------------------------------------------------------------------------- groups


def test_recording_groups_come_from_label_groups_else_near_duplicate_audio(model):
    named = _index(model.config)
    groups = RecordingGroups.of_index(named.clip_ids, named.metadata, named.audio_features, NEAR_DUPLICATE_COSINE)
    labels = _groups(named)
    for a in range(N):
        for b in range(N):
            assert (groups.ids[a] == groups.ids[b]) == (labels[a] == labels[b])
    assert int(groups.sizes.sum()) == N and groups.names[0] == "rec0"
    unnamed = _index(model.config, grouped=False)  # variants are near-duplicates, recordings are not
    by_audio = RecordingGroups.of_index(unnamed.clip_ids, unnamed.metadata, unnamed.audio_features,
                                        NEAR_DUPLICATE_COSINE)
    assert torch.equal(by_audio.ids, groups.ids) and by_audio.names[0] == "near:c0"


def test_near_duplicate_groups_follow_the_leader_not_a_chain():
    # a chain a - b - c with each step above the threshold but a - c below it: two groups
    angle = math.acos(0.95)
    vectors = torch.tensor([[math.cos(i * angle), math.sin(i * angle)] for i in range(3)])
    assert near_duplicate_groups(vectors, 0.95 - 1e-4) == [0, 0, 1]
    assert near_duplicate_groups(vectors, 0.99) == [0, 1, 2]
    # chunks: the same groups whatever the chunk size
    from diffatr.retrieval import groups as groups_module

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(7, 16, generator=g)
    points = centres[torch.arange(40) % 7] + 0.05 * torch.randn(40, 16, generator=g)
    whole = near_duplicate_groups(points, 0.9)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(groups_module, "_CHUNK", 6)
        assert near_duplicate_groups(points, 0.9) == whole
    assert whole == [i % 7 for i in range(40)]


def test_collapse_keeps_the_first_row_of_each_group_and_counts_the_rest():
    ranked = torch.tensor([3, 3, 1, 3, 2, 1, 0])
    kept, hidden = collapse(ranked, 3)
    assert kept == [0, 2, 4] and hidden == [2, 1, 0]  # counted among the ranked rows
    sizes = torch.tensor([1, 5, 1, 4])
    assert collapse(ranked, 3, sizes=sizes) == ([0, 2, 4], [3, 4, 0])  # counted in the library
    assert collapse(ranked, 3, torch.tensor([3]), sizes) == ([0, 2, 4], [2, 4, 0])  # the query's own clip
    assert collapse(ranked, 10, sizes=sizes) == ([0, 2, 4, 6], [3, 4, 0, 0])  # fewer groups than asked


# ----------------------------------------------------------------------------- one result per sound


def _distinct(hits, index) -> int:
    return len({index.metadata[index.clip_ids.index(h.clip_id)]["label_group"] for h in hits})


@pytest.mark.parametrize("direction", ["text_to_audio", "audio_to_text", "audio_to_audio"])
def test_one_result_per_sound_shows_k_recordings_and_counts_their_variants(engine, direction):
    index = engine.index
    labels = _groups(index)
    recordings = len(set(labels))
    for k in (4, recordings, recordings + 3):
        on = engine.model.config.with_retrieval(num_results=k, one_per_sound=True, top_k=6)
        off = dataclasses.replace(on, one_per_sound=False, num_results=3 * N)
        if direction == "text_to_audio":
            grouped, plain = engine.search_text("a dog", on)[0], engine.search_text("a dog", off)[0]
        elif direction == "audio_to_text":
            grouped = engine.search_audio_embeds(index.audio_features[[5]], on)[0]
            plain = engine.search_audio_embeds(index.audio_features[[5]], off)[0]
        else:
            grouped, plain = engine.search_similar("c5", on)[0], engine.search_similar("c5", off)[0]
        expected = recordings - (direction == "audio_to_audio" and labels.count(labels[5]) == 1)
        assert len(grouped) == min(k, expected) == _distinct(grouped, index)  # k different recordings
        # each is the best-ranked row of its recording, in the plain ranking's order
        firsts = {}
        for hit in plain:
            firsts.setdefault(labels[index.clip_ids.index(hit.clip_id)], hit)
        assert [h.row for h in grouped] == [h.row for h in list(firsts.values())[: len(grouped)]]
        assert [h.fused for h in grouped] == pytest.approx([h.fused for h in list(firsts.values())[: len(grouped)]])
        for hit in grouped:
            label = labels[index.clip_ids.index(hit.clip_id)]
            own = direction == "audio_to_audio" and label == labels[5]  # the query clip is not a variant
            assert hit.variants == labels.count(label) - 1 - own
        assert [h.rank for h in grouped] == list(range(1, len(grouped) + 1))
        assert all(h.moved == h.cosine_rank - h.rank for h in grouped)
        assert all(h.variants == 0 for h in plain)


@pytest.mark.parametrize("direction", ["text_to_audio", "audio_to_audio"])
def test_one_result_per_sound_ranks_more_rows_until_it_finds_k_recordings(engine, direction, monkeypatch):
    from diffatr.retrieval import engine as engine_module

    settings = engine.model.config.with_retrieval(num_results=9, one_per_sound=True, top_k=2)

    def search():
        return engine.search_text("a bell", settings)[0] if direction == "text_to_audio" else \
            engine.search_similar("c3", settings)[0]

    wide = [(h.row, h.variants, h.fused) for h in search()]
    widths = []
    real = engine.rank
    monkeypatch.setattr(engine_module, "_GROUP_WIDTH_FACTOR", 2)  # 2 x 9 rows first: too few recordings
    monkeypatch.setattr(engine, "rank", lambda *a, **k: widths.append(k["width"]) or real(*a, **k))
    assert [(h.row, h.variants, h.fused) for h in search()] == wide and len(wide) == 9
    assert widths == [18, N], widths


def test_one_result_per_sound_groups_unnamed_clips_by_their_audio(model):
    engine = SearchEngine(model, _index(model.config, grouped=False))
    settings = model.config.with_retrieval(num_results=N, one_per_sound=True)
    hits = engine.search_similar("c1", settings)[0]
    named = _index(model.config)
    labels = _groups(named)
    assert len(hits) == len(set(labels))  # every recording once (the query's own sibling included)
    assert len({labels[h.row] for h in hits}) == len(hits)


def test_one_result_per_sound_over_a_store_widens_until_k_recordings(model, tmp_path):
    pytest.importorskip("faiss")
    engine_exact = SearchEngine(model, _index(model.config), text_encoder=FakeTextEncoder(model.config.text.embed_dim))
    index = engine_exact.index
    folder = tmp_path / "idx"
    index.save(folder)
    stores.build(folder, index, model, stores.StoreConfig("faiss", faiss_factory="Flat"))
    attached, why = stores.attach(folder, index, model)
    assert why == "" and set(attached) == {"text_to_audio", "audio_to_text", "audio_to_audio"}
    engine = SearchEngine(model, index, text_encoder=engine_exact.text_encoder, first_stage=attached)
    settings = model.config.with_retrieval(num_results=8, one_per_sound=True, top_k=2)  # 2 x 8 rows first: too few
    for search in (lambda e: e.search_text("rain", settings), lambda e: e.search_similar("c3", settings)):
        got, expected = search(engine)[0], search(engine_exact)[0]
        assert [(h.row, h.variants) for h in got] == [(h.row, h.variants) for h in expected]
        assert len(got) == 8


# ----------------------------------------------------------------------------- stores


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_similar_search_through_faiss_and_milvus_stores(backend, model, tmp_path):
    if backend == "faiss":
        pytest.importorskip("faiss")
    else:
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
    index = _index(model.config)
    folder = tmp_path / "idx"
    index.save(folder)
    config = stores.StoreConfig(backend, faiss_factory="Flat")
    info = stores.build(folder, index, model, config)
    assert info["counts"]["audio_to_audio"] == N and info["similar_space"] == model.config.retrieval.similar_space
    attached, _ = stores.attach(folder, index, model)
    exact = SearchEngine(model, index)
    stored = SearchEngine(model, index, first_stage=attached)
    calls = []
    original = attached["audio_to_audio"].search
    attached["audio_to_audio"].search = lambda q, k: calls.append(k) or original(q, k)
    settings = model.config.with_retrieval(num_results=7)
    for clip in ("c0", "c11"):
        got, expected = stored.search_similar(clip, settings)[0], exact.search_similar(clip, settings)[0]
        assert [h.row for h in got] == [h.row for h in expected] and clip not in [h.clip_id for h in got]
        assert [h.cosine for h in got] == pytest.approx([h.cosine for h in expected], abs=1e-5)
    assert calls, "the store did not answer audio -> audio"
    # another space than the store's: searched exactly, with that space's ranking
    other = next(s for s in SIMILAR_SPACES if s != model.config.retrieval.similar_space)
    calls.clear()
    moved = dataclasses.replace(settings, similar_space=other)
    assert [h.row for h in stored.search_similar("c0", moved)[0]] == [h.row for h in exact.search_similar("c0", moved)[0]]
    assert not calls
    if backend == "milvus":
        for store in attached.values():
            store._close()


def test_stores_built_before_the_similar_store_get_one_on_add(model, tmp_path):
    pytest.importorskip("faiss")
    index = _index(model.config)
    folder = tmp_path / "idx"
    first = RetrievalIndex.from_features(index.subset(list(range(N - 4))))
    first.save(folder)
    stores.build(folder, first, model, stores.StoreConfig("faiss", faiss_factory="Flat"))
    info_path = folder / "first_stage" / "first_stage.json"
    info = json.loads(info_path.read_text())  # as an older diffatr wrote it
    del info["counts"]["audio_to_audio"], info["similar_space"]
    info_path.write_text(json.dumps(info))
    assert "audio_to_audio" not in stores.attach(folder, first, model)[0]  # exact for audio -> audio
    index.save(folder)
    info = stores.append(folder, {"text_to_audio": N - 4, "audio_to_text": 2 * (N - 4)}, index, model)
    assert info["counts"] == {"text_to_audio": N, "audio_to_text": 2 * N, "audio_to_audio": N}
    attached, _ = stores.attach(folder, index, model)
    got = SearchEngine(model, index, first_stage=attached).search_similar("c22", model.config.retrieval)[0]
    assert [h.row for h in got] == [h.row for h in SearchEngine(model, index).search_similar(
        "c22", model.config.retrieval)[0]]


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_files(tmp_path, audio_folder, tiny_config):
    torch.manual_seed(0)
    ckpt = save_checkpoint(DiffATR(tiny_config), tmp_path / "ckpt")
    out = tmp_path / "index"
    assert main(["index", str(audio_folder), "--out", str(out), "--checkpoint", str(ckpt), "--no-cache",
                 "--quiet"]) == 0
    return out, ckpt


def test_cli_like_and_similar_json_and_table(cli_files, audio_folder, capsys):
    index, ckpt = cli_files
    capsys.readouterr()
    base = ["search", "--index", str(index), "--checkpoint", str(ckpt)]
    assert main([*base, "--like", "beep", "-k", "3", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["direction"] == "audio_to_audio" and payload["query"] == "beep"
    assert len(payload["results"]) == 3 and "beep" not in [r["clip_id"] for r in payload["results"]]
    assert {"clip_id", "cosine", "variants", "rank", "captions"} <= set(payload["results"][0])
    assert payload["knobs"]["similar_space"] in SIMILAR_SPACES
    # the same file as a query: the same clips (the file itself is left out)
    assert main([*base, "--audio", str(audio_folder / "beep.wav"), "--similar", "-k", "3", "--json"]) == 0
    by_file = json.loads(capsys.readouterr().out)
    assert [r["clip_id"] for r in by_file["results"]] == [r["clip_id"] for r in payload["results"]]
    assert main([*base, "--like", "beep", "-k", "4", "--similar-space", "backbone"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "similarity", "clip"] and len(lines) == 2 + 4
    # one result per sound: a folder's clips are grouped by their audio (the random tiny backbone
    # hears the tones as near-duplicates); every clip is shown or counted, once
    assert main([*base, "a high beep", "--one-per-sound", "-k", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert sum(r["variants"] + 1 for r in rows) == 5 and len(rows) < 5
    assert main([*base, "a high beep", "--one-per-sound", "-k", "5"]) == 0
    assert "variants)" in capsys.readouterr().out
