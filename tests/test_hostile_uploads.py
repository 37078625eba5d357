"""The upload path under attack (issue 11): the disk stays under the quotas whatever is sent,
unusable files do not stay, a huge caption file is never read into memory, no server path is
returned, and the next normal search works.

The handlers are called directly on the shipped checkpoint and the ten example clips, with tiny
quotas (a few MB) so that every quota is reached in a few seconds.
"""

from __future__ import annotations

import io
import json
import os
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import write_tone

pytest.importorskip("plotly", reason="the app extra is not installed: pip install -e '.[app]'")

from diffatr.demo import DemoApp, DemoError, DemoSession, hide_paths  # noqa: E402
from diffatr.uploads import QuotaExceeded, UploadQuotas, UploadStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
QUOTAS = UploadQuotas(session_mb=1.5, total_mb=2.5, cache_mb=0.5, min_sessions=1, session_clips=12, total_clips=20,
                      zip_members=40, zip_ratio=20, caption_kb=4, session_ttl_s=600)


@pytest.fixture(scope="module")
def upload_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def app(upload_root: Path) -> DemoApp:
    app = DemoApp.load(index_dir=EXAMPLES / "index", quotas=QUOTAS, upload_root=upload_root).start(warm_up=False)
    yield app
    app.uploads.close()


@pytest.fixture
def fast(app: DemoApp):
    return app.parse_settings(num_results=3, num_inference_steps=5, top_k=8)


def disk_bytes(folder: Path) -> int:
    """What is really on disk under ``folder`` (not what the store believes)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def noise_wav(seconds: float, seed: int, sr: int = 16000) -> bytes:
    """Loud 16-bit noise: it does not compress, so a zip of it passes the ratio check."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    sf.write(buffer, (rng.standard_normal(int(seconds * sr)) * 6000).astype(np.int16), sr, format="WAV")
    return buffer.getvalue()


def make_zip(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return str(path)


def assert_no_server_path(payload, *folders: Path) -> None:
    text = json.dumps(payload)
    for folder in (ROOT, *folders):
        assert str(folder) not in text, text
    assert "/tmp/" not in text and "/work/" not in text, text


def test_repeated_bombs_junk_and_floods_keep_the_disk_under_the_quotas(app: DemoApp, fast, upload_root: Path,
                                                                       tmp_path: Path) -> None:
    session = DemoSession()
    good = write_tone(tmp_path / "good.wav", freq=1200, seconds=1.0)  # 32 KB, indexed first
    first = app.user_sounds.index_uploads([str(good)], session)
    assert first["clips"] == ["yours/good"]
    peak = 0
    reports = []
    for round_ in range(4):  # the same attacks again and again: the budget must not reset
        bomb = make_zip(tmp_path / f"bomb{round_}.zip", {"bomb.wav": bytes(30_000_000)})  # 30 MB of zeros
        junk = make_zip(tmp_path / f"junk{round_}.zip",  # random bytes named .wav: written, undecodable
                        {f"junk{i}.wav": np.random.default_rng(i).bytes(60_000) for i in range(5)})
        flood = make_zip(tmp_path / f"flood{round_}.zip", {f"f{i}.wav": b"x" for i in range(QUOTAS.zip_members + 1)})
        noise = make_zip(tmp_path / f"noise{round_}.zip",  # incompressible, decodable: 4 x 0.32 MB
                         {f"noise{round_}_{i}.wav": noise_wav(10.0, seed=10 * round_ + i) for i in range(4)})
        for upload in (bomb, junk, flood, noise):
            try:
                reports.append(app.user_sounds.index_uploads([upload], session))
            except DemoError as err:  # the session's quota is used up: refused before any write
                assert "quota" in str(err)
            peak = max(peak, disk_bytes(upload_root))
            assert disk_bytes(upload_root) <= QUOTAS.total_bytes
            assert app.uploads.usage(session.session_id)["written"] <= QUOTAS.session_bytes
            assert not list(upload_root.rglob("*.part")), "a partial file was left behind"
    reasons = " | ".join(s["reason"] for r in reports for s in r["skipped"])
    assert "zip bomb" in reasons and "at most 40" in reasons and "quota of 1.5 MB" in reasons
    bombs = [s for r in reports for s in r["skipped"] if "zip bomb" in s["reason"]]
    assert bombs and all(s["file"].startswith("bomb") and s["file"].endswith(".zip") for s in bombs)  # not opened
    # undecodable members were deleted at once: what is on disk is what was indexed
    on_disk = {p.name for p in upload_root.rglob("*") if p.is_file()}
    assert not any(name.startswith("junk") for name in on_disk)
    assert len(on_disk) == session.num_uploads == len(session.user_index.paths)
    assert disk_bytes(upload_root) == app.uploads.disk_bytes()
    assert peak <= QUOTAS.session_bytes
    # nothing indexed before the quota was lost, and the next searches work
    assert "yours/good" in session.user_index.clip_ids and Path(session.user_index.paths[0]).is_file()
    hits = app.searcher.search_text("a high beep", app.parse_settings(num_results=10, top_k=64, num_inference_steps=5), session)
    assert any(h["yours"] for h in hits["results"])
    assert app.searcher.search_text("a dog barking", fast, DemoSession())["results"]
    for report in [*reports, hits]:
        assert_no_server_path(report, upload_root, tmp_path)
    app.sessions.forget(session)
    assert disk_bytes(upload_root) == 0 and app.uploads.disk_bytes() == 0


def test_many_sessions_cannot_pass_the_demo_quota(app: DemoApp, fast, upload_root: Path, tmp_path: Path) -> None:
    sessions = [DemoSession() for _ in range(4)]  # 4 x 1.5 MB > the demo's 2.5 MB
    for n, session in enumerate(sessions):
        files = []
        for i in range(4):
            path = tmp_path / f"s{n}_{i}.wav"
            path.write_bytes(noise_wav(10.0, seed=100 * n + i))
            files.append(str(path))
        report = app.user_sounds.index_uploads(files, session)
        assert disk_bytes(upload_root) <= QUOTAS.total_bytes
        assert_no_server_path(report, upload_root, tmp_path)
    last = report["notices"][-2]["text"] if len(report["notices"]) > 1 else report["notices"][-1]["text"]
    assert "full" in last or "full" in json.dumps(report["skipped"])
    # what was indexed stays searchable; when the sessions end, their files go
    for session in sessions:
        if session.user_index is not None:
            assert all(Path(p).is_file() for p in session.user_index.paths)
        app.sessions.forget(session)
    assert disk_bytes(upload_root) == 0
    small = write_tone(tmp_path / "after.wav", freq=500)
    fresh = DemoSession()
    assert app.user_sounds.index_uploads([str(small)], fresh)["indexed"] == 1  # the quota is free again
    app.sessions.forget(fresh)


def test_a_huge_caption_file_is_not_read_into_memory(app: DemoApp, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    caption = rng.choice(list(b"abcdefghij klmnopqrstuvwxyz\n"), size=8_000_000).astype(np.uint8).tobytes()  # 8 MB
    archive = make_zip(tmp_path / "captions.zip", {"clip.txt": caption})
    plain = tmp_path / "clip.txt"
    plain.write_bytes(caption)
    session = DemoSession()
    tracemalloc.start()
    try:
        report = app.user_sounds.index_uploads([archive, str(plain)], session)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak / 1e6:.1f} MB allocated reading an 8 MB caption file"
    reasons = [s["reason"] for s in report["skipped"]]
    assert len(reasons) == 2 and all("larger than 4 KB" in r for r in reasons)
    app.sessions.forget(session)


def test_sessions_expire_and_their_files_go(app: DemoApp, fast, upload_root: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(app.uploads, "_clock", lambda: now[0])
    idle, busy = DemoSession(), DemoSession()
    app.user_sounds.index_uploads([str(write_tone(tmp_path / "a.wav", freq=700))], idle)
    app.user_sounds.index_uploads([str(write_tone(tmp_path / "b.wav", freq=900))], busy)
    idle_dir = Path(idle.upload_dir)
    now[0] += QUOTAS.session_ttl_s / 2
    app.searcher.search_text("a tone", fast, busy)  # busy is used, idle is not
    now[0] += QUOTAS.session_ttl_s / 2 + 1
    app.searcher.search_text("a tone", fast, busy)  # a request sweeps the idle sessions
    assert not idle_dir.exists() and busy.user_index is not None and Path(busy.upload_dir).is_dir()
    response = app.searcher.search_text("a tone", fast, idle)  # the idle user is told, and searches the corpus
    assert idle.user_index is None and "forgotten" in response["notices"][0]["text"]
    app.sessions.forget(busy)
    assert disk_bytes(upload_root) == 0


def test_leftovers_of_earlier_runs_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    dead = root / "run-999999999-deadbeef" / "session"  # no such process
    dead.mkdir(parents=True)
    (dead / "clip.wav").write_bytes(b"x" * 100)
    alive = root / f"run-{os.getppid()}-cafe0000"  # a live process's run is left alone
    alive.mkdir()
    (root / "old.part").write_bytes(b"x")
    store = UploadStore(QUOTAS, root)
    assert (root / "run-999999999-deadbeef").exists() and not store.run_dir.exists()  # making one touches nothing
    assert store.start() is store and store.removed_at_start  # the start step sweeps
    assert not (root / "run-999999999-deadbeef").exists() and not (root / "old.part").exists()
    assert alive.is_dir() and store.run_dir.is_dir()
    store.write("s", io.BytesIO(b"abc"), "a.wav")
    store.close()  # at exit
    assert not store.run_dir.exists()


def test_quotas_from_the_environment() -> None:
    quotas = UploadQuotas.from_env({"DIFFATR_QUOTA_SESSION_MB": "5", "DIFFATR_QUOTA_ZIP_MEMBERS": "7"})
    assert (quotas.session_mb, quotas.zip_members, quotas.total_mb) == (5.0, 7, UploadQuotas().total_mb)
    with pytest.raises(ValueError, match="DIFFATR_QUOTA_SESSION_CLIPS"):
        UploadQuotas.from_env({"DIFFATR_QUOTA_SESSION_CLIPS": "many"})
    with pytest.raises(ValueError, match="session_mb"):
        UploadQuotas(session_mb=0)


def test_messages_hide_server_paths() -> None:
    text = "[Errno 28] No space left on device: '/tmp/diffatr-uploads/run-1-ab/s/x.wav' (C:\\Users\\me\\y.wav)"
    assert hide_paths(text) == "[Errno 28] No space left on device: 'x.wav' (y.wav)"
    assert hide_paths("sounds.zip/pack/beep.wav and yours/beep") == "sounds.zip/pack/beep.wav and yours/beep"


def test_ten_sessions_at_their_full_quota_never_lock_out_the_next(tmp_path: Path) -> None:
    defaults = UploadQuotas()
    assert defaults.session_mb * defaults.min_sessions + defaults.cache_mb <= defaults.total_mb
    assert defaults.upload_mb * defaults.min_sessions <= defaults.cache_mb  # ten uploads fit in the cache at once
    with pytest.raises(ValueError, match="10 sessions"):
        UploadQuotas(session_mb=200.0)  # the old sizing: ten sessions filled the demo's 2 GB
    quotas = UploadQuotas(session_mb=1.0, cache_mb=1.0, total_mb=11.5, min_sessions=10)
    store = UploadStore(quotas, tmp_path).start()
    try:
        for n in range(10):  # ten sessions write their whole quota, the cache holds its cap
            store.write(f"s{n}", io.BytesIO(bytes(1_000_000)), "a.wav", clip=False)
        for _ in range(10):
            store.reserve_upload(100_000)  # ten uploads at once, each at the largest size: the cache's cap
        store.write("late", io.BytesIO(bytes(400_000)), "b.wav", clip=False)  # the 11th session still can
        assert disk_bytes(tmp_path) <= quotas.total_bytes
        with pytest.raises(QuotaExceeded, match="upload cache"):
            store.reserve_upload(100_000)  # the cache is at its cap: refused before a byte arrives
        with pytest.raises(QuotaExceeded, match="at most 0.1 MB"):
            store.settle_upload(1_000_000) or store.reserve_upload(200_000)  # larger than one upload may be
    finally:
        store.close()
    assert disk_bytes(tmp_path) == 0


def test_one_client_cannot_fill_the_upload_cache(tmp_path: Path) -> None:
    """Each sender's unused uploads (and those arriving) stay within its share of the cache, so
    one client cannot block the others' uploads until its files expire."""
    quotas = UploadQuotas(session_mb=1.0, cache_mb=4.0, client_cache_mb=1.0, total_mb=14.0, min_sessions=10)
    store = UploadStore(quotas, tmp_path).start()
    store.cache_dir.mkdir(parents=True)

    def arrive(client: str, name: str, nbytes: int = 400_000) -> Path:  # what the upload route does
        store.reserve_upload(nbytes, client)
        path = store.cache_dir / name
        path.write_bytes(bytes(nbytes))
        store.settle_upload(nbytes, client)
        store.note_uploads([str(path)], client)
        return path

    try:
        first = [arrive("10.0.0.1", f"a{i}.wav") for i in range(2)]
        with pytest.raises(QuotaExceeded, match="one visitor's share of the upload cache"):
            store.reserve_upload(400_000, "10.0.0.1")  # 0.8 MB unused + 0.4 MB > 1 MB
        arrive("10.0.0.2", "b.wav")  # another client still can
        assert store.client_cache_bytes("10.0.0.1") == 800_000
        assert store.discard_uploads([str(first[0])]) == 1  # a search used it: it no longer counts
        arrive("10.0.0.1", "a2.wav")
        first[1].unlink()  # the web server's own sweep deleted an unused one
        store.measure_cache()
        assert store.client_cache_bytes("10.0.0.1") == 400_000
        store.reserve_upload(400_000, "10.0.0.3")  # uploads still arriving count too
        store.reserve_upload(400_000, "10.0.0.3")
        with pytest.raises(QuotaExceeded, match="share"):
            store.reserve_upload(400_000, "10.0.0.3")
        store.settle_upload(400_000, "10.0.0.3")
        store.settle_upload(400_000, "10.0.0.3")
        assert store.client_cache_bytes("10.0.0.3") == 0
        store.reserve_upload(400_000)  # a sender not known: only the cache's own cap applies
    finally:
        store.close()
    assert UploadQuotas(client_cache_mb=20.0).upload_mb == 20.0  # one upload always fits a share


def test_the_sender_is_the_peer_or_the_first_forwarded_address() -> None:
    from diffatr.serving import client_address
    from diffatr.webapp import ServerSettings

    scope = {"client": ("10.16.3.80", 5000), "headers": [(b"x-forwarded-for", b"203.0.113.7, 10.16.0.1")]}
    assert client_address(scope) == "10.16.3.80"  # the peer (behind a proxy: the proxy)
    assert client_address(scope, forwarded=True) == "203.0.113.7"
    assert client_address({"client": ("10.0.0.9", 1), "headers": []}, forwarded=True) == "10.0.0.9"
    assert client_address({"headers": []}) is None
    assert ServerSettings().forwarded({"SPACE_ID": "someone/diffatr"}) is True  # on Spaces
    assert ServerSettings().forwarded({}) is False
    assert ServerSettings(client_address="forwarded").forwarded({}) is True
    with pytest.raises(ValueError, match="auto, peer or forwarded"):
        ServerSettings(client_address="proxy")
