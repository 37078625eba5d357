"""Start ``python app.py`` on a free localhost port for the API and browser tests (not a test).

The app runs in its own process, exactly as a user or a Hugging Face Space starts it, with the
corpus pinned to the shipped examples so that the tests do not depend on a later corpus.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
START_TIMEOUT_S = 120  # generous: a loaded CI machine; the measured start-up is printed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(log_path: Path, extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, float]]:
    """Run the app until the block ends; yields (url, start-up seconds).

    The app's output goes to ``log_path`` (shown when it fails to start); ``extra_env`` adds
    settings (e.g. ``DIFFATR_QUOTA_*``).
    """
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               DIFFATR_APP_INDEX=str(EXAMPLES / "index"), PYTHONUNBUFFERED="1",
               # A slower animation than the default 0.06 s a step, so that a loaded CI machine
               # still shows the browser tests several steps and time to press Pause mid-way.
               DIFFATR_FRAME_SECONDS="0.15", **(extra_env or {}))
    url = f"http://127.0.0.1:{port}/"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() - started > START_TIMEOUT_S:
                raise RuntimeError(f"app.py did not answer within {START_TIMEOUT_S} s:\n"
                                   f"{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "config", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.25)
        startup = time.monotonic() - started
        print(f"\napp.py answered after {startup:.1f} s (start-up)")
        yield url, startup
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def library_top(query: str, k: int, steps: int, top_k: int, alpha: float, seed: int,
                one_per_sound: bool = True) -> list[list[str]]:
    """The top ``k`` clips (id, captions) the library's engine gives ``query`` on the pinned
    corpus with the shipped checkpoint: the oracle the app's answers are checked against (one
    result per sound, as the page shows by default)."""
    from diffatr.checkpoint import load_checkpoint
    from diffatr.encoders.text import TextEncoder
    from diffatr.retrieval.engine import SearchEngine
    from diffatr.retrieval.index import RetrievalIndex
    from diffatr.runtime import default_checkpoint_dir

    model = load_checkpoint(default_checkpoint_dir()).eval()
    engine = SearchEngine(model, RetrievalIndex.load(EXAMPLES / "index"), text_encoder=TextEncoder(model.config.text))
    settings = model.config.with_retrieval(num_results=k, top_k=top_k, num_inference_steps=steps, alpha=alpha, seed=seed,
                                           one_per_sound=one_per_sound)
    hits = engine.search_text(query, settings)[0]
    return [[h.clip_id, *h.captions] for h in hits]


def library_similar(clip_id: str, k: int, one_per_sound: bool = True) -> list[str]:
    """The ``k`` clips the library's engine finds most like ``clip_id`` on the pinned corpus with
    the shipped checkpoint (the oracle of the app's search_similar)."""
    from diffatr.checkpoint import load_checkpoint
    from diffatr.retrieval.engine import SearchEngine
    from diffatr.retrieval.index import RetrievalIndex
    from diffatr.runtime import default_checkpoint_dir

    model = load_checkpoint(default_checkpoint_dir()).eval()
    engine = SearchEngine(model, RetrievalIndex.load(EXAMPLES / "index"))
    settings = model.config.with_retrieval(num_results=k, one_per_sound=one_per_sound)
    return [h.clip_id for h in engine.search_similar(clip_id, settings)[0]]
