"""How much data does the diffusion need? Phase 2 on a share of the training sounds.

On the shipped phase-1 recipe (each training seed's phase-1 model, trained on all training
sounds), phase 2 (the shipped `long` recipe) is trained on 25 %, 50 % and 100 % of the training
sounds (whole sounds, drawn with the training seed), and Gen and Gen+Dis (paper rule) are scored
on val / test / OOD against Dis (3 DDIM seeds; mean ± std over training seeds). Writes
benchmarks/results/learning_curve.json and prints a Markdown table.

    DIFFATR_CACHE=/tmp/dcache python benchmarks/learning_curve.py           # ~30 min of one core
    python benchmarks/learning_curve.py --seeds 0 --fractions 0.25 0.5      # a share of the runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from diffatr.checkpoint import load_checkpoint  # noqa: E402
from diffatr.config import TrainConfig  # noqa: E402
from diffatr.evaluate import score_matrices  # noqa: E402
from diffatr.features import FeatureSet  # noqa: E402
from diffatr.fileio import atomic_write_text  # noqa: E402
from diffatr.metrics import retrieval_metrics  # noqa: E402
from diffatr.train import train_diffusion  # noqa: E402
from rerankers import PHASE2, generalisation_module  # noqa: E402

MANIFEST = ROOT / "assets" / "corpus" / "manifest.csv"
SPLITS = ("val", "test", "ood")
SCORERS = ("dis", "gen", "gen+dis")


def sound_share(train: FeatureSet, fraction: float, seed: int) -> FeatureSet:
    """The clips of a random ``fraction`` of the training sounds (whole sounds; seeded)."""
    units = train.sound_units()
    num_units = int(units.max()) + 1
    keep = torch.randperm(num_units, generator=torch.Generator().manual_seed(2000 + seed))[:max(2, round(fraction * num_units))]
    return train.subset(torch.isin(units, keep).nonzero().flatten())


def scores_of(checkpoint: Path, feats: dict[str, FeatureSet]) -> dict[str, dict[str, list[float]]]:
    model = load_checkpoint(checkpoint).eval()
    out: dict[str, dict[str, list[float]]] = {}
    for split in SPLITS:
        values: dict[str, list[tuple[float, float]]] = {s: [] for s in SCORERS}
        for seed in (0, 1, 2):
            matrices = score_matrices(model, feats[split].audio, feats[split].text, model.config.with_retrieval(seed=seed))
            for scorer in SCORERS:
                m = retrieval_metrics(matrices["text_to_audio"][scorer], matrices["audio_to_text"][scorer],
                                      feats[split].caption_to_clip)
                values[scorer].append((m["text_to_audio/R@1"], m["audio_to_text/R@1"]))
        out[split] = {s: [statistics.mean(v[0] for v in values[s]), statistics.mean(v[1] for v in values[s])]
                      for s in SCORERS}
    return out


def table(results: dict[str, Any]) -> str:
    lines = ["| training sounds | scorer | val T2A / A2T | test T2A / A2T | OOD T2A / A2T |", "|---|---|---|---|---|"]
    for share, res in results["shares"].items():
        for scorer in SCORERS:
            cells = []
            for split in SPLITS:
                t, a = res[split][scorer]
                cells.append(f"{t[0]:.1f} ± {t[1]:.1f} / {a[0]:.1f} ± {a[1]:.1f}")
            lines.append(f"| {share} ({res['sounds']} sounds) | {scorer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--runs", type=Path, default=Path("/tmp/learning_curve_runs"))
    parser.add_argument("--phase1-runs", type=Path, default=Path("/tmp/generalisation_runs"))
    parser.add_argument("--train-only", action="store_true", help="train the runs, score nothing (parallel workers)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "learning_curve.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    bench = generalisation_module()
    recipe = bench.SHIPPED_RECIPE
    feats = bench.corpus_features(bench.model_config(bench.RECIPES[recipe]), ("train", *SPLITS))
    per_share: dict[str, list[dict[str, Any]]] = {}
    sounds: dict[str, int] = {}
    for fraction in args.fractions:
        name = f"{round(100 * fraction)}%"
        for seed in args.seeds:
            init = bench.train_run(recipe, seed, feats, args.phase1_runs)
            train = sound_share(feats["train"], fraction, seed) if fraction < 1 else feats["train"]
            sounds[name] = int(train.sound_units().max()) + 1
            out = args.runs / f"{name.rstrip('%')}-s{seed}"
            if not (out / "done.json").is_file():
                shutil.rmtree(out, ignore_errors=True)
                print(f"phase 2 on {name} of the training sounds, seed {seed}", file=sys.stderr, flush=True)
                train_diffusion(init, TrainConfig.for_phase("diffusion", seed=seed, device="cpu", **PHASE2), train,
                                feats["val"], out, progress=False)
                (out / "done.json").write_text("{}")
            if not args.train_only:
                per_share.setdefault(name, []).append(scores_of(out / "best", feats))
    if args.train_only:
        return 0
    results: dict[str, Any] = {"recipe": recipe, "seeds": args.seeds, "phase2": PHASE2, "shares": {}}
    for name, runs in per_share.items():
        results["shares"][name] = {"sounds": sounds[name]}
        for split in SPLITS:
            results["shares"][name][split] = {
                s: [[statistics.mean(r[split][s][d] for r in runs),
                     statistics.stdev(r[split][s][d] for r in runs) if len(runs) > 1 else 0.0] for d in (0, 1)]
                for s in SCORERS}
    results["seconds"] = round(time.time() - started, 1)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\n{results['seconds']:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
