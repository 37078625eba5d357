"""Quality benchmark on the built-in corpus: the paper's central claims, measured.

1. Phase-2 recipes, each trained for every training seed on top of the same phase-1 models:
   the reference's recipe (lr 1e-4, 5 epochs), a longer one (lr 1e-3, 30 epochs: on a corpus
   of ~1k clips the reference's 5 epochs are only 305 steps), the reference's lr for 150 epochs,
   and the longer one with the residual switched off, with CE scale 10, and with mined
   (inference-like) negatives. For
   each recipe the fusion knobs (temperature x alpha) are *selected on val*, then Dis / Gen /
   Gen+Dis are reported on the in-domain test split and the out-of-domain split, mean ± sample
   std over training seeds (each checkpoint's metrics first averaged over the DDIM seeds; with a
   single training seed, as ``--variant-seeds 0`` gives the variants, the std is over DDIM seeds).
2. The full table (R@1/5/10, mAP@10) for the recipe the default checkpoint uses.
3. An inference-knob grid on that recipe's seed-0 model: DDIM steps x K x temperature x alpha
   (first DDIM seed only: 48 points x 3 splits).
4. Backbone: the pretrained default (aisfx, frozen) against a small CNN trained from scratch
   (``tiny-cnn``, fine-tuned end to end), both phase 1 with the same epochs, every seed.

Writes benchmarks/results/quality.json (atomically, after every section, so a partial run
leaves its numbers) and prints Markdown tables; a section skipped with --skip-grid or
--skip-backbone keeps its numbers from the previous report. Training runs live under --runs (default
/tmp/qualityruns) and are reused when a run's ``done.json`` marker exists, so
``--train-only`` runs can fill them in parallel processes first.

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
SCORER_NAMES = {"dis": "Dis", "gen": "Gen", "gen+dis": "Gen+Dis"}
# Fusion knobs selected on val per recipe; the first of equal-scoring points wins, so the
# reference's (temperature 1, alpha 1) is kept unless another point is strictly better.
FUSION_TEMPS, FUSION_ALPHAS = (1.0, 0.1, 0.03, 0.01), (1.0, 3.0)
GRID_STEPS, GRID_K = (10, 50), (8, 16, 32)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A phase-2 training recipe: TrainConfig overrides and model-config overrides."""

    note: str
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    denoiser: dict[str, Any] = dataclasses.field(default_factory=dict)
    diffusion: dict[str, Any] = dataclasses.field(default_factory=dict)


LONG = {"lr": 1e-3, "epochs": 30, "select_metric": "gen/mean/R@1"}
RECIPES = {
    "reference": Recipe("the reference's recipe: lr 1e-4, 5 epochs (305 steps here), best/ by val Gen+Dis"),
    "long": Recipe("lr 1e-3, 30 epochs (1,830 steps), best/ by val Gen", LONG),
    "long, no residual": Recipe("as long, without the + w_k residual", LONG, denoiser={"residual": False}),
    "long, CE scale 10": Recipe("as long, loss CE(10 * x0_hat) instead of 100", LONG, diffusion={"ce_scale": 10.0}),
    "reference lr, 150 epochs": Recipe("the reference's lr 1e-4 for 150 epochs (9,150 steps, more than the reference's "
                                       "~7.6k on AudioCaps), best/ by val Gen", {"epochs": 150,
                                                                                        "select_metric": "gen/mean/R@1"}),
    "long, mined negatives": Recipe("as long, negatives = each query's 31 nearest other-clip training items",
                                    {**LONG, "negatives": "mined"}),
}
DEFAULT_RECIPE = "long"  # what checkpoints/default was trained with
FULL_SEED_RECIPES = {"reference", DEFAULT_RECIPE}  # always every --seeds; the others --variant-seeds


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _marked(folder: Path, train) -> None:
    """Run ``train()`` unless ``folder/done.json`` says it already ran."""
    if (folder / "done.json").exists():
        return
    t0 = time.time()
    train()
    (folder / "done.json").write_text(json.dumps({"seconds": time.time() - t0}))
    log(f"{folder} done in {time.time() - t0:.0f}s")


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def train_phase1(config, splits, seed: int, runs: Path, data_info: dict, *, epochs: int | None = None,
                 backbone: str = "aisfx") -> Path:
    """Phase 1 for one seed (aisfx frozen with cached features, or tiny-cnn fine-tuned)."""
    if backbone == "aisfx":
        folder = runs / (f"aisfx-seed{seed}" if epochs is None else f"aisfx-seed{seed}-e{epochs}") / "phase1"
        tc = TrainConfig.for_phase("contrastive", seed=seed, epochs=epochs)
        _marked(folder, lambda: train_contrastive(config, tc, splits["train"], splits["val"], folder,
                                                  cache_dir=default_cache_dir(), progress=False, data_info=data_info))
    else:
        from diffatr.encoders.audio import audio_encoder_config

        tiny = dataclasses.replace(config, audio=audio_encoder_config("tiny-cnn"))
        folder = runs / f"tinycnn-seed{seed}-e{epochs}" / "phase1"
        tc = TrainConfig.for_phase("contrastive", seed=seed, finetune=True, epochs=epochs)
        _marked(folder, lambda: train_contrastive(tiny, tc, splits["train"], splits["val"], folder, progress=False,
                                                  data_info=data_info))
    return folder / "best"


def train_phase2(phase1_best: Path, recipe_name: str, seed: int, splits, data_info: dict, quick: bool) -> Path:
    """Phase 2 of one recipe on top of a phase-1 model; returns its best/."""
    recipe = RECIPES[recipe_name]
    folder = phase1_best.parent.parent / ("phase2" if recipe_name == "reference" else f"phase2-{slug(recipe_name)}")
    base = load_checkpoint(phase1_best).config
    config = dataclasses.replace(base, denoiser=dataclasses.replace(base.denoiser, **recipe.denoiser),
                                 diffusion=dataclasses.replace(base.diffusion, **recipe.diffusion))
    overrides = dict(recipe.train, seed=seed)
    if quick:
        overrides["epochs"] = 2
    tc = TrainConfig.for_phase("diffusion", **overrides)
    _marked(folder, lambda: train_diffusion(phase1_best, tc, splits["train"], splits["val"], folder,
                                            model_config=config, cache_dir=default_cache_dir(), progress=False,
                                            data_info=data_info))
    return folder / "best"


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


def gains_of(result: dict[str, Any]) -> dict[str, Any]:
    """Gen+Dis - Dis R@1 per direction, per training seed and on average, against the seed std."""
    out = {}
    for d in DIRS:
        key = f"{d}/R@1"
        by_ckpt: dict[str, list[float]] = {}
        for run in result["runs"]:
            by_ckpt.setdefault(str(run["checkpoint"]), []).append(
                run["scorers"]["gen+dis"][key] - run["scorers"]["dis"][key])
        gain = result["scorers"]["gen+dis"][key] - result["scorers"]["dis"][key]
        std = max(result["std"]["dis"][key], result["std"]["gen+dis"][key])
        out[key] = {"gain": gain, "gain_per_seed": [statistics.fmean(v) for v in by_ckpt.values()],
                    "seed_std": std, "exceeds_seed_std": gain > std}
    return out


def claim_of(gains: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The paper's claim: Gen+Dis > Dis by more than the seed std, R@1, both directions, test and
    ood; and the ood gain at least the in-domain one (only meaningful with an in-domain gain)."""
    holds = all(g["gain"] > 0 and g["exceeds_seed_std"] for split in EVAL_SPLITS for g in gains[split].values())
    in_domain = [gains["test"][f"{d}/R@1"]["gain"] for d in DIRS]
    ood_ge = (all(gains["ood"][f"{d}/R@1"]["gain"] >= gains["test"][f"{d}/R@1"]["gain"] for d in DIRS)
              if all(g > 0 for g in in_domain) else None)
    return {"holds": holds, "ood_gain_at_least_in_domain": ood_ge}


def settings(models: Any, **knobs: Any) -> Any:
    """The (first) model's retrieval settings with ``knobs``: what ``diffatr evaluate`` builds."""
    first = models[0] if isinstance(models, (list, tuple)) else models
    return first.config.with_retrieval(**knobs)


def select_fusion(models: list, val_feats, ddim_seeds: list[int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The (temperature, alpha) with the best val Gen+Dis mean R@1 over all models and DDIM seeds."""
    rows = []
    for temp, alpha in itertools.product(FUSION_TEMPS, FUSION_ALPHAS):
        knobs = {"temperature": temp, "alpha": alpha, "top_k": 32, "num_inference_steps": 50}
        r = evaluate_model(models, val_feats, settings(models, **knobs), seeds=ddim_seeds, scorers=("gen+dis",),
                           data_info={"name": "corpus/val"})
        rows.append({**knobs, "val_gen+dis": {k: v for k, v in r["scorers"]["gen+dis"].items()
                                              if k.split("/")[-1] in SHOWN}})
    best = max(rows, key=lambda row: mean_r1(row["val_gen+dis"]))  # max keeps the first of ties
    return {k: best[k] for k in ("temperature", "alpha", "top_k", "num_inference_steps")}, rows


def main_table(results: dict[str, Any]) -> str:
    lines = ["| split | scorer | " + " | ".join(f"{ARROW[d]} {m}" for d in DIRS for m in SHOWN) + " |",
             "|---|---|" + "---|" * (2 * len(SHOWN))]
    for split, res in results.items():
        for scorer in ("dis", "gen", "gen+dis"):
            if scorer not in res["scorers"]:
                continue
            mean, std = res["scorers"][scorer], res["std"][scorer]
            cells = [f"{mean[f'{d}/{m}']:.1f} ± {std[f'{d}/{m}']:.1f}" for d in DIRS for m in SHOWN]
            lines.append(f"| {split} ({res['num_clips']} clips) | {SCORER_NAMES[scorer]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recipe_table(recipes: dict[str, Any]) -> str:
    """One row per recipe: val-selected knobs, R@1 of the three scorers and the gain on test and ood."""
    head = ["recipe", "knobs (val)", "val Gen+Dis"]
    for split in EVAL_SPLITS:
        head += [f"{split} {ARROW[d]} Dis / Gen / Gen+Dis" for d in DIRS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rec in recipes.items():
        knobs = rec["knobs"]
        cells = [name, f"temp {knobs['temperature']}, alpha {knobs['alpha']}", f"{rec['val_mean_r1']:.1f}"]
        for split in EVAL_SPLITS:
            res = rec["results"][split]
            for d in DIRS:
                key = f"{d}/R@1"
                g = rec["gains"][split][key]
                cells.append(" / ".join(f"{res['scorers'][s][key]:.1f}" for s in ("dis", "gen", "gen+dis"))
                             + f" ({g['gain']:+.1f}, std {g['seed_std']:.1f})")
        lines.append("| " + " | ".join(cells) + " |")
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


def backbone_table(backbone: dict[str, Any]) -> str:
    lines = ["| split | backbone | " + " | ".join(f"{ARROW[d]} {m}" for d in DIRS for m in SHOWN) + " |",
             "|---|---|" + "---|" * (2 * len(SHOWN))]
    for split, rows in backbone.items():
        for name, res in rows.items():
            mean, std = res["scorers"]["dis"], res["std"]["dis"]
            lines.append(f"| {split} | {name} | " + " | ".join(
                f"{mean[f'{d}/{m}']:.1f} ± {std[f'{d}/{m}']:.1f}" for d in DIRS for m in SHOWN) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default=str(ROOT / "assets/corpus/manifest.csv"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    ap.add_argument("--ddim-seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="DDIM start-noise seeds, averaged per checkpoint")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES), metavar="RECIPE",
                    help=f"phase-2 recipes to train and compare (default: all of {', '.join(RECIPES)})")
    ap.add_argument("--variant-seeds", type=int, nargs="+", default=None,
                    help=f"training seeds of the recipes other than {', '.join(sorted(FULL_SEED_RECIPES))} "
                         "(default: --seeds; each is a full phase-2 run, about 1.5 min of 2 cores)")
    ap.add_argument("--quick", action="store_true", help="1 seed, fewer epochs (phase 1: 5, phase 2: 2)")
    ap.add_argument("--skip-backbone", action="store_true", help="skip the tiny-cnn from-scratch comparison")
    ap.add_argument("--skip-grid", action="store_true", help="skip the inference-knob grid")
    ap.add_argument("--train-only", action="store_true",
                    help="train the runs these options need (reusing finished ones) and stop: for parallel workers")
    ap.add_argument("--backbone-epochs", type=int, default=10, help="phase-1 epochs of both backbones compared")
    ap.add_argument("--runs", default="/tmp/qualityruns", help="training run folders (reused when done)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/quality.json"))
    args = ap.parse_args(argv)
    seeds = args.seeds[:1] if args.quick else args.seeds
    # The report always covers the default recipe; a --train-only worker trains just what it is given.
    recipes = list(dict.fromkeys(([] if args.train_only else [DEFAULT_RECIPE]) + args.recipes))
    runs, out = Path(args.runs), Path(args.out)
    torch.manual_seed(0)  # stray library draws only; every method draw takes its own generator
    started = time.time()

    splits = {name: load_split(args.manifest, name) for name in ("train", "val", "test", "ood")}
    data_info = {"source": str(Path(args.manifest).resolve()), "kind": splits["train"].kind, "split": "train",
                 "val_split": "val"}
    config = load_model_config("default")

    # ---- training (every run reused when its done.json exists)
    phase1 = {s: train_phase1(config, splits, s, runs, data_info, epochs=5 if args.quick else None) for s in seeds}
    variant_seeds = seeds if args.variant_seeds is None else args.variant_seeds
    for s in set(variant_seeds) - set(phase1):
        phase1[s] = train_phase1(config, splits, s, runs, data_info, epochs=5 if args.quick else None)
    ckpts = {name: [train_phase2(phase1[s], name, s, splits, data_info, args.quick)
                    for s in (seeds if name in FULL_SEED_RECIPES else variant_seeds)] for name in recipes}
    if not args.skip_backbone:
        bb = {b: [train_phase1(config, splits, s, runs, data_info, epochs=args.backbone_epochs, backbone=b)
                  for s in seeds] for b in ("aisfx", "tiny-cnn")}
    if args.train_only:
        log(f"training done in {time.time() - started:.0f}s")
        return 0

    report: dict[str, Any] = {
        "benchmark": "quality", "manifest": str(Path(args.manifest).relative_to(ROOT)) if Path(args.manifest)
        .resolve().is_relative_to(ROOT) else args.manifest, "training_seeds": seeds, "ddim_seeds": args.ddim_seeds,
        "quick": args.quick, "command": "DIFFATR_CACHE=/tmp/dcache python " + " ".join(
            ["benchmarks/quality.py"] + (argv if argv is not None else sys.argv[1:])),
        "device": "cpu", "torch_threads": torch.get_num_threads(),
        "recipe_notes": {name: RECIPES[name].note for name in recipes}, "default_recipe": DEFAULT_RECIPE,
    }

    # A skipped section keeps its numbers from the previous report (marked as carried over), so the
    # slow backbone runs and the grid can be refreshed separately.
    previous = json.loads(out.read_text()) if out.exists() else {}
    for section, skipped in (("grid", args.skip_grid), ("backbone", args.skip_backbone)):
        if skipped and section in previous:
            report[section] = {**previous[section], "carried_over_from": previous.get("command")}

    def save() -> None:
        report["elapsed_s"] = round(time.time() - started, 1)
        atomic_write_text(out, json.dumps(report, indent=2, sort_keys=False) + "\n")

    feats = {n: compute_features(records_of(splits[n]), config, cache_dir=default_cache_dir(), progress=False)
             for n in ("val",) + EVAL_SPLITS}

    # ---- 1. recipes: fusion knobs selected on val, then test / ood over training seeds
    report["recipes"] = {}
    for name in recipes:
        models = [load_checkpoint(c).eval() for c in ckpts[name]]
        knobs, val_rows = select_fusion(models, feats["val"], args.ddim_seeds)
        results = {split: slim(evaluate_model(models, feats[split], settings(models, **knobs),
                                              seeds=args.ddim_seeds,
                                              data_info={"name": f"corpus/{split}"})) for split in EVAL_SPLITS}
        for split in EVAL_SPLITS:
            results[split]["checkpoint"] = [str(c) for c in ckpts[name]]
            # Both splits come from the training manifest, so evaluate's dataset check cannot tell
            # them apart; "ood" is out of domain by construction (held-out source packages).
            results[split]["out_of_domain"] = split == "ood"
        gains = {split: gains_of(results[split]) for split in EVAL_SPLITS}
        best_val = max(mean_r1(r["val_gen+dis"]) for r in val_rows)
        report["recipes"][name] = {"note": RECIPES[name].note, "knobs": knobs, "val_mean_r1": best_val,
                                   "val_fusion_grid": val_rows, "results": results, "gains": gains,
                                   "claim": claim_of(gains)}
        log(f"recipe {name!r}: knobs {knobs}, claim {report['recipes'][name]['claim']}")
        save()
    print(f"\n### Phase-2 recipes: R@1 Dis / Gen / Gen+Dis (Gen+Dis - Dis, seed std), mean over "
          f"{len(seeds)} training x {len(args.ddim_seeds)} DDIM seeds; fusion knobs selected on val\n")
    print(recipe_table(report["recipes"]))
    for name, rec in report["recipes"].items():
        print(f"- {name}: claim {'HOLDS' if rec['claim']['holds'] else 'does not hold'}")

    # ---- 2. the default recipe in full
    print(f"\n### Default recipe ({DEFAULT_RECIPE!r}), knobs {report['recipes'][DEFAULT_RECIPE]['knobs']}\n")
    print(main_table(report["recipes"][DEFAULT_RECIPE]["results"]), flush=True)

    # ---- 3. inference-knob grid on the default recipe's seed-0 model
    if not args.skip_grid:
        model = load_checkpoint(ckpts[DEFAULT_RECIPE][0]).eval()
        dis, grid = {}, []
        for split in ("val",) + EVAL_SPLITS:
            r = evaluate_model(model, feats[split], settings(model), scorers=("dis",),
                               data_info={"name": f"corpus/{split}"})
            dis[split] = {k: v for k, v in r["scorers"]["dis"].items() if k.split("/")[-1] in SHOWN}
        for steps, k, temp, alpha in itertools.product(GRID_STEPS, GRID_K, FUSION_TEMPS, FUSION_ALPHAS):
            knobs = {"num_inference_steps": steps, "top_k": k, "temperature": temp, "alpha": alpha}
            row: dict[str, Any] = dict(knobs)
            for split in ("val",) + EVAL_SPLITS:
                r = evaluate_model(model, feats[split], settings(model, **knobs), seeds=args.ddim_seeds[:1],
                                   scorers=("gen+dis",),
                                   data_info={"name": f"corpus/{split}"})
                row[split] = {k2: v for k2, v in r["scorers"]["gen+dis"].items() if k2.split("/")[-1] in SHOWN}
            grid.append(row)
        beats = [{k: row[k] for k in ("num_inference_steps", "top_k", "temperature", "alpha")} for row in grid
                 if all(row[s][f"{d}/R@1"] > dis[s][f"{d}/R@1"] for s in EVAL_SPLITS for d in DIRS)]
        report["grid"] = {"model": str(ckpts[DEFAULT_RECIPE][0]), "dis": dis, "grid": grid,
                          "points_beating_dis_on_test_and_ood_both_directions_seed0": beats}
        save()
        print(f"\n### Inference knobs on the {DEFAULT_RECIPE!r} seed-0 model (Gen+Dis R@1, DDIM seed "
              f"{args.ddim_seeds[0]})\n")
        print(grid_table(grid, dis))
        print(f"\npoints above Dis in both directions on test and ood: {beats or 'none'}", flush=True)

    # ---- 4. backbone: pretrained aisfx vs tiny-cnn from scratch, same epochs, every seed
    if not args.skip_backbone:
        names = {"aisfx": f"aisfx (pretrained, frozen), {args.backbone_epochs} epochs",
                 "tiny-cnn": f"tiny-cnn (from scratch, fine-tuned), {args.backbone_epochs} epochs"}
        backbone: dict[str, dict[str, Any]] = {split: {} for split in EVAL_SPLITS}
        for b, paths in bb.items():
            models = [load_checkpoint(p).eval() for p in paths]
            for split in EVAL_SPLITS:
                if b == "aisfx":  # frozen backbone: the cached features serve every seed
                    r = evaluate_model(models, feats[split], settings(models), scorers=("dis",),
                                       data_info={"name": f"corpus/{split}"})
                    backbone[split][names[b]] = {"scorers": r["scorers"], "std": r["std"]}
                    continue
                # fine-tuned backbones differ per seed: each model's own features
                dis_runs = [evaluate_model(m, compute_features(records_of(splits[split]), m.config, cache_dir=None,
                                                               progress=False), settings(m),
                                           scorers=("dis",))["scorers"]["dis"]
                            for m in models]
                mean = {k: statistics.fmean(r[k] for r in dis_runs) for k in dis_runs[0]}
                std = {k: statistics.stdev([r[k] for r in dis_runs]) if len(dis_runs) > 1 else 0.0 for k in dis_runs[0]}
                backbone[split][names[b]] = {"scorers": {"dis": mean}, "std": {"dis": std}}
        report["backbone"] = {"note": f"Dis scores, mean ± sample std over training seeds {seeds}; phase 1 only, "
                                      f"{args.backbone_epochs} epochs each; tiny-cnn runs with finetune=True, which "
                                      "also fine-tunes the text backbone (frozen for aisfx)", "results": backbone}
        save()
        print(f"\n### Audio backbone (Dis, {len(seeds)} seeds)\n")
        print(backbone_table(backbone))
    save()
    log(f"done in {time.time() - started:.0f}s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
