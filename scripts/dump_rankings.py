"""Dump the shipped model's rankings on the demo index, to check that a refactor changes none.

Runs text -> audio and audio -> text searches for a fixed set of queries, seeds and knob
settings through ``SearchEngine``, and the evaluation scorers over the index's own features,
then writes them as JSON. Run it before and after a change and compare the two files:

    python scripts/dump_rankings.py --out before.json     # on the old code
    python scripts/dump_rankings.py --out after.json      # on the new code
    python scripts/dump_rankings.py --compare before.json after.json

Rankings must be identical; scores may differ by float rounding only (``--atol``). The script
speaks both the API before issue 21 (knobs as keyword arguments) and after it (one
``RetrievalConfig``), so the same file runs on both sides.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

QUERIES = ["birds chirping", "thunder", "a dog barking", "car engine", "footsteps on gravel",
           "glass breaking", "rain on a roof", "a cow mooing"]
AUDIO = ["ovos-rooster", "gcompris-guitar", "0ad-footstep_gravel_walking"]
# (name, knobs): each is run with every seed in SEEDS.
SETTINGS = [
    ("defaults", {}),
    ("steps50", {"num_inference_steps": 50}),
    ("topk8_k20", {"top_k": 8, "k": 20}),
    ("alpha0", {"alpha": 0.0}),
    ("sharp", {"alpha": 5.0, "temperature": 0.01}),
    ("zscore", {"fusion": "zscore", "alpha": 2.0}),
    ("steps1_topk64", {"num_inference_steps": 1, "top_k": 64}),
]
SEEDS = [0, 1, 7]


def _search(engine, direction: str, query, knobs: dict) -> list[dict]:
    knobs = dict(knobs)
    k = knobs.pop("k", 10)
    params = inspect.signature(engine.search_text).parameters
    if "k" in params:  # the API before issue 21
        call = engine.search_text if direction == "text_to_audio" else engine.search_audio
        hits = call(query, k=k, **knobs)[0]
    else:
        from diffatr.config import RetrievalConfig

        config = dataclasses.replace(engine.model.config.retrieval, num_results=k, **knobs)
        assert isinstance(config, RetrievalConfig)
        call = engine.search_text if direction == "text_to_audio" else engine.search_audio
        hits = call(query, config)[0]
    return [{"row": h.row, "clip": h.clip_id, "caption": h.caption if direction == "audio_to_text" else None,
             "fused": h.fused, "cosine": h.cosine, "diffusion": h.diffusion} for h in hits]


def _evaluation(model, index, knobs: dict) -> dict:
    import diffatr.evaluate as ev

    knobs = {k: v for k, v in knobs.items() if k != "k"}
    if hasattr(ev, "resolve_knobs"):  # before issue 21
        matrices = ev.score_matrices(model, index.audio_features, index.text_features, knobs)
    else:
        config = dataclasses.replace(model.config.retrieval, **knobs)
        matrices = ev.score_matrices(model, index.audio_features, index.text_features, config)
    out = {}
    for direction, by_scorer in matrices.items():
        for scorer, scores in by_scorer.items():
            top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :10]
            out[f"{direction}/{scorer}"] = {"top10": top.tolist(),
                                            "sum": float(scores.double().sum())}
    return out


def dump(out: Path) -> None:
    from diffatr.checkpoint import load_checkpoint
    from diffatr.encoders.audio import build_audio_encoder
    from diffatr.encoders.text import TextEncoder
    from diffatr.retrieval import SearchEngine
    from diffatr.retrieval.index import RetrievalIndex
    from diffatr.runtime import default_checkpoint_dir

    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_dir()).eval()
    index = RetrievalIndex.load(ROOT / "assets" / "corpus" / "demo_index")
    engine = SearchEngine(model, index, text_encoder=TextEncoder(model.config.text),
                          audio_encoder=build_audio_encoder(model.config.audio))
    row = {clip: i for i, clip in enumerate(index.clip_ids)}
    audio = [index.paths[row[c]] for c in AUDIO]
    result: dict = {"search": {}, "evaluate": {}}
    for name, knobs in SETTINGS:
        for seed in SEEDS:
            run = dict(knobs, seed=seed)
            for query in QUERIES:
                result["search"][f"{name}/seed{seed}/t2a/{query}"] = _search(engine, "text_to_audio", query, run)
            for clip, path in zip(AUDIO, audio):
                result["search"][f"{name}/seed{seed}/a2t/{clip}"] = _search(engine, "audio_to_text", path, run)
            if seed == 0:
                result["evaluate"][name] = _evaluation(model, index, run)
    out.write_text(json.dumps(result, indent=1, sort_keys=True))
    print(f"wrote {out}: {len(result['search'])} searches, {len(result['evaluate'])} evaluations")


def compare(before: Path, after: Path, atol: float) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    problems, worst = [], 0.0
    for key in sorted(set(a["search"]) | set(b["search"])):
        hits_a, hits_b = a["search"].get(key), b["search"].get(key)
        if hits_a is None or hits_b is None:
            problems.append(f"{key}: only in one file")
            continue
        if [h["row"] for h in hits_a] != [h["row"] for h in hits_b]:
            problems.append(f"{key}: the ranking differs")
            continue
        for ha, hb in zip(hits_a, hits_b):
            for field in ("fused", "cosine", "diffusion"):
                if (ha[field] is None) != (hb[field] is None):
                    problems.append(f"{key}: {field} present in one file only")
                elif ha[field] is not None:
                    worst = max(worst, abs(ha[field] - hb[field]))
    for key in sorted(set(a["evaluate"]) | set(b["evaluate"])):
        ea, eb = a["evaluate"].get(key), b["evaluate"].get(key)
        if ea is None or eb is None:
            problems.append(f"evaluate {key}: only in one file")
            continue
        for matrix in sorted(set(ea) | set(eb)):
            if ea.get(matrix, {}).get("top10") != eb.get(matrix, {}).get("top10"):
                problems.append(f"evaluate {key} {matrix}: the top 10 differs")
            elif abs(ea[matrix]["sum"] - eb[matrix]["sum"]) > atol * 1e4:
                problems.append(f"evaluate {key} {matrix}: scores differ ({ea[matrix]['sum']} vs {eb[matrix]['sum']})")
    if worst > atol:
        problems.append(f"scores differ by up to {worst:.3g} (> {atol:g})")
    print(f"{len(a['search'])} searches and {len(a['evaluate'])} evaluations compared; largest score "
          f"difference {worst:.3g}")
    for line in problems:
        print("  " + line)
    print("same rankings" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the rankings here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--atol", type=float, default=1e-6, help="largest allowed score difference")
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare, args.atol)
    if not args.out:
        parser.error("give --out FILE or --compare BEFORE AFTER")
    dump(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
