"""The web server's own upload cache under attack (issue 20): Gradio stores every file a client
sends before any handler sees it. The issue's flood, 12 different 150 MB files each refused by
the app, grew that cache by 1.9 GB and left 2.2 GB after SIGTERM. Here the same flood, scaled
down through the quotas (``$DIFFATR_QUOTA_*``) so that it runs in seconds, against
``python app.py``: the disk stays under the caps, refused and used uploads go at once, unused
ones after the cache's time-to-live, and nothing is left after shutdown.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from app_server import running_app

pytest.importorskip("gradio", reason="the app extra is not installed: pip install -e '.[app]'")
httpx = pytest.importorskip("httpx")
client_module = pytest.importorskip("gradio_client")
Client, handle_file = client_module.Client, client_module.handle_file

MB = 1_000_000
# upload_mb = min(session_mb, cache_mb / min_sessions) = 0.9 MB a request; 2 sessions x 0.9 MB
# + a 3 MB cache fit in the 5 MB total.
QUOTAS = {"SESSION_MB": "0.9", "CACHE_MB": "3", "MIN_SESSIONS": "2", "TOTAL_MB": "5", "CACHE_TTL_S": "3",
          "CACHE_SWEEP_S": "1"}
FILE_BYTES = 800_000  # one flood file: under the largest upload, 12 of them over every cap


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def junk(tmp_path: Path, i: int) -> Path:
    """A different file each time (Gradio stores files by their hash), named like a sound."""
    path = tmp_path / f"flood{i}.wav"
    path.write_bytes(os.urandom(FILE_BYTES))
    return path


def raw_upload(url: str, path: Path) -> httpx.Response:
    """What a browser or a script sends to Gradio's upload route, no handler involved."""
    with open(path, "rb") as f:
        return httpx.post(f"{url}gradio_api/upload", files=[("files", (path.name, f))], timeout=60)


def test_the_refused_file_flood_keeps_the_disk_under_the_caps(tmp_path: Path) -> None:
    root = tmp_path / "uploads"
    env = {"DIFFATR_UPLOAD_DIR": str(root), **{f"DIFFATR_QUOTA_{k}": v for k, v in QUOTAS.items()}}
    with running_app(tmp_path / "app.log", env) as (url, _):
        client = Client(url, verbose=False, download_files=False)
        # 1. Through the app: 12 different files, each refused (not audio). Each goes at once.
        for i in range(12):
            report = client.predict([handle_file(str(junk(tmp_path, i)))], api_name="/index_uploads")
            assert report["indexed"] == 0 and report["skipped"], report
            assert disk_bytes(root) < FILE_BYTES, f"after refused file {i}: {disk_bytes(root):,} bytes on disk"
        # 2. Straight to the upload route, never used: refused once the cache's cap is reached.
        codes = []
        for i in range(12, 24):
            codes.append(raw_upload(url, junk(tmp_path, i)).status_code)
            assert disk_bytes(root) <= 3 * MB, f"{disk_bytes(root):,} bytes on disk"
        # Which of them pass depends on the 1 s sweep of 3 s-old uploads (timing): some pass, the
        # rest are refused, and the disk bound above held after every one.
        assert 200 in codes and 413 in codes, codes
        refusals = (raw_upload(url, junk(tmp_path, 99 + i)) for i in range(6))
        refusal = next((r for r in refusals if r.status_code == 413), None)
        assert refusal is not None and "upload cache (3 MB) is full" in refusal.text
        big = tmp_path / "big.wav"
        big.write_bytes(os.urandom(2 * MB))
        assert raw_upload(url, big).status_code == 413  # larger than one upload may be
        # 3. Unused uploads go after the cache's time-to-live: the next user can upload again.
        deadline = time.monotonic() + 60
        while raw_upload(url, junk(tmp_path, 200)).status_code != 200:
            assert time.monotonic() < deadline, "the cache was never swept"
            time.sleep(1.0)
        assert disk_bytes(root) <= 3 * MB
    # 4. Shut down (SIGTERM, as a Space stops): nothing is left.
    assert disk_bytes(root) == 0, sorted(str(p) for p in root.rglob("*") if p.is_file())


def test_one_client_cannot_block_the_others_uploads(tmp_path: Path) -> None:
    """Behind a proxy (X-Forwarded-For, as on Spaces): one client's unused uploads stop at its
    share of the cache, with a message that says why, and another client still uploads."""
    root = tmp_path / "uploads"
    env = {"DIFFATR_UPLOAD_DIR": str(root), "DIFFATR_CLIENT_ADDRESS": "forwarded",
           **{f"DIFFATR_QUOTA_{k}": v for k, v in QUOTAS.items()}, "DIFFATR_QUOTA_CLIENT_CACHE_MB": "1.7",
           "DIFFATR_QUOTA_CACHE_MB": "10", "DIFFATR_QUOTA_TOTAL_MB": "12", "DIFFATR_QUOTA_CACHE_TTL_S": "600"}

    def send(url: str, sender: str, i: int) -> httpx.Response:
        path = junk(tmp_path, i)
        with open(path, "rb") as f:
            return httpx.post(f"{url}gradio_api/upload", files=[("files", (path.name, f))], timeout=60,
                              headers={"X-Forwarded-For": sender})

    with running_app(tmp_path / "app.log", env) as (url, _):
        assert [send(url, "203.0.113.7", i).status_code for i in range(2)] == [200, 200]  # 1.6 of 1.7 MB
        refused = send(url, "203.0.113.7", 2)
        assert refused.status_code == 413 and "one visitor's share of the upload cache (1.7 MB)" in refused.text
        assert send(url, "198.51.100.4", 3).status_code == 200  # the cache (10 MB) still takes others' files
