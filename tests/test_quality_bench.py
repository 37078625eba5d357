"""Smoke tests of benchmarks/quality.py's pure helpers (tables, selection metric, CLI flags).

The benchmark itself trains for minutes; these only check that its reporting code is sound.
"""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    for flag in ("--seeds", "--quick", "--skip-backbone"):
        assert flag in out
