"""The command line, called through main(argv) on generated audio and a tiny model."""

import json

import pytest
import torch

from diffatr.checkpoint import save_checkpoint
from diffatr.cli import build_parser, main
from diffatr.model import DiffATR


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_config):
    torch.manual_seed(0)
    return save_checkpoint(DiffATR(tiny_config), tmp_path / "ckpt")


@pytest.fixture
def tiny_index(tmp_path, audio_folder, tiny_checkpoint, capsys):
    out = tmp_path / "index"
    code = main(["index", str(audio_folder), "--out", str(out), "--checkpoint", str(tiny_checkpoint),
                 "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert code == 0
    capsys.readouterr()  # the fixture's own output is not the test's
    return out


def test_index_lists_and_skips_bad_files(tiny_index, capsys, audio_folder, tmp_path, tiny_checkpoint):
    from diffatr.retrieval.index import RetrievalIndex

    index = RetrievalIndex.load(tiny_index)
    assert len(index) == 5 and "broken" not in index.clip_ids
    assert index.num_captions == 8  # 4 captioned clips x 2 lines; the uncaptioned clip has none
    # a second run reads every clip from the feature cache
    code = main(["index", str(audio_folder), "--out", str(tmp_path / "again"), "--checkpoint",
                 str(tiny_checkpoint), "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0 and "5 from cache" in captured.out
    assert "broken.wav" in captured.out and "skipped 1 file(s), listed below" in captured.out  # in the output
    assert "skipped 1 file" in captured.err


def test_text_search_json(tiny_index, tiny_checkpoint, capsys):
    code = main(["search", "--index", str(tiny_index), "--checkpoint", str(tiny_checkpoint),
                 "a high beep", "-k", "3", "--json", "--seed", "1"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["direction"] == "text_to_audio" and len(payload["results"]) == 3
    first = payload["results"][0]
    assert {"clip_id", "cosine", "diffusion", "fused", "moved", "rank"} <= set(first)
    fused = [r["fused"] for r in payload["results"]]
    assert fused == sorted(fused, reverse=True)
    assert payload["knobs"]["seed"] == 1


def test_same_seed_same_ranking_through_the_cli(tiny_index, tiny_checkpoint, capsys):
    import torch

    args = ["search", "--index", str(tiny_index), "--checkpoint", str(tiny_checkpoint), "a tone", "--json"]
    torch.manual_seed(123)  # the caller's global RNG in two different states: the CLI must not
    state = torch.random.get_rng_state()  # depend on it (nor reseed it to hide a dependence)
    main(args)
    first = json.loads(capsys.readouterr().out)["results"]
    assert torch.equal(torch.random.get_rng_state(), state)  # and it leaves it alone
    torch.manual_seed(456)
    main(args)
    assert json.loads(capsys.readouterr().out)["results"] == first
    # the x_T seed is what decides the diffusion term
    main(args + ["--ddim-seed", "7"])
    other = json.loads(capsys.readouterr().out)["results"]
    assert [r["diffusion"] for r in other] != [r["diffusion"] for r in first]
    main(args + ["--seed", "7"])  # the old spelling names the same seed
    assert json.loads(capsys.readouterr().out)["results"] == other


def test_audio_search_table(tiny_index, tiny_checkpoint, audio_folder, capsys):
    code = main(["search", "--index", str(tiny_index), "--checkpoint", str(tiny_checkpoint),
                 "--audio", str(audio_folder / "beep.wav"), "-k", "4"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split()[:5] == ["rank", "fused", "cosine", "diffusion", "moved"]
    assert len(out.splitlines()) == 2 + 4


def test_more_results_than_reranked_candidates(tiny_index, tiny_checkpoint, capsys):
    code = main(["search", "--index", str(tiny_index), "--checkpoint", str(tiny_checkpoint), "a tone",
                 "-k", "5", "--top-k", "2"])
    lines = capsys.readouterr().out.splitlines()[2:]
    assert code == 0 and len(lines) == 5
    assert lines[-1].split()[3] == "-"  # beyond the top 2: cosine order, no diffusion score


def test_audio_search_needs_captions(tmp_path, audio_folder, tiny_checkpoint, capsys):
    out = tmp_path / "nocap"
    assert main(["index", str(audio_folder), "--out", str(out), "--checkpoint", str(tiny_checkpoint),
                 "--no-text", "--no-cache", "--quiet"]) == 0
    # text -> audio still works without captions
    assert main(["search", "--index", str(out), "--checkpoint", str(tiny_checkpoint), "a hum", "-k", "2"]) == 0
    capsys.readouterr()
    code = main(["search", "--index", str(out), "--checkpoint", str(tiny_checkpoint),
                 "--audio", str(audio_folder / "beep.wav")])
    assert code == 2 and "caption" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["search", "--index", "{index}", "--checkpoint", "{ckpt}", "   "], "empty"),
    (["search", "--index", "{index}", "--checkpoint", "{ckpt}", "--audio", "{bad}"], "broken.wav"),
    (["search", "--index", "{missing}", "--checkpoint", "{ckpt}", "dog"], "missing"),
    (["search", "--index", "{index}", "--checkpoint", "{missing}", "dog"], "does not exist"),
    (["search", "--index", "{index}", "--checkpoint", "{ckpt}", "dog", "--steps", "0"], "steps"),
    (["search", "--index", "{index}", "--checkpoint", "{ckpt}"], "give one of a caption, --audio FILE or --like"),
    (["search", "--index", "{index}", "--checkpoint", "{ckpt}", "dog", "--like", "beep"], "(not a caption and --like)"),
    (["search", "--index", "{index}", "--checkpoint", "{ckpt}", "--like", "no-such-clip"],
     "'no-such-clip' is neither a clip id of this index nor an audio file"),
    (["search", "--index", "{index}", "--checkpoint", "{ckpt}", "dog", "--similar"], "--similar goes with --audio FILE"),
    (["search", "--index", "{index}", "--checkpoint", "{ckpt}", "dog", "--steps", "51"],
     "--steps: Diffusion steps (num_inference_steps) must be between 1 and 50 (T, the diffusion steps"),
    (["search", "--index", "{index}", "--checkpoint", "{ckpt}", "dog", "--alpha", "11"],
     "--alpha: Weight of the diffusion (alpha) must be between 0.0 and 10.0, got 11.0"),
    (["search", "--index", "{index}", "--checkpoint", "{ckpt}", "dog", "--temperature", "0"], "--temperature: Fusion temperature"),
    (["search", "--index", "{index}", "--checkpoint", "{ckpt}", "dog", "--top-k", "0"], "--top-k: Candidates re-ranked (top_k)"),
    (["search", "--index", "{index}", "--checkpoint", "{ckpt}", "dog", "-k", "0"], "--num-results: Results shown"),
    (["index", "{missing}", "--out", "{missing}"], "does not exist"),
])
def test_user_errors_exit_2_with_one_clear_line(argv, message, tiny_index, tiny_checkpoint, audio_folder, tmp_path, capsys):
    values = {"index": str(tiny_index), "ckpt": str(tiny_checkpoint), "bad": str(audio_folder / "broken.wav"),
              "missing": str(tmp_path / "missing")}
    code = main([a.format(**values) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_info_on_checkpoint_and_index(tiny_index, tiny_checkpoint, capsys):
    assert main(["info", str(tiny_checkpoint)]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["name"] == "tiny"
    assert main(["info", str(tiny_index)]) == 0
    assert json.loads(capsys.readouterr().out)["clips"] == 5


@pytest.mark.parametrize("command", ["index", "search", "convert-panns", "info"])
def test_help_explains_every_flag(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    sub = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == command)[1]
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in text
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help text"


def test_index_where_filters_manifest_rows(tmp_path, audio_folder, tiny_checkpoint, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,caption,split,demo\n"
                        f"{audio_folder / 'beep.wav'},a beep,test,1\n"
                        f"{audio_folder / 'tone.wav'},a tone,train,1\n"
                        f"{audio_folder / 'low_hum.wav'},a hum,test,0\n")
    out = tmp_path / "idx"
    code = main(["index", str(manifest), "--out", str(out), "--checkpoint", str(tiny_checkpoint),
                 "--where", "split=test", "--where", "demo=1", "--no-cache", "--quiet"])
    assert code == 0
    from diffatr.retrieval.index import RetrievalIndex

    assert RetrievalIndex.load(out).clip_ids == ["beep"]
    assert main(["index", str(manifest), "--out", str(out), "--where", "nonsense"]) == 2


def test_a_bug_keeps_its_traceback_and_a_missing_file_reads_plainly(monkeypatch, tmp_path, capsys):
    import diffatr.cli as cli_module

    def broken(args):
        raise ValueError("an internal invariant failed")  # not a DiffatrError: a bug

    monkeypatch.setitem(cli_module.COMMANDS, "info", broken)
    with pytest.raises(ValueError, match="internal invariant"):
        main(["info", str(tmp_path)])

    def missing(args):
        return open(tmp_path / "gone.wav", "rb")

    monkeypatch.setitem(cli_module.COMMANDS, "info", missing)
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"diffatr info: {tmp_path / 'gone.wav'}: no such file or folder" and "Errno" not in err


def test_a_half_precision_index_is_half_the_file_and_stays_half(tiny_index, audio_folder, tiny_checkpoint,
                                                                 tmp_path, capsys):
    from conftest import write_tone
    from diffatr.retrieval.index import RetrievalIndex, stored_in_half

    half = tmp_path / "half"
    args = ["--checkpoint", str(tiny_checkpoint), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(["index", str(audio_folder), "--out", str(half), "--half", *args]) == 0
    assert stored_in_half(half) and not stored_in_half(tiny_index)
    full_bytes, half_bytes = ((p / "embeddings.safetensors").stat().st_size for p in (tiny_index, half))
    assert half_bytes < 0.75 * full_bytes
    exact, rounded = RetrievalIndex.load(tiny_index), RetrievalIndex.load(half)
    assert rounded.audio_features.dtype == torch.float32  # read back as float32
    torch.testing.assert_close(rounded.audio_features, exact.audio_features, rtol=2 ** -11, atol=1e-7)
    torch.testing.assert_close(rounded.text_features, exact.text_features, rtol=2 ** -11, atol=1e-7)
    more = tmp_path / "more"
    more.mkdir()
    write_tone(more / "chirp.wav", freq=3000.0, seed=5)
    assert main(["index", str(more), "--out", str(half), "--add", *args]) == 0  # no --half: kept
    assert stored_in_half(half) and len(RetrievalIndex.load(half)) == 6
    assert main(["index", "--out", str(half), "--remove", "chirp", "--quiet"]) == 0
    assert stored_in_half(half) and len(RetrievalIndex.load(half)) == 5
    capsys.readouterr()
