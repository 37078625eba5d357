"""What a user sees: the shipped checkpoint's search engine on the two query sets.

- Everyday queries (``benchmarks/queries/everyday.jsonl``, 20 short queries with every demo clip
  a user would accept) against the 194-clip demo index: the top 3 with a right / wrong verdict
  for the top 1, by the final (fused) ranking and by cosine alone.
- Reworded queries (``benchmarks/queries/reworded.jsonl``: val / test / OOD clips, worded unlike
  their captions) against the demo index and the full corpus (1,195 clips): top-1 at clip
  level and at sound-class level, fused and cosine.
- How often the diffusion changes the top 1 and the top 5, and whether those changes are right.

Uses the engine exactly as ``diffatr search`` does (default knobs of the checkpoint). Writes
benchmarks/results/user_queries.json and prints the README's Markdown tables.

    DIFFATR_CACHE=/tmp/dcache python benchmarks/user_queries.py [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffatr.checkpoint import load_checkpoint  # noqa: E402
from diffatr.data.datasets import load_split  # noqa: E402
from diffatr.encoders.audio import build_audio_encoder  # noqa: E402
from diffatr.encoders.cache import FeatureCache  # noqa: E402
from diffatr.encoders.text import TextEncoder  # noqa: E402
from diffatr.fileio import atomic_write_text  # noqa: E402
from diffatr.indexing import build_index, default_cache_dir  # noqa: E402
from diffatr.retrieval.engine import SearchEngine  # noqa: E402
from diffatr.retrieval.index import RetrievalIndex  # noqa: E402
from diffatr.runtime import default_checkpoint_dir  # noqa: E402

MANIFEST = ROOT / "assets" / "corpus" / "manifest.csv"
DEMO_INDEX = ROOT / "assets" / "corpus" / "demo_index"
QUERIES = ROOT / "benchmarks" / "queries"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def by_cosine(hits: list) -> list:
    return sorted(hits, key=lambda h: h.cosine_rank)


def ranked(engine: SearchEngine, queries: list[str], k: int) -> list[list]:
    """The top ``k`` hits of each query (fused ranking; each hit knows its cosine rank)."""
    defaults = engine.model.config.retrieval
    return engine.search_text(queries, engine.model.config.with_retrieval(num_results=max(k, defaults.top_k)))


def top1(hits: list, cosine: bool) -> Any:
    return (by_cosine(hits) if cosine else hits)[0]


def gen_top1(hits: list) -> Any:
    """The diffusion's own first choice: the re-ranked hit with the largest diffusion term
    (monotone in x̂0), ties in cosine order."""
    reranked = [h for h in by_cosine(hits) if h.diffusion is not None and h.diffusion == h.diffusion]
    return max(reranked, key=lambda h: h.diffusion)


def everyday_rows(engine: SearchEngine, everyday: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = ranked(engine, [q["query"] for q in everyday], 3)
    rows = []
    for query, hits in zip(everyday, results):
        right = set(query["correct"])
        rows.append({
            "query": query["query"],
            "top3": [{"clip_id": h.clip_id, "caption": h.caption, "moved": h.moved} for h in hits[:3]],
            "right": hits[0].clip_id in right,
            "right_by_cosine": top1(hits, True).clip_id in right,
            "right_by_gen": gen_top1(hits).clip_id in right,
            "top5_changed": [h.clip_id for h in hits[:5]] != [h.clip_id for h in by_cosine(hits)[:5]],
        })
    return rows


def reworded_scores(engine: SearchEngine, reworded: list[dict[str, Any]], class_of: dict[str, str]) -> dict[str, Any]:
    results = ranked(engine, [q["query"] for q in reworded], 5)
    out: dict[str, Any] = {}
    for split in ("val", "test", "ood", "all"):
        picked = [(q, hits) for q, hits in zip(reworded, results) if split == "all" or q["split"] == split]
        for scorer in ("fused", "cosine", "gen"):
            best = [(q, gen_top1(hits) if scorer == "gen" else top1(hits, scorer == "cosine")) for q, hits in picked]
            out[f"{split}/{scorer}/clip"] = 100.0 * sum(h.clip_id == q["clip_id"] for q, h in best) / len(best)
            out[f"{split}/{scorer}/class"] = 100.0 * sum(class_of.get(h.clip_id) == q["sound_class"] for q, h in best) / len(best)
        out[f"{split}/count"] = len(picked)
    changed = [(q, hits) for q, hits in zip(reworded, results) if top1(hits, False).clip_id != top1(hits, True).clip_id]
    out["top1_changed"] = len(changed)
    out["top1_changed_right_class"] = sum(class_of.get(top1(h, False).clip_id) == q["sound_class"] for q, h in changed)
    out["top1_changed_cosine_right_class"] = sum(class_of.get(top1(h, True).clip_id) == q["sound_class"] for q, h in changed)
    out["top5_changed"] = sum([h.clip_id for h in hits[:5]] != [h.clip_id for h in by_cosine(hits)[:5]] for _, hits in
                              zip(reworded, results))
    return out


def generated_mass(engine: SearchEngine, queries: list[str]) -> list[float]:
    """Per query, the share of the generated distribution softmax(x̂0 x CE scale) (what the app
    plots at x_0) on its 3 most likely candidates."""
    features = engine.text_encoder.encode(queries)
    result = engine.rank("text_to_audio", features, engine.model.config.retrieval)
    top_k = result.settings["top_k"]
    x0 = result.x0[:, :top_k].double()  # (Q, K): the re-ranked candidates
    probs = torch.softmax(engine.model.config.diffusion.ce_scale * x0, dim=-1)
    return probs.topk(min(3, top_k), dim=-1).values.sum(dim=-1).tolist()


def everyday_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| query | top 3 (clip id: its first caption) | top 1 |", "|---|---|---|"]
    for row in rows:
        top = "; ".join(f"{h['clip_id']}: {h['caption']}" for h in row["top3"])
        lines.append(f"| {row['query']} | {top} | {'right' if row['right'] else 'wrong'} |")
    lines.append(f"| **right at top 1** | | **{sum(r['right'] for r in rows)} of {len(rows)}** "
                 f"(cosine alone: {sum(r['right_by_cosine'] for r in rows)}; the diffusion alone, Gen: "
                 f"{sum(r['right_by_gen'] for r in rows)}) |")
    return "\n".join(lines)


def reworded_table(scores: dict[str, dict[str, Any]]) -> str:
    lines = ["| gallery | queries | fused: clip / class R@1 | cosine: clip / class R@1 | Gen: clip / class R@1 |",
             "|---|---|---|---|---|"]
    for where, res in scores.items():
        for split in ("val", "test", "ood", "all"):
            cells = " | ".join(f"{res[f'{split}/{s}/clip']:.1f} / {res[f'{split}/{s}/class']:.1f}"
                               for s in ("fused", "cosine", "gen"))
            lines.append(f"| {where} | {split} ({res[f'{split}/count']}) | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "user_queries.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    checkpoint = args.checkpoint or default_checkpoint_dir()
    model = load_checkpoint(checkpoint).eval()
    text_encoder = TextEncoder(model.config.text)
    audio_encoder = build_audio_encoder(model.config.audio)
    demo = RetrievalIndex.load(DEMO_INDEX)
    records = load_split(MANIFEST).records
    full, _ = build_index(records, audio_encoder, text_encoder,
                          cache=FeatureCache(default_cache_dir(), dataclasses.asdict(model.config.audio)),
                          progress=False)
    class_of = {r.clip_id: r.metadata.get("sound_class") for r in records}
    everyday = read_jsonl(QUERIES / "everyday.jsonl")
    reworded = read_jsonl(QUERIES / "reworded.jsonl")
    demo_engine = SearchEngine(model, demo, text_encoder=text_encoder)
    full_engine = SearchEngine(model, full, text_encoder=text_encoder)
    rows = everyday_rows(demo_engine, everyday)
    scores = {"demo index (194 clips)": reworded_scores(demo_engine, reworded, class_of),
              "full corpus (1,195 clips)": reworded_scores(full_engine, reworded, class_of)}
    result = {"checkpoint": str(checkpoint), "knobs": dataclasses.asdict(model.config.retrieval),
              "everyday": rows, "everyday_right": sum(r["right"] for r in rows),
              "everyday_right_by_cosine": sum(r["right_by_cosine"] for r in rows),
              "everyday_top5_changed": sum(r["top5_changed"] for r in rows),
              "reworded": scores}
    mass = generated_mass(demo_engine, [q["query"] for q in everyday + reworded])
    result["generated_top3_mass"] = {"median": sorted(mass)[len(mass) // 2],
                                     "share_over_half": sum(m > 0.5 for m in mass) / len(mass), "queries": len(mass)}
    result["seconds"] = round(time.time() - started, 1)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(everyday_table(rows))
    print()
    print(reworded_table(scores))
    print(f"\neveryday: top 5 changed by the diffusion for {result['everyday_top5_changed']} of {len(rows)}; "
          + "; ".join(f"{w}: top 1 changed for {s['top1_changed']} reworded queries ({s['top1_changed_right_class']} "
                      f"right class after, {s['top1_changed_cosine_right_class']} before), top 5 for {s['top5_changed']}"
                      for w, s in scores.items()))
    mass = result["generated_top3_mass"]
    print(f"generated distribution at x_0 (softmax(x0 * CE scale), demo index): its top 3 candidates hold more than "
          f"half the mass for {100 * mass['share_over_half']:.0f}% of the {mass['queries']} queries (median "
          f"{mass['median']:.2f})")
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
