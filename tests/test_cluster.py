"""``diffatr index --ray``: the audio embedded on a Ray cluster (a head node started on the
loopback, two CPUs) gives the index a local run gives, feature for feature."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("ray") is None:  # found, not imported: Ray stays out of this process
    pytest.skip('the Ray path needs pip install "diffatr[ray]"', allow_module_level=True)

from diffatr.cli import main  # noqa: E402
from diffatr.retrieval.index import RetrievalIndex  # noqa: E402
from diffatr.runtime import shipped  # noqa: E402

CLIPS = ["sonicpi-hat_bdu.opus", "ufoai-splash2.opus", "tuxpaint-donkey.opus", "0ad-arrow_dirt_14.opus",
         "0ad-cattle_01.opus", "0ad-goat_10.opus", "0ad-fs_grass1.opus", "0ad-hoe_10.opus"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``ray start --head`` on 127.0.0.1 with two CPUs; stopped (with its processes) afterwards."""
    ray_cli = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the ray command is not installed")
    temp = Path("/tmp") / f"ray-test-{os.getpid()}"  # short: Ray's socket paths have a length limit
    port = _free_port()
    # On the loopback, without the token a user's ~/.ray may hold: the test depends on nothing of theirs.
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "disabled")
    head = subprocess.Popen([ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
                             "--temp-dir", str(temp), "--block"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not (temp / "ray_current_cluster").exists():
        if head.poll() is not None or time.monotonic() > deadline:
            head.kill()
            pytest.fail("the Ray head node did not start")
        time.sleep(0.5)
    yield address
    # `ray start --block` does not stop its node on SIGTERM: end the head and every process it
    # started (raylet, GCS, the workers and actors), by id.
    family = _descendants(head.pid)
    for pid in [head.pid, *family]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    head.wait(timeout=30)
    shutil.rmtree(temp, ignore_errors=True)
    patch.undo()


def _descendants(root: int) -> list[int]:
    """The processes below ``root`` (Linux /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    source = shipped("corpus") / "clips"
    if not all((source / name).is_file() for name in CLIPS):
        pytest.skip("the built-in corpus is not here")
    out = tmp_path_factory.mktemp("ray-folder")
    for name in CLIPS:
        shutil.copy(source / name, out / name)
    (out / "broken.wav").write_bytes(b"RIFF not really")  # listed and skipped, as locally
    return out


def test_indexing_on_a_ray_cluster_writes_the_local_index(ray_head, folder, tmp_path, capsys):
    common = ["--no-cache", "--quiet", "--backend", "exact"]
    assert main(["index", str(folder), "--out", str(tmp_path / "local"), "--workers", "2", *common]) == 0
    local_out = capsys.readouterr().out
    # The Ray driver runs in a child process, as a user's `diffatr index --ray` does: Ray Data leaves
    # threads behind in its driver (a metrics poller), and in this process they would race the other
    # tests' ast.parse calls (CPython 3.11's AST depth counter is not thread-safe). The child exiting
    # also shows the driver let go of the cluster.
    run = subprocess.run([sys.executable, "-m", "diffatr.cli", "index", str(folder), "--out", str(tmp_path / "ray"),
                          "--ray", ray_head, *common], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    ray_out = run.stdout
    local, on_ray = RetrievalIndex.load(tmp_path / "local"), RetrievalIndex.load(tmp_path / "ray")
    assert on_ray.clip_ids == local.clip_ids and len(local) == len(CLIPS)
    assert torch.equal(on_ray.audio_features, local.audio_features)  # same code, same features
    assert "skipped 1 file(s)" in local_out and "skipped 1 file(s)" in ray_out
    stores = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == stores


def test_an_unreachable_cluster_is_one_clear_line(folder, tmp_path, capsys):
    code = main(["index", str(folder), "--out", str(tmp_path / "x"), "--no-cache", "--quiet",
                 "--ray", f"127.0.0.1:{_free_port()}"])
    assert code == 2
    assert "cannot reach the Ray cluster" in capsys.readouterr().err


def test_a_malformed_address_is_one_clear_line(folder, tmp_path, capsys):
    code = main(["index", str(folder), "--out", str(tmp_path / "x"), "--no-cache", "--quiet", "--ray", "somewhere"])
    assert code == 2
    assert "give auto, local, HOST:PORT" in capsys.readouterr().err
