"""Speed of retrieval on the CPU: cosine top-10, diffusion re-rank (plain vs factorised), and an
evaluation-sized run, on synthetic unit embeddings with a random-init denoiser (D = d = 512).

    python benchmarks/speed.py            # the full run (a few minutes on 2 cores)
    python benchmarks/speed.py --quick    # smoke run (seconds; writes nothing unless --out)

Writes ``benchmarks/results/speed.json`` (machine, settings, every number, the command) and
prints a Markdown table. Latencies are per query: the median over repeats of (time for a batch
of queries) / (batch size). Random weights cost exactly what trained ones do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffatr.config import DenoiserConfig, DiffusionConfig, RetrievalConfig  # noqa: E402
from diffatr.diffusion import factorised  # noqa: E402
from diffatr.diffusion.denoiser import Denoiser  # noqa: E402
from diffatr.diffusion.ddim import DDIMScheduler  # noqa: E402
from diffatr.fileio import atomic_write_text  # noqa: E402
from diffatr.machine import cpu_label, describe_cpu  # noqa: E402
from diffatr.retrieval import cosine_topk, full_fused_scores, rerank_topk  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "speed.json"
FLOOR_SPEEDUP_K32 = 40.0  # factorised re-rank must be at least this much faster than plain (any x86-64)
FLOOR_EVAL_SECONDS = 5.0  # the evaluation-sized run, both directions, end to end


def machine_info() -> dict[str, Any]:
    """The CPU (model, vendor, caches, SIMD flags: ``diffatr.machine``), torch and Python."""
    return {**describe_cpu(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(), "platform": platform.platform()}


def unit(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_times(fn_a: Callable[[], Any], fn_b: Callable[[], Any], repeats: int,
                 warmup: int = 1) -> tuple[list[float], list[float]]:
    """Wall times of ``fn_a`` and ``fn_b`` run alternately, so that a noisy neighbour on a
    shared (virtual) CPU slows both sides of a comparison alike."""
    for _ in range(warmup):
        fn_a(), fn_b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times_a, times_b


def run(args: argparse.Namespace) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the denoiser's random init (an entry point may seed)
    dim = args.dim
    denoiser = Denoiser(DenoiserConfig(embed_dim=dim, width=dim)).eval()
    scheduler = DDIMScheduler(DiffusionConfig(num_train_timesteps=args.steps))
    steps, k = args.steps, args.top_k
    results: dict[str, Any] = {"per_n": [], "large_k": None, "eval": None}
    start = time.perf_counter()  # the first batched re-rank of a process pays this once
    factorised.calibrated_block_size(k, dim)
    results["calibration_s"] = time.perf_counter() - start

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # ---------------------------------------------------------------- (a) (b) (c) per corpus size
    for n in args.sizes:
        cands = unit(n, dim, g)
        queries = unit(args.queries, dim, g)
        top_scores, top_idx = cosine_topk(queries, cands, k)
        t0 = time.perf_counter()
        cache = denoiser.precompute(cands)
        precompute_s = time.perf_counter() - t0
        config, knobs = RetrievalConfig(num_inference_steps=steps, seed=0), dict(batch_size=args.batch_size)

        def cosine_only():
            return cosine_topk(queries, cands, 10)

        def plain_diffusion():
            return rerank_topk(queries, cands, top_scores, top_idx, denoiser, scheduler, config, factorised=False,
                               **knobs)

        def fact_diffusion():
            return rerank_topk(queries, cands, top_scores, top_idx, denoiser, scheduler, config, factorised=True,
                               candidate_cache=cache, **knobs)

        def cosine_k():
            return cosine_topk(queries, cands, k)

        per_q = lambda s, nq=args.queries: 1000.0 * s / nq  # noqa: E731  ms per query
        cos10 = per_q(median_time(cosine_only, args.repeats))
        cosk = per_q(median_time(cosine_k, args.repeats))
        plain_nq = min(args.queries, args.plain_queries)
        plain_q = queries[:plain_nq]

        def plain_small():
            return rerank_topk(plain_q, cands, top_scores[:plain_nq], top_idx[:plain_nq], denoiser,
                               scheduler, config, factorised=False, **knobs)

        plain_times, fact_times = paired_times(plain_small, fact_diffusion, args.repeats)
        plain = per_q(statistics.median(plain_times), plain_nq)
        fact = per_q(statistics.median(fact_times))
        # The speed-up is the median of per-repeat ratios of interleaved runs (robust to noise).
        speedup = statistics.median(per_q(a, plain_nq) / per_q(b) for a, b in zip(plain_times, fact_times))
        # The two paths must agree (docs/method.md: an exact factorisation), or the speed means nothing.
        a, b = plain_small(), fact_diffusion()
        max_diff = float((a.fused - b.fused[:plain_nq]).abs().max())
        same_ranking = bool(torch.equal(a.indices, b.indices[:plain_nq]))
        row = {
            "n": n, "queries_per_batch": args.queries, "plain_queries_per_batch": plain_nq,
            "precompute_s": precompute_s,
            "cosine_top10_ms": cos10,
            "cosine_topk_ms": cosk,
            "plain_diffusion_ms": plain, "factorised_diffusion_ms": fact,
            "plain_rerank_ms": cosk + plain, "factorised_rerank_ms": cosk + fact,
            "speedup_diffusion": speedup,
            "plain_vs_factorised_max_abs_diff": max_diff, "plain_vs_factorised_same_ranking": same_ranking,
            "speedup_end_to_end": (cosk + plain) / (cosk + fact),
            "rerank_over_cosine": (cosk + fact) / cos10,
        }
        results["per_n"].append(row)
        log(f"N={n}: cosine top-10 {cos10:.3f} ms/q, plain {cosk + plain:.2f} ms/q, "
            f"factorised {cosk + fact:.3f} ms/q (diffusion x{speedup:.1f}), precompute {precompute_s:.2f} s")
        del cache, cands

    # ---------------------------------------------------------------- (c') the fused loop's block size
    results["blocks"] = block_sweep(denoiser, scheduler, args, g)
    log("block size sweep (N = {n}): ".format(n=results["blocks"]["n"])
        + ", ".join(f"{b}: {ms:.3f}" for b, ms in results["blocks"]["ms_per_query"].items())
        + f" ms/query; calibrated {results['blocks']['calibrated']}, L2 rule {results['blocks']['l2_rule']}")

    # ---------------------------------------------------------------- (d) large K
    n_big, k_big = args.large_k_n, min(args.large_k, args.large_k_n)
    cands = unit(n_big, dim, g)
    queries = unit(args.large_k_queries, dim, g)
    top_scores, top_idx = cosine_topk(queries, cands, k_big)
    cache = denoiser.precompute(cands)
    config, knobs = RetrievalConfig(num_inference_steps=steps, seed=0), dict(batch_size=args.batch_size)
    plain = median_time(lambda: rerank_topk(queries, cands, top_scores, top_idx, denoiser, scheduler, config,
                                            factorised=False, **knobs), args.large_k_repeats, warmup=0)
    fact = median_time(lambda: rerank_topk(queries, cands, top_scores, top_idx, denoiser, scheduler, config,
                                           factorised=True, candidate_cache=cache, **knobs),
                       args.large_k_repeats, warmup=1)
    nq = args.large_k_queries
    results["large_k"] = {"n": n_big, "k": k_big, "queries": nq,
                          "plain_diffusion_ms": 1000 * plain / nq, "factorised_diffusion_ms": 1000 * fact / nq,
                          "speedup_diffusion": plain / fact}
    log(f"K={k_big}: plain {1000 * plain / nq:.1f} ms/q, factorised {1000 * fact / nq:.2f} ms/q, x{plain / fact:.1f}")
    del cache, cands

    # ---------------------------------------------------------------- (e) evaluation-sized run
    n_clips, per_clip = args.eval_clips, 5
    audio = unit(n_clips, dim, g)
    text = unit(n_clips * per_clip, dim, g)
    den_a2t = Denoiser(DenoiserConfig(embed_dim=dim, width=dim)).eval()
    config, knobs = RetrievalConfig(top_k=k, num_inference_steps=steps, seed=0), dict(batch_size=args.batch_size)
    start = time.perf_counter()
    cache_t2a = denoiser.precompute(audio)
    cache_a2t = den_a2t.precompute(text)
    precompute_s = time.perf_counter() - start
    t2a = full_fused_scores(text, audio, denoiser, scheduler, config, candidate_cache=cache_t2a, **knobs)
    t2a_s = time.perf_counter() - start - precompute_s
    a2t = full_fused_scores(audio, text, den_a2t, scheduler, config, candidate_cache=cache_a2t, **knobs)
    total_s = time.perf_counter() - start
    assert t2a.shape == (n_clips * per_clip, n_clips) and a2t.shape == (n_clips, n_clips * per_clip)
    cos_start = time.perf_counter()
    _ = text @ audio.T, audio @ text.T
    cosine_s = time.perf_counter() - cos_start
    results["eval"] = {"clips": n_clips, "captions": n_clips * per_clip, "top_k": k, "steps": steps,
                       "precompute_s": precompute_s, "text_to_audio_s": t2a_s,
                       "audio_to_text_s": total_s - precompute_s - t2a_s, "total_s": total_s,
                       "cosine_only_s": cosine_s}
    log(f"eval-sized run: {total_s:.2f} s end to end (cosine alone {cosine_s:.3f} s)")
    return results


def block_sweep(denoiser: Denoiser, scheduler: DDIMScheduler, args: argparse.Namespace,
                g: torch.Generator) -> dict[str, Any]:
    """The fused loop at each block size (queries per block) against the two automatic choices:
    the calibrated size (the default on the CPU) and the L2 rule (sysfs)."""
    n, k, dim = args.sizes[0], args.top_k, args.dim
    cands, queries = unit(n, dim, g), unit(args.queries, dim, g)
    _, top_idx = cosine_topk(queries, cands, k)
    cache, prepared = denoiser.precompute(cands), denoiser.prepare_queries(queries)
    noise = torch.randn(args.queries, k, generator=g)
    calibrated = factorised.calibrated_block_size(k, dim)  # memoised: timed at the start of ``run``
    l2_rule = factorised.l2_block_size(k, dim)
    sizes = sorted({*factorised._BLOCK_SIZES_TRIED, calibrated, l2_rule})
    times: dict[int, list[float]] = {b: [] for b in sizes}
    reference = denoiser.ddim_sample_cached(scheduler, noise, prepared, cache, top_idx, args.steps, block_size=1)
    max_diff = 0.0
    for _ in range(args.repeats):  # interleaved, so a noisy neighbour slows every size alike
        for b in sizes:
            start = time.perf_counter()
            x0 = denoiser.ddim_sample_cached(scheduler, noise, prepared, cache, top_idx, args.steps, block_size=b)
            times[b].append(time.perf_counter() - start)
            max_diff = max(max_diff, float((x0 - reference).abs().max()))
    ms = {b: 1000.0 * statistics.median(t) / args.queries for b, t in times.items()}
    return {"n": n, "k": k, "queries": args.queries, "ms_per_query": ms, "calibrated": calibrated,
            "l2_rule": l2_rule, "best": min(ms, key=ms.get),
            "max_abs_diff_across_sizes": max_diff}


def floors(results: dict[str, Any]) -> dict[str, Any]:
    worst = min(r["speedup_diffusion"] for r in results["per_n"])
    return {
        "factorised_vs_plain_k32": {"floor": FLOOR_SPEEDUP_K32, "value": worst,
                                    "pass": worst >= FLOOR_SPEEDUP_K32,
                                    "what": "min over N of plain / factorised diffusion re-rank time at K = top_k"},
        "eval_sized_run_s": {"floor": FLOOR_EVAL_SECONDS, "value": results["eval"]["total_s"],
                             "pass": results["eval"]["total_s"] <= FLOOR_EVAL_SECONDS,
                             "what": "both directions, end to end, seconds"},
    }


def markdown(report: dict[str, Any]) -> str:
    s, res = report["settings"], report["results"]
    m = report["machine"]
    lines = [
        f"CPU: {cpu_label(m)}, {m['usable_cores']} cores, torch {m['torch']} ({m['torch_threads']} threads); "
        f"D = d = {s['dim']}, {s['steps']} DDIM steps, K = {s['top_k']}, batches of {s['queries']} queries.",
        "",
        "| N | cosine top-10 (ms/query) | re-rank, plain (ms/query) | re-rank, factorised (ms/query) "
        "| diffusion speed-up | factorised / cosine-only | precompute (s, once per index) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["per_n"]:
        lines.append(f"| {r['n']:,} | {r['cosine_top10_ms']:.3f} | {r['plain_rerank_ms']:.1f} | "
                     f"{r['factorised_rerank_ms']:.2f} | {r['speedup_diffusion']:.1f}x | "
                     f"{r['rerank_over_cosine']:.1f}x | {r['precompute_s']:.2f} |")
    lk = res["large_k"]
    ev = res["eval"]
    diff = max(r["plain_vs_factorised_max_abs_diff"] for r in res["per_n"])
    same = all(r["plain_vs_factorised_same_ranking"] for r in res["per_n"])
    lines += [
        "",
        f"Plain and factorised re-rank agree: max |fused difference| {diff:.1e}, "
        f"same rankings: {'yes' if same else 'NO'}.",
        f"Re-ranking K = {lk['k']:,} candidates (N = {lk['n']:,}): plain {lk['plain_diffusion_ms']:.0f} ms/query, "
        f"factorised {lk['factorised_diffusion_ms']:.1f} ms/query ({lk['speedup_diffusion']:.0f}x).",
        f"Evaluation-sized run ({ev['captions']:,} captions x {ev['clips']:,} clips, both directions, K = "
        f"{ev['top_k']}, {ev['steps']} steps, fused matrices included): {ev['total_s']:.1f} s "
        f"(precompute {ev['precompute_s']:.2f} s, text->audio {ev['text_to_audio_s']:.1f} s, "
        f"audio->text {ev['audio_to_text_s']:.1f} s; cosine alone {ev['cosine_only_s']:.3f} s).",
        "",
    ]
    bl = res["blocks"]
    sweep = ", ".join(f"{b}: {v:.3f}" for b, v in bl["ms_per_query"].items())
    lines += [f"Fused loop, ms/query by queries per block (N = {bl['n']:,}, K = {bl['k']}): {sweep}. Calibrated "
              f"(the default): {bl['calibrated']} ({bl['ms_per_query'][bl['calibrated']]:.3f} ms/query, calibration "
              f"{1000 * res['calibration_s']:.0f} ms once per process); L2 rule: {bl['l2_rule']} "
              f"({bl['ms_per_query'][bl['l2_rule']]:.3f}); fastest: {bl['best']}. Max difference across sizes "
              f"{bl['max_abs_diff_across_sizes']:.1e}.", ""]
    for name, f in report["floors"].items():
        op = ">=" if name.startswith("factorised") else "<="
        lines.append(f"- {'PASS' if f['pass'] else 'FAIL'} {name}: {f['value']:.2f} (floor {op} {f['floor']}) "
                     f"- {f['what']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, writes nothing unless --out")
    p.add_argument("--out", type=Path, default=None, help=f"results file (default {DEFAULT_OUT})")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: a per-core comparison. On the 2-vCPU dev VM, two "
                        "threads made the factorised path's many small ops swing 16-900 us per "
                        "query-step run to run; the README reports both)")
    p.add_argument("--dim", type=int, default=512, help="D = d")
    p.add_argument("--steps", type=int, default=50, help="T = DDIM steps")
    p.add_argument("--top-k", type=int, default=32)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    p.add_argument("--queries", type=int, default=256, help="queries per timed batch")
    p.add_argument("--plain-queries", type=int, default=64, help="queries per timed batch for the slow plain path")
    p.add_argument("--batch-size", type=int, default=256, help="queries per denoiser batch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--large-k", type=int, default=1_000)
    p.add_argument("--large-k-n", type=int, default=10_000)
    p.add_argument("--large-k-queries", type=int, default=2)
    p.add_argument("--large-k-repeats", type=int, default=1)
    p.add_argument("--eval-clips", type=int, default=957)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.plain_queries, args.repeats = [1_000, 5_000], 8, 4, 1
        args.large_k, args.large_k_n, args.eval_clips = 200, 2_000, 100
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f} before the run: other processes share the "
              "CPU and the timings will be inflated", file=sys.stderr)
    start = time.perf_counter()
    results = run(args)
    report = {
        "benchmark": "speed",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "settings": {"dim": args.dim, "steps": args.steps, "top_k": args.top_k, "queries": args.queries,
                     "plain_queries": args.plain_queries, "batch_size": args.batch_size,
                     "repeats": args.repeats, "quick": args.quick, "sizes": args.sizes,
                     "seed": 0, "alpha": 1.0, "temperature": 1.0},
        "results": results,
        "wall_s": None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    report["floors"] = floors(results)
    report["wall_s"] = time.perf_counter() - start
    report["machine"]["load_average_before"] = list(load_before)
    report["machine"]["load_average_after"] = list(os.getloadavg())
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    if out is not None:
        atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    if out is not None:
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
