"""benchmarks/query_expansion.py's expansion variants and table, and the results writer the
benchmarks of its family share (the benchmark itself trains for minutes)."""

import json

import pytest
import torch

from conftest import load_benchmark
from diffatr.model import DiffATR
from diffatr.retrieval.expansion import expand_queries, expand_text_queries, nearest_captions


@pytest.fixture(scope="module")
def bench():
    yield from load_benchmark("query_expansion")


@pytest.fixture
def model(tiny_config):
    torch.manual_seed(0)
    m = DiffATR(tiny_config).eval()
    g = torch.Generator().manual_seed(1)
    m.set_caption_bank(torch.randn(8, tiny_config.text.embed_dim, generator=g),
                       torch.randn(4, tiny_config.audio.embed_dim, generator=g), torch.arange(8) % 4)
    return m


def test_the_expander_is_the_models_own_and_the_ablations_put_all_the_weight_on_one_side(bench, model):
    text = torch.randn(5, model.config.text.embed_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = model.project_text(text)
        both = bench.expander(model, 2.0, 3)(text)
        config = model.config.with_retrieval(expansion=2.0, expansion_neighbours=3)
        assert torch.allclose(both, expand_text_queries(model, text, plain, config))
        assert torch.allclose(bench.expander(model, 0.0, 3)(text), plain)
        unit, bank_text, bank_audio = model.caption_bank_embeds()
        nearest = nearest_captions(text, unit, 3)
        for share, weights in (("captions", (2.0, 0.0)), ("sounds", (0.0, 2.0))):
            assert torch.allclose(bench.expander(model, 2.0, 3, share)(text),
                                  expand_queries(plain, nearest, bank_text, bank_audio, *weights))


def _stats(t2a: float, rw_val: float) -> dict:
    keys = [f"{s}/{d}/R@1" for s in ("val", "test", "test_new", "ood_first", "ood")
            for d in ("text_to_audio", "audio_to_text")]
    out = {k: [t2a if "text_to_audio" in k else 20.0, 1.0] for k in keys}
    out.update({f"reworded/corpus/{s}/class": [rw_val, 2.0] for s in ("val", "test", "ood", "all")})
    out["everyday/right"] = [18.0, 0.0]
    return out


def test_the_table_shows_the_chosen_rows_and_marks_the_winner(bench):
    results = {"winner": bench.label(1.0, 3), "settings": {
        bench.label(0.0, 1): {"show": True, "seeds": _stats(21.0, 30.0)},
        bench.label(1.0, 3): {"show": True, "seeds": _stats(22.0, 50.0)},
        bench.label(4.0, 10): {"show": False, "seeds": _stats(1.0, 1.0)},
        bench.label(1.0, 3, "sounds"): {"show": True, "seeds": _stats(23.0, 40.0)}}}
    lines = bench.table(results).splitlines()
    assert len(lines) == 2 + 3  # header, rule, three shown rows
    assert lines[3].startswith("| λ = 1, n = 3 **(val winner)** | 35.5 |")  # (mean(22, 20) + 50) / 2
    assert "sounds' side only" in lines[4] and "no expansion (λ = 0)" in lines[2]
    assert bench.settings_grid()[0] == (0.0, 1) and len(bench.settings_grid()) == 1 + 4 * 4


def test_results_are_written_with_their_time_and_the_table_printed(bench, tmp_path, capsys):
    results = {"winner": "x"}
    out = tmp_path / "deep" / "results.json"
    assert bench.write_results(results, out, started=0.0, table="| a |", summary="val winner: x") == 0
    written = json.loads(out.read_text())
    assert written["winner"] == "x" and written["seconds"] > 0
    printed = capsys.readouterr().out
    assert printed.startswith("| a |\n") and "val winner: x (" in printed and str(out) in printed
