"""Sounds like this one: which space finds sounds of the same class, and one result per sound.

1. **Audio -> audio, the spaces compared** (``diffatr.retrieval.similar``): every val / test /
   OOD clip of the built-in corpus whose sound class has another clip in the gallery queries
   the gallery = the whole built-in library less the query's own recording group (its
   ``label_group``, the query included), through ``SearchEngine.search_similar_embeds``, as
   the library serves it. Scores: same-sound-class R@1 and mAP@10 (AP@10 = the mean of the
   precision at each same-class hit in the top 10, over min(same-class clips in the gallery,
   10)). The space is chosen on val only (R@1, then mAP@10). Other transforms that were tried
   (not shipped) are scored the same way from the similarity matrix, for the record.
2. **Near-duplicate threshold** (``diffatr.retrieval.groups``): the corpus's clips grouped by
   their audio alone at each threshold, against their label groups: pair precision / recall /
   F1 / F0.5; the best F0.5 is chosen (precision counts twice).
3. **One result per sound**: distinct recordings (label groups) and distinct sounds (label
   groups joined by the corpus build's near-duplicate links) in the top 10, with and without it:
   the everyday queries on the app's library with the app's settings (the floor: 10 recordings
   whenever the library has them), the reworded queries on the app's library, and both sets on
   the whole corpus (the library the app will search once it searches every clip).
4. **Speed**: audio -> audio p50 / p95 on the app's library (one torch thread), by clip id and
   by audio file (decode + backbone), in the library's API, through the app's handler, and
   through the app's HTTP API (``python app.py`` started here, ``gradio_client``, one client).

Writes benchmarks/results/similar.json and prints the Markdown tables of docs/benchmarks.md. Rerun it after
the corpus or the checkpoint changes: the numbers, the chosen space and the threshold follow.

    DIFFATR_CACHE=/tmp/dcache python benchmarks/similar.py [--checkpoint CKPT]   # ~1 min cached
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffatr.checkpoint import load_checkpoint  # noqa: E402
from diffatr.config import SIMILAR_SPACES  # noqa: E402
from diffatr.data.datasets import load_split  # noqa: E402
from diffatr.data.sounds import read_near_duplicate_links, sound_keys  # noqa: E402
from diffatr.demo.corpus import demo_index_dir  # noqa: E402
from diffatr.demo.settings import page_defaults  # noqa: E402
from diffatr.encoders.audio import build_audio_encoder  # noqa: E402
from diffatr.encoders.cache import FeatureCache  # noqa: E402
from diffatr.encoders.text import TextEncoder  # noqa: E402
from diffatr.fileio import atomic_write_text  # noqa: E402
from diffatr.indexing import build_index, default_cache_dir  # noqa: E402
from diffatr.retrieval.engine import SearchEngine  # noqa: E402
from diffatr.retrieval.groups import NEAR_DUPLICATE_COSINE, near_duplicate_groups  # noqa: E402
from diffatr.retrieval.index import RetrievalIndex  # noqa: E402
from diffatr.retrieval.similar import similar_embeddings  # noqa: E402
from diffatr.runtime import default_checkpoint_dir  # noqa: E402

MANIFEST = ROOT / "assets" / "corpus" / "manifest.csv"
QUERIES = ROOT / "benchmarks" / "queries"
SPLITS = ("val", "test", "ood")
THRESHOLDS = (0.85, 0.88, 0.89, 0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96)
TOP = 10


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ----------------------------------------------------------------------------- 1. the spaces


@dataclasses.dataclass
class Gallery:
    """The similar-sound protocol on one index: queries, their excluded rows and relevant rows."""

    index: RetrievalIndex
    queries: dict[str, list[int]]  # split -> query rows
    own: dict[int, list[int]]  # query row -> rows of its recording group (never in its gallery)
    relevant: dict[int, set[int]]  # query row -> gallery rows of its sound class

    @classmethod
    def of(cls, index: RetrievalIndex) -> Gallery:
        meta = index.metadata
        group = [m.get("label_group") for m in meta]
        sound_class = [m.get("sound_class") for m in meta]
        members: dict[str, list[int]] = {}
        for row, g in enumerate(group):
            members.setdefault(g, []).append(row)
        queries, own, relevant = {s: [] for s in SPLITS}, {}, {}
        for row, m in enumerate(meta):
            if m.get("split") not in SPLITS:
                continue
            same = {j for j, c in enumerate(sound_class) if c == sound_class[row] and group[j] != group[row]}
            if same:  # its class has another clip in the gallery
                queries[m["split"]].append(row)
                own[row], relevant[row] = members[group[row]], same
        return cls(index, queries, own, relevant)

    def score(self, ranked: dict[int, list[int]]) -> dict[str, float]:
        """R@1 and mAP@10 (%) per split from each query's ranked gallery rows (best first)."""
        out: dict[str, float] = {}
        for split in (*SPLITS, "all"):
            rows = [q for s in SPLITS for q in self.queries[s]] if split == "all" else self.queries[split]
            hits = [[r in self.relevant[q] for r in ranked[q][:TOP]] for q in rows]
            out[f"{split}/R@1"] = 100.0 * sum(h[0] for h in hits) / len(rows)
            out[f"{split}/mAP@10"] = 100.0 * sum(_ap(h, len(self.relevant[q])) for h, q in zip(hits, rows)) / len(rows)
            out[f"{split}/queries"] = len(rows)
        return out


def _ap(hits: list[bool], relevant: int) -> float:
    found, total = 0, 0.0
    for position, hit in enumerate(hits, 1):
        if hit:
            found += 1
            total += found / position
    return total / min(relevant, TOP)


def engine_rankings(engine: SearchEngine, gallery: Gallery, space: str) -> dict[int, list[int]]:
    """Each query's top 10 from the library's own audio -> audio search in ``space``."""
    rows = [q for s in SPLITS for q in gallery.queries[s]]
    settings = engine.model.config.with_retrieval(num_results=TOP, similar_space=space, one_per_sound=False)
    results = engine.search_similar_embeds(engine.index.audio_features[rows], settings,
                                           exclude=[gallery.own[q] for q in rows])
    return {q: [h.row for h in hits] for q, hits in zip(rows, results)}


def matrix_rankings(similarity: torch.Tensor, gallery: Gallery) -> dict[int, list[int]]:
    """Each query's top 10 from an (N, N) similarity matrix, its own group left out."""
    out = {}
    for q in (q for s in SPLITS for q in gallery.queries[s]):
        scores = similarity[q].clone()
        scores[gallery.own[q]] = -float("inf")
        out[q] = torch.sort(scores, descending=True, stable=True).indices[:TOP].tolist()
    return out


@torch.no_grad()
def tried_transforms(model: Any, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, N) similarity matrices of transforms tried and not shipped (no better on val)."""
    backbone = F.normalize(features, dim=-1)
    head = model.project_audio(features)
    centred = F.normalize(features - features.mean(0), dim=-1)
    hidden = F.normalize(_head_hidden(model, features), dim=-1)
    out = {"backbone, centred on the library's mean": centred @ centred.T,
           "the head's hidden layer (after its ReLU)": hidden @ hidden.T}
    for name, vectors in (("backbone", backbone), ("head", head)):
        cosine = vectors @ vectors.T
        out[f"{name}, hubs discounted (CSLS, 10 neighbours)"] = _csls(cosine, 10)
        expanded = _query_expansion(vectors, cosine, 2)
        out[f"{name}, query expansion (2 neighbours)"] = expanded @ expanded.T
    return out


def _head_hidden(model: Any, features: torch.Tensor) -> torch.Tensor:
    layers = [m for m in model.audio_head.modules() if isinstance(m, (torch.nn.Linear, torch.nn.ReLU))]
    hidden = features
    for layer in layers[:-1]:  # all but the last projection
        hidden = layer(hidden)
    return hidden


def _csls(cosine: torch.Tensor, k: int) -> torch.Tensor:
    others = cosine.clone().fill_diagonal_(-float("inf"))
    hubness = torch.topk(others, k, dim=1).values.mean(dim=1)  # (N,)
    return 2 * cosine - hubness[None, :] - hubness[:, None]


def _query_expansion(vectors: torch.Tensor, cosine: torch.Tensor, k: int) -> torch.Tensor:
    others = cosine.clone().fill_diagonal_(-float("inf"))
    values, rows = torch.topk(others, k, dim=1)
    weights = values.clamp(min=0) ** 3
    return F.normalize(vectors + (weights[..., None] * vectors[rows]).sum(1), dim=-1)


def compare_spaces(model: Any, engine: SearchEngine, gallery: Gallery) -> dict[str, Any]:
    shipped = {space: gallery.score(engine_rankings(engine, gallery, space)) for space in SIMILAR_SPACES}
    features = engine.index.audio_features
    for space in SIMILAR_SPACES:  # the matrix scorer agrees with the engine on the shipped spaces
        vectors = similar_embeddings(model, features, space)
        assert gallery.score(matrix_rankings(vectors @ vectors.T, gallery)) == shipped[space], space
    chosen = max(SIMILAR_SPACES, key=lambda s: (round(shipped[s]["val/R@1"], 6), shipped[s]["val/mAP@10"]))
    tried = {name: gallery.score(matrix_rankings(matrix, gallery))
             for name, matrix in tried_transforms(model, features).items()}
    return {"spaces": shipped, "chosen_on_val": chosen, "shipped_default": model.config.retrieval.similar_space,
            "tried": tried}


# ----------------------------------------------------------------------------- 2. the threshold


def threshold_sweep(index: RetrievalIndex) -> dict[str, Any]:
    keys = sound_keys(index.clip_ids, index.metadata)
    labels = torch.tensor([{k: i for i, k in enumerate(dict.fromkeys(keys))}[k] for k in keys])
    upper = torch.triu_indices(len(labels), len(labels), 1)
    same = labels[upper[0]] == labels[upper[1]]
    rows = []
    for threshold in THRESHOLDS:
        groups = torch.tensor(near_duplicate_groups(index.audio_features, threshold))
        joined = groups[upper[0]] == groups[upper[1]]
        tp, fp, fn = int((joined & same).sum()), int((joined & ~same).sum()), int((~joined & same).sum())
        precision, recall = tp / max(1, tp + fp), tp / max(1, tp + fn)
        rows.append({"threshold": threshold, "groups": len(set(groups.tolist())), "precision": precision,
                     "recall": recall, "f1": 2 * precision * recall / max(1e-9, precision + recall),
                     "f0.5": 1.25 * precision * recall / max(1e-9, 0.25 * precision + recall),
                     "largest": int(torch.bincount(groups).max())})
    # Precision counts twice: a different sound hidden as a "variant" costs more than a repeat.
    best = max(rows, key=lambda r: r["f0.5"])
    return {"label_groups": len(set(keys)), "clips": len(keys), "sweep": rows, "best": best["threshold"],
            "shipped": NEAR_DUPLICATE_COSINE}


# ----------------------------------------------------------------------------- 3. one result per sound


def distinct_counts(engine: SearchEngine, queries: list[str], settings: Any,
                    links: list[tuple[str, str]]) -> dict[str, Any]:
    """Distinct recordings (label groups) and sounds (groups joined by near-duplicate links) in
    each query's top 10, with and without one result per sound."""
    index = engine.index
    recordings = sound_keys(index.clip_ids, index.metadata)
    sounds = sound_keys(index.clip_ids, index.metadata, links)
    have = {"recordings": len(set(recordings)), "sounds": len(set(sounds))}
    out: dict[str, Any] = {"library": have}
    for switch in (False, True):
        config = dataclasses.replace(settings, num_results=TOP, one_per_sound=switch)
        results = engine.search_text(queries, config)
        for what, keys in (("recordings", recordings), ("sounds", sounds)):
            counts = [len({keys[h.row] for h in hits}) for hits in results]
            name = f"{'one_per_sound' if switch else 'plain'}/{what}"
            out[name] = {"mean": statistics.mean(counts), "min": min(counts), "per_query": counts,
                         "all_full": all(c == min(TOP, have[what]) for c in counts)}
    return out


# ----------------------------------------------------------------------------- 4. speed


def timed(call: Callable[[], Any], repeats: int) -> dict[str, float]:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - start))
    times.sort()
    return {"p50_ms": times[len(times) // 2], "p95_ms": times[int(0.95 * (len(times) - 1))], "runs": repeats}


def speed(model: Any, app_index_dir: Path, audio_encoder: Any, text_encoder: Any, repeats: int) -> dict[str, Any]:
    from diffatr.demo import DemoApp, DemoSession

    index = RetrievalIndex.load(app_index_dir)
    engine = SearchEngine(model, index, text_encoder=text_encoder, audio_encoder=audio_encoder)
    settings = page_defaults(model.config)
    clips = index.clip_ids[:: max(1, len(index) // 20)][:20]
    files = [p for p in index.paths[:: max(1, len(index) // 10)] if p][:10]
    turn = iter(range(10**9))
    out: dict[str, Any] = {"library_clips": len(index), "settings": dataclasses.asdict(settings)}
    for switch in (False, True):
        config = dataclasses.replace(settings, one_per_sound=switch)
        label = "one_per_sound" if switch else "plain"
        out[f"engine/clip_id/{label}"] = timed(lambda c=config: engine.search_similar(
            clips[next(turn) % len(clips)], c), repeats)
        out[f"engine/audio_file/{label}"] = timed(lambda c=config: engine.search_similar(
            files[next(turn) % len(files)], c), max(10, repeats // 10))
        out[f"engine/text/{label}"] = timed(lambda c=config: engine.search_text("a dog barking", c), repeats // 2)
    app = DemoApp(model, index, text_encoder, audio_encoder, upload_root=None)
    session = DemoSession()
    out["app_handler/clip_id/one_per_sound"] = timed(lambda: app.searcher.search_similar(
        clips[next(turn) % len(clips)], settings, session), repeats)
    return out


def api_speed(app_index_dir: Path, clips: list[str], files: list[str], repeats: int, log: Path) -> dict[str, Any]:
    """The app's own endpoints over HTTP: ``python app.py`` on a free port, one gradio_client."""
    import os

    from gradio_client import Client, handle_file

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from load import start_app

    os.environ.setdefault("DIFFATR_APP_INDEX", str(app_index_dir))
    proc, url = start_app(log)
    try:
        client = Client(url, verbose=False, download_files=False)
        turn = iter(range(10**9))
        return {
            "api/search_similar/clip_id": timed(lambda: client.predict(
                clip_id=clips[next(turn) % len(clips)], audio=None, api_name="/search_similar"), repeats),
            "api/search_similar/audio_file": timed(lambda: client.predict(
                clip_id="", audio=handle_file(files[next(turn) % len(files)]), api_name="/search_similar"),
                max(10, repeats // 10)),
            "api/search_text": timed(lambda: client.predict("a dog barking", api_name="/search_text"), repeats // 2),
            # the last search's stored view: no search at all, Gradio's round trip alone
            "api/trajectory (round trip alone)": timed(lambda: client.predict(api_name="/trajectory"), repeats // 2),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ----------------------------------------------------------------------------- tables


def spaces_table(result: dict[str, Any]) -> str:
    lines = ["| space | val R@1 / mAP@10 | test R@1 / mAP@10 | OOD R@1 / mAP@10 | all R@1 / mAP@10 |",
             "|---|---|---|---|---|"]

    def row(name: str, scores: dict[str, float]) -> str:
        cells = " | ".join(f"{scores[f'{s}/R@1']:.1f} / {scores[f'{s}/mAP@10']:.1f}" for s in (*SPLITS, "all"))
        return f"| {name} | {cells} |"

    for space, scores in result["spaces"].items():
        mark = " (chosen on val)" if space == result["chosen_on_val"] else ""
        lines.append(row(f"**{space}**{mark}" if mark else space, scores))
    for name, scores in result["tried"].items():
        lines.append(row(f"tried: {name}", scores))
    counts = result["spaces"][SIMILAR_SPACES[0]]
    lines.append(f"| queries | {counts['val/queries']} | {counts['test/queries']} | {counts['ood/queries']} | "
                 f"{counts['all/queries']} |")
    return "\n".join(lines)


def threshold_table(result: dict[str, Any]) -> str:
    lines = ["| threshold | groups | pair precision | pair recall | pair F1 | pair F0.5 | largest group |",
             "|---|---|---|---|---|---|---|"]
    for r in result["sweep"]:
        bold = "**" if r["threshold"] == result["best"] else ""
        lines.append(f"| {bold}{r['threshold']:.2f}{bold} | {r['groups']} | {r['precision']:.2f} | {r['recall']:.2f} | "
                     f"{r['f1']:.3f} | {r['f0.5']:.3f} | {r['largest']} |")
    return "\n".join(lines)


def distinct_table(result: dict[str, dict[str, Any]]) -> str:
    lines = ["| queries, library | recordings in the library | distinct recordings in the top 10: plain / one per "
             "sound (min) | distinct sounds: plain / one per sound (min) |", "|---|---|---|---|"]
    for name, r in result.items():
        cells = [f"{r[f'plain/{w}']['mean']:.1f} ({r[f'plain/{w}']['min']}) / {r[f'one_per_sound/{w}']['mean']:.1f} "
                 f"({r[f'one_per_sound/{w}']['min']})" for w in ("recordings", "sounds")]
        lines.append(f"| {name} | {r['library']['recordings']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def speed_table(result: dict[str, Any]) -> str:
    lines = [f"| call (library of {result['library_clips']} clips) | p50 ms | p95 ms |", "|---|---|---|"]
    for name, r in result.items():
        if isinstance(r, dict) and "p50_ms" in r:
            lines.append(f"| {name} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped checkpoint")
    parser.add_argument("--app-index", type=Path, default=None, help="the app's library (default: the app's own)")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per measurement")
    parser.add_argument("--no-api", action="store_true", help="skip the timing through the app's HTTP API")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "similar.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    checkpoint = args.checkpoint or default_checkpoint_dir()
    model = load_checkpoint(checkpoint).eval()
    text_encoder, audio_encoder = TextEncoder(model.config.text), build_audio_encoder(model.config.audio)
    records = load_split(MANIFEST).records
    corpus, _ = build_index(records, audio_encoder, text_encoder, progress=False,
                            cache=FeatureCache(default_cache_dir(), dataclasses.asdict(model.config.audio)))
    corpus_engine = SearchEngine(model, corpus, text_encoder=text_encoder)
    app_index_dir = args.app_index or demo_index_dir()
    app_engine = SearchEngine(model, RetrievalIndex.load(app_index_dir), text_encoder=text_encoder)
    links = read_near_duplicate_links(MANIFEST)
    app_settings = page_defaults(model.config)
    everyday = [q["query"] for q in read_jsonl(QUERIES / "everyday.jsonl")]
    reworded = [q["query"] for q in read_jsonl(QUERIES / "reworded.jsonl")]
    result = {
        "checkpoint": str(checkpoint), "corpus_clips": len(corpus), "app_library": str(app_index_dir),
        "gallery": "the whole built-in library less the query's own recording group (label_group)",
        "similar": compare_spaces(model, corpus_engine, Gallery.of(corpus)),
        "threshold": threshold_sweep(corpus),
        "one_per_sound": {
            f"everyday ({len(everyday)}), app library": distinct_counts(app_engine, everyday, app_settings, links),
            f"reworded ({len(reworded)}), app library": distinct_counts(app_engine, reworded, app_settings, links),
            f"everyday ({len(everyday)}), corpus": distinct_counts(corpus_engine, everyday, app_settings, links),
            f"reworded ({len(reworded)}), corpus": distinct_counts(corpus_engine, reworded, app_settings, links)},
        "speed": speed(model, app_index_dir, audio_encoder, text_encoder, args.repeats),
    }
    if not args.no_api:
        app_index = RetrievalIndex.load(app_index_dir)
        clips = app_index.clip_ids[:: max(1, len(app_index) // 20)][:20]
        files = [p for p in app_index.paths[:: max(1, len(app_index) // 10)] if p][:10]
        result["speed"].update(api_speed(app_index_dir, clips, files, args.repeats, args.out.with_suffix(".app.log")))
    result["seconds"] = round(time.time() - started, 1)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    similar = result["similar"]
    print(f"Audio -> audio, same-sound-class R@1 / mAP@10 (%), {len(corpus):,} clips:\n")
    print(spaces_table(similar))
    if similar["chosen_on_val"] != similar["shipped_default"]:
        print(f"\nNOTE: val chooses {similar['chosen_on_val']!r}; RetrievalConfig.similar_space says "
              f"{similar['shipped_default']!r}: update it (diffatr/config.py) and docs/method.md")
    print("\nNear-duplicate threshold (clips grouped by audio alone vs their label groups):\n")
    print(threshold_table(result["threshold"]))
    if result["threshold"]["best"] != NEAR_DUPLICATE_COSINE:
        print(f"\nNOTE: the best threshold is {result['threshold']['best']}; groups.NEAR_DUPLICATE_COSINE says "
              f"{NEAR_DUPLICATE_COSINE}: update it and docs/method.md")
    print("\nOne result per sound (the app's settings):\n")
    print(distinct_table(result["one_per_sound"]))
    print("\nAudio -> audio speed (one torch thread):\n")
    print(speed_table(result["speed"]))
    print(f"\nwrote {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
