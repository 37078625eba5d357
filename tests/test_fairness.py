"""Fair sharing in ``python app.py`` (issue 11): one user's large zip does not hold up another
user's upload, and the app deletes its uploads when it stops.

The app runs in its own process (``app_server.running_app``) with its uploads in a temporary
folder; two gradio_client clients are two sessions.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app_server import running_app
from conftest import write_tone

pytest.importorskip("gradio", reason="the app extra is not installed: pip install -e '.[app]'")
client_module = pytest.importorskip("gradio_client")
Client, handle_file = client_module.Client, client_module.handle_file

BIG_ZIP_CLIPS = 160  # 2 s each: several seconds of indexing on a 2-core machine


def _tone(freq: float, seconds: float = 2.0, sr: int = 16000) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_a_single_file_upload_does_not_wait_for_another_sessions_zip(tmp_path: Path) -> None:
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(BIG_ZIP_CLIPS):
            zf.writestr(f"tone{i:03d}.wav", _tone(200 + 37 * i))
    single = write_tone(tmp_path / "single.wav", freq=1500, seconds=1.0)
    uploads = tmp_path / "uploads"
    with running_app(tmp_path / "app.log", {"DIFFATR_UPLOAD_DIR": str(uploads)}) as (url, _):
        alice, bob = (Client(url, verbose=False, download_files=False) for _ in range(2))
        alice_file, bob_file = handle_file(str(big)), handle_file(str(single))
        times: dict[str, float] = {}

        def index_big() -> None:
            started = time.monotonic()
            times["zip_report"] = alice.predict([alice_file], api_name="/index_uploads")["indexed"]
            times["zip_done"] = time.monotonic()
            times["zip_seconds"] = times["zip_done"] - started

        worker = threading.Thread(target=index_big)
        worker.start()
        # Bob uploads once Alice's zip is being indexed (her clips are being written to disk).
        deadline = time.monotonic() + 60
        while not list(uploads.rglob("tone*.wav")) and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        report = bob.predict([bob_file], api_name="/index_uploads")
        bob_done = time.monotonic()
        bob_seconds = bob_done - started
        worker.join(timeout=300)
        assert report["indexed"] == 1 and times["zip_report"] == BIG_ZIP_CLIPS
        print(f"\nzip of {BIG_ZIP_CLIPS} clips: {times['zip_seconds']:.1f} s; single file meanwhile: {bob_seconds:.2f} s")
        assert times["zip_seconds"] > 3, "the zip indexed too fast to show anything: make it bigger"
        assert bob_done < times["zip_done"], "the single file waited for the other session's zip"
        assert bob_seconds < 0.5 * times["zip_seconds"]
        runs = list(uploads.glob("run-*"))
        assert len(runs) == 1 and any(runs[0].rglob("*.wav"))
    # SIGTERM: the app exits through atexit, which deletes this run's uploads
    assert not list(uploads.glob("run-*"))
