"""Start-up imports only what a command needs (issue 22): the CLI's module imports no
library, and a text search on the shipped model imports neither transformers (the default
text model is computed by diffatr.encoders.bert) nor the app's, the stores' or Ray's libraries.
The app's start-up loads no transformers either, and a page load copies no model. The times
are measured in benchmarks/startup.py, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# torch._dynamo (torch's compiler, 1.9 s to import) and sympy come in through torch itself, e.g. a
# module initialised on the meta device.
HEAVY = ("torch", "transformers", "gradio", "faiss", "pymilvus", "ray", "scipy", "sklearn", "pandas",
         "torch._dynamo", "sympy")


def _imported_after(code: str) -> list[str]:
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = set(json.loads(run.stdout.strip().splitlines()[-1]))
    return sorted(m for m in HEAVY if m in loaded)


def test_importing_the_cli_imports_no_library():
    assert _imported_after("import diffatr.cli; diffatr.cli.build_parser()") == []


def test_a_text_search_imports_torch_and_nothing_heavier():
    code = ("import contextlib, io, json\nfrom diffatr.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    assert main(['search', 'a dog barks', '--json']) == 0\n"
            "assert json.loads(out.getvalue())  # it did search")
    assert _imported_after(code) == ["torch"]


def test_the_app_loads_without_transformers_and_its_page_copies_no_model(tmp_path):
    """``python app.py``'s work before serving imports no transformers, and the page config,
    which Gradio deep-copies on every page load, holds no object that reaches the model."""
    pytest.importorskip("gradio")
    code = (
        "import copy, json, sys, torch\nfrom diffatr import webapp\n"
        "demo, app, server = webapp.prepare()\n"
        "copied = []\n"
        "real = torch.Tensor.__deepcopy__\n"
        "torch.Tensor.__deepcopy__ = lambda self, memo: copied.append(tuple(self.shape)) or real(self, memo)\n"
        "from gradio.utils import safe_deepcopy\nsafe_deepcopy(demo.get_config_file())\n"
        "assert not copied, f'a page load deep-copies {len(copied)} tensors'\n"
    )
    env = dict(os.environ, DIFFATR_UPLOAD_DIR=str(tmp_path / "uploads"), GRADIO_ANALYTICS_ENABLED="False")
    script = code + "print(json.dumps(sorted(sys.modules)))\n"
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = set(json.loads(run.stdout.strip().splitlines()[-1]))
    assert "gradio" in loaded and "transformers" not in loaded


def test_loading_a_checkpoint_imports_no_search_code():
    """The model keeps the caption bank, the search code looks it up: loading a checkpoint (to
    train phase 2, or for ``diffatr info``) does not pull in the engine, the index or the stores."""
    script = ("import json, sys\nfrom diffatr.checkpoint import load_checkpoint\n"
              "from diffatr.runtime import default_checkpoint_dir\n"
              "assert load_checkpoint(default_checkpoint_dir()).has_caption_bank\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith('diffatr.retrieval'))))\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []
