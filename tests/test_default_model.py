"""The shipped checkpoint on the shipped demo corpus: what a new user tries first must work.

The app's placeholder and first examples (``diffatr.demo.EXAMPLE_QUERIES`` / ``EXAMPLE_AUDIO``)
are queries and clips the default model gets right at top 1; a retrained checkpoint that gets
one wrong fails here, so the examples are changed with it. The verdicts come from the
hand-written acceptance rules of ``benchmarks/queries/everyday.jsonl`` (the sound classes a
user would accept) and the corpus's sound classes, never from a model's output.
"""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from diffatr.checkpoint import load_checkpoint
from diffatr.runtime import default_checkpoint_dir
from diffatr.demo import EXAMPLE_AUDIO, EXAMPLE_QUERIES, PLACEHOLDER_QUERY
from diffatr.encoders.text import TextEncoder
from diffatr.retrieval.engine import SearchEngine
from diffatr.retrieval.index import RetrievalIndex

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "assets" / "corpus"


@pytest.fixture(scope="module")
def engine():
    model = load_checkpoint(default_checkpoint_dir()).eval()
    return SearchEngine(model, RetrievalIndex.load(CORPUS / "demo_index"), text_encoder=TextEncoder(model.config.text))


@pytest.fixture(scope="module")
def sound_class():
    with (CORPUS / "manifest.csv").open(encoding="utf-8") as handle:
        return {row["clip_id"]: row["sound_class"] for row in csv.DictReader(handle)}


def _accepted_clips() -> dict[str, set[str]]:
    """Everyday query -> the corpus clips it accepts (the query checker's rule)."""
    spec = importlib.util.spec_from_file_location("check_queries", ROOT / "benchmarks" / "queries" / "check_queries.py")
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    manifest = checker.load_manifest()
    lines = (ROOT / "benchmarks" / "queries" / "everyday.jsonl").read_text().splitlines()
    return {q["query"]: set(checker.accepted(q, manifest)) for q in map(json.loads, lines)}


def test_example_queries_and_the_placeholder_are_right_at_top_1(engine):
    everyday = _accepted_clips()
    assert PLACEHOLDER_QUERY in EXAMPLE_QUERIES
    queries = list(EXAMPLE_QUERIES)
    for query, hits in zip(queries, engine.search_text(queries, engine.model.config.with_retrieval(num_results=1))):
        # every example is an everyday query, judged by its hand-written list of right clips
        assert hits[0].clip_id in everyday[query], (query, hits[0].clip_id)
        assert EXAMPLE_QUERIES[query] in everyday[query]


def test_example_clips_find_captions_of_their_own_sound(engine, sound_class):
    ids = engine.index.clip_ids
    rows = [ids.index(clip) for clip in EXAMPLE_AUDIO]
    results = engine.search_audio_embeds(engine.index.audio_features[rows], engine.model.config.with_retrieval(num_results=1))
    for clip, hits in zip(EXAMPLE_AUDIO, results):
        assert sound_class[hits[0].clip_id] == sound_class[clip], (clip, hits[0].caption)
