import csv
import shutil

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, strategies as st

import datagen
from diffatr.data.datasets import KINDS, DatasetError, SplitData, check_audio_file, detect_kind, load_split
from diffatr.data.manifest import ClipRecord, ManifestError
from diffatr.data.text import STRIPPED_CHARACTERS, normalize_caption

CLOTHO_FOLDERS = {"train": "development", "val": "validation", "test": "evaluation"}


def _csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- Clotho


@pytest.mark.parametrize("split, canonical", [
    ("train", "train"), ("development", "train"), ("dev", "train"),
    ("val", "val"), ("validation", "val"), ("Validation", "val"),
    ("test", "test"), ("evaluation", "test"), ("eval", "test"),
])
def test_clotho_split_aliases_read_the_right_csv(tmp_path, split, canonical):
    root = datagen.make_clotho(tmp_path, clips_per_split=(6, 4, 3))
    data = load_split(root, split)
    folder = CLOTHO_FOLDERS[canonical]
    rows = _csv_rows(root / f"clotho_captions_{folder}.csv")
    assert data.kind == "clotho" and data.split == canonical
    assert data.num_clips == {"train": 6, "val": 4, "test": 3}[canonical] == len(rows)
    assert data.num_captions == 5 * data.num_clips and data.skipped == []
    for record, row in zip(data.records, rows):
        assert record.clip_id == row["file_name"][:-4]
        assert record.captions == tuple(row[f"caption_{k}"] for k in range(1, 6))
        assert record.path == str(root / folder / row["file_name"])
        assert record.split == canonical
    assert {r.clip_id for r in data.records} == set(datagen.read_truth(root)[folder])


def test_clotho_csv_files_variant_and_audio_dir_override(tmp_path):
    root = datagen.make_aac_clotho(tmp_path / "aac")
    # The CLOTHO_v2.1 folder itself is the "clotho_csv_files + clotho_audio_files" variant.
    data = load_split(root / "CLOTHO_v2.1", "val", kind="clotho")
    assert data.num_clips == 4 and data.skipped == []
    moved = tmp_path / "elsewhere"
    shutil.move(str(root / "CLOTHO_v2.1" / "clotho_audio_files"), moved)
    with pytest.raises(DatasetError, match="none of the 4 clips"):
        load_split(root / "CLOTHO_v2.1", "val", kind="clotho")
    # audio_dir may be the split's folder or the folder above the split folders.
    for audio_dir in (moved, moved / "validation"):
        data = load_split(root / "CLOTHO_v2.1", "val", kind="clotho", audio_dir=audio_dir)
        assert data.num_clips == 4 and all(r.path.startswith(str(moved)) for r in data.records)


def test_clotho_keeps_commas_inside_quoted_captions(tmp_path):
    (tmp_path / "evaluation").mkdir()
    datagen.write_wav(tmp_path / "evaluation" / "a b.wav",
                      datagen.generate_clips(1, rng=np.random.default_rng(0))[0])
    (tmp_path / "clotho_captions_evaluation.csv").write_text(
        'file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n'
        'a b.wav,"A dog barks, then stops.",Two,,Four,"Five, with ""quotes"""\n'
    )
    (record,) = load_split(tmp_path, "test").records
    assert record.clip_id == "a b"
    assert record.captions == ("A dog barks, then stops.", "Two", "Four", 'Five, with "quotes"')


def test_clotho_duplicate_rows_and_ids_are_errors(tmp_path):
    (tmp_path / "clotho_captions_evaluation.csv").write_text(
        "file_name,caption_1\nx.wav,one\ny.wav,two\nx.wav,three\n")
    with pytest.raises(DatasetError, match=r"'x.wav' is listed twice \(first on line 2\)"):
        load_split(tmp_path, "test")
    (tmp_path / "clotho_captions_evaluation.csv").write_text(
        "file_name,caption_1\nx.wav,one\nx.flac,two\n")
    with pytest.raises(DatasetError, match="clip id 'x' appears twice"):
        load_split(tmp_path, "test")


def test_latin1_csv_is_read(tmp_path):
    root = datagen.make_clotho(tmp_path, clips_per_split=(1, 1, 1))
    path = root / "clotho_captions_evaluation.csv"
    row = _csv_rows(path)[0]
    path.write_bytes(
        f"file_name,caption_1\n{row['file_name']},Un caf\u00e9 bruyant\n".encode("latin-1"))
    assert load_split(root, "test").records[0].captions == ("Un caf\u00e9 bruyant",)


# ---------------------------------------------------------------- AudioCaps


def _write_audiocaps(root, split, rows, audio_names, folder=None):
    folder = folder or root / "audio" / split
    clip = datagen.generate_clips(1, rng=np.random.default_rng(1))[0]
    for name in audio_names:
        datagen.write_wav(folder / name, clip)
    with open(root / f"{split}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        writer.writerows(rows)


def test_audiocaps_groups_rows_by_clip(tmp_path):
    rows = [
        (105, "vid-A_12345", 30, "fifth"), (7, "otherVideo0", 0, "other only"),
        (101, "vid-A_12345", 30, "first"), (200, "vid-A_12345", 40, "later cut"),
        (103, "vid-A_12345", 30, "third"), (102, "vid-A_12345", "30.0", "second"),
        (104, "vid-A_12345", 30, "fourth"),
    ]
    _write_audiocaps(tmp_path, "test", rows,
                     ["vid-A_12345_30.wav", "vid-A_12345_40.flac", "otherVideo0_0.ogg"])
    data = load_split(tmp_path, "test")
    assert data.kind == "audiocaps" and data.split == "test" and data.skipped == []
    by_id = {r.clip_id: r for r in data.records}
    # First appearance order; "30" and "30.0" are the same clip; 40 is a different cut.
    assert [r.clip_id for r in data.records] == ["vid-A_12345_30", "otherVideo0_0", "vid-A_12345_40"]
    assert by_id["vid-A_12345_30"].captions == ("first", "second", "third", "fourth", "fifth")
    assert by_id["vid-A_12345_30"].metadata["audiocap_ids"] == [101, 102, 103, 104, 105]
    assert by_id["vid-A_12345_40"].captions == ("later cut",)
    assert by_id["vid-A_12345_40"].path.endswith("vid-A_12345_40.flac")
    assert by_id["otherVideo0_0"].path == str(tmp_path / "audio" / "test" / "otherVideo0_0.ogg")
    assert data.num_captions == 7 and data.caption_to_clip == [0, 0, 0, 0, 0, 1, 2]


@pytest.mark.parametrize("split, per_clip", [("train", 1), ("val", 5), ("validation", 5), ("test", 5)])
def test_generated_audiocaps_read_back(tmp_path, split, per_clip):
    root = datagen.make_audiocaps(tmp_path, clips_per_split=(6, 4, 5))
    data = load_split(root, split)
    canonical = {"validation": "val"}.get(split, split)
    truth = datagen.read_truth(root)[canonical]
    assert data.split == canonical and data.skipped == []
    assert {r.clip_id for r in data.records} == set(truth)
    assert all(len(r.captions) == per_clip for r in data.records)
    # The generator cuts two clips from one video: they stay separate records.
    videos = [r.metadata["youtube_id"] for r in data.records]
    assert len(set(videos)) == len(videos) - 1


def test_audiocaps_bare_youtube_id_names_and_ambiguity(tmp_path):
    rows = [(1, "aaaaaaaaaaa", 10, "solo"), (2, "bbbbbbbbbbb", 0, "cut one"), (3, "bbbbbbbbbbb", 20, "cut two")]
    _write_audiocaps(tmp_path, "val", rows, ["aaaaaaaaaaa.wav", "bbbbbbbbbbb.wav"], folder=tmp_path / "val")
    data = load_split(tmp_path, "val")
    # <ytid>.wav is used only where one clip of the split comes from that video.
    assert [r.clip_id for r in data.records] == ["aaaaaaaaaaa_10"]
    assert data.records[0].path == str(tmp_path / "val" / "aaaaaaaaaaa.wav")
    assert len(data.skipped) == 2
    assert all(reason.startswith("missing (looked in ") and str(tmp_path / "val") in reason
               for _, reason in data.skipped)


def test_audiocaps_explicit_audio_dir(tmp_path):
    rows = [(1, "ccccccccccc", 0, "a caption")]
    audio = tmp_path / "my audio"
    _write_audiocaps(tmp_path, "train", rows, ["ccccccccccc_0.wav"], folder=audio / "train")
    data = load_split(tmp_path, "train", audio_dir=audio)
    assert data.records[0].path == str(audio / "train" / "ccccccccccc_0.wav")
    with pytest.raises(DatasetError, match="none of the 1 clips"):
        load_split(tmp_path, "train")


@pytest.mark.parametrize("content, match", [
    ("audiocap_id,youtube_id,caption\n1,x,y\n", r"missing column\(s\) start_time"),
    ("audiocap_id,youtube_id,start_time,caption\n1,x,abc,y\n", r"test.csv:2: start_time 'abc' is not a number"),
    ("audiocap_id,youtube_id,start_time,caption\n1,x,0,y\n2,,0,z\n", r"test.csv:3: empty youtube_id"),
])
def test_audiocaps_bad_rows(tmp_path, content, match):
    (tmp_path / "test.csv").write_text(content)
    with pytest.raises(DatasetError, match=match):
        load_split(tmp_path, "test", kind="audiocaps")


# ---------------------------------------------------------------- aac-datasets layout


def test_aac_layouts_and_ambiguous_root(tmp_path):
    datagen.make_aac_clotho(tmp_path, clips_per_split=(3, 2, 2))
    datagen.make_aac_audiocaps(tmp_path, clips_per_split=(3, 2, 4))
    with pytest.raises(DatasetError, match="both CLOTHO_v2.1 and AUDIOCAPS"):
        load_split(tmp_path, "test")
    clotho = load_split(tmp_path, "test", kind="aac-clotho")
    audiocaps = load_split(tmp_path, "test", kind="aac-audiocaps")
    assert (clotho.num_clips, clotho.num_captions) == (2, 10)
    assert (audiocaps.num_clips, audiocaps.num_captions) == (4, 20)
    assert all(r.path.endswith(".flac") and "audio_32000Hz" in r.path for r in audiocaps.records)
    # The dataset's own folder as root, auto-detected.
    assert load_split(tmp_path / "AUDIOCAPS", "train").kind == "aac-audiocaps"
    assert load_split(tmp_path / "CLOTHO_v2.1", "train", kind="aac-clotho").num_clips == 3


def test_aac_audiocaps_newer_csv_place_and_other_rate_folder(tmp_path):
    datagen.make_aac_audiocaps(tmp_path, clips_per_split=(2, 2, 2))
    base = tmp_path / "AUDIOCAPS"
    shutil.move(str(base / "csv_files_v1" / "val.csv"), base / "val.csv")
    shutil.rmtree(base / "csv_files_v1")
    shutil.move(str(base / "audio_32000Hz"), base / "audio_44100Hz")
    data = load_split(tmp_path, "val")
    assert data.kind == "aac-audiocaps" and data.num_clips == 2 and data.skipped == []
    assert all("audio_44100Hz" in r.path for r in data.records)


def test_official_audiocaps_in_a_folder_named_audiocaps_is_not_aac(tmp_path):
    root = datagen.make_audiocaps(tmp_path / "AUDIOCAPS", clips_per_split=(1, 2, 1))
    assert detect_kind(root) == "audiocaps"
    assert load_split(tmp_path / "AUDIOCAPS", "val").num_clips == 2


# ---------------------------------------------------------------- missing / corrupt audio


def test_bad_audio_is_skipped_and_counted_or_raises_when_strict(tmp_path):
    root = datagen.make_clotho(tmp_path, clips_per_split=(1, 1, 5))
    folder = root / "evaluation"
    names = sorted(p.name for p in folder.iterdir())
    datagen.break_audio(folder / names[0], "missing")
    datagen.break_audio(folder / names[1], "empty")
    datagen.break_audio(folder / names[2], "garbage")
    sf.write(str(folder / names[3]), np.zeros(0, dtype=np.float32), 16000)  # header, no frames
    data = load_split(root, "test")
    assert data.num_clips == 1 and data.num_skipped == 4 and data.records[0].path.endswith(names[4])
    reasons = dict(data.skipped)
    assert reasons[str(folder / names[0])] == "missing"
    assert reasons[str(folder / names[1])] == "empty file (0 bytes)"
    assert reasons[str(folder / names[2])].startswith("not readable as audio")
    assert reasons[str(folder / names[3])] == "no audio frames"
    assert "4 skipped" in data.summary()
    with pytest.raises(DatasetError, match=rf"{names[0]}: missing\. .*--audio-dir.*without strict"):
        load_split(root, "test", strict=True)
    # Header checks off: only missing and empty files are caught.
    assert load_split(root, "test", check_audio=False).num_clips == 3


def test_check_audio_file(tmp_path):
    good = datagen.write_wav(tmp_path / "g.wav", datagen.generate_clips(1, rng=np.random.default_rng(0))[0])
    assert check_audio_file(good) is None
    assert check_audio_file(tmp_path / "nope.wav") == "missing"
    assert check_audio_file(tmp_path) == "not a file"


def test_folder_source_skips_broken_files_and_ignores_split(audio_folder):
    data = load_split(audio_folder, "test")
    assert data.kind == "folder" and data.split is None
    assert data.num_clips == 5 and [p for p, _ in data.skipped] == [str(audio_folder / "broken.wav")]
    assert load_split(audio_folder / "beep.wav").records[0].clip_id == "beep"
    with pytest.raises(DatasetError, match="audio_dir does not apply"):
        load_split(audio_folder, audio_dir=audio_folder)


def test_empty_folder_error_names_the_layouts(tmp_path):
    with pytest.raises(DatasetError, match="clotho_captions_<split>.csv"):
        load_split(tmp_path, "test")


# ---------------------------------------------------------------- missing CSV, bad arguments


@pytest.mark.parametrize("kind, expected", [
    ("clotho", ["clotho_captions_evaluation.csv", "clotho_csv_files/clotho_captions_evaluation.csv"]),
    ("audiocaps", ["test.csv", "dataset/test.csv"]),
    ("aac-clotho", ["CLOTHO_v2.1/clotho_csv_files/clotho_captions_evaluation.csv"]),
    ("aac-audiocaps", ["AUDIOCAPS/csv_files_v1/test.csv", "AUDIOCAPS/test.csv"]),
])
def test_missing_csv_names_the_expected_files(tmp_path, kind, expected):
    with pytest.raises(DatasetError) as info:
        load_split(tmp_path, "test", kind=kind)
    message = str(info.value)
    assert all(name in message for name in expected) and "Nothing is downloaded" in message


@pytest.mark.parametrize("kind, split, match", [
    ("clotho", "dcase_test", "Clotho has no split 'dcase_test'"),
    ("audiocaps", "analysis", "AudioCaps has no split 'analysis'"),
    ("clotho", None, "needs a split"),
    ("nonsense", "test", "unknown dataset kind"),
])
def test_bad_kind_or_split(tmp_path, kind, split, match):
    datagen.make_clotho(tmp_path, clips_per_split=(1, 1, 1))
    with pytest.raises(DatasetError, match=match):
        load_split(tmp_path, split, kind=kind)


def test_missing_source(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_split(tmp_path / "nope", "test")


# ---------------------------------------------------------------- generic manifest


def test_manifest_split_column_filters_rows(tmp_path):
    path = datagen.make_manifest(tmp_path, n=8)
    counts = {s: load_split(path, s).num_clips for s in ("train", "val", "test")}
    assert counts == {"train": 4, "val": 2, "test": 2}
    test = load_split(path, "evaluation")
    assert test.kind == "manifest" and test.split == "test"
    assert {r.clip_id for r in test.records} == set(datagen.read_truth(tmp_path)["test"])
    everything = load_split(path)
    assert everything.num_clips == 8 and everything.num_captions == 40 and everything.split is None
    with pytest.raises(DatasetError, match="no rows with split 'fold3'; its splits are: test, train, val"):
        load_split(path, "fold3")


def test_manifest_without_split_column_and_audio_dir(tmp_path):
    datagen.make_manifest(tmp_path / "data", n=4, split_sizes=(2, 1, 1))
    (tmp_path / "m.jsonl").write_text(
        '{"path": "audio/clip000.wav", "captions": ["one", "two"]}\n'
        '{"path": "audio/clip003.wav", "caption": "three", "split": null}\n'
    )
    with pytest.raises(DatasetError, match="none of the 2 clips"):
        load_split(tmp_path / "m.jsonl", "test")
    data = load_split(tmp_path / "m.jsonl", "test", audio_dir=tmp_path / "data")
    assert data.split is None and data.num_clips == 2 and data.captions == ["one", "two", "three"]
    assert data.records[1].path == str(tmp_path / "data" / "audio" / "clip003.wav")


def test_manifest_errors_become_dataset_errors(tmp_path):
    (tmp_path / "m.csv").write_text("caption\nhello\n")
    with pytest.raises(DatasetError, match="no audio path column") as info:
        load_split(tmp_path / "m.csv")
    assert isinstance(info.value, ManifestError) and isinstance(info.value, ValueError)


# ---------------------------------------------------------------- auto-detection


@pytest.mark.parametrize("maker, kind", [
    (datagen.make_clotho, "clotho"), (datagen.make_audiocaps, "audiocaps"),
    (datagen.make_aac_clotho, "aac-clotho"), (datagen.make_aac_audiocaps, "aac-audiocaps"),
])
def test_auto_detection(tmp_path, maker, kind):
    root = maker(tmp_path, clips_per_split=(2, 2, 2))
    assert detect_kind(root) == kind
    assert load_split(root, "val").kind == kind


def test_auto_detection_of_files(tmp_path, audio_folder):
    assert detect_kind(datagen.make_manifest(tmp_path / "m", n=4)) == "manifest"
    assert detect_kind(audio_folder) == "folder" and detect_kind(audio_folder / "beep.wav") == "folder"
    clotho = datagen.make_clotho(tmp_path / "c", clips_per_split=(1, 1, 1))
    audiocaps = datagen.make_audiocaps(tmp_path / "a", clips_per_split=(1, 1, 1))
    for path in (clotho / "clotho_captions_evaluation.csv", audiocaps / "test.csv"):
        with pytest.raises(DatasetError, match="pass the folder that holds it"):
            load_split(path, "test")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="cannot tell what"):
        detect_kind(tmp_path / "notes.txt")


def test_kinds_constant_lists_every_reader():
    assert set(KINDS) == {"clotho", "audiocaps", "aac-clotho", "aac-audiocaps", "manifest", "folder", "auto"}


# ---------------------------------------------------------------- captions


@pytest.mark.parametrize("text, expected", [
    ('A dog barks,  then  "woof"!', "a dog barks then woof"),
    ("Rain;falls:hard?", "rain falls hard"),
    ("  Hi-hat's   TICKING.\n", "hi-hat's ticking"),
    ("...", ""),
])
def test_normalize_caption_examples(text, expected):
    assert normalize_caption(text) == expected


@given(st.text(alphabet=st.sampled_from(list("aB ,.!?;:\"'-\t\nz")), max_size=40))
def test_normalize_caption_properties(text):
    out = normalize_caption(text)
    assert normalize_caption(out) == out
    assert out == out.lower() and out == out.strip() and "  " not in out
    assert not set(out) & set(STRIPPED_CHARACTERS + "\t\n")
    assert out.replace(" ", "") == "".join(c for c in text.lower() if c not in STRIPPED_CHARACTERS + " \t\n")


def test_normalize_captions_only_when_asked(tmp_path):
    root = datagen.make_clotho(tmp_path, clips_per_split=(1, 1, 2))
    raw = load_split(root, "test")
    normalized = load_split(root, "test", normalize_captions=True)
    assert all(c[0].isupper() and c.endswith(".") for c in raw.captions)
    assert normalized.captions == [normalize_caption(c) for c in raw.captions]


def test_split_data_caption_to_clip():
    records = [ClipRecord("a", "a.wav", ("x", "y")), ClipRecord("b", "b.wav", ()), ClipRecord("c", "c.wav", ("z",))]
    data = SplitData(records=records)
    assert (data.num_clips, data.num_captions) == (3, 3)
    assert data.captions == ["x", "y", "z"] and data.caption_to_clip == [0, 0, 2]


# ---------------------------------------------------------------- the generator itself


def test_datagen_is_deterministic_and_seeded(tmp_path):
    a = datagen.make_clotho(tmp_path / "a", seed=3)
    b = datagen.make_clotho(tmp_path / "b", seed=3)
    c = datagen.make_clotho(tmp_path / "c", seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "clotho_captions_evaluation.csv").read_bytes() != (c / "clotho_captions_evaluation.csv").read_bytes()


def test_datagen_captions_name_exactly_the_clip_words(tmp_path):
    root = datagen.make_clotho(tmp_path, clips_per_split=(21, 4, 4))
    truth = datagen.read_truth(root)
    phrases = {w: nouns + gerunds for w, (nouns, gerunds) in datagen.SOUND_WORDS.items()}
    for split, folder in CLOTHO_FOLDERS.items():
        data = load_split(root, split)
        for record in data.records:
            words = truth[folder][record.clip_id]
            assert len(set(record.captions)) == 5
            for caption in record.captions:
                mentioned = {w for w, ps in phrases.items() if any(p in caption.lower() for p in ps)}
                assert mentioned == set(words), (caption, words)
    dev = truth["development"]
    # Training data sees every word alone first; 21 clips cover every 1- and 2-word set once.
    assert {tuple(w) for w in list(dev.values())[:6]} == {(w,) for w in datagen.WORDS}
    assert len({tuple(sorted(w)) for w in dev.values()}) == 21
    assert len({tuple(sorted(w)) for w in truth["evaluation"].values()}) == 4


def test_datagen_sounds_differ_by_word():
    # A crude check that the words are acoustically distinct: dominant frequencies differ.
    rng = np.random.default_rng(0)
    peaks = {}
    for word in ("hum", "beep", "whistle"):
        wave = datagen.synth_word(word, 1.0, 16000, rng)
        assert wave.dtype == np.float32 and wave.shape == (16000,) and np.abs(wave).max() <= 1.0 + 1e-6
        peaks[word] = int(np.argmax(np.abs(np.fft.rfft(wave))))
    assert peaks["hum"] < 130 < 800 < peaks["beep"] < 950 < 1900 < peaks["whistle"] < 2100


@pytest.mark.parametrize("name", ["m.tsv", "m.csv", "m.txt"])
def test_tab_separated_manifests_with_a_file_column(tmp_path, name):
    from diffatr.data.manifest import read_manifest

    (tmp_path / name).write_text("file\tcaption\tsplit\nclips/a, b.wav\ta dog barks, twice\ttrain\n"
                                 "clips/c.wav\train falls\ttest\n")
    records = read_manifest(tmp_path / name)
    assert [r.path for r in records] == [str(tmp_path / "clips" / "a, b.wav"), str(tmp_path / "clips" / "c.wav")]
    assert records[0].captions == ("a dog barks, twice",) and records[1].split == "test"
    (tmp_path / "plain.csv").write_text("file,caption\nclips/x.wav,a cat\n")  # commas stay CSV
    assert read_manifest(tmp_path / "plain.csv")[0].captions == ("a cat",)
