"""How much data do the two phases need? Both phases on a share of the training sounds.

The shipped recipe (phase 1: the generalisation benchmark's val winner, ``SHIPPED_RECIPE``;
phase 2: the shipped ``long`` recipe) is trained on 1/8, 1/4, 1/2 and all of the training
split's sounds (whole sounds, drawn with the training seed; val selects each run's best
epoch, as always). Every model is scored on val, test (first release), test_new, OOD and OOD's
first-release clips: phase 1 with cosine (Dis), phase 2 with Gen (the diffusion term alone) and
Gen+Dis (paper rule) beside Dis (3 DDIM seeds; mean ± std over training seeds). Writes
benchmarks/results/learning_curve.json, prints a Markdown table and draws
benchmarks/results/learning_curve.png (matplotlib: ``pip install matplotlib``).

    DIFFATR_CACHE=/tmp/dcache python benchmarks/learning_curve.py
    python benchmarks/learning_curve.py --seeds 0 --fractions 0.25 1 --phases 1   # a share of the runs
    python benchmarks/learning_curve.py --plot-only                             # redraw the PNG
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
from diffatr.fileio import atomic_write_bytes, atomic_write_text  # noqa: E402
from diffatr.metrics import retrieval_metrics  # noqa: E402
from diffatr.train import train_contrastive, train_diffusion  # noqa: E402
from rerankers import PHASE2, generalisation_module  # noqa: E402

SPLITS = ("val", "test", "test_new", "ood", "ood_first")
SPLIT_NAMES = {"val": "val", "test": "test", "test_new": "new test", "ood": "OOD (all)", "ood_first": "OOD (first release)"}
FRACTIONS = (0.125, 0.25, 0.5, 1.0)
PHASE2_SCORERS = ("dis", "gen", "gen+dis")
DDIM_SEEDS = (0, 1, 2)
OUT = ROOT / "benchmarks" / "results" / "learning_curve.json"


def sound_share(train: FeatureSet, fraction: float, seed: int) -> FeatureSet:
    """The clips of a random ``fraction`` of the training sounds (whole sounds; seeded)."""
    if fraction >= 1:
        return train
    units = train.sound_units()
    num_units = int(units.max()) + 1
    order = torch.randperm(num_units, generator=torch.Generator().manual_seed(2000 + seed))
    keep = order[:max(2, round(fraction * num_units))]
    return train.subset(torch.isin(units, keep).nonzero().flatten())


def r1_pair(text_to_audio: torch.Tensor, audio_to_text: torch.Tensor | None, labels: torch.Tensor) -> list[float]:
    m = retrieval_metrics(text_to_audio.float(), None if audio_to_text is None else audio_to_text.float(), labels)
    return [m["text_to_audio/R@1"], m["audio_to_text/R@1"]]


@torch.no_grad()
def phase1_scores(checkpoint: Path, feats: dict[str, FeatureSet]) -> dict[str, dict[str, list[float]]]:
    model = load_checkpoint(checkpoint).eval()
    out = {}
    for split in SPLITS:
        f = feats[split]
        cosine = model.project_text(f.text.float()) @ model.project_audio(f.audio.float()).T  # (M, N)
        out[split] = {"dis": r1_pair(cosine, None, f.caption_to_clip)}
    return out


@torch.no_grad()
def phase2_scores(checkpoint: Path, feats: dict[str, FeatureSet]) -> dict[str, dict[str, list[float]]]:
    """R@1 (T2A, A2T) per split and scorer, Gen and Gen+Dis averaged over the DDIM seeds."""
    model = load_checkpoint(checkpoint).eval()
    out: dict[str, dict[str, list[float]]] = {}
    for split in SPLITS:
        f = feats[split]
        per_seed: dict[str, list[list[float]]] = {s: [] for s in PHASE2_SCORERS}
        for seed in DDIM_SEEDS:
            matrices = score_matrices(model, f.audio, f.text, model.config.with_retrieval(seed=seed), PHASE2_SCORERS)
            for scorer in PHASE2_SCORERS:
                per_seed[scorer].append(r1_pair(matrices["text_to_audio"][scorer], matrices["audio_to_text"][scorer],
                                                f.caption_to_clip))
        out[split] = {s: [statistics.mean(v[d] for v in per_seed[s]) for d in (0, 1)] for s in PHASE2_SCORERS}
    return out


def train_share(phase: int, fraction: float, seed: int, feats: dict[str, FeatureSet], runs: Path, bench) -> Path:
    """The run of one phase, share and seed (a finished run is reused); returns its best/."""
    out = runs / f"p{phase}-{fraction:g}-s{seed}"
    if (out / "done.json").is_file():
        return out / "best"
    shutil.rmtree(out, ignore_errors=True)
    train = sound_share(feats["train"], fraction, seed)
    started = time.time()
    if phase == 1:
        recipe = bench.RECIPES[bench.SHIPPED_RECIPE]
        config = TrainConfig.for_phase("contrastive", seed=seed, device="cpu", **recipe.train)
        train_contrastive(bench.model_config(recipe), config, train, feats["val"], out, progress=False)
    else:
        init = train_share(1, fraction, seed, feats, runs, bench)
        train_diffusion(init, TrainConfig.for_phase("diffusion", seed=seed, device="cpu", **PHASE2), train,
                        feats["val"], out, progress=False)
    (out / "done.json").write_text(json.dumps({"seconds": round(time.time() - started, 1)}))
    return out / "best"


def summarise(per_seed: list[dict[str, dict[str, list[float]]]]) -> dict[str, dict[str, list[list[float]]]]:
    """split -> scorer -> [[T2A mean, std], [A2T mean, std]] over training seeds."""
    def stat(values: list[float]) -> list[float]:
        return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]

    return {split: {scorer: [stat([run[split][scorer][d] for run in per_seed]) for d in (0, 1)]
                    for scorer in per_seed[0][split]} for split in SPLITS}


def table(results: dict[str, Any]) -> str:
    lines = ["| phase | training sounds | scorer | " + " | ".join(f"{SPLIT_NAMES[s]} T2A / A2T" for s in SPLITS) + " |",
             "|---|---|---|" + "---|" * len(SPLITS)]
    for phase in ("1", "2"):
        for share in results.get("phases", {}).get(phase, {}).values():
            for scorer in share["scores"][SPLITS[0]]:
                cells = []
                for split in SPLITS:
                    t, a = share["scores"][split][scorer]
                    cells.append(f"{t[0]:.1f} ± {t[1]:.1f} / {a[0]:.1f} ± {a[1]:.1f}")
                lines.append(f"| {phase} | {share['label']} ({share['sounds']}) | {scorer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """R@1 (mean of both directions) against training sounds: phase 1 per split, and phase 2's
    scorers on test and new test."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    mean = lambda cell: (cell[0][0] + cell[1][0]) / 2  # noqa: E731
    p1 = list(results["phases"].get("1", {}).values())
    for split in SPLITS:
        if p1:
            axes[0].plot([s["sounds"] for s in p1], [mean(s["scores"][split]["dis"]) for s in p1], "o-",
                         label=SPLIT_NAMES[split])
    axes[0].set_title("Phase 1 (Dis: cosine)")
    p2 = list(results["phases"].get("2", {}).values())
    styles = {"dis": ":", "gen": "--", "gen+dis": "-"}
    for split, colour in (("test", "tab:orange"), ("test_new", "tab:green"), ("ood", "tab:red")):
        for scorer in PHASE2_SCORERS:
            if p2:
                axes[1].plot([s["sounds"] for s in p2], [mean(s["scores"][split][scorer]) for s in p2],
                             styles[scorer], marker="o", color=colour, label=f"{SPLIT_NAMES[split]}, {scorer}")
    axes[1].set_title("Phase 2 (Gen, Gen+Dis beside Dis)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("distinct training sounds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("R@1, mean of T2A and A2T (%)")
    fig.suptitle("Learning curves on the built-in corpus (mean over 3 training seeds)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--phases", type=int, nargs="+", choices=(1, 2), default=[1, 2])
    parser.add_argument("--runs", type=Path, default=Path("/tmp/learning_curve_runs"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from --out")
    args = parser.parse_args(argv)
    png = args.out.with_suffix(".png")
    if args.plot_only:
        plot(json.loads(args.out.read_text()), png)
        return 0
    torch.set_num_threads(1)
    started = time.time()
    bench = generalisation_module()
    feats = bench.corpus_features(bench.model_config(bench.RECIPES[bench.SHIPPED_RECIPE]), ("train", *SPLITS))
    results: dict[str, Any] = {"recipe": bench.SHIPPED_RECIPE, "phase2": PHASE2, "seeds": args.seeds,
                               "ddim_seeds": list(DDIM_SEEDS), "phases": {}, "train_seconds": {}}
    for phase in sorted(args.phases):
        for fraction in sorted(args.fractions):
            runs = [train_share(phase, fraction, seed, feats, args.runs, bench) for seed in args.seeds]
            scorer = phase1_scores if phase == 1 else phase2_scores
            share = sound_share(feats["train"], fraction, args.seeds[0])
            results["phases"].setdefault(str(phase), {})[f"{fraction:g}"] = {
                "label": "all" if fraction >= 1 else f"1/{round(1 / fraction)}",
                "sounds": int(share.sound_units().max()) + 1, "clips": share.num_clips,
                "scores": summarise([scorer(run, feats) for run in runs]),
                "train_seconds": [json.loads((run.parent / "done.json").read_text()).get("seconds") for run in runs],
            }
            atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    results["seconds"] = round(time.time() - started, 1)
    results["machine"] = "2-core CPU (see benchmarks/results/speed.json for the model), one torch thread"
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(table(results))
    try:
        plot(results, png)
        print(f"\nwrote {args.out} and {png} ({results['seconds']:.0f} s)")
    except ImportError:
        print(f"\nwrote {args.out}; pip install matplotlib to draw {png.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
