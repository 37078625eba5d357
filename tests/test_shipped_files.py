"""What the repository ships carries no machine's absolute path, and the code stays in shape.

- Every JSON, JSONL, CSV and TSV file under checkpoints/, assets/ and diffatr/configs is scanned
  for absolute paths (``/home/me/...``, ``C:\\...``, ``~/...``): a checkpoint records its data
  relative to the checkout it was trained in, or by name (``diffatr.runtime.portable_path``).
- No function in diffatr/ runs over 80 lines.
- Every retrieval knob's default is written once in Python (``RetrievalConfig`` in config.py),
  plus the named JSON model configs: no function, dict or call below it spells one again.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from diffatr.config import knob_fields

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "checkpoints", ROOT / "assets", ROOT / "diffatr" / "configs"]
SUFFIXES = {".json", ".jsonl", ".csv", ".tsv"}
# An absolute path: "/a/b" not inside a word, a URL or a relative path; a drive; a home folder.
ABSOLUTE = re.compile(r"(?<![\w.:/~-])/[\w.+-]+/[\w.+-]+|\b[A-Za-z]:\\\\?[\w.+ -]|(?<![\w.])~/")
MAX_FUNCTION_LINES = 80


def _shipped_files() -> list[Path]:
    return sorted(p for folder in SHIPPED for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def test_the_scan_finds_what_it_should():
    assert len(_shipped_files()) >= 5  # the checkpoint, the indexes, the manifests, the configs
    for bad in ['"source": "/work/main/assets/corpus/manifest.csv"', "C:\\Users\\me\\clips", "path,~/sounds/a.wav",
                "clip,/home/me/a.wav,caption"]:
        assert ABSOLUTE.search(bad), bad
    for fine in ['"source": "assets/corpus/manifest.csv"', "https://example.org/a/b", "and/or", "1/2/3",
                 '"weights": "checkpoints/aisfx/model.safetensors"', "x_T -> x_0 / T"]:
        assert not ABSOLUTE.search(fine), fine


@pytest.mark.parametrize("path", _shipped_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_shipped_file_holds_an_absolute_path(path: Path):
    text = path.read_text(encoding="utf-8", errors="replace")
    found = [m.group(0) for m in ABSOLUTE.finditer(text)]
    assert not found, f"{path.relative_to(ROOT)} holds absolute paths: {found[:5]}"


def _functions(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def test_no_function_in_the_library_runs_over_80_lines():
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, node in _functions(ROOT / "diffatr") if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "split these: " + "; ".join(long)


# Knob names that only retrieval code uses, anywhere in diffatr/; and the common words a knob
# shares with other settings (a training seed, the NT-Xent temperature), in the retrieval code.
KNOBS = {f.name for f in knob_fields()}
UNIQUE = {"top_k", "num_inference_steps", "fusion", "num_results"}
RETRIEVAL_CODE = ["retrieval", "demo", "evaluate.py", "cli.py", "webapp.py", "diffusion/sampling.py"]


def _retrieval_code(rel: str) -> bool:
    return any(rel == part or rel.startswith(part + "/") for part in RETRIEVAL_CODE)


def _knob_defaults(source: str, rel: str) -> list[str]:
    """Places in one file (``rel``: its path under diffatr/) where a knob gets a literal value: a
    parameter default, a keyword argument, a dict entry or an annotated class attribute."""
    names = KNOBS if _retrieval_code(rel) else UNIQUE
    found = []
    for node in ast.walk(ast.parse(source, filename=rel)):
        pairs: list[tuple[str, ast.AST]] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs += [(a.arg, d) for a, d in zip(positional[len(positional) - len(args.defaults):], args.defaults)]
            pairs += [(a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
        elif isinstance(node, ast.Call):
            pairs += [(k.arg, k.value) for k in node.keywords if k.arg]
        elif isinstance(node, ast.Dict):
            pairs += [(k.value, v) for k, v in zip(node.keys, node.values)
                      if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            pairs.append((node.target.id, node.value))
        for name, value in pairs:
            literal = isinstance(value, ast.Constant) and value.value is not None and not isinstance(value.value, bool)
            if name in names and literal:
                found.append(f"{rel}:{value.lineno} {name}={value.value!r}")
    return found


def test_every_knob_default_is_written_once_in_python():
    library = ROOT / "diffatr"
    config = library / "config.py"
    found = [hit for path in sorted(library.rglob("*.py")) if path != config
             for hit in _knob_defaults(path.read_text(), path.relative_to(library).as_posix())]
    assert not found, "a knob default below config.py (take it from the RetrievalConfig): " + "; ".join(found)
    # In config.py each knob's default stands once: in its RetrievalConfig field.
    tree = ast.parse(config.read_text())
    retrieval = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RetrievalConfig")
    fields = {n.target.id for n in retrieval.body if isinstance(n, ast.AnnAssign)}
    assert fields == KNOBS
    outside = [hit for hit in _knob_defaults(config.read_text(), "config.py") if not any(
        node.lineno <= int(hit.split(":")[1].split()[0]) <= node.end_lineno for node in [retrieval])]
    assert not outside, outside


def test_the_scan_catches_a_knob_default_below_the_config():
    probes = ["def rank(q, top_k=32): ...", "rerank(q, c, alpha=1.0)", 'KNOBS = {"temperature": 1.0}',
              "class S:\n    seed: int = 0", "def f(*, num_inference_steps=50): ...", "f(fusion='paper')"]
    for source in probes:
        assert _knob_defaults(source, "retrieval/engine.py"), source
    # a training seed or temperature outside the retrieval code is another setting
    assert not _knob_defaults("def train(seed=0, temperature=0.07): ...", "train/common.py")
    assert _knob_defaults("def train(top_k=32): ...", "train/common.py")


def test_every_clip_of_every_shipped_index_is_where_its_index_says():
    # an index stores clip paths relative to its own folder; one built elsewhere and copied in breaks them all
    indexes = sorted(ROOT.glob("assets/**/index.json"))
    assert indexes, "no shipped index found"
    for index_json in indexes:
        clips = json.loads(index_json.read_text())["clips"]
        missing = [c["path"] for c in clips if c.get("path") and not (index_json.parent / c["path"]).is_file()]
        assert not missing, f"{index_json.relative_to(ROOT)}: {len(missing)} clip paths lead nowhere, e.g. {missing[:3]}"
