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

    DIFFATR_CACHE=/tmp/dcache python benchmarks/scale.py --sizes 100000 1000000
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
from diffatr.retrieval.backends import StoreConfig, build_store, load_store  # noqa: E402
from diffatr.retrieval.engine import rerank_topk  # noqa: E402

K = 32
# name -> (store config, the sizes it runs at)
STORES: dict[str, StoreConfig] = {
    "exact": StoreConfig("exact"),
    "faiss HNSW32": StoreConfig("faiss", faiss_factory="HNSW32", faiss_ef_search=128),
    "faiss HNSW32,SQ8": StoreConfig("faiss", faiss_factory="HNSW32,SQ8", faiss_ef_search=128),
    "faiss IVF-PQ": StoreConfig("faiss", faiss_factory="IVF1024,PQ48", faiss_nprobe=64),
    "faiss IVF-PQ + SQ8 refine": StoreConfig("faiss", faiss_factory="IVF1024,PQ48,Refine(SQ8)", faiss_nprobe=64,
                                             faiss_refine=4),
    "milvus lite (FLAT)": StoreConfig("milvus", milvus_index="FLAT"),
}
# Search-time knobs swept on the built index (no rebuild): store -> {knob: values}.
SWEEPS: dict[str, dict[str, list[int]]] = {
    "faiss HNSW32": {"faiss_ef_search": [64, 256, 512, 1024]},
    "faiss HNSW32,SQ8": {"faiss_ef_search": [256, 512, 1024]},
    "faiss IVF-PQ + SQ8 refine": {"faiss_refine": [16, 24, 32, 64]},
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


def rerank_ms(store, queries: torch.Tensor, model: Any, repeats: int) -> list[float]:
    """One query at a time: the store's top K, their exact vectors, the diffusion re-rank."""
    knobs = model.config.retrieval
    denoiser, scheduler = model.denoisers["text_to_audio"], model.make_scheduler()
    times = []
    for i in range(repeats):
        q = queries[i % queries.shape[0]][None]
        t0 = time.perf_counter()
        scores, ids = store.search(q, knobs.top_k)
        candidates = store.vectors(ids[0])  # (K, D)
        rerank_topk(q, candidates, scores, torch.arange(ids.shape[1])[None], denoiser, scheduler,
                    num_inference_steps=knobs.num_inference_steps, alpha=knobs.alpha,
                    temperature=knobs.temperature, seed=knobs.seed, fusion=knobs.fusion)
        times.append((time.perf_counter() - t0) * 1000)
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
        with_rerank = rerank_ms(store, queries, emb["model"], max(20, repeats // 4))
        out[name]["with_rerank_p50_ms"] = round(pct(with_rerank, 50), 2)
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
        result = rerank_topk(text, audio, top_scores, top_ids, denoiser, scheduler,
                             num_inference_steps=knobs.num_inference_steps, alpha=knobs.alpha,
                             temperature=knobs.temperature, seed=knobs.seed, fusion=knobs.fusion)
        scores = torch.full((text.shape[0], audio.shape[0]), -1e9).scatter(1, result.indices, result.fused)
        metrics = retrieval_metrics(scores, None, labels)
        out[name] = {k: round(metrics[f"text_to_audio/{k}"], 2) for k in ("R@1", "R@10")}
        shutil.rmtree(work / "corpus", ignore_errors=True)
    return out


def table(results: dict[str, Any]) -> str:
    lines = ["| N | store | build (s) | disk (MB) | memory (MB) | recall@32 | p50 / p95 (ms, one query) | "
             "ms / query (batch 32) | with re-rank, p50 (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    for n, rows in results["sizes"].items():
        for name, r in rows.items():
            if "skipped" in r:
                lines.append(f"| {int(n):,} | {name} | {r['skipped']} |||||||")
                continue
            lines.append(f"| {int(n):,} | {name} | {r['build_s']} | {r['disk_mb']} | {r['memory_mb']} | "
                         f"{r['recall@32']:.3f} | {r['p50_ms']} / {r['p95_ms']} | {r['batch32_p50_ms_per_query']} | "
                         f"{r['with_rerank_p50_ms']} |")
            for point in r.get("sweep", []):
                knob = next(k for k in point if k.startswith("faiss_"))
                lines.append(f"| | ↳ {knob[6:]} = {point[knob]} | | | | {point['recall@32']:.3f} | "
                             f"{point['p50_ms']} / {point['p95_ms']} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--stores", nargs="+", default=list(STORES), choices=list(STORES))
    parser.add_argument("--repeats", type=int, default=200, help="single-query searches timed per store")
    parser.add_argument("--large-stores", nargs="+", default=None, choices=list(STORES),
                        help="the stores run above 100k vectors (default: all that fit)")
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
    with tempfile.TemporaryDirectory(prefix="diffatr-scale-") as tmp:
        work = Path(tmp)
        for n in args.sizes:
            results["sizes"][str(n)] = run_size(n, emb, args.stores, work, args.repeats, args.large_stores)
        results["rerank_on_corpus_test"] = rerank_on_corpus(emb, args.stores, work)
    results["load_average_at_end"] = os.getloadavg()
    results["seconds"] = round(time.time() - started, 1)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(table(results))
    print("\nfirst stage + re-rank on the real test split (text -> audio):",
          json.dumps(results["rerank_on_corpus_test"]))
    print(f"\n{results['seconds']:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
