"""The demo's handlers called directly (no browser, no server): diffatr.demo and diffatr.plots.

One DemoApp is loaded for the module, on the shipped checkpoint and the ten example clips.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app_server import library_top
from conftest import write_tone

pytest.importorskip("plotly", reason="the app extra is not installed: pip install -e '.[app]'")

from diffatr import plots  # noqa: E402
from diffatr.demo import (  # noqa: E402
    AUDIO_MAX_SECONDS,
    MAX_QUERY_CHARS,
    DemoApp,
    DemoError,
    DemoSession,
    frame_pause,
    iter_steps,
    last_trajectory,
)
from diffatr.config import RetrievalConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"


@pytest.fixture(scope="module")
def app() -> DemoApp:
    return DemoApp.load(index_dir=EXAMPLES / "index").start(warm_up=False)


@pytest.fixture
def fast(app: DemoApp) -> RetrievalConfig:
    return app.parse_settings(num_results=3, num_inference_steps=10, top_k=8, alpha=1.0, seed=0)


def _softmax(values: list[float]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


# ----------------------------------------------------------------------------- settings


def test_settings_defaults_coercion_and_ranges(app: DemoApp) -> None:
    d = app.parse_settings()
    assert d == app.defaults and isinstance(d, RetrievalConfig)
    s = app.parse_settings(num_results=5.0, num_inference_steps="20", top_k=8.0, alpha=0.5, seed=3.0, fusion="zscore")
    assert (s.num_results, s.num_inference_steps, s.top_k, s.alpha, s.seed, s.fusion) == (5, 20, 8, 0.5, 3, "zscore")
    assert type(s.num_inference_steps) is int
    T = app.num_train_timesteps
    for bad, words in [(dict(num_results=0), r"Results shown \(num_results\) must be between 1 and 10"),
                       (dict(num_results=11), r"between 1 and 10 \(the result slots on the page\), got 11"),
                       (dict(num_results=2.5), "must be an integer"),
                       (dict(num_inference_steps=T + 1), rf"between 1 and {T} \(T, "),
                       (dict(top_k=0), r"\(top_k\) must be"), (dict(top_k=65), r"between 1 and 64 \(the demo's limit\)"),
                       (dict(alpha=-1), r"\(alpha\) must be between 0.0 and 10.0"),
                       (dict(alpha=float("nan")), "must be a number"), (dict(seed=-1), r"\(seed\) must be"),
                       (dict(seed=2**31), "the browser's number box"), (dict(seed="abc"), "must be an integer, got 'abc'"),
                       (dict(num_results=True), "must be an integer, got True"), (dict(fusion="max"), "one of paper, zscore"),
                       (dict(k=3), "unknown settings")]:
        with pytest.raises(DemoError, match=words):
            app.parse_settings(**bad)


# ----------------------------------------------------------------------------- text -> audio


def test_the_fusion_temperature_reaches_the_engine(app: DemoApp, fast: RetrievalConfig) -> None:
    sharp = app.parse_settings(**{**dataclasses.asdict(fast), "temperature": 0.01})
    assert sharp.temperature == 0.01
    default_run = app.searcher.search_text("a rooster crowing", fast, DemoSession())["results"]
    sharp_run = app.searcher.search_text("a rooster crowing", sharp, DemoSession())["results"]
    # the same x0, read at another temperature: the diffusion terms spread further apart
    spread = lambda hits: max(h["diffusion"] for h in hits) - min(h["diffusion"] for h in hits)  # noqa: E731
    assert spread(sharp_run) > spread(default_run)
    for bad in (0, -1, 11, "warm"):
        with pytest.raises(DemoError, match="temperature"):
            app.parse_settings(temperature=bad)


def test_text_search_results_and_trajectory(app: DemoApp, fast: RetrievalConfig) -> None:
    session = DemoSession()
    response = app.searcher.search_text("a dog barking", fast, session)
    json.dumps(response)  # the API returns it as JSON
    hits = response["results"]
    assert len(hits) == 3
    assert [h["rank"] for h in hits] == [1, 2, 3]
    fused = [h["fused"] for h in hits]
    assert fused == sorted(fused, reverse=True)
    # the library's engine on the same corpus and knobs is the oracle
    assert [[h["clip_id"], *h["captions"]] for h in hits] == library_top(
        "a dog barking", k=3, steps=fast.num_inference_steps, top_k=fast.top_k, alpha=fast.alpha, seed=fast.seed)
    for h in hits:
        assert not Path(h["audio_file"]).is_absolute() and str(ROOT) not in json.dumps(h)  # no server path
        assert Path(app.audio_file(h["clip_id"], session)).is_file()  # the app's players get the path
        assert h["license"] == "CC0-1.0" and h["source"]
        assert h["moved"] == h["cosine_rank"] - h["rank"]
        assert math.isclose(h["fused"], h["cosine"] + fast.alpha * h["diffusion"], rel_tol=1e-5)
        assert h["yours"] is False
    view = session.trajectory
    assert view is last_trajectory(session)
    assert len(view["x_t"]) == fast.num_inference_steps + 1
    assert len(view["pred_x0"]) == len(view["timesteps"]) == fast.num_inference_steps
    assert all(len(row) == fast.top_k for row in view["x_t"])
    assert sorted(view["final_rank"]) == list(range(fast.top_k))
    # x_0 (last row) is what the diffusion score was computed from: softmax(x0 / temperature 1).
    np.testing.assert_allclose(_softmax(view["x_t"][-1]), view["diffusion"], atol=1e-4)
    # the candidates are in cosine order
    assert view["cosine"] == sorted(view["cosine"], reverse=True)
    top = {view["labels"][i] for i, r in enumerate(view["final_rank"]) if r < fast.num_results}
    assert top == {h["clip_id"] for h in hits}


def test_the_trajectory_view_is_built_on_first_read_only(app: DemoApp, fast: RetrievalConfig, monkeypatch) -> None:
    """API clients never read the view: a search must not build it; the first read builds it once."""
    from diffatr.retrieval.engine import SearchEngine

    built = []
    real = SearchEngine.trajectory_view

    def counting(self, *args, **kwargs):
        built.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SearchEngine, "trajectory_view", counting)
    session = DemoSession()
    app.searcher.search_text("rain on a roof", fast, session)
    assert built == []
    view = session.trajectory
    assert built == [1] and view["query"] == "rain on a roof"
    assert session.trajectory is view and last_trajectory(session) is view and built == [1]
    app.searcher.search_text("a dog barking", fast, session)  # a new search replaces the old view
    assert session.trajectory["query"] == "a dog barking" and built == [1, 1]


def test_searches_run_without_autograd_bookkeeping(app: DemoApp, fast: RetrievalConfig, monkeypatch) -> None:
    """The demo never trains: its searches run in inference mode (cheaper per op), text, audio
    (its captions and its similar sounds) and sounds like a clip."""
    import torch

    engine = app.sessions.engine
    seen = []
    real = engine.rank

    def recording(*args, **kwargs):
        seen.append(torch.is_inference_mode_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "rank", recording)
    app.searcher.search_text("a dog barking", fast, DemoSession())
    app.searcher.search_audio(str(EXAMPLES / "cat.mp3"), fast, DemoSession())
    app.searcher.search_similar("dog", fast, DemoSession())
    app.searcher.search_like("dog", fast, DemoSession())
    assert seen == [True] * 6 and not torch.is_inference_mode_enabled()


def test_same_seed_same_trajectory_other_seed_other_noise(app: DemoApp, fast: RetrievalConfig) -> None:
    a, b, c = DemoSession(), DemoSession(), DemoSession()
    app.searcher.search_text("ducks quacking", fast, a)
    app.searcher.search_text("ducks quacking", fast, b)
    app.searcher.search_text("ducks quacking", dataclasses.replace(fast, seed=7), c)
    assert a.trajectory["x_t"] == b.trajectory["x_t"]
    assert a.trajectory["x_t"][0] != c.trajectory["x_t"][0]


def test_k_larger_than_corpus_is_clamped(app: DemoApp) -> None:
    session = DemoSession()
    response = app.searcher.search_text("a horse", app.parse_settings(num_results=10, top_k=64, num_inference_steps=5), session)
    assert response["settings"]["top_k_used"] == len(app.index)
    assert len(response["results"]) == len(app.index)


@pytest.mark.parametrize("query", ["", "   \n\t ", None])
def test_empty_caption_is_a_clear_error_and_the_next_query_works(app: DemoApp, fast: RetrievalConfig, query) -> None:
    session = DemoSession()
    with pytest.raises(DemoError, match="empty"):
        app.searcher.search_text(query, fast, session)
    assert app.searcher.search_text("a cat", fast, session)["results"]


def test_non_text_caption(app: DemoApp, fast: RetrievalConfig) -> None:
    with pytest.raises(DemoError, match="text"):
        app.searcher.search_text(12345, fast, DemoSession())


def test_ten_thousand_character_caption_is_cut_with_a_notice(app: DemoApp, fast: RetrievalConfig) -> None:
    response = app.searcher.search_text("a dog barking loudly " * 500, fast, DemoSession())  # 10,500 characters
    assert len(response["query"]) <= MAX_QUERY_CHARS
    assert response["results"]
    assert any(n["level"] == "warning" and "characters" in n["text"] for n in response["notices"])


# ----------------------------------------------------------------------------- audio -> text


def test_audio_search_by_file(app: DemoApp, fast: RetrievalConfig) -> None:
    session = DemoSession()
    response = app.searcher.search_audio(str(EXAMPLES / "cat.mp3"), fast, session)
    assert response["direction"] == "audio_to_text"
    assert any("cat" in h["caption"] for h in response["results"][:2])
    assert session.trajectory["direction"] == "audio_to_text"
    assert len(session.trajectory["labels"]) == fast.top_k  # captions


def test_audio_search_by_recording_odd_rate_and_channels(app: DemoApp, fast: RetrievalConfig) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(11025 * 2) / 11025
    mono = 0.3 * np.sin(2 * np.pi * 600 * t) + 0.01 * rng.standard_normal(t.shape)
    six = (np.stack([mono] * 6, axis=1) * 32767).astype(np.int16)  # (S, 6) int16 at 11,025 Hz
    response = app.searcher.search_audio(six, fast, DemoSession(), sample_rate=11025)
    assert len(response["results"]) == fast.num_results
    channels_first = app.searcher.search_audio(six.T.astype(np.float32) / 32767, fast, DemoSession(), sample_rate=11025)
    assert len(channels_first["results"]) == fast.num_results
    with pytest.raises(DemoError, match="sample rate"):
        app.searcher.search_audio(mono, fast, DemoSession())  # a waveform without its rate
    with pytest.raises(DemoError, match="Unsupported"):
        app.searcher.search_audio((11025, six), fast, DemoSession())  # Gradio's pair: webapp_io converts it


def test_the_engine_takes_paths_or_waveforms_with_their_rate_not_gradio_pairs(app: DemoApp) -> None:
    from diffatr.retrieval.engine import SearchError

    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate).astype(np.float32)
    two = app.model.config.with_retrieval(num_results=2, num_inference_steps=2)
    by_wave = app.engine.search_audio(tone, two, sample_rate=rate)[0]
    by_list = app.engine.search_audio([tone, tone], two, sample_rate=rate)
    assert [h.clip_id for h in by_list[1]] == [h.clip_id for h in by_wave]
    assert app.engine.search_audio(str(EXAMPLES / "cat.mp3"), two)[0]
    for pair in [(rate, tone), (tone, rate)]:
        with pytest.raises(SearchError, match="sample_rate="):
            app.engine.search_audio(pair, two)
    with pytest.raises(SearchError, match="sample_rate="):
        app.engine.search_audio(tone, two)


def test_odd_file_formats_work(app: DemoApp, fast: RetrievalConfig, tmp_path: Path) -> None:
    for name, sr, channels in [("a.flac", 8000, 2), ("b.wav", 96000, 3), ("c.ogg", 22050, 1)]:
        path = write_tone(tmp_path / name, freq=700, seconds=1.5, sr=sr, channels=channels)
        assert app.searcher.search_audio(str(path), fast, DemoSession())["results"]


def test_bad_audio_files_give_clear_errors_and_the_next_query_works(app: DemoApp, fast: RetrievalConfig,
                                                                    tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio at all\n" * 50)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    session = DemoSession()
    for path in (corrupt, text, empty, tmp_path / "missing.wav"):
        with pytest.raises(DemoError) as info:
            app.searcher.search_audio(str(path), fast, session)
        message = str(info.value)
        assert path.name in message and str(tmp_path) not in message  # names the file, hides the server path
    for bad in [None, "", 42, {"path": str(EXAMPLES / "dog.mp3")}]:
        with pytest.raises(DemoError):
            app.searcher.search_audio(bad, fast, session)
    for rate, bad in [(0, np.zeros(100)), (16000, np.zeros((2, 2, 2))), (16000, np.full(1000, np.nan)),
                      (16000, np.zeros(0))]:
        with pytest.raises(DemoError):
            app.searcher.search_audio(bad, fast, session, sample_rate=rate)
    assert app.searcher.search_audio(str(EXAMPLES / "dog.mp3"), fast, session)["results"]


def test_silent_audio_is_refused_with_a_message(app: DemoApp, fast: RetrievalConfig, tmp_path: Path) -> None:
    silent = tmp_path / "silence.wav"
    sf.write(str(silent), np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(DemoError, match="silent"):
        app.searcher.search_audio(str(silent), fast, DemoSession())
    with pytest.raises(DemoError, match="silent"):
        app.searcher.search_audio(np.zeros(16000, dtype=np.int16), fast, DemoSession(), sample_rate=16000)


def test_hour_long_file_is_cut_with_a_notice(app: DemoApp, fast: RetrievalConfig, tmp_path: Path) -> None:
    path = tmp_path / "hour.wav"
    rng = np.random.default_rng(1)
    sf.write(str(path), (rng.standard_normal(3600 * 1000) * 3000).astype(np.int16), 1000)  # 1 h at 1 kHz
    response = app.searcher.search_audio(str(path), fast, DemoSession())
    assert response["results"]
    assert any(n["level"] == "warning" and f"{AUDIO_MAX_SECONDS:g} s" in n["text"] for n in response["notices"])
    long_mic = (rng.standard_normal(8000 * 45) * 0.1).astype(np.float32)  # 45 s recording
    response = app.searcher.search_audio(long_mic, fast, DemoSession(), sample_rate=8000)
    assert any("longer than" in n["text"] for n in response["notices"])


# ----------------------------------------------------------------------------- uploads


def _beep_files(folder: Path) -> list[str]:
    folder.mkdir(exist_ok=True)
    beep = write_tone(folder / "beep.wav", freq=3000, seconds=1.0, sr=16000)
    (folder / "beep.txt").write_text("a high electronic beep\n")
    hum = write_tone(folder / "hum.flac", freq=60, seconds=1.0, sr=8000, channels=2)
    broken = folder / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    silence = folder / "quiet.wav"
    sf.write(str(silence), np.zeros(8000, dtype=np.float32), 8000)
    notes = folder / "notes.pdf"
    notes.write_bytes(b"%PDF-1.4 not audio")
    return [str(p) for p in (beep, folder / "beep.txt", hum, broken, silence, notes)]


def test_uploads_indexed_for_this_session_only(app: DemoApp, fast: RetrievalConfig, tmp_path: Path) -> None:
    n_shipped = len(app.index)
    mine, other = DemoSession(), DemoSession()
    calls: list[tuple[int, int]] = []
    report = app.user_sounds.index_uploads(_beep_files(tmp_path / "up"), mine, on_progress=lambda d, t: calls.append((d, t)))
    json.dumps(report)
    assert report["indexed"] == 2 and report["your_clips"] == 2
    skipped = {s["file"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"broken.wav", "quiet.wav", "notes.pdf"}
    assert "silent" in skipped["quiet.wav"]
    assert all(str(tmp_path) not in reason for reason in skipped.values())
    assert calls and calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(app.index) == n_shipped  # the shipped index is untouched

    everything = app.parse_settings(num_results=10, top_k=64, num_inference_steps=5)
    app.searcher.search_text("a high electronic beep", everything, mine)
    assert "yours/beep" in mine.trajectory["labels"]
    assert len(mine.trajectory["labels"]) == n_shipped + 2
    app.searcher.search_text("a high electronic beep", everything, other)
    assert not any(label.startswith("yours/") for label in other.trajectory["labels"])
    # The uploaded caption is searchable audio -> text in this session (and only here).
    app.searcher.search_audio(str(tmp_path / "up" / "beep.wav"), everything, mine)
    assert "a high electronic beep" in mine.trajectory["labels"]
    app.searcher.search_audio(str(tmp_path / "up" / "beep.wav"), everything, other)
    assert "a high electronic beep" not in other.trajectory["labels"]
    hits = app.searcher.search_text("a high electronic beep", app.parse_settings(num_results=10, top_k=64), mine)["results"]
    assert any(h["yours"] and h["clip_id"] == "yours/beep" for h in hits)

    # A second upload of the same name gets a new id; clearing forgets both.
    again = app.user_sounds.index_uploads([str(tmp_path / "up" / "beep.wav")], mine)
    assert again["clips"] == ["yours/beep-2"] and again["your_clips"] == 3
    cleared = app.user_sounds.clear_uploads(mine)
    assert cleared["removed"] == 3 and mine.user_index is None
    app.searcher.search_text("a high electronic beep", everything, mine)
    assert len(mine.trajectory["labels"]) == n_shipped


def test_zip_upload_is_unpacked_safely(app: DemoApp, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = _beep_files(src)
    archive = tmp_path / "sounds.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(files[0], "pack/beep.wav")
        zf.write(files[1], "pack/beep.txt")
        zf.write(files[2], "../../escape.flac")  # zip-slip: must land inside the session folder
        zf.writestr("readme.md", "not audio")
        zf.writestr("__MACOSX/._beep.wav", "resource fork")
    bad_zip = tmp_path / "broken.zip"
    bad_zip.write_bytes(b"PK\x03\x04 this is not really a zip")
    session = DemoSession()
    report = app.user_sounds.index_uploads([str(archive), str(bad_zip)], session)
    assert report["indexed"] == 2
    assert set(report["clips"]) == {"yours/beep", "yours/escape"}
    reasons = {s["file"]: s["reason"] for s in report["skipped"]}
    assert "zip" in reasons["broken.zip"] and "not an audio file" in reasons["sounds.zip/readme.md"]
    assert len(reasons) == 2
    upload_dir = Path(session.upload_dir)
    assert not (tmp_path / "escape.flac").exists() and not (tmp_path.parent / "escape.flac").exists()
    assert all(upload_dir in Path(p).parents for p in session.user_index.paths)
    ix = session.user_index
    assert ix.captions[ix.clip_ids.index("yours/beep")] == ["a high electronic beep"]
    app.sessions.forget(session)
    assert not upload_dir.exists()


def test_upload_errors(app: DemoApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session = DemoSession()
    for nothing in (None, [], ""):
        with pytest.raises(DemoError, match="Choose"):
            app.user_sounds.index_uploads(nothing, session)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"junk")
    report = app.user_sounds.index_uploads([str(broken)], session)  # nothing usable: listed, not raised
    assert report["indexed"] == 0 and report["skipped"][0]["file"] == "broken.wav"
    assert report["notices"] and session.user_index is None
    monkeypatch.setattr(app, "quotas", dataclasses.replace(app.quotas, session_clips=1))
    monkeypatch.setattr(app.uploads, "quotas", app.quotas)
    files = [str(write_tone(tmp_path / f"t{i}.wav", freq=300 + 100 * i)) for i in range(2)]
    report = app.user_sounds.index_uploads(files, session)
    assert report["indexed"] == 1 and "limit" in report["skipped"][0]["reason"]
    with pytest.raises(DemoError, match="limit"):
        app.user_sounds.index_uploads(files[:1], session)


def test_trajectory_before_any_search(app: DemoApp) -> None:
    with pytest.raises(DemoError, match="search"):
        last_trajectory(DemoSession())
    with pytest.raises(DemoError):
        last_trajectory(None)


# ----------------------------------------------------------------------------- plots


def test_step_figure_follows_the_trajectory(app: DemoApp, fast: RetrievalConfig) -> None:
    session = DemoSession()
    app.searcher.search_text("a rooster crowing", fast, session)
    view = session.trajectory
    s = plots.num_steps(view)
    first, last = plots.trajectory_step_figure(view, 0), plots.trajectory_step_figure(view, s)
    # step 0: the start noise read as a distribution; x_0: softmax(x0_hat * CE scale), the
    # distribution the model was trained to generate (recomputed here from the raw trajectory)
    x_t, pred = np.asarray(view["x_t"]), np.asarray(view["pred_x0"])
    softmax = lambda v: np.exp(v - v.max()) / np.exp(v - v.max()).sum()  # noqa: E731
    order = np.argsort(view["final_rank"])  # the bars in the final ranking's order, at every step
    np.testing.assert_allclose(first.data[0].x, softmax(x_t[0])[order], atol=1e-4)
    np.testing.assert_allclose(last.data[0].x, softmax(view["ce_scale"] * pred[-1])[order], atol=1e-4)
    top = [f"<b>#{r + 1} " for r in range(fast.num_results)]
    assert [label[:len(t)] for label, t in zip(last.data[0].y, top)] == top  # the final top first, in order
    assert view["ce_scale"] == app.model.config.diffusion.ce_scale
    assert list(first.data[0].x) != list(last.data[0].x)
    assert first.data[0].orientation == "h" and list(first.data[0].y) == list(last.data[0].y)  # labels on y
    colours = list(last.data[0].marker.color)
    assert colours.count(plots.TOP_COLOUR) == fast.num_results
    # the diffusion's own ranking: by the final x0, ties in cosine order
    assert sorted(view["gen_rank"]) == list(range(len(view["gen_rank"])))
    assert np.argsort(-x_t[-1], kind="stable").tolist() == np.argsort(view["gen_rank"]).tolist()
    assert "x_T" in first.layout.title.text and "x_0" in last.layout.title.text
    assert plots.trajectory_step_figure(view, 999).layout.title.text == last.layout.title.text  # clamped
    assert first.layout.xaxis.range == last.layout.xaxis.range  # steps compare on one scale ...
    assert last.layout.xaxis.range[1] <= 1.08 * max(max(row) for row in view["distribution"]) + 1e-9  # ... that fits
    spec = json.loads(json.dumps(plots.trajectory_step_spec(view, s)))  # plain JSON, what the app streams
    assert spec["data"][0]["x"] == list(last.data[0].x) and spec["layout"]["title"]["text"] == last.layout.title.text
    heat = plots.trajectory_heatmap(view)
    assert np.asarray(heat.data[0].z).shape == (fast.top_k, s + 1)  # candidates down, steps across
    assert list(heat.data[0].y) == list(last.data[0].y) and heat.data[0].zmin == 0
    np.testing.assert_allclose(np.asarray(heat.data[0].z)[:, -1], last.data[0].x, atol=1e-3)  # the end state shows
    for fig in (first, last, heat, plots.empty_figure()):
        assert "bdata" not in fig.to_json()  # plain lists: any plotly.js renders them


def test_iter_steps(app: DemoApp) -> None:
    view = {"x_t": [[0.0]] * 6}
    assert list(iter_steps(view)) == [0, 1, 2, 3, 4, 5]
    assert list(iter_steps(view, 3)) == [3, 4, 5]
    assert list(iter_steps(view, 5)) == [0, 1, 2, 3, 4, 5]  # at the end: play again from x_T


def test_an_animation_lasts_about_the_same_whatever_the_steps() -> None:
    for frames in (11, 51, 201):
        assert frames * frame_pause(frames, 3.0) == pytest.approx(3.0)
    assert frame_pause(2, 3.0) == 0.3  # a two-frame run does not crawl
    assert frame_pause(51, 3.0, fixed=0.15) == 0.15  # $DIFFATR_FRAME_SECONDS: a fixed pace
    assert frame_pause(0, -1.0) == 0.0


# ----------------------------------------------------------------------------- hosting files


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r.strip(), maxsplit=1)[0].lower() for r in requirements if r.strip()}


def test_requirements_txt_lists_the_project_and_app_dependencies() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [line.split("#", 1)[0] for line in (ROOT / "requirements.txt").read_text().splitlines()]
    listed = _names([line for line in lines if line.strip() and not line.strip().startswith("-")])
    needed = _names(project["dependencies"] + project["optional-dependencies"]["app"])
    assert needed <= listed, f"requirements.txt misses {sorted(needed - listed)}"


def test_gitattributes_sends_every_binary_file_through_lfs() -> None:
    """The Hugging Face Hub refuses binary files outside LFS/Xet: each one the repository holds
    must match a rule of .gitattributes."""
    import subprocess

    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    binary = []
    for name in filter(None, files.decode().split("\0")):
        path = ROOT / name
        if path.is_file() and b"\0" in path.read_bytes()[:8000]:  # git's own test for binary
            binary.append(name)
    assert any(name.endswith(".opus") for name in binary)
    attrs = subprocess.run(["git", "check-attr", "filter", "--stdin", "-z"], cwd=ROOT, capture_output=True, check=True,
                           input="\0".join(binary).encode()).stdout.decode().split("\0")
    filters = dict(zip(attrs[0::3], attrs[2::3]))
    missing = sorted({Path(n).suffix for n in binary if filters.get(n) != "lfs"})
    assert not missing, f".gitattributes does not send these through LFS: {missing}"


@pytest.mark.parametrize("query", ["\x00", "🐶🐶🐶", "!!!"])
def test_a_query_without_words_gets_a_message_not_a_ranking(app: DemoApp, fast: RetrievalConfig, query: str) -> None:
    session = DemoSession()
    with pytest.raises(DemoError, match="letters or digits|empty"):
        app.searcher.search_text(query, fast, session)
    assert session.trajectory is None  # nothing was ranked


def test_an_audio_query_shorter_than_50_ms_gets_a_message(app: DemoApp, fast: RetrievalConfig, tmp_path: Path) -> None:
    one_sample = tmp_path / "click.wav"
    sf.write(one_sample, np.array([0.5], dtype=np.float32), 16000)
    with pytest.raises(DemoError, match="^The file click.wav is only 0 ms long.*at least 50 ms"):
        app.searcher.search_audio(str(one_sample), fast, DemoSession())
    lower = tmp_path / "dog.WAV"  # the user's own spelling comes back, not "Dog.WAV"
    sf.write(lower, np.array([0.5, -0.5], dtype=np.float32), 16000)
    with pytest.raises(DemoError, match="^The file dog.WAV is only"):
        app.searcher.search_audio(str(lower), fast, DemoSession())
    with pytest.raises(DemoError, match="ms long"):
        app.searcher.search_audio(np.full(400, 0.3, dtype=np.float32), fast, DemoSession(), sample_rate=16000)  # 25 ms
    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(0.06 * rate)) / rate).astype(np.float32)  # 60 ms
    assert app.searcher.search_audio(tone, fast, DemoSession(), sample_rate=rate)["results"]


def test_the_users_text_never_becomes_markup(app: DemoApp, fast: RetrievalConfig) -> None:
    from diffatr.demo import md_escape, status_line

    session = DemoSession()
    query = '<b>loud</b> dog <a href="https://example.com">barking</a> _now_ $x$'
    response = app.searcher.search_text(query, fast, session)
    view = dict(session.trajectory, labels=["<i>x</i>", *session.trajectory["labels"][1:]])
    spec = plots.trajectory_step_spec(view, plots.num_steps(view))
    text = json.dumps(spec)
    assert "<a " not in text and "<b>loud" not in text and "<i>x" not in text  # Plotly reads these tags
    assert "&lt;b&gt;loud" in spec["layout"]["title"]["text"] and "&lt;i&gt;x&lt;/i&gt;" in spec["data"][0]["y"][0]
    heat = plots.trajectory_heatmap(view).to_json()
    assert "<i>x" not in heat and "&lt;i&gt;x" in heat
    status = status_line(response)
    assert "<b>" not in status and "https://" not in status and "_now_" not in status and "$x$" not in status
    assert re.sub(r"\\(.)", r"\1", md_escape(query)) == query  # unescaped, it is the text itself


def _view(distribution: list[list[float]], final_rank: list[int]) -> dict:
    k = len(final_rank)
    return {"labels": [f"clip{i}" for i in range(k)], "x_t": [[0.0] * k] * len(distribution),
            "distribution": distribution, "final_rank": final_rank, "gen_rank": list(range(k)), "highlight": 2,
            "cosine": [0.5] * k, "timesteps": list(range(len(distribution) - 1, 0, -1)) + [0], "query": "q"}


def test_the_figure_says_in_words_what_its_bars_show() -> None:
    flat, peaked, leaning = [0.26, 0.25, 0.25, 0.24], [0.05, 0.9, 0.03, 0.02], [0.3, 0.4, 0.2, 0.1]
    view = _view([flat, flat, peaked, leaning], final_rank=[0, 1, 2, 3])  # final #1: clip0
    assert "noise" in plots.step_verdict(view, 0)
    assert plots.step_verdict(view, 1).startswith("nearly flat")
    words = plots.step_verdict(view, 2)
    assert words.startswith("peaked on clip1") and "flat" not in words
    assert "the diffusion alone would rank clip1 first; the final ranking keeps clip0" in words
    assert plots.step_verdict(view, 3).startswith("leans to clip1")
    agree = _view([flat, [0.9, 0.05, 0.03, 0.02]], final_rank=[0, 1, 2, 3])
    assert "the final #1 too" in plots.step_verdict(agree, 1) and "alone" not in plots.step_verdict(agree, 1)
    spec = plots.trajectory_step_spec(view, 2)
    assert plots.step_verdict(view, 2) in spec["layout"]["title"]["text"]
    assert spec["data"][0]["y"][:2] == ["<b>#1 clip0</b>", "<b>#2 clip1</b>"]  # the final top, marked, in order
