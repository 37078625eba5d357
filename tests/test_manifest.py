import json

import pytest

from diffatr.data.manifest import ManifestError, read_manifest, read_records, scan_audio_folder


def test_csv_with_numbered_captions_and_metadata(tmp_path):
    (tmp_path / "m.csv").write_text(
        "path,caption_1,caption_2,clip_id,licence\n"
        "a.wav,a dog barks,a dog barking,dog,CC0\n"
        "sub/b.wav,rain falls,,rain,CC-BY\n"
    )
    records = read_manifest(tmp_path / "m.csv")
    assert [r.clip_id for r in records] == ["dog", "rain"]
    assert records[0].captions == ("a dog barks", "a dog barking")
    assert records[1].captions == ("rain falls",)
    assert records[1].path == str(tmp_path / "sub" / "b.wav")
    assert records[0].metadata == {"licence": "CC0"}


def test_jsonl_with_caption_lists(tmp_path):
    lines = [{"audio": "/abs/x.flac", "captions": ["one", "two"], "split": "test"}, {"path": "y.wav"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(l) for l in lines) + "\n\n")
    records = read_manifest(tmp_path / "m.jsonl")
    assert records[0].path == "/abs/x.flac" and records[0].captions == ("one", "two")
    assert records[0].split == "test" and records[0].clip_id == "x"
    assert records[1].captions == ()


@pytest.mark.parametrize("content, match", [
    ("caption\nhello\n", "no audio path column"),
    ("", "empty CSV"),
    ("path,clip_id\na.wav,x\nb.wav,x\n", "appears twice"),
])
def test_bad_csv(tmp_path, content, match):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(ManifestError, match=match):
        read_manifest(tmp_path / "m.csv")


def test_bad_jsonl_line_names_the_line(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"path": "a.wav"}\n{oops\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2"):
        read_manifest(tmp_path / "m.jsonl")


def test_folder_scan_reads_sidecar_captions(audio_folder):
    records = scan_audio_folder(audio_folder)
    ids = [r.clip_id for r in records]
    assert ids == sorted(ids) and "uncaptioned" in ids and "broken" in ids
    by_id = {r.clip_id: r for r in records}
    assert by_id["beep"].captions == ("a high beep", "a high beep sound")
    assert by_id["uncaptioned"].captions == ()


def test_read_records_dispatch(audio_folder, tmp_path):
    assert len(read_records(audio_folder)) == 6
    assert read_records(audio_folder / "beep.wav")[0].clip_id == "beep"
    with pytest.raises(ManifestError, match="does not exist"):
        read_records(tmp_path / "missing.csv")
