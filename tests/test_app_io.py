"""diffatr.webapp_io: Gradio's values -> the demo's plain types (no server, no model)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from diffatr.webapp_io import audio_query, upload_paths


def test_audio_query_takes_gradio_files_and_microphone_values() -> None:
    wave = np.zeros((100, 2), dtype=np.int16)
    assert audio_query("/tmp/a.wav") == ("/tmp/a.wav", None)
    assert audio_query(Path("a.wav")) == (Path("a.wav"), None)
    assert audio_query({"path": "/tmp/b.mp3", "orig_name": "b.mp3", "meta": {"_type": "gradio.FileData"}}) == (
        "/tmp/b.mp3", None)
    array, rate = audio_query((44100, wave))  # Gradio's numpy value: (sample_rate, data)
    assert array is wave and rate == 44100 and type(rate) is int
    array, rate = audio_query([np.int64(8000), wave])
    assert array is wave and rate == 8000
    assert audio_query(None) == (None, None)
    assert audio_query("") == ("", None)


def test_audio_query_passes_other_shapes_through_for_the_demo_to_refuse() -> None:
    wave = np.zeros(10, dtype=np.float32)
    for odd in [(wave, 16000), (True, wave), 42]:
        audio, rate = audio_query(odd)
        assert audio is odd and rate is None  # not guessed: (array, rate) is not Gradio's order


def test_upload_paths_takes_paths_filedata_and_tempfile_wrappers() -> None:
    assert upload_paths(None) == [] and upload_paths([]) == [] and upload_paths("") == []
    assert upload_paths("/tmp/a.wav") == ["/tmp/a.wav"]
    assert upload_paths({"path": "/tmp/a.zip"}) == ["/tmp/a.zip"]
    with tempfile.NamedTemporaryFile(suffix=".wav") as wrapper:
        files = [Path("/tmp/x.wav"), {"path": None, "name": "/tmp/y.flac"}, wrapper, {"path": ""}, None]
        assert upload_paths(files) == ["/tmp/x.wav", "/tmp/y.flac", wrapper.name]
