"""Smoke tests of benchmarks/quality.py's pure helpers (tables, selection metric, CLI flags).

The benchmark itself trains for minutes; these only check that its reporting code is sound.
"""


import pytest

from conftest import load_benchmark



@pytest.fixture(scope="module")
def quality():
    yield from load_benchmark("quality")


def _metrics(value):
    return {f"{d}/{m}": value for d in ("text_to_audio", "audio_to_text") for m in ("R@1", "R@5", "R@10", "mAP@10")}


def test_mean_r1_averages_both_directions(quality):
    m = _metrics(0.0)
    m["text_to_audio/R@1"], m["audio_to_text/R@1"] = 10.0, 20.0
    assert quality.mean_r1(m) == 15.0


def test_main_table_has_a_row_per_split_and_scorer(quality):
    res = {"scorers": {s: _metrics(12.345) for s in ("dis", "gen", "gen+dis")},
           "std": {s: _metrics(1.0) for s in ("dis", "gen", "gen+dis")}, "num_clips": 7}
    table = quality.main_table({"test": res, "ood": res}).splitlines()
    assert len(table) == 2 + 6
    assert "| test (7 clips) | Gen+Dis | 12.3 ± 1.0" in table[4]
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_grid_table_rows(quality):
    split_metrics = {s: _metrics(5.0) for s in ("val", "test", "ood")}
    row = {"num_inference_steps": 10, "top_k": 8, "temperature": 0.1, "alpha": 3.0, **split_metrics}
    table = quality.grid_table([row, row], split_metrics).splitlines()
    assert len(table) == 2 + 1 + 2
    assert table[3].startswith("| 10 | 8 | 0.1 | 3.0 | 5.0")


def test_help_lists_the_options(quality, capsys):
    with pytest.raises(SystemExit) as exit_info:
        quality.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--seeds", "--quick", "--skip-backbone", "--recipes", "--train-only", "--ddim-seeds"):
        assert flag in out


def _result(dis, gen_dis, std, seeds=3):
    """An evaluate_model-like result: every seed at the same value, the given std."""
    scorers = {"dis": _metrics(dis), "gen": _metrics(0.0), "gen+dis": _metrics(gen_dis)}
    return {"scorers": scorers, "std": {s: _metrics(std) for s in scorers},
            "runs": [{"checkpoint": f"seed{i}", "seed": 0, "scorers": scorers} for i in range(seeds)]}


def test_claim_needs_a_gain_above_the_seed_std_everywhere(quality):
    big = {split: quality.gains_of(_result(10.0, 13.0, 1.0)) for split in ("test", "ood")}
    assert all(g["gain"] == pytest.approx(3.0) and g["gain_per_seed"] == [pytest.approx(3.0)] * 3
               for g in big["test"].values())
    assert quality.claim_of(big) == {"holds": True, "ood_gain_at_least_in_domain": True}
    small = {"test": big["test"], "ood": quality.gains_of(_result(10.0, 10.5, 1.0))}  # ood gain within the std
    assert quality.claim_of(small) == {"holds": False, "ood_gain_at_least_in_domain": False}
    none = {split: quality.gains_of(_result(10.0, 10.0, 0.0)) for split in ("test", "ood")}
    assert quality.claim_of(none) == {"holds": False, "ood_gain_at_least_in_domain": None}


def test_recipe_table_has_a_row_per_recipe(quality):
    res = _result(10.0, 12.0, 0.5)
    res["num_clips"] = 7
    rec = {"knobs": {"temperature": 0.1, "alpha": 3.0}, "val_mean_r1": 30.0,
           "results": {"test": res, "ood": res}, "gains": {s: quality.gains_of(res) for s in ("test", "ood")}}
    table = quality.recipe_table({"reference": rec, "long": rec}).splitlines()
    assert len(table) == 2 + 2
    assert table[2].startswith("| reference | temp 0.1, alpha 3.0 | 30.0 | 10.0 / 0.0 / 12.0 (+2.0, std 0.5)")
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_recipes_are_distinct_training_setups(quality):
    assert quality.DEFAULT_RECIPE in quality.RECIPES
    setups = [(tuple(sorted(r.train.items())), tuple(sorted(r.denoiser.items())), tuple(sorted(r.diffusion.items())))
              for r in quality.RECIPES.values()]
    assert len(set(setups)) == len(setups)
    assert len({quality.slug(name) for name in quality.RECIPES}) == len(quality.RECIPES)  # distinct run folders
