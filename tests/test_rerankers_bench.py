"""benchmarks/rerankers.py's claim check and table on hand-made numbers (the benchmark itself
trains for many minutes)."""


import pytest

from conftest import load_benchmark



@pytest.fixture(scope="module")
def bench():
    yield from load_benchmark("rerankers")


def _variant(values: dict[str, float], std: float = 1.0) -> dict:
    out = {}
    for scorer, value in values.items():
        out[scorer] = {f"{s}/{d}/R@1": [value, std] for s in ("val", "test", "test_new", "ood")
                       for d in ("text_to_audio", "audio_to_text")}
    return out


def test_claim_needs_a_win_over_dis_and_the_cheap_rerankers_beyond_the_std(bench):
    base = {"dis": 20.0, "qb-norm": 21.0, "ensemble": 22.0, "gen+dis (paper)": 20.0, "gen+dis (z-score)": 23.5,
            "gen+qb": 22.5}
    claims = bench.claim(_variant(base))
    check = claims["test/text_to_audio/R@1"]
    assert check["best_gen"] == "gen+dis (z-score)" and check["best_cheap"] == "ensemble"
    assert check["beats_dis"] and check["beats_cheap"]  # 23.5 - 22.0 > 1.0
    close = bench.claim(_variant({**base, "gen+dis (z-score)": 22.8}))["ood/audio_to_text/R@1"]
    assert close["beats_dis"] and not close["beats_cheap"]  # within the seed std of the ensemble


def test_table_has_a_row_per_variant_and_scorer(bench):
    results = {"variants": {"plain": _variant({"dis": 20.0, "gen": 10.0}), "cross-fit 5": _variant({"dis": 20.0})}}
    rows = bench.table(results).splitlines()
    assert len(rows) == 2 + 3
    assert rows[2].startswith("| plain | dis | 20.0 ± 1.0 / 20.0 ± 1.0 |")
