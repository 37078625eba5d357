"""Importing the app does nothing: no Gradio, no model, no thread setting, no environment
variable, no upload folder. ``main()`` / ``prepare()`` do that work (test_runtime checks them
on an installed wheel; test_app_api and test_app_browser on a running app)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("plotly", reason="the app extra is not installed: pip install -e '.[app]'")

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_app_changes_nothing(tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    script = (
        "import json, os, sys, torch\n"
        "env, threads = dict(os.environ), torch.get_num_threads()\n"
        "import diffatr.webapp, app\n"
        "print(json.dumps({'env_same': dict(os.environ) == env, 'threads_same': torch.get_num_threads() == threads,\n"
        "                  'loaded': sorted(m for m in ('gradio', 'transformers', 'huggingface_hub') if m in sys.modules),\n"
        "                  'demo_built': 'demo' in vars(diffatr.webapp)}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "DIFFATR_UPLOAD_DIR": str(uploads), "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts == {"env_same": True, "threads_same": True, "loaded": [], "demo_built": False}
    assert not uploads.exists()  # the upload store's folder is made (and swept) by DemoApp.start()


def test_server_settings_come_from_the_environment() -> None:
    from diffatr.webapp import ServerSettings

    settings = ServerSettings.from_env({"DIFFATR_ANIMATIONS": "2", "DIFFATR_FRAME_SECONDS": "0.1",
                                        "DIFFATR_QUEUE_STATUS_SECONDS": "auto"})
    assert (settings.animations, settings.frame_seconds, settings.queue_status_seconds) == (2, 0.1, "auto")
    assert ServerSettings.from_env({}) == ServerSettings()
    with pytest.raises(ValueError, match="DIFFATR_SEARCH_WORKERS"):
        ServerSettings.from_env({"DIFFATR_SEARCH_WORKERS": "many"})


def test_the_queue_summarises_its_events_once_every_thousand_unless_told_otherwise(monkeypatch) -> None:
    import gradio as gr

    from diffatr.webapp import server_environment

    for name in ("GRADIO_ANALYTICS_CACHE_FREQUENCY", "GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE",
                 "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)  # each restored (or removed) after the test
    server_environment()
    with gr.Blocks() as blocks:  # gradio reads it when it builds the queue
        gr.Markdown("x")
    assert blocks._queue.ANAYLTICS_CACHE_FREQUENCY == 1000
    monkeypatch.setenv("GRADIO_ANALYTICS_CACHE_FREQUENCY", "7")  # a deployer's own value wins
    server_environment()
    with gr.Blocks() as blocks:
        gr.Markdown("x")
    assert blocks._queue.ANAYLTICS_CACHE_FREQUENCY == 7
