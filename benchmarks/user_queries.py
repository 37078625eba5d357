"""What a user sees: the shipped checkpoint's search engine on the two query sets.

- Everyday queries (``benchmarks/queries/everyday.jsonl``, 20 short queries, each with the sound
  classes a user would accept: ``check_queries.accepted``) against the demo index, which holds
  the whole built-in library: the top 3 with a right / wrong verdict for the top 1, by the final
  (fused) ranking, by cosine alone and by the diffusion alone.
- Reworded queries (``benchmarks/queries/reworded.jsonl``: val / test / OOD clips of the first
  release, worded unlike their captions) against the same library: top-1 at clip level and at
  sound-class level, fused, cosine and Gen.
- How often the diffusion changes the top 1 and the top 5, and whether those changes are right.

Uses the engine exactly as ``diffatr search`` does (default knobs of the checkpoint). The shipped
checkpoint has heard every built-in clip, so these numbers say what a user of the demo meets, not
how the model generalises (the generalisation benchmark does that, on a train-only model). Writes
benchmarks/results/user_queries.json and prints the Markdown tables of docs/benchmarks.md.

    DIFFATR_CACHE=/tmp/dcache python benchmarks/user_queries.py [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffatr.checkpoint import load_checkpoint  # noqa: E402
from diffatr.encoders.text import TextEncoder  # noqa: E402
from diffatr.fileio import atomic_write_text  # noqa: E402
from diffatr.machine import cpu_label  # noqa: E402
from diffatr.retrieval.engine import SearchEngine  # noqa: E402
from diffatr.retrieval.index import RetrievalIndex  # noqa: E402
from diffatr.runtime import default_checkpoint_dir, portable_path  # noqa: E402

MANIFEST = ROOT / "assets" / "corpus" / "manifest.csv"
DEMO_INDEX = ROOT / "assets" / "corpus" / "demo_index"
QUERIES = ROOT / "benchmarks" / "queries"


def query_checker():
    """benchmarks/queries/check_queries.py, whose ``accepted`` says which clips answer a query."""
    spec = importlib.util.spec_from_file_location("check_queries", QUERIES / "check_queries.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def everyday_rows(engine: SearchEngine, everyday: list[dict[str, Any]], manifest: dict[str, dict]) -> list[dict[str, Any]]:
    results = ranked(engine, [q["query"] for q in everyday], 3)
    accepted = query_checker().accepted
    rows = []
    for query, hits in zip(everyday, results):
        right = set(accepted(query, manifest))
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


def search_latency(engines: dict[str, SearchEngine], queries: list[str], repeats: int = 3) -> dict[str, dict]:
    """Wall time of one text query as ``diffatr search`` runs it (text encoder, first stage over
    the whole library, the re-rank), one thread, after a warm-up: median and 90th percentile per
    engine, the engines taking turns query by query (so a busy moment of the machine hits both)."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    for engine in engines.values():
        engine.search_text(queries[:1], engine.model.config.retrieval)
    for _ in range(repeats):
        for query in queries:
            for name, engine in engines.items():
                start = time.perf_counter()
                engine.search_text([query], engine.model.config.retrieval)
                times[name].append(1000 * (time.perf_counter() - start))
    out = {}
    for name, values in times.items():
        values.sort()
        out[name] = {"median": round(values[len(values) // 2], 1), "p90": round(values[int(0.9 * (len(values) - 1))], 1),
                     "queries": len(values), "library_clips": len(engines[name].index)}
    return out


def without_expansion(model: Any) -> Any:
    """The same model (shared weights) with known-caption expansion switched off in its settings."""
    plain = copy.copy(model)
    plain.config = dataclasses.replace(model.config, retrieval=dataclasses.replace(model.config.retrieval,
                                                                                   expansion=0.0))
    return plain


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
    demo = RetrievalIndex.load(DEMO_INDEX)  # the whole built-in library
    manifest = {r["clip_id"]: r for r in csv.DictReader(MANIFEST.open(encoding="utf-8"))}
    class_of = {cid: row["sound_class"] for cid, row in manifest.items()}
    everyday = read_jsonl(QUERIES / "everyday.jsonl")
    reworded = read_jsonl(QUERIES / "reworded.jsonl")
    demo_engine = SearchEngine(model, demo, text_encoder=text_encoder)
    rows = everyday_rows(demo_engine, everyday, manifest)
    scores = {f"demo library ({len(demo):,} clips)": reworded_scores(demo_engine, reworded, class_of)}
    result = {"checkpoint": portable_path(checkpoint, ROOT), "knobs": dataclasses.asdict(model.config.retrieval),
              "everyday": rows, "everyday_right": sum(r["right"] for r in rows),
              "everyday_right_by_cosine": sum(r["right_by_cosine"] for r in rows),
              "everyday_top5_changed": sum(r["top5_changed"] for r in rows),
              "reworded": scores}
    mass = generated_mass(demo_engine, [q["query"] for q in everyday + reworded])
    result["generated_top3_mass"] = {"median": sorted(mass)[len(mass) // 2],
                                     "share_over_half": sum(m > 0.5 for m in mass) / len(mass), "queries": len(mass)}
    # The same queries with known-caption expansion off: what it changes for a user.
    plain_engine = SearchEngine(without_expansion(model), demo, text_encoder=text_encoder)
    plain_rows = everyday_rows(plain_engine, everyday, manifest)
    plain_scores = reworded_scores(plain_engine, reworded, class_of)
    result["without_expansion"] = {"everyday_right": sum(r["right"] for r in plain_rows),
                                   "everyday_wrong": [r["query"] for r in plain_rows if not r["right"]],
                                   "reworded": plain_scores}
    latency = search_latency({"expansion": demo_engine, "no expansion": plain_engine},
                             [q["query"] for q in everyday])
    result["latency_ms"], result["without_expansion"]["latency_ms"] = latency["expansion"], latency["no expansion"]
    result["machine"] = cpu_label()
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
    plain = result["without_expansion"]
    print(f"without known-caption expansion: everyday right {plain['everyday_right']} of {len(rows)} (wrong: "
          f"{', '.join(plain['everyday_wrong']) or 'none'}); reworded, fused class R@1 (all) "
          f"{plain['reworded']['all/fused/class']:.1f}")
    lat, lat0 = result["latency_ms"], plain["latency_ms"]
    print(f"one text query on the {lat['library_clips']:,}-clip library: median {lat['median']} ms, p90 {lat['p90']} ms "
          f"(without expansion: {lat0['median']} / {lat0['p90']} ms; {result['machine']}, one thread)")
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
