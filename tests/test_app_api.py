"""The app's named API endpoints, called with gradio_client against ``python app.py`` on localhost.

One app process serves the module; each test uses its own client(s), i.e. its own session(s).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app_server import EXAMPLES, library_similar, library_top, running_app
from conftest import write_tone

pytest.importorskip("gradio", reason="the app extra is not installed: pip install -e '.[app]'")
client_module = pytest.importorskip("gradio_client")
Client, handle_file = client_module.Client, client_module.handle_file
from gradio_client.exceptions import AppError  # noqa: E402

ENDPOINTS = {"/search_text", "/search_audio", "/search_similar", "/trajectory", "/index_uploads", "/clear_uploads"}
FAST = dict(k=3, steps=10, top_k=8, alpha=1.0, seed=0, one_per_sound=True)


@pytest.fixture(scope="module")
def app_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("app") / "app.log"


@pytest.fixture(scope="module")
def url(app_log: Path) -> str:
    with running_app(app_log) as (address, _):
        yield address


def _client(url: str) -> Client:
    return Client(url, verbose=False, download_files=False)


def test_named_endpoints(url: str) -> None:
    info = _client(url).view_api(return_format="dict", print_info=False)
    assert ENDPOINTS <= set(info["named_endpoints"])
    params = [p["parameter_name"] for p in info["named_endpoints"]["/search_text"]["parameters"]]
    assert params == ["caption", "k", "steps", "top_k", "alpha", "seed", "temperature", "one_per_sound"]  # no session
    params = [p["parameter_name"] for p in info["named_endpoints"]["/search_similar"]["parameters"]]
    assert params[:2] == ["clip_id", "audio"] and params[-1] == "one_per_sound"


def test_sounds_like_a_clip_or_a_file(url: str) -> None:
    client = _client(url)
    response = client.predict(clip_id="dog", audio=None, k=4, api_name="/search_similar")
    assert response["direction"] == "audio_to_audio" and response["query_clip"] == "dog"
    ids = [h["clip_id"] for h in response["results"]]
    assert ids == library_similar("dog", 4) and "dog" not in ids  # the library's engine is the oracle
    by_file = client.predict(clip_id="", audio=handle_file(str(EXAMPLES / "dog.mp3")), k=4, api_name="/search_similar")
    assert [h["clip_id"] for h in by_file["results"]] == ids
    with pytest.raises(AppError, match="No clip 'wolf' in the library"):
        client.predict(clip_id="wolf", audio=None, api_name="/search_similar")
    with pytest.raises(AppError, match="No audio yet"):
        client.predict(clip_id="", audio=None, api_name="/search_similar")
    audio = client.predict(handle_file(str(EXAMPLES / "dog.mp3")), **FAST, api_name="/search_audio")
    assert [h["clip_id"] for h in audio["similar"]] == library_similar("dog", FAST["k"])


def test_text_search_and_its_trajectory(url: str) -> None:
    client = _client(url)
    response = client.predict("a dog barking", **FAST, api_name="/search_text")
    assert response["direction"] == "text_to_audio" and len(response["results"]) == 3
    # the library's engine on the same corpus and knobs is the oracle
    assert [[h["clip_id"], *h["captions"]] for h in response["results"]] == library_top("a dog barking", **FAST)
    view = client.predict(api_name="/trajectory")
    assert view["query"] == "a dog barking"
    assert len(view["x_t"]) == FAST["steps"] + 1 and len(view["x_t"][0]) == FAST["top_k"]
    again = client.predict("a dog barking", **FAST, api_name="/search_text")
    assert client.predict(api_name="/trajectory")["x_t"] == view["x_t"]  # same seed, same animation
    assert again["results"] == response["results"]


def test_bad_input_gives_a_message_and_the_next_query_works(url: str, tmp_path: Path) -> None:
    client = _client(url)
    with pytest.raises(AppError, match="empty"):
        client.predict("   ", **FAST, api_name="/search_text")
    long = client.predict("a cat meowing " * 800, **FAST, api_name="/search_text")  # 11,200 characters
    assert long["results"] and long["notices"]
    # Gradio checks a slider's range, the app the rest; both answer in the library's words
    with pytest.raises(AppError, match=r"^Results shown \(num_results\) must be between 1 and 10 .*got 0"):
        client.predict("a cat", **{**FAST, "k": 0}, api_name="/search_text")
    with pytest.raises(AppError, match=r"^Diffusion steps \(num_inference_steps\) must be between 1 and \d+ \(T"):
        client.predict("a cat", **{**FAST, "steps": 10_000}, api_name="/search_text")
    with pytest.raises(AppError, match=r"^Seed of the start noise \(seed\) must be between 0 and 2147483647"):
        client.predict("a cat", **{**FAST, "seed": 2**40}, api_name="/search_text")
    with pytest.raises(AppError, match=r"^Fusion temperature \(temperature\) must be between 0.001 and 10.0, got 0"):
        client.predict("a cat", **{**FAST, "temperature": 0}, api_name="/search_text")
    with pytest.raises(AppError, match=r"^Weight of the diffusion \(alpha\) must be between 0.0 and 10.0, got 10.5"):
        client.predict("a cat", **{**FAST, "alpha": 10.5}, api_name="/search_text")

    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AppError, match="corrupt.wav"):
        client.predict(handle_file(str(corrupt)), **FAST, api_name="/search_audio")
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(8000, dtype=np.int16), 8000)
    with pytest.raises(AppError, match="silent"):
        client.predict(handle_file(str(silent)), **FAST, api_name="/search_audio")
    odd = write_tone(tmp_path / "odd.flac", freq=500, seconds=1.0, sr=22050, channels=3)
    assert client.predict(handle_file(str(odd)), **FAST, api_name="/search_audio")["results"]
    response = client.predict(handle_file(str(EXAMPLES / "cat.mp3")), **FAST, api_name="/search_audio")
    assert any("cat" in h["caption"] for h in response["results"][:2])
    assert client.predict("a cat", **FAST, api_name="/search_text")["results"]


def test_sessions_do_not_see_each_other(url: str, tmp_path: Path) -> None:
    alice, bob = _client(url), _client(url)
    beep = write_tone(tmp_path / "beep.wav", freq=3000, seconds=1.0)
    caption = tmp_path / "beep.txt"
    caption.write_text("a high electronic beep\n")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"junk")
    report = alice.predict([handle_file(str(beep)), handle_file(str(caption)), handle_file(str(broken))],
                           api_name="/index_uploads")
    assert report["indexed"] == 1 and report["clips"] == ["yours/beep"]
    assert [s["file"] for s in report["skipped"]] == ["broken.wav"]

    everything = {**FAST, "k": 10, "top_k": 64}
    results: dict[str, dict] = {}

    def search(name: str, client: Client, query: str) -> None:
        client.predict(query, **everything, api_name="/search_text")
        results[name] = client.predict(api_name="/trajectory")

    threads = [threading.Thread(target=search, args=("alice", alice, "a high electronic beep")),
               threading.Thread(target=search, args=("bob", bob, "a sheep bleating"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results["alice"]["query"] == "a high electronic beep"
    assert results["bob"]["query"] == "a sheep bleating"
    assert "yours/beep" in results["alice"]["labels"]
    assert not any(label.startswith("yours/") for label in results["bob"]["labels"])
    with pytest.raises(AppError, match="No search yet"):
        _client(url).predict(api_name="/trajectory")  # a third user has no trajectory at all

    assert alice.predict(api_name="/clear_uploads")["removed"] == 1
    alice.predict("a high electronic beep", **everything, api_name="/search_text")
    assert "yours/beep" not in alice.predict(api_name="/trajectory")["labels"]


def test_a_user_error_is_one_log_line_without_a_traceback(url: str, app_log: Path) -> None:
    before = app_log.read_text(errors="replace")
    with pytest.raises(AppError, match="letters or digits"):
        _client(url).predict("%%%", **FAST, api_name="/search_text")
    new = app_log.read_text(errors="replace")[len(before):]
    assert "Traceback" not in new, new
    lines = [line for line in new.splitlines() if "user error" in line]
    assert len(lines) == 1 and "search_text" in lines[0] and "%%%" in lines[0]


# The search endpoints' settings, in their API order after the query parameters, with the page's
# label (the library's RetrievalConfig label) that a message must name.
SETTINGS = [("k", "Results shown (num_results)"), ("steps", "Diffusion steps (num_inference_steps)"),
            ("top_k", "Candidates re-ranked (top_k)"), ("alpha", "Weight of the diffusion (alpha)"),
            ("seed", "Seed of the start noise (seed)"), ("temperature", "Fusion temperature (temperature)"),
            ("one_per_sound", "One result per sound (one_per_sound)")]
GOOD = [3, 10, 8, 1.0, 0, 1.0, True]
QUERIES = {"search_text": ["a dog barking"], "search_audio": [None], "search_similar": ["dog", None]}


def call_http(url: str, api: str, data: list) -> tuple[str, str]:
    """One call through Gradio's HTTP API (``/gradio_api/call``), as any client sends it: JSON
    with NaN and Infinity, which gradio_client cannot send. Returns (event, data) of its end."""
    body = json.dumps({"data": data}).encode()  # allow_nan: NaN / Infinity tokens, as JavaScript's clients send
    request = urllib.request.Request(f"{url}gradio_api/call/{api}", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event_id}", timeout=60) as response:
        stream = response.read().decode()
    events = [line.split(":", 1)[1].strip() for line in stream.splitlines() if line.startswith("event:")]
    payloads = [line.split(":", 1)[1].strip() for line in stream.splitlines() if line.startswith("data:")]
    return events[-1], payloads[-1]


def test_every_setting_of_every_endpoint_is_checked_by_name(url: str, app_log: Path) -> None:
    before = app_log.read_text(errors="replace")
    assert call_http(url, "search_text", ["a dog barking", *GOOD])[0] == "complete"  # the helper works
    for api, query in QUERIES.items():
        for i, (name, label) in enumerate(SETTINGS):
            bads = ["yes", None, 1, float("nan")] if name == "one_per_sound" else \
                ["5", "abc", None, float("nan"), float("inf"), float("-inf"), True]
            for bad in bads:
                event, data = call_http(url, api, [*query, *GOOD[:i], bad, *GOOD[i + 1:]])
                assert event == "error", (api, name, bad, data)
                message = json.loads(data)["error"]
                assert message and message.startswith(label), (api, name, bad, message)
    for api, data, words in [("search_text", [5, *GOOD], "The caption (caption) must be text, got 5"),
                             ("search_similar", [5, None, *GOOD], "clip_id must be text"),
                             ("search_audio", ["/etc/passwd", *GOOD], "audio must be an uploaded sound file"),
                             ("search_similar", ["", 5, *GOOD], "audio must be an uploaded sound file"),
                             ("index_uploads", ["abc"], "files must be a list of uploaded files"),
                             ("index_uploads", [[5]], "files must be a list of uploaded files")]:
        event, payload = call_http(url, api, data)
        assert event == "error" and json.loads(payload)["error"].startswith(words), (api, data, payload)
    new = app_log.read_text(errors="replace")[len(before):]
    assert "Traceback" not in new and "Exception" not in new, new[-3000:]
    assert new.count("user error") >= 3 * 6 * 7  # each refusal is one line of the log
    assert _client(url).predict("a dog barking", **FAST, api_name="/search_text")["results"]  # and the next works
