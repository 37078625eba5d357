"""First-stage stores at scale: build time, size, memory, latency and recall against exact search.

Collections of N synthetic clips in the shipped model's shared space, drawn to look like the
real corpus: each synthetic vector is a real clip embedding (the corpus's train / val / test
audio through the default checkpoint) plus Gaussian noise scaled so that its cosine to the
source is about 0.8, then L2-normalised; queries are real caption embeddings of the test split
plus the same noise. For each store configuration: build time (including FAISS training), size
on disk, process memory (RSS) after loading the saved store, query latency p50 / p95 for one
query and for batches of 32, and recall@32 of the first stage against exact search. On the real
corpus (test split, N = its clips) every store's first stage feeds the diffusion re-rank and the
final R@1 / R@10 is compared with exact + re-rank.

Writes benchmarks/results/scale.json and prints a markdown table.

    DIFFATR_CACHE=/tmp/dcache python benchmarks/scale.py --sizes 100000 1000000 \
        --large-stores exact "faiss HNSW32,SQ8" "faiss IVF-PQ + SQ8 refine"
    DIFFATR_CACHE=/tmp/dcache python benchmarks/scale.py --merge --sizes --huge 10000000   # ~8 min, 10 GB
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffatr.checkpoint import load_checkpoint  # noqa: E402
from diffatr.fileio import atomic_write_text  # noqa: E402
from diffatr.metrics import retrieval_metrics  # noqa: E402
from diffatr.retrieval.stores.backends import StoreConfig, build_store, load_store  # noqa: E402
from diffatr.retrieval.rerank import rerank_topk  # noqa: E402

K = 32
PAPER_STEPS = 50  # the re-rank is also timed at the paper's DDIM steps (the checkpoint runs its own)
# name -> (store config, the sizes it runs at)
STORES: dict[str, StoreConfig] = {
    "exact": StoreConfig("exact"),
    "faiss HNSW32": StoreConfig("faiss", faiss_factory="HNSW32", faiss_ef_search=128),
    "faiss HNSW32,SQ8": StoreConfig("faiss", faiss_factory="HNSW32,SQ8", faiss_ef_search=128),
    "faiss IVF-PQ": StoreConfig("faiss", faiss_factory="IVF1024,PQ48", faiss_nprobe=64),
    "faiss IVF-PQ + SQ8 refine": StoreConfig("faiss", faiss_factory="IVF1024,PQ48,Refine(SQ8)", faiss_nprobe=16,
                                             faiss_refine=32),
    "milvus lite (FLAT)": StoreConfig("milvus", milvus_index="FLAT"),
}
# Search-time knobs swept on the built index (no rebuild): store -> {knob: values}.
SWEEPS: dict[str, dict[str, list[int]]] = {
    "faiss HNSW32": {"faiss_ef_search": [64, 256, 512, 1024]},
    "faiss HNSW32,SQ8": {"faiss_ef_search": [256, 512, 1024]},
    "faiss IVF-PQ + SQ8 refine": {"faiss_refine": [4, 16, 24, 64], "faiss_nprobe": [8, 32, 64]},
}
MAX_SIZE = {"milvus lite (FLAT)": 100_000}  # Milvus Lite inserts row by row through gRPC: slow past this


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def corpus_embeddings() -> dict[str, Any]:
    """The shipped checkpoint's shared-space embeddings of the corpus (audio of every split, the
    test split's captions)."""
    spec = importlib.util.spec_from_file_location("generalisation_bench", ROOT / "benchmarks" / "generalisation.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    model = load_checkpoint(ROOT / "checkpoints" / "default").eval()
    feats = bench.corpus_features(model.config, ("train", "val", "test"))
    with torch.no_grad():
        audio = torch.cat([model.project_audio(feats[s].audio) for s in ("train", "val", "test")])
        test_audio, test_text = model.project_audio(feats["test"].audio), model.project_text(feats["test"].text)
    return {"model": model, "audio": audio, "test_audio": test_audio, "test_text": test_text,
            "test_labels": feats["test"].caption_to_clip}


def synthetic(base: torch.Tensor, n: int, seed: int, cosine: float = 0.8) -> torch.Tensor:
    """n unit vectors, each a random row of ``base`` plus noise (cosine to it ~ ``cosine``)."""
    g = torch.Generator().manual_seed(seed)
    d = base.shape[1]
    sigma = float(np.sqrt((1 / cosine**2 - 1) / d))  # |noise|^2 ~ d sigma^2 = 1/c^2 - 1
    out = torch.empty(n, d)
    for start in range(0, n, 100_000):
        stop = min(start + 100_000, n)
        rows = base[torch.randint(0, base.shape[0], (stop - start,), generator=g)]
        out[start:stop] = F.normalize(rows + sigma * torch.randn(stop - start, d, generator=g), dim=-1)
    return out


def latency_ms(store, queries: torch.Tensor, batch: int, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        start = (i * batch) % max(1, queries.shape[0] - batch)
        q = queries[start : start + batch]
        t0 = time.perf_counter()
        store.search(q, K)
        times.append((time.perf_counter() - t0) * 1000 / batch)  # per query
    return times


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


def rerank_ms(store, queries: torch.Tensor, model: Any, repeats: int, batch: int = 1,
              steps: int | None = None) -> dict[str, list[float]]:
    """``batch`` queries at a time: the store's top K, their exact vectors, the diffusion
    re-rank (the checkpoint's DDIM steps, or ``steps``). Milliseconds per query, each part
    timed inside the same run so that all come from the same queries at the same moment:
    "search" (the first stage), "vectors" (reading the K exact vectors), "rerank" (the vectors
    and the DDIM steps) and "total"."""
    knobs = model.config.retrieval
    steps = knobs.num_inference_steps if steps is None else steps
    denoiser, scheduler = model.denoisers["text_to_audio"], model.make_scheduler()
    times: dict[str, list[float]] = {"search": [], "vectors": [], "rerank": [], "total": []}
    for i in range(repeats):
        start = (i * batch) % max(1, queries.shape[0] - batch + 1)
        q = queries[start : start + batch]  # (B, D)
        t0 = time.perf_counter()
        scores, ids = store.search(q, knobs.top_k)  # (B, K)
        t1 = time.perf_counter()
        candidates = store.vectors(ids).reshape(-1, q.shape[1])  # (B K, D): each query's own rows
        t2 = time.perf_counter()
        rows = torch.arange(candidates.shape[0]).view(ids.shape)  # (B, K)
        rerank_topk(q, candidates, scores, rows, denoiser, scheduler,
                    dataclasses.replace(knobs, num_inference_steps=steps))
        t3 = time.perf_counter()
        for key, seconds in (("search", t1 - t0), ("vectors", t2 - t1), ("rerank", t3 - t1), ("total", t3 - t0)):
            times[key].append(seconds * 1000 / batch)
    return times


def run_size(n: int, emb: dict[str, Any], names: list[str], work: Path, repeats: int,
             large: list[str] | None = None) -> dict[str, Any]:
    vectors = synthetic(emb["audio"], n, seed=n)
    queries = synthetic(emb["test_text"], 512, seed=1, cosine=0.9)
    ids = np.arange(n, dtype=np.int64)
    exact = build_store(StoreConfig("exact"), vectors, ids)
    truth = exact.search(queries, K)[1].numpy()
    del exact
    out: dict[str, Any] = {}
    for name in names:
        if n > MAX_SIZE.get(name, 10**12):
            out[name] = {"skipped": f"not run above {MAX_SIZE[name]:,} vectors"}
            continue
        if n > 100_000 and large is not None and name not in large:
            out[name] = {"skipped": "not in --large-stores for this run"}
            continue
        log(f"N = {n:,}: {name}")
        folder = work / f"{name.replace(' ', '_')}-{n}"
        gc.collect()
        t0 = time.perf_counter()
        store = build_store(STORES[name], vectors, ids)
        store.save(folder)
        build_s = time.perf_counter() - t0
        del store
        gc.collect()
        before = rss_mb()
        store = load_store(folder)
        store.search(queries[:1], K)  # warm-up (an exact store reads its table here)
        loaded = rss_mb() - before
        found = store.search(queries, K)[1].numpy()
        recall = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))
        one = latency_ms(store, queries, 1, repeats)
        batch = latency_ms(store, queries, 32, max(5, repeats // 10))
        out[name] = {"build_s": round(build_s, 1), "disk_mb": round(folder_mb(folder), 1),
                     "memory_mb": round(loaded, 1), "recall@32": round(recall, 4),
                     "p50_ms": round(pct(one, 50), 2), "p95_ms": round(pct(one, 95), 2),
                     "batch32_p50_ms_per_query": round(pct(batch, 50), 3)}
        one = rerank_ms(store, queries, emb["model"], max(100, repeats))
        out[name].update({"with_rerank_p50_ms": round(pct(one["total"], 50), 2),
                          "rerank_p50_ms": round(pct(one["rerank"], 50), 2),
                          "rerank_p95_ms": round(pct(one["rerank"], 95), 2),
                          "rerank_search_p50_ms": round(pct(one["search"], 50), 2),
                          "rerank_vectors_p50_ms": round(pct(one["vectors"], 50), 3),
                          "rerank_steps": emb["model"].config.retrieval.num_inference_steps})
        paper = rerank_ms(store, queries, emb["model"], max(100, repeats), steps=PAPER_STEPS)
        out[name]["rerank_p50_ms_paper_steps"] = round(pct(paper["rerank"], 50), 2)
        out[name]["rerank_search_p50_ms_paper_steps"] = round(pct(paper["search"], 50), 2)
        batched = rerank_ms(store, queries, emb["model"], max(5, repeats // 10), batch=32)
        out[name]["with_rerank_batch32_ms_per_query"] = round(pct(batched["total"], 50), 3)
        out[name]["rerank_batch32_ms_per_query"] = round(pct(batched["rerank"], 50), 3)
        log(f"  {out[name]}")
        if name in SWEEPS:  # the search-time knob that trades recall for speed, same index
            out[name]["sweep"] = []
            for knob, values in SWEEPS[name].items():
                for value in values:
                    store.config = dataclasses.replace(STORES[name], **{knob: value})
                    found = store.search(queries, K)[1].numpy()
                    r = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))
                    times = latency_ms(store, queries, 1, max(20, repeats // 4))
                    out[name]["sweep"].append({knob: value, "recall@32": round(r, 4), "p50_ms": round(pct(times, 50), 2),
                                               "p95_ms": round(pct(times, 95), 2)})
                    log(f"    {out[name]['sweep'][-1]}")
        del store
        shutil.rmtree(folder, ignore_errors=True)
    return out


# 10M clips: the fp32 vectors alone are 15 GB (384-d), and the store keeps an fp32 copy of
# every vector for the re-rank beside its index, more than this 24 GB machine holds with the
# ground truth. So this run drives the faiss store's own index code (``FaissStore._add``
# trains on a seeded sample, then adds with ids; ``_tune`` sets the knobs) chunk by chunk,
# and computes exact search chunk by chunk. The re-rank's cost does not depend on N (it
# reads K rows), so the 1M rows stand for it.
HUGE_STORE = StoreConfig("faiss", faiss_factory="IVF4096_HNSW32,PQ96,Refine(SQfp16)", faiss_nprobe=64,
                         faiss_refine=32, faiss_train_size=200_000)
HUGE_SWEEP = [{"faiss_nprobe": 16}, {"faiss_nprobe": 32}, {"faiss_nprobe": 128},
              {"faiss_refine": 64}, {"faiss_refine": 128}, {"faiss_refine": 256}, {"faiss_refine": 512},
              {"faiss_nprobe": 32, "faiss_refine": 128}, {"faiss_nprobe": 32, "faiss_refine": 256}]
HUGE_CHUNK = 500_000


def run_huge(n: int, emb: dict[str, Any], work: Path, repeats: int, config: StoreConfig = HUGE_STORE,
             chunk_size: int = HUGE_CHUNK, sweep: list[dict[str, int]] = HUGE_SWEEP) -> dict[str, Any]:
    """One FAISS configuration at ``n`` vectors, built and checked in chunks (see HUGE_STORE)."""
    from diffatr.retrieval.stores.backends import FaissStore

    queries = synthetic(emb["test_text"], 256, seed=1, cosine=0.9)
    store = FaissStore(config, queries.shape[1])
    best_s = torch.full((queries.shape[0], K), -float("inf"))
    best_i = torch.zeros(queries.shape[0], K, dtype=torch.int64)
    before = rss_mb()
    t0 = time.perf_counter()
    exact_s = 0.0
    for chunk, start in enumerate(range(0, n, chunk_size)):
        stop = min(start + chunk_size, n)
        vectors = synthetic(emb["audio"], stop - start, seed=n + chunk)  # (c, D), the same for every run
        store._add(vectors.numpy(), np.arange(start, stop, dtype=np.int64))
        t1 = time.perf_counter()
        scores = queries @ vectors.T  # (Q, c): exact search, chunk by chunk
        s, i = torch.cat([best_s, scores], 1).topk(K, dim=1)
        best_i = torch.cat([best_i, torch.arange(start, stop).expand(queries.shape[0], -1)], 1).gather(1, i)
        best_s = s
        exact_s += time.perf_counter() - t1
        log(f"  {stop:,} vectors, {time.perf_counter() - t0 - exact_s:.0f} s")
    build_s = time.perf_counter() - t0 - exact_s
    memory = rss_mb() - before
    path = work / "huge.index"
    store.faiss.write_index(store._index, str(path))
    truth = best_i.numpy()

    def measure(config: StoreConfig) -> dict[str, Any]:
        store.config = config
        store._tune()
        found = store._index.search(queries.numpy(), K)[1]
        recall = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))
        one, batch = [], []
        for i in range(repeats):
            q = queries.numpy()[i % queries.shape[0]][None]
            t1 = time.perf_counter()
            store._index.search(q, K)
            one.append((time.perf_counter() - t1) * 1000)
        for i in range(max(5, repeats // 10)):
            q = queries.numpy()[(i * 32) % (queries.shape[0] - 32):][:32]
            t1 = time.perf_counter()
            store._index.search(q, K)
            batch.append((time.perf_counter() - t1) * 1000 / 32)
        return {"recall@32": round(recall, 4), "p50_ms": round(pct(one, 50), 2), "p95_ms": round(pct(one, 95), 2),
                "batch32_p50_ms_per_query": round(pct(batch, 50), 3)}

    out = {"n": n, "store": vars(config), "build_s": round(build_s, 1), "exact_search_s": round(exact_s, 1),
           "disk_mb": round(path.stat().st_size / 2**20, 1), "memory_mb": round(memory, 1),
           **measure(config), "sweep": []}
    log(f"  {out}")
    for knobs in sweep:
        out["sweep"].append({**knobs, **measure(dataclasses.replace(config, **knobs))})
        log(f"    {out['sweep'][-1]}")
    path.unlink()
    return out


def rerank_on_corpus(emb: dict[str, Any], names: list[str], work: Path) -> dict[str, Any]:
    """Each store's first stage + the diffusion re-rank on the real test split (text -> audio)."""
    model = emb["model"]
    audio, text, labels = emb["test_audio"], emb["test_text"], emb["test_labels"]
    denoiser, scheduler = model.denoisers["text_to_audio"], model.make_scheduler()
    knobs = model.config.retrieval
    out = {}
    for name in names:
        store = build_store(STORES[name] if not name.startswith("faiss IVF") else
                            StoreConfig("faiss", faiss_factory="IVF16,Flat", faiss_nprobe=4), audio,
                            np.arange(audio.shape[0]))
        store.save(work / "corpus")
        store = load_store(work / "corpus")
        top_scores, top_ids = store.search(text, knobs.top_k)
        result = rerank_topk(text, audio, top_scores, top_ids, denoiser, scheduler, knobs)
        scores = torch.full((text.shape[0], audio.shape[0]), -1e9).scatter(1, result.indices, result.fused)
        metrics = retrieval_metrics(scores, None, labels)
        out[name] = {k: round(metrics[f"text_to_audio/{k}"], 2) for k in ("R@1", "R@10")}
        shutil.rmtree(work / "corpus", ignore_errors=True)
    return out


def rerank_share(row: dict[str, Any], steps: str = "") -> str:
    """What the re-rank adds to one query, e.g. "+1.41 ms (+45%)": its p50 against the p50 of
    the first stage timed in the same run (``steps`` = "_paper_steps" for the 50-step run)."""
    if f"rerank_p50_ms{steps}" not in row:
        return ""
    added, first = row[f"rerank_p50_ms{steps}"], row.get(f"rerank_search_p50_ms{steps}", row["p50_ms"])
    return f"+{added:.2f} ms ({added / first:+.0%})"


def table(results: dict[str, Any]) -> str:
    lines = ["| N | store | build (s) | disk (MB) | memory (MB) | recall@32 | p50 / p95 (ms, one query) | "
             "ms / query (batch 32) | with re-rank, p50 (ms) | re-rank adds | re-rank adds, 50 steps | "
             "with re-rank, ms / query (batch 32) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, rows in results["sizes"].items():
        for name, r in rows.items():
            if "skipped" in r:
                lines.append(f"| {int(n):,} | {name} | {r['skipped']} ||||||||||")
                continue
            lines.append(f"| {int(n):,} | {name} | {r['build_s']} | {r['disk_mb']} | {r['memory_mb']} | "
                         f"{r['recall@32']:.3f} | {r['p50_ms']} / {r['p95_ms']} | {r['batch32_p50_ms_per_query']} | "
                         f"{r['with_rerank_p50_ms']} | {rerank_share(r)} | {rerank_share(r, '_paper_steps')} | "
                         f"{r.get('with_rerank_batch32_ms_per_query', '')} |")
            for point in r.get("sweep", []):
                knob = next(k for k in point if k.startswith("faiss_"))
                lines.append(f"| | ↳ {knob[6:]} = {point[knob]} | | | | {point['recall@32']:.3f} | "
                             f"{point['p50_ms']} / {point['p95_ms']} | | | | | |")
    return "\n".join(lines)


def huge_table(results: dict[str, Any]) -> str:
    """The chunked runs: one row per knob setting on the same index."""
    lines = ["| N | factory | nprobe | refine | recall@32 | p50 / p95 (ms, one query) | ms / query (batch 32) |",
             "|---|---|---|---|---|---|---|"]
    for r in results.get("huge", []):
        n, base = r["n"], r["store"]
        for point in [{}, *r["sweep"]]:
            row = r if not point else point
            nprobe, refine = point.get("faiss_nprobe", base["faiss_nprobe"]), point.get("faiss_refine", base["faiss_refine"])
            lines.append(f"| {int(n):,} | {base['faiss_factory']} | {nprobe} | {refine} | {row['recall@32']:.3f} | "
                         f"{row['p50_ms']} / {row['p95_ms']} | {row['batch32_p50_ms_per_query']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--stores", nargs="+", default=list(STORES), choices=list(STORES))
    parser.add_argument("--repeats", type=int, default=200, help="single-query searches timed per store")
    parser.add_argument("--large-stores", nargs="+", default=None, choices=list(STORES),
                        help="the stores run above 100k vectors (default: all that fit)")
    parser.add_argument("--huge", type=int, default=None,
                        help="also run HUGE_STORE alone at this many vectors, in chunks (e.g. 10000000)")
    parser.add_argument("--huge-factory", default=None,
                        help=f"the FAISS factory of the --huge run (default {HUGE_STORE.faiss_factory})")
    parser.add_argument("--merge", action="store_true",
                        help="update only the rows run now in an existing --out (keeps the others and the "
                             "real-corpus re-rank)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    started = time.time()
    emb = corpus_embeddings()
    results: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": args.threads, "load_average_at_start": os.getloadavg()},
        "dim": int(emb["audio"].shape[1]), "k": K,
        "stores": {name: vars(STORES[name]) for name in args.stores}, "sizes": {}}
    if args.merge and args.out.is_file():
        old = json.loads(args.out.read_text())
        results = {**old, "machine": results["machine"], "stores": {**old.get("stores", {}), **results["stores"]}}
    with tempfile.TemporaryDirectory(prefix="diffatr-scale-") as tmp:
        work = Path(tmp)
        for n in args.sizes:
            rows = run_size(n, emb, args.stores, work, args.repeats, args.large_stores)
            results["sizes"][str(n)] = {**results["sizes"].get(str(n), {}), **rows} if args.merge else rows
        if not args.merge or "rerank_on_corpus_test" not in results:
            results["rerank_on_corpus_test"] = rerank_on_corpus(emb, args.stores, work)
        if args.huge:
            config = dataclasses.replace(HUGE_STORE, faiss_factory=args.huge_factory or HUGE_STORE.faiss_factory)
            log(f"N = {args.huge:,}: {config.faiss_factory}, in chunks")
            run = run_huge(args.huge, emb, work, args.repeats, config=config)
            # one entry per (N, factory): a rerun replaces its own entry only
            results["huge"] = [r for r in results.get("huge", []) if isinstance(r, dict) and
                               (r.get("n"), r["store"]["faiss_factory"]) != (args.huge, config.faiss_factory)] + [run]
    results["load_average_at_end"] = os.getloadavg()
    results["seconds"] = round(time.time() - started, 1)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(table(results))
    if results.get("huge"):
        print("\n" + huge_table(results))
    print("\nfirst stage + re-rank on the real test split (text -> audio):",
          json.dumps(results["rerank_on_corpus_test"]))
    print(f"\n{results['seconds']:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
