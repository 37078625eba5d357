"""The demo's sounds-like-this handlers, called directly (no browser, no server).

Sounds like a clip or a sound, never the clip itself; the audio search's similar sounds beside
its captions; "More like this" from any result, the user's own sounds included; one result per
sound on by default, grouping the user's near-duplicate uploads; the page's glue (cards, the
audio tab selected with the clip as its query).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import write_tone

pytest.importorskip("plotly", reason="the app extra is not installed: pip install -e '.[app]'")

from diffatr.config import RetrievalConfig  # noqa: E402
from diffatr.demo import DemoApp, DemoError, DemoSession  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> DemoApp:
    uploads = tmp_path_factory.mktemp("uploads")
    return DemoApp.load(index_dir=EXAMPLES / "index", upload_root=uploads).start(warm_up=False)


@pytest.fixture
def fast(app: DemoApp) -> RetrievalConfig:
    return app.parse_settings(num_results=5, num_inference_steps=5, top_k=8)


def _no_server_path(response: dict) -> None:
    text = json.dumps(response)
    assert str(ROOT) not in text and '"path"' not in text


def test_the_page_shows_one_result_per_sound_by_default(app: DemoApp) -> None:
    assert app.defaults.one_per_sound is True
    assert app.parse_settings(one_per_sound=False).one_per_sound is False
    with pytest.raises(DemoError, match=r"One result per sound \(one_per_sound\) must be true or false"):
        app.parse_settings(one_per_sound="sometimes")


def test_sounds_like_a_clip_never_return_the_clip(app: DemoApp, fast: RetrievalConfig) -> None:
    session = DemoSession()
    response = app.searcher.search_similar("dog", fast, session)
    assert response["direction"] == "audio_to_audio" and response["query_clip"] == "dog"
    ids = [h["clip_id"] for h in response["results"]]
    assert len(ids) == 5 and "dog" not in ids
    scores = [h["cosine"] for h in response["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(h["audio_file"] and "variants" in h for h in response["results"])
    assert session.trajectory is None  # no diffusion ran: the last trajectory stays as it was
    _no_server_path(response)
    # the same clip as an audio file: the same sounds, the file itself left out
    by_file = app.searcher.search_similar(str(EXAMPLES / "dog.mp3"), fast, session)
    assert [h["clip_id"] for h in by_file["results"]] == ids and by_file["query_clip"] is None
    with pytest.raises(DemoError, match="No clip 'nope' in the library"):
        app.searcher.search_similar("nope", fast, session)


def test_the_audio_search_shows_similar_sounds_beside_its_captions(app: DemoApp, fast: RetrievalConfig) -> None:
    session = DemoSession()
    response = app.searcher.search_audio(str(EXAMPLES / "cat.mp3"), fast, session)
    assert response["direction"] == "audio_to_text" and response["results"]
    similar = [h["clip_id"] for h in response["similar"]]
    assert len(similar) == 5 and "cat" not in similar  # the query's own file is not "like" itself
    assert similar == [h["clip_id"] for h in app.searcher.search_similar("cat", fast, session)["results"]]
    assert session.trajectory is not None and session.trajectory["direction"] == "audio_to_text"
    _no_server_path(response)


def test_more_like_this_from_a_clip_gives_its_captions_and_similar_sounds(app: DemoApp, fast: RetrievalConfig) -> None:
    session = DemoSession()
    response = app.searcher.search_like("cow", fast, session)
    assert response["query_clip"] == "cow" and response["audio_file"] == "cow.mp3"
    assert "cow" not in [h["clip_id"] for h in response["similar"]]
    # its captions rank as for its own audio file (the stored features are that file's)
    by_file = app.searcher.search_audio(str(EXAMPLES / "cow.mp3"), fast, DemoSession())
    assert [h["caption"] for h in response["results"]] == [h["caption"] for h in by_file["results"]]
    assert session.trajectory["query"] == "cow"
    with pytest.raises(DemoError, match="No clip"):
        app.searcher.search_like("yours/nothing", fast, session)


def test_more_like_this_works_for_the_users_own_sounds(app: DemoApp, fast: RetrievalConfig, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    write_tone(folder / "whistle.wav", freq=2500.0, seconds=1.5, seed=1)
    shutil.copy(folder / "whistle.wav", folder / "whistle_copy.wav")  # one recording, twice
    write_tone(folder / "hum.wav", freq=90.0, seconds=1.5, seed=2)
    mine, other = DemoSession(), DemoSession()
    report = app.user_sounds.index_uploads([str(p) for p in sorted(folder.iterdir())], mine)
    assert report["indexed"] == 3
    everything = app.parse_settings(num_results=10, one_per_sound=False)
    response = app.searcher.search_like("yours/whistle", everything, mine)
    ids = [h["clip_id"] for h in response["similar"]]
    assert "yours/whistle" not in ids and "yours/hum" in ids and len(ids) == 10
    # the identical copy is the query's very audio: never a result
    assert "yours/whistle_copy" not in ids
    # one result per sound: the copy is a variant of the whistle, shown once with "+1"
    grouped = app.searcher.search_similar("yours/hum", app.parse_settings(num_results=10), mine)["results"]
    whistles = [h for h in grouped if h["clip_id"].startswith("yours/whistle")]
    assert len(whistles) == 1 and whistles[0]["variants"] == 1 and whistles[0]["yours"]
    plain = app.searcher.search_similar("yours/hum", everything, mine)["results"]
    assert sum(h["clip_id"].startswith("yours/whistle") for h in plain) == 2
    assert all(h["variants"] == 0 for h in plain)
    with pytest.raises(DemoError, match="No clip"):  # another session does not see them
        app.searcher.search_like("yours/whistle", fast, other)
    app.user_sounds.clear_uploads(mine)


def test_the_page_glue_fills_cards_and_opens_the_audio_tab(app: DemoApp, fast: RetrievalConfig) -> None:
    pytest.importorskip("gradio")
    from diffatr.demo import MAX_RESULTS
    from diffatr.webapp import Handlers, ServerSettings

    handlers = Handlers(app, ServerSettings())
    session = DemoSession()
    response, session = handlers.more_like_this("cow", 5, 5, 8, 1.0, 0, 1.0, True, session)
    shown = handlers.show_like_results(response, session)
    tabs, query_player, status, table, similar_status = shown[:5]
    assert tabs.selected == "audio" and Path(query_player).name == "cow.mp3"
    assert "cow" in status and table and "like “cow”" in similar_status
    cards = shown[5 : 5 + 4 * MAX_RESULTS]
    groups, texts, players, clips = (cards[i * MAX_RESULTS : (i + 1) * MAX_RESULTS] for i in range(4))
    assert clips[:5] == [h["clip_id"] for h in response["similar"]] and clips[5:] == [""] * (MAX_RESULTS - 5)
    assert all(p and Path(p).is_file() for p in players[:5]) and players[5] is None
    assert "similarity" in texts[0] and [g.visible for g in groups][:6] == [True] * 5 + [False]
    api, _ = handlers.search_similar("cow", None, 3, 5, 8, 1.0, 0, 1.0, False, session)
    assert [h["clip_id"] for h in api["results"]] == [h["clip_id"] for h in response["similar"]][:3]
    by_file, _ = handlers.search_similar("", str(EXAMPLES / "cow.mp3"), 3, 5, 8, 1.0, 0, 1.0, False, session)
    assert [h["clip_id"] for h in by_file["results"]] == [h["clip_id"] for h in api["results"]]
