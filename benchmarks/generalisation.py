"""Generalisation benchmark: phase-1 recipes on the built-in corpus, train / val / test / new
test / OOD side by side, and the two query sets a user would type.

For every recipe (``RECIPES``) phase 1 is trained for each training seed (frozen backbones,
features cached), ``best/`` chosen on val as always. Each model is scored with cosine (Dis):

- R@1 both directions on train (a gallery of one clip per sound, 98 sounds drawn with seed 0,
  sized like test: hits are sound-level, see ``diffatr.data.sounds``), val, test (the first
  release's test split), test_new (sounds new to the second release), OOD (held-out packages)
  and OOD's first-release clips alone (``ood_first``: the numbers of earlier releases), and the
  train - test gap;
- reworded queries (``benchmarks/queries/reworded.jsonl``: val / test / OOD clips of the first
  release, each query worded unlike every caption of its clip), top 1 over the full corpus, at
  clip level (the target clip) and sound-class level (any clip of the target's ``sound_class``);
- everyday queries (``benchmarks/queries/everyday.jsonl``: 20 short queries, each with the sound
  classes a user would accept), top 1 over the full corpus.

Each recipe is also scored as an ensemble of its seeds (mean of their cosines, one scorer).
The single-model recipe with the best val score wins (``val_score``: val caption R@1 and the val
part of the reworded queries; ensembles are reported beside it); test, OOD, the test / OOD
reworded queries and the everyday queries are only reported.
Writes benchmarks/results/generalisation.json (atomically) and prints Markdown tables.

    DIFFATR_CACHE=/tmp/dcache python benchmarks/generalisation.py          # 3 seeds
    python benchmarks/generalisation.py --seeds 0 --recipes "LiT, wide MLP audio head + dropout"
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
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
from diffatr.data.sounds import one_clip_per_sound  # noqa: E402
from diffatr.features import FeatureSet, LazyEncoders, compute_features, records_of  # noqa: E402
from diffatr.fileio import atomic_write_text  # noqa: E402
from diffatr.indexing import default_cache_dir  # noqa: E402
from diffatr.metrics import retrieval_metrics  # noqa: E402
from diffatr.train import train_contrastive  # noqa: E402

MANIFEST = ROOT / "assets" / "corpus" / "manifest.csv"
QUERIES = ROOT / "benchmarks" / "queries"
SPLITS = ("train", "val", "test", "test_new", "ood")  # the manifest's splits
# What is reported: the evaluation splits, and OOD's first-release clips alone.
REPORT_SPLITS = ("val", "test", "test_new", "ood", "ood_first")
PINNED_SPLITS = ROOT / "diffatr" / "corpus" / "pinned_splits.tsv"
TRAIN_GALLERY = 98  # sounds in the train gallery: the size of the test split
DIRS = ("text_to_audio", "audio_to_text")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A phase-1 recipe: model-config and TrainConfig overrides on the default config."""

    note: str
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    # "": the 512-d aiSFX embedding alone; "logits" / "probs": with aiSFX's nine frozen classifier
    # heads' outputs (378) beside it, read from the clip's embedding (``aisfx_head_features``).
    aisfx_heads: str = ""


LIT = {"text_head": "identity", "embed_dim": 384}
RECIPES = {
    "clip-only negatives (before)": Recipe(
        "the previous default: only the clip itself is masked, temperature 0.07", train={"mask_same_sound": False}),
    "same sound": Recipe("same-sound pairs are never negatives, temperature 0.07"),
    "same sound, T 0.1": Recipe("as same sound, NT-Xent temperature 0.1", {"init_temperature": 0.1}),
    "LiT": Recipe("locked text tower: MiniLM's own space, only a linear audio head trained, T 0.1",
                  {**LIT, "init_temperature": 0.1}),
    "LiT, MLP audio head + dropout": Recipe(
        "locked text tower, audio head Linear-ReLU-Linear (hidden 512), dropout 0.2, T 0.1",
        {**LIT, "init_temperature": 0.1, "head_hidden_dim": 512, "head_dropout": 0.2}),
    "LiT, MLP audio head + dropout 0.4": Recipe(
        "as LiT, MLP audio head + dropout, with dropout 0.4",
        {**LIT, "init_temperature": 0.1, "head_hidden_dim": 512, "head_dropout": 0.4}),
    "LiT, wide MLP audio head + dropout": Recipe(
        "as LiT, MLP audio head + dropout, with hidden width 1024",
        {**LIT, "init_temperature": 0.1, "head_hidden_dim": 1024, "head_dropout": 0.2}),
    "LiT, MLP audio head + dropout, T 0.07": Recipe(
        "as LiT, MLP audio head + dropout, with temperature 0.07",
        {**LIT, "init_temperature": 0.07, "head_hidden_dim": 512, "head_dropout": 0.2}),
    "MLP heads + dropout": Recipe("both heads Linear-ReLU-Linear (hidden 512), dropout 0.2, T 0.1",
                                  {"init_temperature": 0.1, "head_hidden_dim": 512, "head_dropout": 0.2}),
    "wide MLP heads + dropout": Recipe("both heads Linear-ReLU-Linear (hidden 1024), dropout 0.2, T 0.1",
                                       {"init_temperature": 0.1, "head_hidden_dim": 1024, "head_dropout": 0.2}),
    "LiT + residual text adapter, MLP audio head + dropout": Recipe(
        "MiniLM's space plus a learned correction (x + MLP(x), zero at the start), MLP heads (hidden 512), "
        "dropout 0.2, T 0.1",
        {"text_head": "residual", "embed_dim": 384, "init_temperature": 0.1, "head_hidden_dim": 512,
         "head_dropout": 0.2}),
    "LiT + residual text adapter, wide MLP audio head + dropout": Recipe(
        "as LiT + residual text adapter, with hidden width 1024",
        {"text_head": "residual", "embed_dim": 384, "init_temperature": 0.1, "head_hidden_dim": 1024,
         "head_dropout": 0.2}),
    "LiT + residual text adapter, MLP audio head + dropout 0.4": Recipe(
        "as LiT + residual text adapter, with dropout 0.4",
        {"text_head": "residual", "embed_dim": 384, "init_temperature": 0.1, "head_hidden_dim": 512,
         "head_dropout": 0.4}),
    "LiT + residual text adapter, MLP audio head + dropout, T 0.07": Recipe(
        "as LiT + residual text adapter, with temperature 0.07",
        {"text_head": "residual", "embed_dim": 384, "init_temperature": 0.07, "head_hidden_dim": 512,
         "head_dropout": 0.2}),
}
RESIDUAL = {"text_head": "residual", "embed_dim": 384, "init_temperature": 0.1, "head_hidden_dim": 512,
            "head_dropout": 0.2}
for _kind in ("logits", "probs"):
    RECIPES[f"LiT + residual text adapter, MLP audio head + dropout, aiSFX heads ({_kind})"] = Recipe(
        f"as LiT + residual text adapter, the audio head also reads aiSFX's nine classifier heads ({_kind}, 378)",
        RESIDUAL, aisfx_heads=_kind)


# The recipe checkpoints/default is trained with (the val winner below; the commands in docs/usage.md).
SHIPPED_RECIPE = "LiT + residual text adapter, MLP audio head + dropout"


def corpus_features(config, splits) -> dict[str, FeatureSet]:
    """Backbone features of the built-in corpus's ``splits`` (through the feature cache);
    ``ood_first`` is the ``ood`` split's first-release clips."""
    encoders = LazyEncoders(config)
    out = {}
    for name in splits:
        split = load_split(MANIFEST, "ood" if name == "ood_first" else name)
        feats = compute_features(records_of(split), config, cache_dir=default_cache_dir(), encoders=encoders,
                                 progress=False)
        out[name] = first_release(feats) if name == "ood_first" else feats
    return out


def first_release(feats: FeatureSet) -> FeatureSet:
    """The clips of ``feats`` that the corpus's first release already held (pinned splits)."""
    from diffatr.corpus.splits import read_pinned_splits

    pinned = read_pinned_splits(PINNED_SPLITS)
    return feats.subset([c for c in feats.clip_ids if c in pinned])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def aisfx_classifier_heads(path: Path) -> list[torch.nn.Sequential]:
    """aiSFX's nine classifier heads (512 -> 256 -> 128 -> classes, ReLU between), frozen."""
    from diffatr.encoders.convert import extract_state_dict, load_pickled_checkpoint

    obj = load_pickled_checkpoint(path, trust=True)
    state = extract_state_dict(obj[0] if isinstance(obj, (tuple, list)) else obj)
    heads = []
    for i in range(9):
        layers = [torch.nn.Linear(*state[f"fc.{i}.{j}.weight"].shape[::-1]) for j in (0, 2, 4)]
        head = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
        head.load_state_dict({f"{a}.{b}": state[f"fc.{i}.{j}.{b}"].float()
                              for a, j in ((0, 0), (2, 2), (4, 4)) for b in ("weight", "bias")})
        heads.append(head.eval())
    return heads


@torch.no_grad()
def aisfx_head_features(fs: FeatureSet, heads: list[torch.nn.Sequential], kind: str) -> FeatureSet:
    """``fs`` with the heads' outputs (logits, or each head's softmax) beside the embedding:
    (N, 512) -> (N, 512 + 378)."""
    audio = fs.audio_features.float()
    outs = [head(audio) for head in heads]
    if kind == "probs":
        outs = [o.softmax(dim=-1) for o in outs]
    features = torch.cat([audio, *outs], dim=-1)
    encoders = {**fs.encoders, "audio": {**fs.encoders["audio"], "embed_dim": features.shape[1]}}
    return dataclasses.replace(fs, audio_features=features, encoders=encoders)


def model_config(recipe: Recipe):
    config = load_model_config("default")
    overrides = dict(recipe.model)
    if recipe.aisfx_heads:  # the audio head reads 512 + 378 features
        overrides["audio"] = dataclasses.replace(config.audio, embed_dim=config.audio.embed_dim + 378)
    if "embed_dim" in overrides:  # the denoiser reads the shared space
        overrides["denoiser"] = dataclasses.replace(config.denoiser, embed_dim=overrides["embed_dim"])
    return dataclasses.replace(config, **overrides)


def train_run(name: str, seed: int, feats: dict[str, FeatureSet], runs: Path) -> Path:
    """Phase 1 of one recipe and seed; a finished run under ``runs`` is reused."""
    recipe = RECIPES[name]
    out = runs / f"{slug(name)}-seed{seed}"
    if (out / "done.json").is_file():
        return out / "best"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    config = TrainConfig.for_phase("contrastive", seed=seed, device="cpu", **recipe.train)
    train_contrastive(model_config(recipe), config, feats["train"], feats["val"], out, progress=False,
                      data_info={"source": str(MANIFEST)})
    (out / "done.json").write_text("{}")
    return out / "best"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


@torch.no_grad()
def cosine(model, text: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """(Q, N) cosine scores of text features against audio features."""
    model.eval()
    return model.project_text(text.float()) @ model.project_audio(audio.float()).T


def r1(scores: torch.Tensor, caption_to_clip: torch.Tensor) -> tuple[float, float]:
    metrics = retrieval_metrics(scores, None, caption_to_clip)
    return metrics["text_to_audio/R@1"], metrics["audio_to_text/R@1"]


def top1_hits(scores: torch.Tensor, clip_ids: list[str], targets: list[set[str]]) -> list[bool]:
    """Whether each query's top clip is one of its targets. scores: (Q, N)."""
    return [clip_ids[j] in wanted for j, wanted in zip(scores.argmax(dim=1).tolist(), targets)]


def percent(hits: list[bool]) -> float:
    return 100.0 * sum(hits) / len(hits) if hits else float("nan")


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def load_queries() -> tuple[list[dict], list[dict]]:
    read = lambda name: [json.loads(line) for line in (QUERIES / name).read_text().splitlines() if line.strip()]  # noqa: E731
    return read("reworded.jsonl"), read("everyday.jsonl")


def everyday_targets(query: dict, rows: dict[str, dict]) -> set[str]:
    """The clips an everyday query accepts: of one of its ``classes`` and, with
    ``caption_words``, with one of those words in a caption."""
    words = [w.lower() for w in query.get("caption_words", [])]
    out = set()
    for clip, row in rows.items():
        if row["sound_class"] not in query["classes"]:
            continue
        text = " ".join(row.get(f"caption_{i}", "") for i in (1, 2, 3)).lower()
        if not words or any(w in text for w in words):
            out.add(clip)
    return out


def corpus_table(feats: dict[str, FeatureSet]) -> tuple[list[str], torch.Tensor]:
    """The full corpus: every clip id and its audio features (N, Da)."""
    ids = [c for split in SPLITS for c in feats[split].clip_ids]
    return ids, torch.cat([feats[split].audio for split in SPLITS])


def query_scores(scores_corpus: torch.Tensor, ids: list[str], rows: dict[str, dict], reworded: list[dict],
                 everyday: list[dict], n_reworded: int) -> dict[str, float]:
    """Reworded (clip / class level, per split) and everyday top-1 scores from (Q, N) scores
    over the full corpus; the first ``n_reworded`` queries are the reworded ones."""
    out: dict[str, float] = {}
    by_class: dict[str, set[str]] = {}
    for clip, row in rows.items():
        by_class.setdefault(row["sound_class"], set()).add(clip)
    rw_scores = scores_corpus[:n_reworded]
    for split in ("val", "test", "ood", "all"):
        picked = [i for i, q in enumerate(reworded) if split == "all" or q["split"] == split]
        if not picked:
            continue
        sub = rw_scores[picked]
        out[f"reworded/corpus/{split}/clip"] = percent(top1_hits(sub, ids, [{reworded[i]["clip_id"]} for i in picked]))
        out[f"reworded/corpus/{split}/class"] = percent(
            top1_hits(sub, ids, [by_class[reworded[i]["sound_class"]] for i in picked]))
    every = scores_corpus[n_reworded:]
    out["everyday/right"] = float(sum(top1_hits(every, ids, [everyday_targets(q, rows) for q in everyday])))
    out["everyday/total"] = float(len(everyday))
    return out


def score_models(models: list, feats: dict[str, FeatureSet], gallery: FeatureSet, query_text: torch.Tensor,
                 rows: dict[str, dict], reworded: list[dict], everyday: list[dict]) -> dict[str, float]:
    """Every number of one scorer: the mean of the models' cosines (one model = itself)."""
    def avg(text, audio):
        return sum(cosine(m, text, audio) for m in models) / len(models)

    out: dict[str, float] = {}
    for split, fs in (("train", gallery), *((s, feats[s]) for s in REPORT_SPLITS)):
        out[f"{split}/text_to_audio/R@1"], out[f"{split}/audio_to_text/R@1"] = r1(avg(fs.text, fs.audio), fs.caption_to_clip)
    ids, audio = corpus_table(feats)
    out.update(query_scores(avg(query_text, audio), ids, rows, reworded, everyday, len(reworded)))
    return out


def aggregate(per_seed: list[dict[str, float]]) -> dict[str, list[float]]:
    return {k: list(mean_std([r[k] for r in per_seed])) for k in per_seed[0]}


def val_mean(stats: dict[str, list[float]]) -> float:
    return (stats["val/text_to_audio/R@1"][0] + stats["val/audio_to_text/R@1"][0]) / 2


def val_score(stats: dict[str, list[float]]) -> float:
    """What picks the winner: val caption R@1 (what the protocol measures) and val reworded
    queries at class level (what a user's own wording meets), equally weighted. Val R@1 alone
    moves 2 points per clip on 48 clips; the reworded half adds 22 independently worded queries."""
    return (val_mean(stats) + stats["reworded/corpus/val/class"][0]) / 2


def reworded_cell(stats: dict[str, list[float]], std: bool = False) -> str:
    """Reworded queries at class level, "val / test / ood (all)" (with the seed std of all)."""
    parts = " / ".join(f"{stats[f'reworded/corpus/{s}/class'][0]:.0f}" for s in ("val", "test", "ood"))
    everything = stats["reworded/corpus/all/class"]
    return f"{parts} ({everything[0]:.0f}{f' ± {everything[1]:.0f}' if std else ''})"


def pair(stats: dict[str, list[float]], key: str, std: bool = True) -> str:
    t, a = stats[key.format(d="text_to_audio")], stats[key.format(d="audio_to_text")]
    if not std:
        return f"{t[0]:.1f} / {a[0]:.1f}"
    return f"{t[0]:.1f} ± {t[1]:.1f} / {a[0]:.1f} ± {a[1]:.1f}"


def recipe_table(results: dict[str, Any]) -> str:
    lines = ["| recipe | val score | train R@1 | val R@1 | test R@1 | new test R@1 | OOD R@1 (first release) | "
             "OOD R@1 (all) | train − test | reworded, class v / t / o (all) | everyday right (of 20) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results["recipes"].items():
        for label, stats in ((name, res["seeds"]), (f"{name}, ensemble of seeds", res["ensemble"])):
            std = "ensemble" not in label
            gap = [stats[f"train/{d}/R@1"][0] - stats[f"test/{d}/R@1"][0] for d in DIRS]
            mark = " **(val winner)**" if label == results["winner"] else ""
            cells = " | ".join(pair(stats, f"{s}/{{d}}/R@1", std) for s in ("val", "test", "test_new", "ood_first", "ood"))
            lines.append(
                f"| {label}{mark} | {val_score(stats):.1f} | {pair(stats, 'train/{d}/R@1', False)} | {cells} | "
                f"{gap[0]:+.1f} / {gap[1]:+.1f} | {reworded_cell(stats)} | "
                f"{stats['everyday/right'][0]:.1f} |")
    return "\n".join(lines)


def write_results(results: dict[str, Any], out: Path, started: float, table: str, summary: str) -> int:
    """Record the run time, write ``results`` to ``out`` atomically, print the Markdown table and
    a last line (``summary``, then the time and the file). The end of every benchmark of this
    family; returns the exit status."""
    results["seconds"] = round(time.time() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    print(table)
    print(f"\n{summary} ({results['seconds']:.0f} s; wrote {out})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--runs", type=Path, default=Path("/tmp/generalisation_runs"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generalisation.json")
    parser.add_argument("--aisfx-checkpoint", type=Path,
                        help="aisfx 0.1.2's models/checkpoint.pth (inside its wheel: `pip download aisfx==0.1.2 "
                             "--no-deps`, then unzip), for the recipes that read its classifier heads")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()

    base = load_model_config("default")
    encoders = LazyEncoders(base)  # also embeds the query sets below
    feats = corpus_features(base, (*SPLITS, "ood_first"))
    gallery = feats["train"].subset(one_clip_per_sound(feats["train"].sound_units(), TRAIN_GALLERY,
                                                       torch.Generator().manual_seed(0)))
    rows = {r["clip_id"]: r for r in csv.DictReader(MANIFEST.open(encoding="utf-8"))}
    reworded, everyday = load_queries()
    query_text = encoders.text.encode([q["query"] for q in reworded] + [q["query"] for q in everyday]).float()

    results: dict[str, Any] = {"recipes": {}, "seeds": args.seeds, "train_gallery_sounds": TRAIN_GALLERY,
                               "num_reworded": len(reworded), "num_everyday": len(everyday),
                               "machine": "2-core CPU, one torch thread"}
    variants = {"": (feats, gallery)}
    for name in args.recipes:
        kind = RECIPES[name].aisfx_heads
        if kind not in variants:
            if args.aisfx_checkpoint is None:
                parser.error(f"{name!r} reads aiSFX's classifier heads: pass --aisfx-checkpoint")
            heads = aisfx_classifier_heads(args.aisfx_checkpoint)
            variants[kind] = ({s: aisfx_head_features(f, heads, kind) for s, f in feats.items()},
                              aisfx_head_features(gallery, heads, kind))
        recipe_feats, recipe_gallery = variants[kind]
        log(f"{name}: training {len(args.seeds)} seed(s)")
        models = [load_checkpoint(train_run(name, seed, recipe_feats, args.runs)) for seed in args.seeds]
        per_seed = [score_models([m], recipe_feats, recipe_gallery, query_text, rows, reworded, everyday)
                    for m in models]
        results["recipes"][name] = {
            "note": RECIPES[name].note, "model": RECIPES[name].model, "train": RECIPES[name].train,
            "seeds": aggregate(per_seed), "per_seed": per_seed,
            "ensemble": aggregate([score_models(models, recipe_feats, recipe_gallery, query_text, rows, reworded,
                                                everyday)]),
        }
    # One model is what a checkpoint holds: the winner is the single-model recipe with the best
    # val score; the seed ensembles are reported beside it (three models' cost).
    results["winner"] = max(results["recipes"], key=lambda name: val_score(results["recipes"][name]["seeds"]))
    results["winner_by_val_r1_alone"] = max(results["recipes"],
                                            key=lambda name: val_mean(results["recipes"][name]["seeds"]))
    results["selected_on"] = ("val score: the mean of val caption R@1 (both directions) and val reworded-query "
                              "class-level R@1 on the full corpus, each a mean over training seeds")
    return write_results(results, args.out, started, recipe_table(results),
                         f"val winner: {results['winner']} (by val R@1 alone: {results['winner_by_val_r1_alone']})")


if __name__ == "__main__":
    raise SystemExit(main())
