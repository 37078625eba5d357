"""Re-rankers on the built-in corpus: does the diffusion beat cosine *and* the cheap re-rankers?

On the shipped phase-1 recipe (the generalisation benchmark's winner), for every training seed:
phase 2 is trained plainly (on the phase-1 model's own embeddings of the training split) and
cross-fitted (``diffatr train --phase diffusion --cross-fit K``: K phase-1 models, each trained
without one K-th of the training sounds, embed that K-th; the denoisers then train on these
out-of-fold embeddings, whose cosine errors look like those of unseen clips; inference uses the
full phase-1 model). Each
checkpoint is scored on val / test / OOD, both directions, with (``diffatr.retrieval.fusion``):

- Dis: cosine; QB-Norm with a bank of the training queries (usable one query at a time);
  inverted softmax and dual softmax over all the split's queries (transductive: reported, not
  a serving option); the ensemble of the seeds' cosines (one scorer, three models);
- Gen: the diffusion term alone; Gen+Dis with the paper's rule (temperature 1, alpha 1) and
  with the z-score rule; Gen+QB: z-score fusion on top of QB-Norm.

Further phase-2 variants (``--variants``): the denoiser's shortlist context (``--denoiser-context
shortlist`` and ``shortlist+hubness``) and the corpus's mixtures of training clips as extra
phase-2 items (``--mixtures``).

Text queries enter the first stage as the engine sends them: expanded toward the checkpoint's
known captions when it keeps a caption bank (``--phase1-runs`` of a diffatr with
known-caption expansion), as typed otherwise; the denoiser always sees the query as typed.

Every knob (QB-Norm's beta, the transductive temperatures, the z-score alpha) is chosen per
direction on val (mean over training and DDIM seeds); Gen numbers average 3 DDIM seeds. The
claim check compares the best Gen+X with Dis and with the best single-query cheap re-ranker,
per direction and split, against the seed std. Writes benchmarks/results/rerankers.json.

    DIFFATR_CACHE=/tmp/dcache python benchmarks/rerankers.py              # ~40 min from scratch
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
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

from diffatr.checkpoint import load_checkpoint  # noqa: E402
from diffatr.config import RetrievalConfig, TrainConfig  # noqa: E402
from diffatr.corpus.mixtures import read_recipes  # noqa: E402
from diffatr.data.manifest import read_manifest  # noqa: E402
from diffatr.features import FeatureSet, FeatureError, mixture_features  # noqa: E402
from diffatr.fileio import atomic_write_text  # noqa: E402
from diffatr.metrics import retrieval_metrics  # noqa: E402
from diffatr.retrieval import rerank_topk, stable_topk  # noqa: E402
from diffatr.retrieval.expansion import expand_text_queries  # noqa: E402
from diffatr.retrieval.fusion import dual_softmax, ensemble, fuse, gen_rank_scores, inverted_softmax, qb_norm  # noqa: E402
from diffatr.train import train_diffusion  # noqa: E402

MANIFEST = ROOT / "assets" / "corpus" / "manifest.csv"
SPLITS = ("val", "test", "test_new", "ood")
SPLIT_NAMES = {"val": "val", "test": "test", "test_new": "new test", "ood": "OOD"}
DIRS = ("text_to_audio", "audio_to_text")
PHASE2 = {"lr": 1e-3, "epochs": 30, "select_metric": "gen/mean/R@1"}  # the shipped `long` recipe
DDIM_SEEDS = (0, 1, 2)
BETAS = (1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 20.0)
TEMPERATURES = (0.01, 0.02, 0.05, 0.1, 0.2)
ALPHAS = (0.1, 0.25, 0.5, 1.0)
SINGLE_QUERY_CHEAP = ("qb-norm", "ensemble")
# Phase-2 variants besides plain / cross-fit: the denoiser's shortlist context and the mixtures.
OTHER_VARIANTS: dict[str, dict[str, Any]] = {
    "context shortlist": {"context": "shortlist"},
    "context shortlist+hubness": {"context": "shortlist+hubness"},
    "mixtures": {"mixtures": True},
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def generalisation_module():
    spec = importlib.util.spec_from_file_location("generalisation_bench", ROOT / "benchmarks" / "generalisation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def phase2_run(init: Path, seed: int, train: FeatureSet, val: FeatureSet, out: Path, cross_fit: int = 0, *,
               context: str = "none", extra_train: FeatureSet | None = None) -> Path:
    """Phase 2 (the shipped recipe) on one phase-1 model; a finished run is reused."""
    if not (out / "done.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        config = load_checkpoint(init).config
        config = dataclasses.replace(config, denoiser=dataclasses.replace(config.denoiser, context=context))
        train_diffusion(init, TrainConfig.for_phase("diffusion", seed=seed, device="cpu", cross_fit=cross_fit, **PHASE2),
                        train, val, out, model_config=config, progress=False, extra_train=extra_train)
        (out / "done.json").write_text("{}")
    return out / "best"


def training_mixtures(train: FeatureSet, config, cache: Path) -> FeatureSet:
    """Features of the corpus's mixtures made of training clips only (computed once, cached)."""
    try:
        return FeatureSet.load(cache)
    except FeatureError:
        pass
    paths = {r.clip_id: r.path for r in read_manifest(MANIFEST) if r.clip_id in set(train.clip_ids)}
    recipes = [r for r in read_recipes(MANIFEST.parent / "mixtures.jsonl") if all(c.clip_id in paths for c in r.clips)]
    log(f"embedding {len(recipes)} training mixtures")
    features = mixture_features(recipes, paths, config, progress=False)
    features.save(cache)
    return features


def r1(scores: torch.Tensor, direction: str, caption_to_clip: torch.Tensor) -> float:
    """R@1 of one direction's (Q, C) score matrix."""
    if direction == "text_to_audio":
        return retrieval_metrics(scores, None, caption_to_clip)["text_to_audio/R@1"]
    return retrieval_metrics(scores.T, scores, caption_to_clip)["audio_to_text/R@1"]


class Scored:
    """Everything one checkpoint needs on one split and direction, computed once."""

    def __init__(self, model, fs: FeatureSet, train: FeatureSet, direction: str):
        with torch.no_grad():
            text, audio = model.project_text(fs.text), model.project_audio(fs.audio)
            self.direction = direction
            self.labels = fs.caption_to_clip
            if direction == "text_to_audio":
                # The first stage of text queries as the engine runs it: expanded toward the known
                # captions when the checkpoint keeps a caption bank (its knobs); the denoiser sees q.
                knobs = model.config.retrieval
                self.queries, self.candidates = text, audio
                self.bank = expand_text_queries(model, train.text, model.project_text(train.text), knobs)
                first = expand_text_queries(model, fs.text, text, knobs)
            else:
                self.queries, self.candidates, self.bank = audio, text, model.project_audio(train.audio)
                first = audio
        self.cosine = first @ self.candidates.T  # (Q, C)
        self.bank_scores = self.bank @ self.candidates.T  # (B, C)
        self.denoiser = model.denoisers[direction]
        self.scheduler = model.make_scheduler()
        self.top_k = min(model.config.retrieval.top_k, self.candidates.shape[0])
        self._x0: dict[tuple[str, float, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def first_stage(self, name: str, knob: float | None) -> torch.Tensor:
        if name == "dis":
            return self.cosine
        if name == "qb-norm":
            return qb_norm(self.cosine, self.bank_scores, knob)
        if name == "inverted softmax":
            return inverted_softmax(self.cosine, knob)
        if name == "dual softmax":
            return dual_softmax(self.cosine, knob)
        raise ValueError(name)

    def diffusion(self, stage: str, knob: float | None, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scores (Q, C), top-K rows (Q, K), x0 (Q, K) in first-stage order) for one DDIM seed."""
        key = (stage, knob or 0.0, seed)
        if key not in self._x0:
            scores = self.first_stage(stage, knob)
            top_scores, top_indices = stable_topk(scores, self.top_k)
            # x0 only: the fusion rules are applied to it below (alpha 0 leaves the fused score alone)
            settings = RetrievalConfig(num_inference_steps=50, alpha=0.0, temperature=1.0, seed=seed)
            result = rerank_topk(self.queries, self.candidates, top_scores, top_indices, self.denoiser,
                                 self.scheduler, settings)
            x0 = torch.empty_like(result.x0).scatter_(1, result.cosine_rank, result.x0)
            self._x0[key] = (scores, top_indices, x0)
        return self._x0[key]

    def gen_metric(self, scorer: str, knobs: dict[str, Any]) -> float:
        values = []
        for seed in DDIM_SEEDS:
            stage = "qb-norm" if scorer == "gen+qb" else "dis"
            scores, top_indices, x0 = self.diffusion(stage, knobs.get("beta") if stage == "qb-norm" else None, seed)
            top_scores = scores.gather(1, top_indices)
            if scorer == "gen":
                ranked = gen_rank_scores(scores, top_indices, torch.softmax(x0, dim=-1))
            else:
                rule = "paper" if scorer == "gen+dis (paper)" else "zscore"
                fused, _ = fuse(top_scores, x0, rule=rule, alpha=knobs.get("alpha", 1.0), temperature=1.0)
                ranked = scores.scatter(1, top_indices, fused)
            values.append(r1(ranked, self.direction, self.labels))
        return statistics.mean(values)


def metric(scored: Scored, scorer: str, knobs: dict[str, Any]) -> float:
    if scorer in ("dis", "qb-norm", "inverted softmax", "dual softmax"):
        knob = knobs.get("beta") if scorer == "qb-norm" else knobs.get("temperature")
        return r1(scored.first_stage(scorer, knob), scored.direction, scored.labels)
    return scored.gen_metric(scorer, knobs)


GRIDS: dict[str, list[dict[str, float]]] = {
    "dis": [{}],
    "qb-norm": [{"beta": b} for b in BETAS],
    "inverted softmax": [{"temperature": t} for t in TEMPERATURES],
    "dual softmax": [{"temperature": t} for t in TEMPERATURES],
    "gen": [{}],
    "gen+dis (paper)": [{}],
    "gen+dis (z-score)": [{"alpha": a} for a in ALPHAS],
}


def mean_std(values: list[float]) -> list[float]:
    return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def evaluate_variant(checkpoints: list[Path], feats: dict[str, FeatureSet]) -> dict[str, Any]:
    """Every scorer of one phase-2 variant over the training seeds, knobs chosen on val."""
    models = [load_checkpoint(c).eval() for c in checkpoints]
    scored = {(i, s, d): Scored(m, feats[s], feats["train"], d) for i, m in enumerate(models) for s in SPLITS
              for d in DIRS}
    out: dict[str, Any] = {}
    for direction in DIRS:
        chosen: dict[str, dict[str, float]] = {}
        for scorer, grid in GRIDS.items():
            val = [statistics.mean(metric(scored[(i, "val", direction)], scorer, knobs) for i in range(len(models)))
                   for knobs in grid]
            chosen[scorer] = grid[max(range(len(grid)), key=val.__getitem__)]  # first best on val
        # Gen+QB: z-score fusion on QB-Norm's first stage at its chosen beta; alpha chosen on val.
        grid = [{"beta": chosen["qb-norm"]["beta"], "alpha": a} for a in ALPHAS]
        val = [statistics.mean(metric(scored[(i, "val", direction)], "gen+qb", k) for i in range(len(models)))
               for k in grid]
        chosen["gen+qb"] = grid[max(range(len(grid)), key=val.__getitem__)]
        for scorer, knobs in chosen.items():
            out.setdefault(scorer, {"knobs": {}})["knobs"][direction] = knobs
            for split in SPLITS:
                values = [metric(scored[(i, split, direction)], scorer, knobs) for i in range(len(models))]
                out[scorer][f"{split}/{direction}/R@1"] = mean_std(values)
        for split in SPLITS:  # the seeds' cosines averaged: one scorer, no seed std
            scores = ensemble([scored[(i, split, direction)].cosine for i in range(len(models))])
            out.setdefault("ensemble", {"knobs": {}})[f"{split}/{direction}/R@1"] = [
                r1(scores, direction, feats[split].caption_to_clip), 0.0]
    return out


def claim(variant: dict[str, Any]) -> dict[str, Any]:
    """Per split and direction: the best Gen+X on test/OOD against Dis and the best cheap
    single-query re-ranker, and whether it wins by more than the seed std."""
    gens = ("gen+dis (paper)", "gen+dis (z-score)", "gen+qb")
    out = {}
    for split in SPLITS[1:]:
        for direction in DIRS:
            key = f"{split}/{direction}/R@1"
            best_gen = max(gens, key=lambda s: variant[s][key][0])
            cheap = max(SINGLE_QUERY_CHEAP, key=lambda s: variant[s][key][0])
            value, std = variant[best_gen][key]
            out[key] = {"best_gen": best_gen, "gen": value, "std": std, "dis": variant["dis"][key][0],
                        "best_cheap": cheap, "cheap": variant[cheap][key][0],
                        "beats_dis": value - variant["dis"][key][0] > std,
                        "beats_cheap": value - variant[cheap][key][0] > std}
    return out


def table(results: dict[str, Any]) -> str:
    lines = ["| phase 2 | scorer | " + " | ".join(f"{SPLIT_NAMES[s]} T2A / A2T" for s in SPLITS) + " |",
             "|---|---|" + "---|" * len(SPLITS)]
    for variant, scores in results["variants"].items():
        for scorer, res in scores.items():
            cells = []
            for split in SPLITS:
                t, a = res[f"{split}/text_to_audio/R@1"], res[f"{split}/audio_to_text/R@1"]
                cells.append(f"{t[0]:.1f} ± {t[1]:.1f} / {a[0]:.1f} ± {a[1]:.1f}" if t[1] or a[1]
                             else f"{t[0]:.1f} / {a[0]:.1f}")
            lines.append(f"| {variant} | {scorer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cross-fit", type=int, nargs="*", default=[5], metavar="K",
                        help="cross-fitted variants to train (folds); none = plain phase 2 only")
    parser.add_argument("--variants", nargs="*", default=list(OTHER_VARIANTS), choices=list(OTHER_VARIANTS),
                        help="phase-2 variants besides plain and cross-fitting")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/rerankers_runs"))
    parser.add_argument("--phase1-runs", type=Path, default=Path("/tmp/generalisation_runs"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rerankers.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    bench = generalisation_module()
    recipe_name = bench.SHIPPED_RECIPE
    feats = bench.corpus_features(bench.model_config(bench.RECIPES[recipe_name]), ("train", *SPLITS))
    args.runs.mkdir(parents=True, exist_ok=True)
    variants: dict[str, list[Path]] = {"plain": []}
    for k in args.cross_fit:
        variants[f"cross-fit {k}"] = []
    for name in args.variants:
        variants[name] = []
    mixtures = None
    if "mixtures" in args.variants:
        mixtures = training_mixtures(feats["train"], bench.model_config(bench.RECIPES[recipe_name]),
                                     args.runs / "mixture-features")
    for seed in args.seeds:
        init = bench.train_run(recipe_name, seed, feats, args.phase1_runs)
        log(f"seed {seed}: phase 2, plain")
        variants["plain"].append(phase2_run(init, seed, feats["train"], feats["val"], args.runs / f"plain-s{seed}", 0))
        for k in args.cross_fit:
            log(f"seed {seed}: phase 2, cross-fit {k}")
            variants[f"cross-fit {k}"].append(
                phase2_run(init, seed, feats["train"], feats["val"], args.runs / f"crossfit{k}-s{seed}", k))
        for name in args.variants:
            log(f"seed {seed}: phase 2, {name}")
            slug = name.replace("context ", "").replace("+", "-")
            variants[name].append(phase2_run(init, seed, feats["train"], feats["val"], args.runs / f"{slug}-s{seed}",
                                             context=OTHER_VARIANTS[name].get("context", "none"),
                                             extra_train=mixtures if OTHER_VARIANTS[name].get("mixtures") else None))
    results: dict[str, Any] = {"recipe": recipe_name, "seeds": args.seeds, "ddim_seeds": list(DDIM_SEEDS),
                               "phase2": PHASE2, "variants": {}, "claims": {}}
    for name, checkpoints in variants.items():
        log(f"scoring {name}")
        results["variants"][name] = evaluate_variant(checkpoints, feats)
        results["claims"][name] = claim(results["variants"][name])
    results["seconds"] = round(time.time() - started, 1)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(table(results))
    for name, checks in results["claims"].items():
        print(f"\n{name}: " + "; ".join(
            f"{key.split('/R@1')[0]}: {c['best_gen']} {c['gen']:.1f} vs Dis {c['dis']:.1f} / {c['best_cheap']} "
            f"{c['cheap']:.1f} (std {c['std']:.1f}){' WIN' if c['beats_dis'] and c['beats_cheap'] else ''}"
            for key, c in checks.items()))
    print(f"\n{results['seconds']:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
