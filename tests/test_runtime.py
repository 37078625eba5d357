"""Devices and the shipped data's location (diffatr.runtime), and a plain (non-editable)
install of the wheel that runs a search offline from outside the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from diffatr import runtime
from diffatr.errors import DiffatrError

ROOT = Path(__file__).resolve().parents[1]


def test_resolve_device_names_and_errors(monkeypatch):
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device(None) == torch.device("cpu") == runtime.resolve_device("auto")
    for bad, words in [("cuda", "no CUDA device"), ("cuda:1", "no CUDA device"), ("tpu", "auto, cpu, cuda")]:
        with pytest.raises(runtime.DeviceError, match=words) as caught:
            runtime.resolve_device(bad)
        assert isinstance(caught.value, DiffatrError)


def test_shipped_data_is_found_in_order(tmp_path, monkeypatch):
    monkeypatch.delenv(runtime.DATA_ENV, raising=False)
    monkeypatch.delenv("DIFFATR_CHECKPOINT", raising=False)
    monkeypatch.delenv("DIFFATR_INDEX", raising=False)
    # a checkout: its own folders
    assert runtime.shipped("checkpoints") == ROOT / "checkpoints"
    assert runtime.default_index_dir() == ROOT / "assets" / "corpus" / "demo_index"
    # $DIFFATR_DATA, laid out like the repository, comes first when it has the folder
    (tmp_path / "assets" / "corpus").mkdir(parents=True)
    monkeypatch.setenv(runtime.DATA_ENV, str(tmp_path))
    assert runtime.shipped("corpus") == tmp_path / "assets" / "corpus"
    assert runtime.shipped("checkpoints") == ROOT / "checkpoints"  # not there: the next place
    monkeypatch.setenv("DIFFATR_CHECKPOINT", str(tmp_path / "mine"))
    assert runtime.default_checkpoint_dir() == tmp_path / "mine"
    # nowhere: the installed package's place, so that the error names it
    monkeypatch.setattr(runtime, "_CHECKOUT", tmp_path / "elsewhere")
    assert runtime.shipped("checkpoints").parts[-3:] == ("diffatr", "_shipped", "checkpoints")
    with pytest.raises(ValueError, match="unknown kind"):
        runtime.shipped("weights")


def _build_wheel(out: Path) -> Path:
    import importlib.util
    import shutil

    # Built from a copy of the sources: a build writes build/ and *.egg-info beside them.
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("diffatr", "checkpoints", "assets/corpus"):
        shutil.copytree(ROOT / folder, source / folder, ignore=skip)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation, "-w", str(out),
                    str(source)], check=True, cwd=out, capture_output=True, timeout=600)
    (wheel,) = out.glob("diffatr-*.whl")
    return wheel


def test_the_installed_wheel_searches_offline_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:  # a wheel is unpacked as is into site-packages
        names = set(archive.namelist())
        archive.extractall(site)
    for shipped in ("diffatr/_shipped/checkpoints/default/model.safetensors",
                    "diffatr/_shipped/checkpoints/aisfx_cnn9.safetensors",
                    "diffatr/_shipped/corpus/demo_index/index.json", "diffatr/configs/default.json"):
        assert shipped in names, f"the wheel lacks {shipped}"
    assert any(n.startswith("diffatr/_shipped/corpus/clips/") for n in names)
    for module in (ROOT / "diffatr").rglob("*.py"):  # every module of the source tree (pyproject lists packages)
        assert module.relative_to(ROOT).as_posix() in names, f"the wheel lacks {module.relative_to(ROOT)}"
    script = (
        "import json, sys, diffatr, diffatr.runtime as r\n"
        "from diffatr.cli import main\n"
        "print(json.dumps({'module': diffatr.__file__, 'checkpoint': str(r.default_checkpoint_dir()),"
        " 'index': str(r.default_index_dir())}))\n"
        "sys.exit(main(['search', 'a dog barks', '-k', '3', '--json']))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFATR_")}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    first, rest = run.stdout.split("\n", 1)
    where = json.loads(first)
    for key in ("module", "checkpoint", "index"):
        assert where[key].startswith(str(site)), f"{key} came from {where[key]}, not the installed package"
    results = json.loads(rest)["results"]
    assert len(results) == 3 and all(Path(r["path"]).is_file() for r in results)
    assert all(str(site) in r["path"] for r in results)


def test_the_installed_wheel_builds_the_app_on_its_shipped_corpus(tmp_path):
    pytest.importorskip("gradio")
    wheel = _build_wheel(tmp_path)
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
        entry_points = archive.read(next(n for n in archive.namelist() if n.endswith("entry_points.txt"))).decode()
    assert "diffatr-demo = diffatr.webapp:main" in entry_points
    script = (
        "import json, os\n"
        "from diffatr import webapp\n"
        "index = webapp.APP.index\n"
        "print(json.dumps({'module': webapp.__file__, 'clips': len(index), "
        "'first': index.paths[0], 'blocks': type(webapp.demo).__name__}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFATR_")}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               DIFFATR_UPLOAD_DIR=str(tmp_path / "uploads"))
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts["module"].startswith(str(site)) and facts["blocks"] == "Blocks"
    assert facts["clips"] > 100 and facts["first"].startswith(str(site)) and Path(facts["first"]).is_file()
