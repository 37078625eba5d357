""""Same sound": one definition (label group, identical normalised caption, recorded
near-duplicate), used by phase-1 negatives, phase-2 batches and mining, and unit-level
evaluation. Batches here are built to contain variants of one sound."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F

import diffatr.train.contrastive as phase1_module
import diffatr.train.diffusion as phase2_module
from diffatr import cli
from diffatr.checkpoint import load_checkpoint
from diffatr.config import TrainConfig, load_model_config
from diffatr.data.datasets import load_split
from diffatr.data.sounds import (
    one_clip_per_sound,
    read_near_duplicate_links,
    sound_keys,
    sound_units,
)
from diffatr.features import FeatureSet
from diffatr.train import train_contrastive, train_diffusion

# Six clips: 0-2 are numbered variants of one recording (one label group; clip 2 words its
# caption differently), 3 and 4 belong to different groups but share a caption up to case and
# punctuation, 5 stands alone. So the units are {0, 1, 2}, {3, 4}, {5}.
CLIPS = ["dog_01", "dog_02", "dog_03", "rain_a", "rain_b", "bell"]
GROUPS = ["dog", "dog", "dog", "rain-1", "rain-2", "bell"]
CAPTIONS = [["a dog barks", "a dog barking"], ["a dog barks", "a dog barking"], ["a hound woofs"],
            ["Rain falls.", "rain on a roof"], ["rain falls", "heavy rain"], ["a bell rings", "a bell ringing"]]


def test_units_join_groups_and_identical_captions_transitively():
    captions = [c for cs in CAPTIONS for c in cs]
    owner = torch.tensor([i for i, cs in enumerate(CAPTIONS) for _ in cs])
    units = sound_units(len(CLIPS), captions, owner, GROUPS)
    assert units.tolist() == [0, 0, 0, 1, 1, 2]
    # without keys, captions alone decide: the reworded variant is its own sound
    assert sound_units(len(CLIPS), captions, owner, None).tolist() == [0, 0, 1, 2, 2, 3]
    # a chain: a shares a caption with b, b a key with c -> one unit
    chain = sound_units(3, ["x", "x", "y"], torch.tensor([0, 1, 2]), [None, "k", "k"])
    assert chain.tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        sound_units(2, ["x"], torch.tensor([0, 1]))


def test_near_duplicate_links_merge_label_groups(tmp_path):
    keys = sound_keys(["a1", "a2", "b1", "c1"], [{"label_group": "A"}, {"label_group": "A"},
                                                {"label_group": "B"}, {"label_group": "C"}], [("a2", "b1")])
    # the link joins group A and B entirely (a1 follows a2), C stays apart
    assert keys[0] == keys[1] == keys[2] != keys[3]
    (tmp_path / "build_report.json").write_text(json.dumps({"near_duplicate_links": [{"a": "x", "b": "y", "xcorr": 0.9}]}))
    assert read_near_duplicate_links(tmp_path / "manifest.csv") == [("x", "y")]
    assert read_near_duplicate_links(tmp_path / "elsewhere" / "manifest.csv") == []
    (tmp_path / "build_report.json").write_text("{not json")
    assert read_near_duplicate_links(tmp_path / "manifest.csv") == []


def test_a_manifest_split_carries_sound_keys_with_links(tmp_path):
    rows = ["clip_id,path,caption_1,split,label_group"]
    for i, (clip, group) in enumerate(zip(CLIPS, GROUPS)):
        soundfile.write(tmp_path / f"{clip}.wav", np.full(1600, 0.1 * (i + 1), dtype=np.float32), 16000)
        rows.append(f"{clip},{clip}.wav,{CAPTIONS[i][0]},train,{group}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "build_report.json").write_text(json.dumps({"near_duplicate_links": [{"a": "rain_b", "b": "bell"}]}))
    records = load_split(tmp_path / "manifest.csv", "train").records
    keys = [r.metadata["sound_key"] for r in records]
    assert keys[0] == keys[1] == keys[2] == "dog"
    assert keys[3] == "rain-1" and keys[4] == keys[5] != keys[3]  # the link joined rain-2 and bell


def _features(config, seed: int = 0) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    captions = [list(cs) for cs in CAPTIONS]
    return FeatureSet(audio_features=torch.randn(len(CLIPS), config.audio.embed_dim, generator=g),
                      text_features=torch.randn(sum(map(len, captions)), config.text.embed_dim, generator=g),
                      clip_ids=list(CLIPS), captions=captions, paths=list(CLIPS), sound_keys=list(GROUPS))


def test_feature_set_keeps_keys_and_cuts_a_gallery_of_one_clip_per_sound(tmp_path):
    config = load_model_config("tiny")
    fs = _features(config)
    assert fs.sound_units().tolist() == [0, 0, 0, 1, 1, 2]
    again = FeatureSet.load(fs.save(tmp_path / "f"))
    assert again.sound_keys == GROUPS and torch.equal(again.sound_units(), fs.sound_units())
    rows = one_clip_per_sound(fs.sound_units())
    assert rows.tolist() == [0, 3, 5]
    gallery = fs.subset(rows)
    assert gallery.clip_ids == ["dog_01", "rain_a", "bell"]
    assert gallery.flat_captions == ["a dog barks", "a dog barking", "Rain falls.", "rain on a roof",
                                     "a bell rings", "a bell ringing"]
    assert gallery.caption_to_clip.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(gallery.audio[1], fs.audio[3]) and torch.equal(gallery.text[2], fs.text[5])
    two = one_clip_per_sound(fs.sound_units(), 2, torch.Generator().manual_seed(0))
    assert len(two) == 2 and set(two.tolist()) < {0, 3, 5}
    assert torch.equal(two, one_clip_per_sound(fs.sound_units(), 2, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("mask_same_sound", [True, False])
def test_phase1_never_uses_a_variant_as_a_negative(tmp_path, monkeypatch, mask_same_sound):
    config = load_model_config("tiny")
    fs = _features(config)
    seen: list[tuple[list[int], list[int]]] = []
    original = phase1_module.nt_xent_loss
    original_pairs = phase1_module.contrastive_pairs

    def pairs(features, rows):
        text, audio, clips = original_pairs(features, rows)
        seen.append((clips.tolist(), []))
        return text, audio, clips

    def loss(text, audio, scale, ids):
        seen[-1][1].extend(ids.tolist())
        return original(text, audio, scale, ids)

    monkeypatch.setattr(phase1_module, "contrastive_pairs", pairs)
    monkeypatch.setattr(phase1_module, "nt_xent_loss", loss)
    train_config = TrainConfig.for_phase("contrastive", epochs=2, batch_size=fs.num_captions, device="cpu",
                                         mask_same_sound=mask_same_sound)
    train_contrastive(config, train_config, fs, fs, tmp_path / "run", progress=False)
    assert seen
    units = fs.sound_units().tolist()
    for clips, ids in seen:  # every caption of all six clips in one batch: variants included
        for i, a in enumerate(clips):
            for j, b in enumerate(clips):
                same = units[a] == units[b] if mask_same_sound else a == b
                assert (ids[i] == ids[j]) == same, (a, b)


@pytest.mark.parametrize("negatives", ["batch", "mined"])
def test_phase2_candidates_never_hold_another_clip_of_the_querys_sound(tmp_path, monkeypatch, negatives):
    config = load_model_config("tiny")
    fs = _features(config)
    phase1 = train_contrastive(config, TrainConfig.for_phase("contrastive", epochs=1, batch_size=4, device="cpu"),
                               fs, fs, tmp_path / "p1", progress=False)
    model = load_checkpoint(phase1.best)
    with torch.no_grad():
        audio_emb = model.project_audio(fs.audio)  # (N, D)
        text_emb = model.project_text(fs.text)  # (M, D)
    audio_unit = fs.sound_units()
    text_unit = audio_unit[fs.caption_to_clip]
    captured = []
    original = phase2_module.generation_loss

    def loss(denoiser, scheduler, query, candidates, **kwargs):
        captured.append((query.detach().clone(), candidates.detach().clone()))
        return original(denoiser, scheduler, query, candidates, **kwargs)

    monkeypatch.setattr(phase2_module, "generation_loss", loss)
    # K = 3 = the number of distinct sounds: a batch of 3 must take one clip of each sound
    train_diffusion(phase1.best, TrainConfig.for_phase("diffusion", epochs=1, batch_size=3, device="cpu",
                                                       negatives=negatives), fs, fs, tmp_path / "p2", progress=False)
    assert captured
    checked = 0
    for query, candidates in captured:
        direction_text = bool(torch.isclose(query @ text_emb.T, torch.ones(())).any(dim=1).all())
        pool, pool_unit = (audio_emb, audio_unit) if direction_text else (text_emb, text_unit)
        query_pool, query_unit = (text_emb, text_unit) if direction_text else (audio_emb, audio_unit)
        for q, cands in zip(query, candidates):
            q_unit = int(query_unit[int(F.cosine_similarity(query_pool, q[None]).argmax())])
            rows = [int(F.cosine_similarity(pool, c[None]).argmax()) for c in cands]
            assert int(pool_unit[rows[0]]) == q_unit  # the positive first
            assert all(int(pool_unit[r]) != q_unit for r in rows[1:])  # no variant as a negative
            if negatives == "mined":
                # the K - 1 most similar items of other sounds in the *whole* pool, hardest first
                # (in-batch candidates would be only the batch's items)
                sims = (pool @ q).tolist()
                others = sorted((r for r in range(len(pool)) if int(pool_unit[r]) != q_unit), key=lambda r: -sims[r])
                assert rows[1:] == others[: len(rows) - 1]
            checked += 1
    assert checked >= 6


def test_evaluate_scores_one_clip_per_sound(tmp_path, capsys):
    config = load_model_config("tiny")
    fs = _features(config)
    run = train_contrastive(config, TrainConfig.for_phase("contrastive", epochs=1, batch_size=4, device="cpu"),
                            fs, fs, tmp_path / "p1", progress=False)
    fs.save(tmp_path / "feats")
    out = tmp_path / "r.json"
    code = cli.main(["evaluate", "--checkpoint", str(run.best), "--data", str(tmp_path / "feats"), "--split", "train",
                     "--per-sound", "--scorers", "dis", "--allow-seen", "--out", str(out), "--quiet"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["data"]["gallery"]["one_clip_per_sound"] is True
    assert (result["num_clips"], result["num_captions"]) == (3, 6)  # dog_01, rain_a, bell and their captions
    assert capsys.readouterr().out.startswith("3 clips, 6 captions")
    code = cli.main(["evaluate", "--checkpoint", str(run.best), "--data", str(tmp_path / "feats"), "--per-sound", "2",
                     "--scorers", "dis", "--allow-seen", "--out", str(out), "--quiet"])
    assert code == 0 and json.loads(out.read_text())["num_clips"] == 2
    assert cli.main(["evaluate", "--checkpoint", str(run.best), "--data", str(tmp_path / "feats"), "--per-sound", "-1",
                     "--scorers", "dis", "--allow-seen", "--quiet"]) == 2


def test_links_merge_groups_transitively_through_one_group():
    # a1 ~ b1 and b2 ~ c1: b1 and b2 share group B, so A, B and C are one sound
    ids = ["a1", "b1", "b2", "b3", "c1", "d1"]
    groups = ["A", "B", "B", "B", "C", "D"]
    keys = sound_keys(ids, [{"label_group": g} for g in groups], [("a1", "b1"), ("b2", "c1")])
    assert len(set(keys[:5])) == 1 and keys[5] == "D"
    units = sound_units(len(ids), [f"caption {i}" for i in range(6)], torch.arange(6), keys)
    assert units.tolist() == [0, 0, 0, 0, 0, 1]
    # a link between two clips without keys names their sound after a clip
    lone = sound_keys(["x", "y", "z"], [{}, {}, {}], [("x", "y")])
    assert lone[0] == lone[1] == "link:x" and lone[2] is None
