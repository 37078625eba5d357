"""Quality benchmark on the built-in corpus: the paper's central claims, measured.

1. Dis / Gen / Gen+Dis, text->audio and audio->text R@1/5/10 and mAP@10 on the in-domain test
   split and the out-of-domain split, mean ± std (sample std) over training seeds (each seed =
   phase 1 + phase 2 with the library defaults).
2. Knob ablations on the seed-0 model: DDIM steps x K x temperature x alpha for Gen+Dis, the
   full grid on val, test and ood. Knobs are *selected on val* (best mean Gen+Dis R@1 of both
   directions) and then reported on test / ood for every training seed, against Dis.
3. Backbone: the pretrained default (aisfx) against a small CNN trained from scratch
   (``tiny-cnn``, phase 1 with fine-tuning) on the same data, Dis scores.

Writes benchmarks/results/quality.json (atomically, after every section, so a partial run
leaves its numbers) and prints Markdown tables. Training runs live under --runs (default
/tmp/qualityruns) and are reused when a run's ``done.json`` marker exists.

    DIFFATR_CACHE=/tmp/dcache python benchmarks/quality.py            # full (3 seeds)
    python benchmarks/quality.py --quick --skip-backbone               # 1 seed, fewer epochs
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffatr.checkpoint import load_checkpoint  # noqa: E402
from diffatr.config import TrainConfig, load_model_config  # noqa: E402
from diffatr.data.datasets import load_split  # noqa: E402
from diffatr.evaluate import evaluate_model  # noqa: E402
from diffatr.features import compute_features, records_of  # noqa: E402
from diffatr.fileio import atomic_write_text  # noqa: E402
from diffatr.indexing import default_cache_dir  # noqa: E402
from diffatr.train import train_contrastive, train_diffusion  # noqa: E402

DIRS = ("text_to_audio", "audio_to_text")
ARROW = {"text_to_audio": "T2A", "audio_to_text": "A2T"}
SHOWN = ("R@1", "R@5", "R@10", "mAP@10")
EVAL_SPLITS = ("test", "ood")
GRID_STEPS, GRID_K, GRID_TEMP, GRID_ALPHA = (10, 50), (8, 16, 32), (1.0, 0.1, 0.03), (1.0, 3.0)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train_seed(config, splits, seed: int, runs: Path, cache_dir: Path, quick: bool, data_info: dict) -> Path:
    """Phase 1 + phase 2 for one seed; returns phase 2's best/ (reused if already done)."""
    base = runs / f"aisfx-seed{seed}"
    p1, p2 = base / "phase1", base / "phase2"
    common = dict(cache_dir=cache_dir, progress=False, data_info=data_info)
    if not (p1 / "done.json").exists():
        t0 = time.time()
        tc = TrainConfig.for_phase("contrastive", seed=seed, epochs=5 if quick else None)
        train_contrastive(config, tc, splits["train"], splits["val"], p1, **common)
        (p1 / "done.json").write_text(json.dumps({"seconds": time.time() - t0}))
        log(f"seed {seed}: phase 1 done in {time.time() - t0:.0f}s")
    if not (p2 / "done.json").exists():
        t0 = time.time()
        tc = TrainConfig.for_phase("diffusion", seed=seed, epochs=2 if quick else None)
        train_diffusion(p1 / "best", tc, splits["train"], splits["val"], p2, **common)
        (p2 / "done.json").write_text(json.dumps({"seconds": time.time() - t0}))
        log(f"seed {seed}: phase 2 done in {time.time() - t0:.0f}s")
    return p2 / "best"


def slim(result: dict[str, Any]) -> dict[str, Any]:
    """The parts of an evaluate_model result worth keeping (means, stds, knobs, counts, runs)."""
    keep = ("scorers", "std", "std_over", "std_kind", "num_clips", "num_captions", "knobs", "seeds",
            "checkpoint", "out_of_domain")
    out = {k: result[k] for k in keep if k in result}
    out["runs"] = [{"checkpoint": r["checkpoint"], "seed": r["seed"],
                    "scorers": {s: {k: v for k, v in m.items() if k.split("/")[-1] in SHOWN}
                                for s, m in r["scorers"].items()}} for r in result["runs"]]
    return out


def mean_r1(metrics: dict[str, float]) -> float:
    return (metrics["text_to_audio/R@1"] + metrics["audio_to_text/R@1"]) / 2


def main_table(results: dict[str, Any]) -> str:
    lines = ["| split | scorer | " + " | ".join(f"{ARROW[d]} {m}" for d in DIRS for m in SHOWN) + " |",
             "|---|---|" + "---|" * (2 * len(SHOWN))]
    for split, res in results.items():
        for scorer in ("dis", "gen", "gen+dis"):
            if scorer not in res["scorers"]:
                continue
            mean, std = res["scorers"][scorer], res["std"][scorer]
            cells = [f"{mean[f'{d}/{m}']:.1f} ± {std[f'{d}/{m}']:.1f}" for d in DIRS for m in SHOWN]
            name = {"dis": "Dis", "gen": "Gen", "gen+dis": "Gen+Dis"}[scorer]
            lines.append(f"| {split} ({res['num_clips']} clips) | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def grid_table(grid: list[dict[str, Any]], dis: dict[str, dict[str, float]]) -> str:
    head = "| steps | K | temp | alpha | " + " | ".join(
        f"{s} {ARROW[d]} R@1" for s in ("val",) + EVAL_SPLITS for d in DIRS) + " |"
    lines = [head, "|" + "---|" * (4 + 2 * (1 + len(EVAL_SPLITS)))]
    lines.append("| Dis | | | | " + " | ".join(
        f"{dis[s][f'{d}/R@1']:.1f}" for s in ("val",) + EVAL_SPLITS for d in DIRS) + " |")
    for row in grid:
        lines.append(f"| {row['num_inference_steps']} | {row['top_k']} | {row['temperature']} | {row['alpha']} | "
                     + " | ".join(f"{row[s][f'{d}/R@1']:.1f}" for s in ("val",) + EVAL_SPLITS for d in DIRS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default=str(ROOT / "assets/corpus/manifest.csv"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    ap.add_argument("--ddim-seeds", type=int, nargs="+", default=[0], help="DDIM start-noise seeds per checkpoint")
    ap.add_argument("--quick", action="store_true", help="1 seed, fewer epochs (phase 1: 5, phase 2: 2)")
    ap.add_argument("--skip-backbone", action="store_true", help="skip the tiny-cnn from-scratch comparison")
    ap.add_argument("--skip-ablation", action="store_true")
    ap.add_argument("--backbone-epochs", type=int, default=10, help="phase-1 epochs of the from-scratch CNN")
    ap.add_argument("--runs", default="/tmp/qualityruns", help="training run folders (reused when done)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/quality.json"))
    args = ap.parse_args(argv)
    seeds = args.seeds[:1] if args.quick else args.seeds
    runs, out = Path(args.runs), Path(args.out)
    cache_dir = default_cache_dir()
    torch.manual_seed(0)  # stray library draws only; every method draw takes its own generator
    started = time.time()

    splits = {name: load_split(args.manifest, name) for name in ("train", "val", "test", "ood")}
    data_info = {"source": str(Path(args.manifest).resolve()), "kind": splits["train"].kind, "split": "train",
                 "val_split": "val"}
    config = load_model_config("default")
    report: dict[str, Any] = {
        "benchmark": "quality", "manifest": str(Path(args.manifest).relative_to(ROOT)) if Path(args.manifest)
        .resolve().is_relative_to(ROOT) else args.manifest, "training_seeds": seeds, "ddim_seeds": args.ddim_seeds,
        "quick": args.quick, "command": "DIFFATR_CACHE=/tmp/dcache python " + " ".join(
            ["benchmarks/quality.py"] + (argv if argv is not None else sys.argv[1:])),
        "device": "cpu", "torch_threads": torch.get_num_threads(),
    }

    def save() -> None:
        report["elapsed_s"] = round(time.time() - started, 1)
        atomic_write_text(out, json.dumps(report, indent=2, sort_keys=False) + "\n")

    # ---- 1. three scorers x seeds
    ckpts = [train_seed(config, splits, s, runs, cache_dir, args.quick, data_info) for s in seeds]
    feats = {n: compute_features(records_of(splits[n]), config, cache_dir=cache_dir, progress=False)
             for n in ("val",) + EVAL_SPLITS}
    main_results = {}
    for split in EVAL_SPLITS:
        res = evaluate_model([str(c) for c in ckpts], feats[split], seeds=args.ddim_seeds,
                             data_info={"name": f"corpus/{split}"})
        main_results[split] = slim(res)
    report["main"] = main_results
    save()
    print(f"\n### Dis / Gen / Gen+Dis, mean ± std over {len(seeds)} training seed(s) "
          f"(default knobs {main_results['test']['knobs']})\n")
    print(main_table(main_results), flush=True)

    # ---- 2. ablation grid on the seed-0 model, selection on val
    if not args.skip_ablation:
        model = load_checkpoint(ckpts[0]).eval()
        dis = {}
        for split in ("val",) + EVAL_SPLITS:
            r = evaluate_model(model, feats[split], scorers=("dis",), data_info={"name": f"corpus/{split}"})
            dis[split] = {k: v for k, v in r["scorers"]["dis"].items() if k.split("/")[-1] in SHOWN}
        grid = []
        for steps, k, temp, alpha in itertools.product(GRID_STEPS, GRID_K, GRID_TEMP, GRID_ALPHA):
            knobs = {"num_inference_steps": steps, "top_k": k, "temperature": temp, "alpha": alpha}
            row: dict[str, Any] = dict(knobs)
            for split in ("val",) + EVAL_SPLITS:
                r = evaluate_model(model, feats[split], knobs, seeds=args.ddim_seeds, scorers=("gen+dis",),
                                   data_info={"name": f"corpus/{split}"})
                row[split] = {k2: v for k2, v in r["scorers"]["gen+dis"].items() if k2.split("/")[-1] in SHOWN}
            grid.append(row)
        log(f"ablation grid done ({len(grid)} points)")
        best = max(grid, key=lambda r: (mean_r1(r["val"]), -r["num_inference_steps"], -r["top_k"]))
        chosen = {k: best[k] for k in ("num_inference_steps", "top_k", "temperature", "alpha")}
        beats = [{k: row[k] for k in chosen} for row in grid
                 if all(row[s][f"{d}/R@1"] > dis[s][f"{d}/R@1"] for s in EVAL_SPLITS for d in DIRS)]
        report["ablation"] = {"model": str(ckpts[0]), "dis": dis, "grid": grid, "val_selected": chosen,
                              "selection": "max over the grid of val Gen+Dis mean(T2A R@1, A2T R@1); ties -> "
                                           "fewer steps, smaller K",
                              "grid_points_beating_dis_on_test_and_ood_both_directions_seed0": beats}
        # The val-selected knobs, on every training seed: is the gain above the seed-to-seed std?
        selected = {}
        for split in EVAL_SPLITS:
            r = evaluate_model([str(c) for c in ckpts], feats[split], chosen, seeds=args.ddim_seeds,
                               data_info={"name": f"corpus/{split}"})
            selected[split] = slim(r)
        gains = {}
        for split in EVAL_SPLITS:
            sc = selected[split]
            for d in DIRS:
                key = f"{d}/R@1"
                by_ckpt: dict[str, list[float]] = {}
                for run in sc["runs"]:
                    by_ckpt.setdefault(run["checkpoint"], []).append(
                        run["scorers"]["gen+dis"][key] - run["scorers"]["dis"][key])
                per_ckpt_gain = [sum(v) / len(v) for v in by_ckpt.values()]
                gain = sc["scorers"]["gen+dis"][key] - sc["scorers"]["dis"][key]
                gains[f"{split}/{key}"] = {
                    "gain": gain, "gain_per_seed": per_ckpt_gain,
                    "dis_std": sc["std"]["dis"][key], "gen+dis_std": sc["std"]["gen+dis"][key],
                    "exceeds_seed_std": gain > max(sc["std"]["dis"][key], sc["std"]["gen+dis"][key]),
                }
        claim = all(g["gain"] > 0 and g["exceeds_seed_std"] for g in gains.values())
        # Only meaningful when there is an in-domain gain to compare against (0 >= 0 says nothing).
        ood_ge_in = (all(gains[f"ood/{d}/R@1"]["gain"] >= gains[f"test/{d}/R@1"]["gain"] for d in DIRS)
                     if all(gains[f"test/{d}/R@1"]["gain"] > 0 for d in DIRS) else None)
        report["val_selected"] = {"knobs": chosen, "results": selected, "gains": gains,
                                  "claim_holds": claim, "ood_gain_at_least_in_domain": ood_ge_in}
        save()
        print("\n### Gen+Dis ablation on the seed-0 model (R@1; full grid, val is the selection split)\n")
        print(grid_table(grid, dis))
        print(f"\nval-selected knobs: {chosen}")
        print(f"\n### Val-selected knobs on all {len(seeds)} training seed(s)\n")
        print(main_table(selected))
        print("\n| split | direction | Gen+Dis − Dis R@1 | per seed | seed std (Dis / Gen+Dis) | > std |")
        print("|---|---|---|---|---|---|")
        for key, g in gains.items():
            split, d = key.split("/")[0], key.split("/")[1]
            print(f"| {split} | {ARROW[d]} | {g['gain']:+.2f} | {', '.join(f'{x:+.1f}' for x in g['gain_per_seed'])}"
                  f" | {g['dis_std']:.2f} / {g['gen+dis_std']:.2f} | {'yes' if g['exceeds_seed_std'] else 'no'} |")
        print(f"\nclaim (Gen+Dis > Dis by more than the seed std, R@1, both directions, test and ood): "
              f"{'HOLDS' if claim else 'does NOT hold'}; ood gain >= in-domain gain: "
              f"{'n/a (no in-domain gain)' if ood_ge_in is None else ood_ge_in}", flush=True)

    # ---- 3. backbone: pretrained aisfx vs tiny-cnn from scratch (one seed)
    if not args.skip_backbone:
        from diffatr.encoders.audio import audio_encoder_config

        tiny = dataclasses.replace(config, audio=audio_encoder_config("tiny-cnn"))
        p1 = runs / f"tinycnn-seed0-e{args.backbone_epochs}" / "phase1"
        t0 = time.time()
        if not (p1 / "done.json").exists():
            tc = TrainConfig.for_phase("contrastive", seed=0, finetune=True, epochs=args.backbone_epochs)
            train_contrastive(tiny, tc, splits["train"], splits["val"], p1, progress=False, data_info=data_info)
            (p1 / "done.json").write_text(json.dumps({"seconds": time.time() - t0}))
        log(f"tiny-cnn phase 1 done in {time.time() - t0:.0f}s")
        model = load_checkpoint(p1 / "best").eval()
        backbone = {}
        for split in EVAL_SPLITS:
            fs = compute_features(records_of(splits[split]), model.config, cache_dir=None, progress=False)
            r = evaluate_model(model, fs, scorers=("dis",), data_info={"name": f"corpus/{split}"})
            backbone[split] = {
                "tiny-cnn (from scratch, fine-tuned, seed 0)": {k: v for k, v in r["scorers"]["dis"].items()
                                                                 if k.split("/")[-1] in SHOWN},
                "aisfx (pretrained, seed 0)": {k: v for k, v in main_results[split]["runs"][0]["scorers"]["dis"]
                                               .items() if k.split("/")[-1] in SHOWN},
            }
        report["backbone"] = {"note": f"Dis scores, one training seed (0); tiny-cnn phase 1 with finetune=True "
                                      f"(text backbone fine-tuned too), {args.backbone_epochs} epochs; aisfx: "
                                      f"frozen pretrained backbone, default 20 epochs", "results": backbone}
        save()
        print("\n### Audio backbone (Dis, seed 0)\n")
        print("| split | backbone | " + " | ".join(f"{ARROW[d]} {m}" for d in DIRS for m in SHOWN) + " |")
        print("|---|---|" + "---|" * (2 * len(SHOWN)))
        for split, rows in backbone.items():
            for name, m in rows.items():
                print(f"| {split} | {name} | " + " | ".join(f"{m[f'{d}/{x}']:.1f}" for d in DIRS for x in SHOWN) + " |")
    save()
    log(f"done in {time.time() - started:.0f}s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
