"""benchmarks/generalisation.py's scoring helpers, and the query sets it reads.

The benchmark trains for minutes; these check that its scoring and tables are right on tiny
hand-made inputs, and that the committed query files keep their own rules.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    yield from load_benchmark("generalisation")


def test_query_files_pass_their_checker():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "queries" / "check_queries.py")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_top1_hits_and_query_scores_count_clip_and_class_level(bench):
    ids = ["dog1", "dog2", "cat", "rain", "scream_m", "scream_w"]
    rows = {"dog1": {"sound_class": "dog", "caption_1": "a dog barks"},
            "dog2": {"sound_class": "dog", "caption_1": "a dog growls"},
            "cat": {"sound_class": "cat", "caption_1": "a cat meows"},
            "rain": {"sound_class": "rain", "caption_1": "rain falls"},
            "scream_m": {"sound_class": "scream", "caption_1": "a man screams"},
            "scream_w": {"sound_class": "scream", "caption_1": "a woman screams"}}
    reworded = [{"query": "a hound", "clip_id": "dog1", "split": "val", "sound_class": "dog"},
                {"query": "a feline", "clip_id": "cat", "split": "test", "sound_class": "cat"}]
    everyday = [{"query": "dog", "classes": ["dog"]}, {"query": "rain", "classes": ["rain"]},
                {"query": "woman screaming", "classes": ["scream"], "caption_words": ["woman"]}]
    scores = torch.tensor([
        [0.1, 0.9, 0.0, 0.0, 0.0, 0.0],  # "a hound": top is dog2 (right class, wrong clip)
        [0.0, 0.0, 0.2, 0.5, 0.0, 0.0],  # "a feline": top is rain (wrong)
        [0.3, 0.9, 0.1, 0.0, 0.0, 0.0],  # "dog": dog2, of an accepted class: right
        [0.0, 0.0, 0.6, 0.5, 0.0, 0.0],  # "rain": cat, wrong
        [0.0, 0.0, 0.0, 0.0, 0.9, 0.8],  # "woman screaming": a man's scream, wrong
    ])
    assert bench.top1_hits(scores[:2], ids, [{"dog1"}, {"cat"}]) == [False, False]
    assert bench.everyday_targets(everyday[2], rows) == {"scream_w"}
    out = bench.query_scores(scores, ids, rows, reworded, everyday, n_reworded=2)
    assert out["reworded/corpus/val/clip"] == 0.0 and out["reworded/corpus/val/class"] == 100.0
    assert out["reworded/corpus/test/class"] == 0.0 and out["reworded/corpus/all/class"] == 50.0
    assert out["everyday/right"] == 1.0 and out["everyday/total"] == 3.0


def test_recipe_table_marks_the_val_winner_and_the_gap(bench):
    keys = [f"{s}/{d}/R@1" for s in ("train", *bench.REPORT_SPLITS) for d in bench.DIRS]
    extra = [f"reworded/corpus/{s}/class" for s in ("val", "test", "ood", "all")] + ["everyday/right"]

    def stats(value):
        out = {k: [value, 1.0] for k in keys + extra}
        out["train/text_to_audio/R@1"] = [90.0, 0.0]
        return out

    results = {"recipes": {"a": {"seeds": stats(10.0), "ensemble": stats(11.0)},
                           "b": {"seeds": stats(20.0), "ensemble": stats(21.0)}}, "winner": "b"}
    table = bench.recipe_table(results).splitlines()
    assert len(table) == 2 + 4
    assert "**(val winner)**" in table[4] and table[4].startswith("| b ")
    assert "| 20.0 |" in table[4]  # the val score
    assert "+70.0" in table[4]  # train 90 - test 20
    assert bench.val_mean(results["recipes"]["b"]["seeds"]) == 20.0
    assert bench.val_score(results["recipes"]["b"]["seeds"]) == 20.0  # (R@1 20 + reworded 20) / 2
    results["recipes"]["b"]["seeds"]["reworded/corpus/val/class"] = [40.0, 0.0]
    assert bench.val_score(results["recipes"]["b"]["seeds"]) == 30.0


def test_every_recipe_builds_a_valid_model_config(bench):
    for name, recipe in bench.RECIPES.items():
        config = bench.model_config(recipe)
        from diffatr.model import DiffATR

        model = DiffATR(config)
        out = model.project_text(torch.randn(2, config.text.embed_dim))
        assert out.shape == (2, config.embed_dim), name
