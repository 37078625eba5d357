"""An index's first-stage stores through the CLI: --backend at index time and no flag at search
time, --add and --remove, stores for other weights refused (exact search instead)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import write_tone
from diffatr.checkpoint import save_checkpoint
from diffatr.cli import main
from diffatr.model import DiffATR
from diffatr.retrieval import stores
from diffatr.retrieval.index import RetrievalIndex

pytest.importorskip("faiss")


@pytest.fixture
def checkpoint(tmp_path, tiny_config):
    torch.manual_seed(0)
    return save_checkpoint(DiffATR(tiny_config), tmp_path / "ckpt")


def _search(index, ckpt, capsys, query="a high beep", *extra):
    what = [query] if query else []
    assert main(["search", "--index", str(index), "--checkpoint", str(ckpt), *what, "-k", "4", "--top-k", "3",
                 "--steps", "3", "--json", *extra]) == 0
    out = capsys.readouterr()
    return json.loads(out.out)["results"], out.err


def _index(args, capsys):
    code = main(["index", *map(str, args), "--quiet", "--no-cache"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("backend", ["faiss", "milvus"])
def test_a_store_built_at_index_time_answers_search_without_a_flag(backend, audio_folder, checkpoint, tmp_path,
                                                                   capsys):
    if backend == "milvus":
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
    exact, stored = tmp_path / "exact", tmp_path / "stored"
    assert _index([audio_folder, "--out", exact, "--checkpoint", checkpoint], capsys)[0] == 0
    extra = ["--backend", backend] + (["--faiss-factory", "Flat"] if backend == "faiss" else [])
    code, out, _ = _index([audio_folder, "--out", stored, "--checkpoint", checkpoint, *extra], capsys)
    assert code == 0 and f"first stage: {backend} store(s) for 5 text_to_audio, 8 audio_to_text" in out
    info = stores.describe(stored)
    assert info["backend"] == backend and (stored / "first_stage" / "text_to_audio" / "store.json").is_file()

    calls = []
    from diffatr.retrieval.stores import backends

    original = backends.VectorStore.search
    with pytest.MonkeyPatch.context() as patch:  # the store, not the exact top-K, answers
        patch.setattr(backends.VectorStore, "search", lambda self, q, k: calls.append(k) or original(self, q, k))
        results, _ = _search(stored, checkpoint, capsys)
    assert calls, "search did not use the index's store"
    reference = _search(exact, checkpoint, capsys)[0]  # an exact store: the same ranking
    assert [r["clip_id"] for r in results] == [r["clip_id"] for r in reference]
    assert [r["cosine"] for r in results] == pytest.approx([r["cosine"] for r in reference], abs=1e-5)
    audio_results, _ = _search(stored, checkpoint, capsys, None, "--audio", str(audio_folder / "beep.wav"))
    assert len(audio_results) == 4


def test_add_and_remove_keep_the_index_and_its_stores_in_step(audio_folder, checkpoint, tmp_path, capsys):
    out = tmp_path / "idx"
    assert _index([audio_folder, "--out", out, "--checkpoint", checkpoint, "--backend", "faiss",
                   "--faiss-factory", "Flat"], capsys)[0] == 0
    more = tmp_path / "more"
    more.mkdir()
    write_tone(more / "chirp.wav", freq=3000.0, seed=5)
    (more / "chirp.txt").write_text("a bird chirps\n")
    code, text, _ = _index([more, "--out", out, "--checkpoint", checkpoint, "--add"], capsys)
    assert code == 0 and "6 clip(s) in all" in text and "6 text_to_audio, 9 audio_to_text" in text
    index = RetrievalIndex.load(out)
    assert index.clip_ids[-1] == "chirp"
    attached, why = stores.attach(out, index, _model(checkpoint))
    assert why == "" and len(attached["text_to_audio"]) == 6 and len(attached["audio_to_text"]) == 9
    results, _ = _search(out, checkpoint, capsys, "a bird chirps")
    assert "chirp" in {r["clip_id"] for r in results}
    # the same clips again: refused, nothing changed
    code, _, err = _index([more, "--out", out, "--checkpoint", checkpoint, "--add"], capsys)
    assert code == 2 and "chirp" in err and len(RetrievalIndex.load(out)) == 6

    code, text, _ = _index(["--out", out, "--checkpoint", checkpoint, "--remove", "beep", "chirp"], capsys)
    assert code == 0 and "removed 2 clip(s)" in text and "4 text_to_audio" in text
    results, _ = _search(out, checkpoint, capsys, "a high beep")
    assert not {"beep", "chirp"} & {r["clip_id"] for r in results}
    code, _, err = _index(["--out", out, "--remove", "nope"], capsys)
    assert code == 2 and "not in" in err


def _model(path):
    from diffatr.checkpoint import load_checkpoint

    return load_checkpoint(path)


def test_stores_for_other_weights_are_not_used(audio_folder, checkpoint, tmp_path, tiny_config, capsys):
    out = tmp_path / "idx"
    assert _index([audio_folder, "--out", out, "--checkpoint", checkpoint, "--backend", "faiss"], capsys)[0] == 0
    torch.manual_seed(1)
    other = save_checkpoint(DiffATR(tiny_config), tmp_path / "other")
    results, err = _search(out, other, capsys)
    assert "built for other weights" in err and len(results) == 4  # exact search instead
    attached, why = stores.attach(out, RetrievalIndex.load(out), _model(other))
    assert attached is None and "other weights" in why


def test_the_demo_uses_its_corpus_stores(audio_folder, checkpoint, tmp_path, capsys):
    from diffatr.demo import DemoApp, DemoSession

    out = tmp_path / "idx"
    assert _index([audio_folder, "--out", out, "--checkpoint", checkpoint, "--backend", "faiss",
                   "--faiss-factory", "Flat"], capsys)[0] == 0
    app = DemoApp.load(checkpoint, out, upload_root=tmp_path / "uploads").start(warm_up=False)
    assert set(app.engine.first_stage) == {"text_to_audio", "audio_to_text", "audio_to_audio"}
    # nothing of the library's size is held: the shortlist's vectors come from the stores
    assert app.engine.audio_embeds is None and app.engine.text_embeds is None and not app.engine._caches
    response = app.searcher.search_text("a high beep", app.defaults, DemoSession())
    assert response["results"]
