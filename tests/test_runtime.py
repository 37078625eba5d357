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


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """The wheel, pip-installed into a fresh virtual environment outside the checkout.

    Its dependencies (torch, transformers, gradio ...) are this environment's, reached through a
    ``.pth`` line (a second torch would be a multi-GB download); diffatr itself, its data and
    its commands come from the wheel only: a ``.pth`` in an added folder is not run, so this
    environment's editable install does not leak in.
    """
    import sysconfig

    work = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(work)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "_host_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, capture_output=True, timeout=600)
    return {"wheel": wheel, "venv": venv, "python": python, "site": Path(purelib), "work": work}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFATR_") and k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **(extra or {}))
    return env


def test_the_installed_wheel_searches_offline_outside_the_checkout(installed):
    with zipfile.ZipFile(installed["wheel"]) as archive:
        names = set(archive.namelist())
    for shipped in ("diffatr/_shipped/checkpoints/default/model.safetensors",
                    "diffatr/_shipped/checkpoints/aisfx_cnn9.safetensors",
                    "diffatr/_shipped/corpus/demo_index/index.json", "diffatr/configs/default.json"):
        assert shipped in names, f"the wheel lacks {shipped}"
    assert any(n.startswith("diffatr/_shipped/corpus/clips/") for n in names)
    for module in (ROOT / "diffatr").rglob("*.py"):  # every module of the source tree (pyproject lists packages)
        assert module.relative_to(ROOT).as_posix() in names, f"the wheel lacks {module.relative_to(ROOT)}"
    site = str(installed["site"])
    where = subprocess.run([str(installed["python"]), "-c",
                            "import json, diffatr, diffatr.runtime as r; print(json.dumps({'module': diffatr.__file__, "
                            "'checkpoint': str(r.default_checkpoint_dir()), 'index': str(r.default_index_dir())}))"],
                           cwd=installed["work"], env=_env(), capture_output=True, text=True, timeout=600)
    assert where.returncode == 0, where.stderr[-2000:]
    for key, value in json.loads(where.stdout).items():
        assert value.startswith(site), f"{key} came from {value}, not the installed package"
    # the installed command, from another folder, offline
    run = subprocess.run([str(installed["venv"] / "bin" / "diffatr"), "search", "a dog barks", "-k", "3", "--json"],
                         cwd=installed["work"], env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(run.stdout)["results"]
    assert len(results) == 3 and all(Path(r["path"]).is_file() and r["path"].startswith(site) for r in results)
    assert [r["rank"] for r in results] == [1, 2, 3]


def test_the_installed_wheel_builds_the_app_on_its_shipped_corpus(installed):
    pytest.importorskip("gradio")
    assert (installed["venv"] / "bin" / "diffatr-demo").is_file()  # the console script exists
    script = (
        "import json\n"
        "from diffatr import webapp\n"
        "index = webapp.APP.index\n"
        "print(json.dumps({'module': webapp.__file__, 'clips': len(index), "
        "'first': index.paths[0], 'blocks': type(webapp.demo).__name__, "
        "'queue': [webapp.demo._queue.live_updates, webapp.demo._queue.update_intervals]}))\n"
    )
    run = subprocess.run([str(installed["python"]), "-c", script], cwd=installed["work"],
                         env=_env({"DIFFATR_UPLOAD_DIR": str(installed["work"] / "uploads")}),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    site = str(installed["site"])
    assert facts["module"].startswith(site) and facts["blocks"] == "Blocks"
    # queued users hear their place once a second, not at every job start (see QUEUE_STATUS_SECONDS)
    assert facts["queue"] == [False, 1.0]
    assert facts["clips"] > 100 and facts["first"].startswith(site) and Path(facts["first"]).is_file()
