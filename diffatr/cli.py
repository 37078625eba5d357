"""The ``diffatr`` command line: index, search, convert-panns, info.

Entry points seed and resolve devices; the library below them does not. Every user error
(bad file, bad flag value, missing checkpoint) ends with one clear line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

EXIT_USER_ERROR = 2


def _add_knobs(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("diffusion re-ranking (defaults come from the checkpoint)")
    group.add_argument("--top-k", type=int, default=None, metavar="K",
                       help="candidates re-ranked by the diffusion model per query (paper: 32)")
    group.add_argument("--steps", type=int, default=None, metavar="S",
                       help="DDIM steps, 1..T (paper: 50)")
    group.add_argument("--alpha", type=float, default=None,
                       help="weight of the diffusion score in fused = cosine + alpha * softmax(x0 / temperature); 0 = cosine only")
    group.add_argument("--temperature", type=float, default=None, help="softmax temperature on the x0 estimate")
    group.add_argument("--seed", type=int, default=None,
                       help="seed of the start noise x_T; the same seed gives the same ranking")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffatr",
        description="DiffATR: audio-text retrieval with a dual encoder and a diffusion re-ranker.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("index", help="embed a folder of audio or a manifest into a searchable index",
                       description="Embed audio files (and their captions, if any) into an index folder. "
                                   "Unreadable files are listed and skipped.")
    p.add_argument("source", metavar="PATH_OR_MANIFEST",
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
    p.add_argument("--allow-download", action="store_true",
                   help="let the text encoder fetch a hub model that is not on disk")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("search", help="rank an index's clips for a caption, or its captions for an audio file",
                       description="Text -> audio: give a caption. Audio -> text: give --audio FILE "
                                   "(needs an index with captions).")
    p.add_argument("query", nargs="?", help="a caption to search for (text -> audio)")
    p.add_argument("--audio", metavar="FILE", help="an audio file to search with (audio -> text)")
    p.add_argument("--index", metavar="DIR", help="index folder (default: the shipped example index)")
    p.add_argument("--checkpoint", metavar="CKPT", help="checkpoint folder (default: the shipped checkpoint)")
    p.add_argument("-k", type=int, default=10, help="number of results to show (default 10)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--allow-download", action="store_true",
                   help="let the text encoder fetch a hub model that is not on disk")
    _add_knobs(p)

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
    return parser


def _version() -> str:
    from diffatr import __version__

    return __version__


def _resolve_checkpoint(path: str | None):
    from diffatr.checkpoint import CheckpointError, default_checkpoint_dir, load_checkpoint

    folder = Path(path) if path else default_checkpoint_dir()
    if not path and not folder.exists():
        raise CheckpointError(
            f"no checkpoint given and the shipped one ({folder}) is missing; pass --checkpoint DIR"
        )
    return load_checkpoint(folder)


def _cmd_index(args: argparse.Namespace) -> int:
    import dataclasses

    from diffatr.checkpoint import default_checkpoint_dir, read_checkpoint
    from diffatr.config import load_model_config
    from diffatr.data.manifest import read_records
    from diffatr.encoders.audio import build_audio_encoder
    from diffatr.encoders.cache import FeatureCache
    from diffatr.encoders.text import TextEncoder
    from diffatr.indexing import build_index, default_cache_dir

    if args.config:
        config = load_model_config(args.config)
    elif args.checkpoint or default_checkpoint_dir().exists():
        config, _ = read_checkpoint(args.checkpoint or default_checkpoint_dir())
    else:
        config = load_model_config("default")
    records = read_records(args.source)
    if not records:
        print(f"diffatr: no audio files found in {args.source}", file=sys.stderr)
        return EXIT_USER_ERROR
    audio_encoder = build_audio_encoder(config.audio)
    text_encoder = None
    if not args.no_text and any(r.captions for r in records):
        text_cfg = dataclasses.replace(config.text, allow_download=args.allow_download or config.text.allow_download)
        text_encoder = TextEncoder(text_cfg)
    cache = None
    if not args.no_cache:
        cache = FeatureCache(Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
                             dataclasses.asdict(config.audio))
    index, report = build_index(records, audio_encoder, text_encoder, cache=cache, progress=not args.quiet)
    index.save(args.out)
    print(f"indexed {report.indexed} clip(s), {index.num_captions} caption(s) -> {args.out}"
          + (f" ({report.cache_hits} from cache)" if report.cache_hits else ""))
    if report.skipped:
        print(f"skipped {len(report.skipped)} file(s):", file=sys.stderr)
        for path, reason in report.skipped:
            print(f"  {path}: {reason}", file=sys.stderr)
    return 0


def _knobs(args: argparse.Namespace, defaults) -> dict:
    knobs = {
        "top_k": args.top_k if args.top_k is not None else defaults.top_k,
        "num_inference_steps": args.steps if args.steps is not None else defaults.num_inference_steps,
        "alpha": args.alpha if args.alpha is not None else defaults.alpha,
        "temperature": args.temperature if args.temperature is not None else defaults.temperature,
        "seed": args.seed if args.seed is not None else defaults.seed,
    }
    if knobs["top_k"] < 1:
        raise ValueError("--top-k must be at least 1")
    if knobs["temperature"] <= 0:
        raise ValueError("--temperature must be positive")
    return knobs


def _cmd_search(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from diffatr.encoders.audio import build_audio_encoder
    from diffatr.encoders.text import TextEncoder
    from diffatr.retrieval.engine import SearchEngine
    from diffatr.retrieval.index import RetrievalIndex

    if (args.query is None) == (args.audio is None):
        print("diffatr search: give either a caption or --audio FILE (not both)", file=sys.stderr)
        return EXIT_USER_ERROR
    if args.k < 1:
        raise ValueError("-k must be at least 1")
    torch.manual_seed(0)  # nothing below uses global randomness; this only pins stray library calls
    model = _resolve_checkpoint(args.checkpoint)
    index = RetrievalIndex.load(args.index or default_index_dir())
    knobs = _knobs(args, model.config.retrieval)
    text_cfg = dataclasses.replace(model.config.text, allow_download=args.allow_download or model.config.text.allow_download)
    if args.query is not None:
        engine = SearchEngine(model, index, text_encoder=TextEncoder(text_cfg))
        hits = engine.search_text(args.query, k=args.k, **knobs)[0]
        direction = "text_to_audio"
    else:
        engine = SearchEngine(model, index, audio_encoder=build_audio_encoder(model.config.audio))
        hits = engine.search_audio(args.audio, k=args.k, **knobs)[0]
        direction = "audio_to_text"
    rows = [hit.to_dict() for hit in hits]
    if args.json:
        print(json.dumps({"direction": direction, "query": args.query or args.audio, "knobs": knobs,
                          "results": rows}, indent=2))
        return 0
    print(_format_table(rows, direction))
    return 0


def _format_table(rows: list[dict], direction: str) -> str:
    label = "clip" if direction == "text_to_audio" else "caption"
    header = f"{'rank':>4}  {'fused':>7}  {'cosine':>7}  {'diffusion':>9}  {'moved':>5}  {label}"
    lines = [header, "-" * len(header)]
    for row in rows:
        what = row.get("clip_id") if direction == "text_to_audio" else row.get("caption")
        if direction == "text_to_audio" and row.get("captions"):
            what = f"{what}  ({row['captions'][0]})"
        moved = row.get("moved") or 0
        # Hits past the re-ranked top K (k > --top-k) keep their cosine order: no diffusion score.
        diffusion = "-" if row.get("diffusion") is None else f"{row['diffusion']:.4f}"
        lines.append(f"{row['rank']:>4}  {row['fused']:7.4f}  {row['cosine']:7.4f}  {diffusion:>9}  "
                     f"{moved:+5d}  {what}")
    return "\n".join(lines)


def default_index_dir() -> Path:
    """The index of the shipped example clips."""
    env = os.environ.get("DIFFATR_INDEX")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "assets" / "examples" / "index"


def _cmd_convert(args: argparse.Namespace) -> int:
    from diffatr.encoders.convert import convert_panns

    out = args.out or str(Path(args.src).with_suffix(".safetensors"))
    report = convert_panns(args.src, out, arch=args.arch, trust=args.trust)
    print(f"wrote {out} ({report.arch}, {report.num_tensors} tensors, sha256 of the source {report.sha256[:16]}...)")
    print(f"missing keys ({len(report.missing_keys)}): {', '.join(report.missing_keys) or 'none'}")
    print(f"unexpected keys ({len(report.unexpected_keys)}): {', '.join(report.unexpected_keys) or 'none'}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from diffatr.checkpoint import CONFIG_FILE, read_checkpoint
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
        print(json.dumps({"model": to_dict(config), "extra": extra}, indent=2))
        return 0
    print(f"diffatr info: {path} is neither a checkpoint nor an index folder", file=sys.stderr)
    return EXIT_USER_ERROR


COMMANDS = {"index": _cmd_index, "search": _cmd_search, "convert-panns": _cmd_convert, "info": _cmd_info}


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
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        # Our error types (AudioError, CheckpointError, IndexFormatError, ManifestError,
        # TextInputError, ConfigError) are ValueErrors with messages written for users.
        print(f"diffatr {args.command}: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
