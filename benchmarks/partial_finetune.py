"""Partial fine-tuning benchmark: the shipped phase-1 recipe with the audio backbone's last
block(s) trained too (``--finetune-blocks N``, gain and time-shift copies), against the same
recipe on frozen features, on the built-in corpus.

For each training seed, the shipped recipe is first trained on frozen features (the
generalisation benchmark's run, reused when ``--runs`` holds it); each candidate starts from
those heads and trains them with the last N blocks (heads first, then both: "LP-FT", Kumar et
al., ICLR 2022), ``best/`` chosen on val. Every model is then scored by the generalisation
benchmark's own code (val, test, new test, OOD, reworded and everyday queries), the tuned ones
on audio features their own backbone computes. The winner is chosen on the val score alone.
Writes benchmarks/results/partial_finetune.json (atomically) and prints a Markdown table.

    DIFFATR_CACHE=/tmp/dcache OMP_NUM_THREADS=1 python benchmarks/partial_finetune.py
    python benchmarks/partial_finetune.py --seeds 0 --candidates "last block, gain + shift"
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from generalisation import (  # noqa: E402
    MANIFEST, RECIPES, SHIPPED_RECIPE, SPLITS, TRAIN_GALLERY, aggregate, corpus_features, load_queries, log,
    model_config, pair, score_models, slug, train_run, val_mean, val_score, write_results,
)

from diffatr.checkpoint import load_checkpoint, read_checkpoint  # noqa: E402
from diffatr.config import TrainConfig, from_dict  # noqa: E402
from diffatr.data.sounds import one_clip_per_sound  # noqa: E402
from diffatr.encoders.audio import build_audio_encoder  # noqa: E402
from diffatr.features import FeatureSet, LazyEncoders  # noqa: E402
from diffatr.indexing import default_cache_dir  # noqa: E402
from diffatr.machine import cpu_label  # noqa: E402
from diffatr.train import train_contrastive  # noqa: E402
from diffatr.train.partial import embed_cached, frozen_block_maps  # noqa: E402

# TrainConfig overrides of each candidate (on top of COMMON).
COMMON = {"epochs": 3, "lr": 3e-4, "backbone_lr": 1e-4, "warmup_fraction": 0.1}
CANDIDATES = {
    "last block, gain + shift": {"finetune_blocks": 1},
    "last block, no augmentation": {"finetune_blocks": 1, "augment_variants": 1},
    "last block, gain + shift, lr / 3": {"finetune_blocks": 1, "lr": 1e-4, "backbone_lr": 3e-5},
}
FROZEN = "frozen backbone (the shipped recipe)"


def tune_run(name: str, seed: int, init: Path, feats: dict[str, FeatureSet], runs: Path, threads: int) -> Path:
    """One candidate and seed, from the frozen run's heads; a finished run is reused."""
    out = runs / f"partial-{slug(name)}-seed{seed}"
    if (out / "done.json").is_file():
        return out / "best"
    config, _ = read_checkpoint(init)
    train = TrainConfig.for_phase("contrastive", seed=seed, device="cpu", **RECIPES[SHIPPED_RECIPE].train,
                                  **{**COMMON, **CANDIDATES[name]})
    started = time.time()
    result = train_contrastive(config, train, feats["train"], feats["val"], out, init=init, progress=False,
                               cache_dir=default_cache_dir(), data_info={"source": str(MANIFEST)})
    (out / "done.json").write_text(json.dumps({"seconds": round(time.time() - started, 1), "threads": threads,
                                               "steps": result.step, "best_step": result.best_step}))
    return out / "best"


def tuned_features(checkpoint: Path, feats: dict[str, FeatureSet], gallery: FeatureSet
                   ) -> tuple[dict[str, FeatureSet], FeatureSet]:
    """Every split's (and the train gallery's) audio features from the checkpoint's own tuned
    backbone: the frozen blocks' cached maps of the clean clips, finished by the tuned blocks
    (the same numbers ``embed_file`` gives, tested in tests/test_partial_finetune.py)."""
    config, extra = read_checkpoint(checkpoint)
    train_config = from_dict(TrainConfig, extra["train"])
    encoder = build_audio_encoder(config.audio)
    backbone = encoder.backbone.eval()
    cut = backbone.num_stages - train_config.finetune_blocks
    # The frozen blocks are the pretrained ones: their maps come from the cache the run filled.
    pretrained = build_audio_encoder(dataclasses.replace(config.audio, weights=None))
    out = {}
    for split, fs in feats.items():
        maps = frozen_block_maps(fs.paths, pretrained, cut, train_config, 1, cache_dir=default_cache_dir(),
                                 progress=False, desc=split)
        out[split] = dataclasses.replace(fs, audio_features=embed_cached(backbone, maps, cut))
    rows = {c: i for i, c in enumerate(feats["train"].clip_ids)}
    tuned_gallery = dataclasses.replace(gallery, audio_features=out["train"].audio[[rows[c] for c in gallery.clip_ids]])
    return out, tuned_gallery


def table(results: dict[str, Any]) -> str:
    lines = ["| phase 1 | val score | val R@1 | test R@1 | new test R@1 | OOD R@1 (first release) | OOD R@1 (all) | "
             "reworded, class (all) | everyday right (of 20) | training time per seed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results["candidates"].items():
        stats = res["seeds"]
        mark = " **(val winner)**" if name == results["winner"] else ""
        cells = " | ".join(pair(stats, f"{s}/{{d}}/R@1") for s in ("val", "test", "test_new", "ood_first", "ood"))
        lines.append(f"| {name}{mark} | {val_score(stats):.1f} | {cells} | "
                     f"{stats['reworded/corpus/all/class'][0]:.0f} | {stats['everyday/right'][0]:.1f} | "
                     f"{res.get('time', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--runs", type=Path, default=Path("/tmp/generalisation_runs"),
                        help="where the frozen runs are (or go) and the tuned runs go")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one run per core)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "partial_finetune.json")
    parser.add_argument("--smoke", type=int, metavar="CLIPS",
                        help="a smoke test: every split cut to its first CLIPS clips, two steps a run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()

    base = model_config(RECIPES[SHIPPED_RECIPE])
    encoders = LazyEncoders(base)
    feats = corpus_features(base, (*SPLITS, "ood_first"))
    if args.smoke:
        feats = {s: f.subset(range(min(args.smoke, f.num_clips))) for s, f in feats.items()}
        COMMON["max_steps"] = 2
    gallery = feats["train"].subset(one_clip_per_sound(feats["train"].sound_units(), TRAIN_GALLERY,
                                                       torch.Generator().manual_seed(0)))
    rows = {r["clip_id"]: r for r in csv.DictReader(MANIFEST.open(encoding="utf-8"))}
    reworded, everyday = load_queries()
    query_text = encoders.text.encode([q["query"] for q in reworded] + [q["query"] for q in everyday]).float()

    results: dict[str, Any] = {"candidates": {}, "seeds": args.seeds, "recipe": SHIPPED_RECIPE, "common": COMMON,
                               "machine": f"{cpu_label()}, {args.threads} torch thread(s)",
                               "python": platform.python_version(), "torch": torch.__version__}
    inits = {seed: train_run(SHIPPED_RECIPE, seed, feats, args.runs) for seed in args.seeds}
    per_seed = [score_models([load_checkpoint(inits[s])], feats, gallery, query_text, rows, reworded, everyday)
                for s in args.seeds]
    results["candidates"][FROZEN] = {"train": {}, "seeds": aggregate(per_seed), "per_seed": per_seed}
    for name in args.candidates:
        log(f"{name}: {len(args.seeds)} seed(s)")
        per_seed, seconds = [], []
        for seed in args.seeds:
            best = tune_run(name, seed, inits[seed], feats, args.runs, args.threads)
            seconds.append(json.loads((best.parent / "done.json").read_text())["seconds"])
            tuned, tuned_gallery = tuned_features(best, feats, gallery)
            per_seed.append(score_models([load_checkpoint(best)], tuned, tuned_gallery, query_text, rows, reworded,
                                         everyday))
        results["candidates"][name] = {"train": {**COMMON, **CANDIDATES[name]}, "seeds": aggregate(per_seed),
                                       "per_seed": per_seed, "seconds_per_seed": seconds,
                                       "time": f"{sum(seconds) / len(seconds) / 60:.1f} min"}
    results["winner"] = max(results["candidates"], key=lambda n: val_score(results["candidates"][n]["seeds"]))
    results["winner_by_val_r1_alone"] = max(results["candidates"],
                                            key=lambda n: val_mean(results["candidates"][n]["seeds"]))
    return write_results(results, args.out, started, table(results), f"val winner: {results['winner']}")


if __name__ == "__main__":
    raise SystemExit(main())
