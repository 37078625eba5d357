"""Devices and the shipped data's location (diffatr.runtime), and a plain (non-editable)
install of the wheel that runs a search offline from outside the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
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
    for name in (runtime.DATA_ENV, *runtime.RENAMED_ENV, *runtime.RENAMED_ENV.values()):
        monkeypatch.delenv(name, raising=False)
    # a checkout: its own folders
    assert runtime.shipped("checkpoints") == ROOT / "checkpoints"
    assert runtime.default_index_dir() == ROOT / "assets" / "corpus" / "demo_index"
    # $DIFFATR_DATA, laid out like the repository, comes first when it has the folder
    (tmp_path / "assets" / "corpus").mkdir(parents=True)
    monkeypatch.setenv(runtime.DATA_ENV, str(tmp_path))
    assert runtime.shipped("corpus") == tmp_path / "assets" / "corpus"
    assert runtime.shipped("checkpoints") == ROOT / "checkpoints"  # not there: the next place
    monkeypatch.setenv("DIFFATR_DEFAULT_CHECKPOINT", str(tmp_path / "mine"))
    assert runtime.default_checkpoint_dir() == tmp_path / "mine"
    # nowhere: the installed package's place, so that the error names it
    monkeypatch.setattr(runtime, "_CHECKOUT", tmp_path / "elsewhere")
    assert runtime.shipped("checkpoints").parts[-3:] == ("diffatr", "_shipped", "checkpoints")
    with pytest.raises(ValueError, match="unknown kind"):
        runtime.shipped("weights")


def test_renamed_variables_still_work_for_one_release_with_a_warning(tmp_path, monkeypatch):
    from diffatr.demo.corpus import demo_index_dir
    from diffatr.encoders.audio import checkpoints_dirs

    for name in (*runtime.RENAMED_ENV, *runtime.RENAMED_ENV.values()):
        monkeypatch.delenv(name, raising=False)
    for old, read in [("DIFFATR_CHECKPOINT", runtime.default_checkpoint_dir), ("DIFFATR_INDEX", runtime.default_index_dir),
                      ("DIFFATR_DEMO_INDEX", demo_index_dir), ("DIFFATR_CHECKPOINTS", lambda: checkpoints_dirs()[0])]:
        monkeypatch.setenv(old, str(tmp_path / old))
        with pytest.warns(FutureWarning, match=f"\\${old} is now \\$DIFFATR_"):
            assert read() == tmp_path / old
        new = next(n for n, o in runtime.RENAMED_ENV.items() if o == old)
        monkeypatch.setenv(new, str(tmp_path / new))  # the new name wins, without a warning
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert read() == tmp_path / new
        monkeypatch.delenv(new)
        monkeypatch.delenv(old)


def test_no_two_environment_variables_differ_by_a_letter():
    """Every DIFFATR_* name the code reads (the quotas' and the server's are made from field
    names), but for the deprecated aliases: no two are one edit apart."""
    import dataclasses
    import re

    from diffatr.uploads import QUOTA_ENV_PREFIX, UploadQuotas

    names = set()
    for path in [*(ROOT / "diffatr").rglob("*.py"), ROOT / "app.py"]:
        names |= set(re.findall(r"DIFFATR_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    names |= {QUOTA_ENV_PREFIX + f.name.upper() for f in dataclasses.fields(UploadQuotas)}
    server = (ROOT / "diffatr" / "webapp.py").read_text()
    fields = re.search(r"class ServerSettings:.*?\n\n    @classmethod", server, re.S).group(0)
    names |= {"DIFFATR_" + f.upper() for f in re.findall(r"^    (\w+): ", fields, re.M)}
    names -= set(runtime.RENAMED_ENV.values())
    names = {n for n in names if not n.endswith("_") and n != QUOTA_ENV_PREFIX.rstrip("_")}
    assert {"DIFFATR_DEFAULT_CHECKPOINT", "DIFFATR_WEIGHTS_DIR", "DIFFATR_ANIMATIONS"} <= names

    def one_edit_apart(a: str, b: str) -> bool:
        if abs(len(a) - len(b)) > 1:
            return False
        if len(a) == len(b):
            return sum(x != y for x, y in zip(a, b)) == 1
        short, long = sorted((a, b), key=len)
        return any(long[:i] + long[i + 1:] == short for i in range(len(long)))

    close = [(a, b) for a in sorted(names) for b in sorted(names) if a < b and one_edit_apart(a, b)]
    assert not close, close


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
        "import json, os, sys, torch\n"
        "env, threads = dict(os.environ), torch.get_num_threads()\n"
        "from diffatr import webapp\n"
        "quiet = dict(os.environ) == env and torch.get_num_threads() == threads and 'gradio' not in sys.modules\n"
        "demo, app, server = webapp.prepare()\n"
        "index = app.index\n"
        "print(json.dumps({'module': webapp.__file__, 'clips': len(index), 'quiet_import': quiet, "
        "'first': index.paths[0], 'blocks': type(demo).__name__, 'threads': torch.get_num_threads(), "
        "'offline': os.environ.get('HF_HUB_OFFLINE'), "
        "'queue': [demo._queue.live_updates, demo._queue.update_intervals]}))\n"
    )
    env = _env({"DIFFATR_UPLOAD_DIR": str(installed["work"] / "uploads")})
    del env["HF_HUB_OFFLINE"], env["TRANSFORMERS_OFFLINE"]  # the app sets them itself, before loading anything
    run = subprocess.run([str(installed["python"]), "-c", script], cwd=installed["work"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    site = str(installed["site"])
    assert facts["module"].startswith(site) and facts["blocks"] == "Blocks"
    assert facts["quiet_import"] and facts["threads"] == 1 and facts["offline"] == "1"  # main's work, not import's
    # queued users hear their place once a second, not at every job start (ServerSettings.queue_status_seconds)
    assert facts["queue"] == [False, 1.0]
    assert facts["clips"] > 100 and facts["first"].startswith(site) and Path(facts["first"]).is_file()


def test_portable_path_never_records_an_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "runs" / "p1").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert runtime.portable_path(tmp_path / "runs" / "p1") == "runs/p1"
    assert runtime.portable_path("runs/p1/../p1") == "runs/p1"
    assert runtime.portable_path("/elsewhere/data/manifest.csv") == "manifest.csv"  # outside: its name only
    assert runtime.portable_path(tmp_path / "x.csv", root=tmp_path / "runs") == "x.csv"
