"""diffatr.encoders.audio / convert: registry, length policy, weights, PANNs conversion.

Full CNN14 is instantiated once (the conversion fixture) and ResNet38 once (one forward);
everything else uses tiny-cnn, the shipped aisfx checkpoint, or meta-device builds.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from diffatr.audio.io import AudioError, AudioTruncatedWarning, load_audio, split_windows
from diffatr.config import AISFX_LOGMEL, PANNS_LOGMEL, AudioEncoderConfig
from diffatr.encoders.audio import (
    WEIGHTS_ENV,
    AisfxCNN9,
    AudioEncoderError,
    aisfx_block_starts,
    audio_encoder_config,
    build_audio_encoder,
    build_backbone,
    embed_file,
    init_backbone,
    list_audio_encoders,
    resolve_weights,
)
from diffatr.encoders.convert import (
    ConversionError,
    convert_panns,
    detect_panns_arch,
    load_pickled_checkpoint,
)


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.detach(), b.detach(), dim=0))


def noise(seconds: float, sr: int, seed: int = 0, amp: float = 0.1) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    return build_audio_encoder(audio_encoder_config("tiny-cnn", window_seconds=10.0, window_hop_seconds=5.0))


@pytest.fixture(scope="module")
def aisfx():
    return build_audio_encoder(AudioEncoderConfig())  # the default config is aisfx-cnn9


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_unknown():
    assert list_audio_encoders() == ["aisfx-cnn9", "cnn14", "resnet38", "tiny-cnn"]
    with pytest.raises(AudioEncoderError, match="known: aisfx-cnn9"):
        build_audio_encoder(AudioEncoderConfig(name="vggish"))


def test_presets_match_backbones():
    assert audio_encoder_config("cnn14").frontend == PANNS_LOGMEL
    assert audio_encoder_config("cnn14").embed_dim == 2048
    assert audio_encoder_config("aisfx-cnn9") == dataclasses.replace(AudioEncoderConfig(), name="aisfx-cnn9")
    assert audio_encoder_config("tiny-cnn", embed_dim=8).embed_dim == 8


@pytest.mark.parametrize(
    "config,match",
    [
        (AudioEncoderConfig(name="cnn14", frontend=PANNS_LOGMEL, embed_dim=512), "2048-d"),
        (AudioEncoderConfig(name="cnn14", frontend=AISFX_LOGMEL, embed_dim=2048), "64 mel bands"),
        (audio_encoder_config("tiny-cnn", window_seconds=0.0), "window"),
        (audio_encoder_config("tiny-cnn", frontend=dataclasses.replace(PANNS_LOGMEL, n_mels=2)), "at least 4"),
        (audio_encoder_config("tiny-cnn", frontend=dataclasses.replace(PANNS_LOGMEL, mel_scale="bark")), "mel_scale"),
    ],
)
def test_inconsistent_configs_are_rejected(config, match):
    with pytest.raises(AudioEncoderError, match=match):
        build_audio_encoder(config)


def test_panns_state_dict_names_and_sizes():
    """Key names/shapes the released checkpoints use; parameter counts of the PANNs paper
    (CNN14 80.8M, ResNet38 73.7M, both with the 527-class fc_audioset we drop)."""
    audioset_head = 2048 * 527 + 527
    cnn14 = build_backbone("cnn14", device="meta")
    shapes = {k: tuple(v.shape) for k, v in cnn14.state_dict().items()}
    assert shapes["bn0.running_mean"] == (64,)
    assert shapes["conv_block6.conv2.weight"] == (2048, 2048, 3, 3)
    assert shapes["fc1.weight"] == (2048, 2048)
    assert sum(p.numel() for p in cnn14.parameters()) + audioset_head == 80_753_615
    resnet = build_backbone("resnet38", device="meta")
    shapes = {k: tuple(v.shape) for k, v in resnet.state_dict().items()}
    blocks = [len({k.split(".")[2] for k in shapes if k.startswith(f"resnet.layer{i}.")}) for i in range(1, 5)]
    assert blocks == [3, 4, 6, 3]
    assert shapes["resnet.layer2.0.downsample.1.weight"] == (128, 64, 1, 1)
    assert shapes["resnet.layer4.0.downsample.2.running_var"] == (512,)
    assert not any(k.startswith("resnet.layer1.0.downsample") for k in shapes)
    assert shapes["conv_block_after1.conv1.weight"] == (2048, 512, 3, 3)
    assert abs(sum(p.numel() for p in resnet.parameters()) + audioset_head - 73.7e6) < 0.1e6


def test_resnet38_forward_one_second():
    enc = build_audio_encoder(audio_encoder_config("resnet38"))
    out = enc(torch.from_numpy(noise(1.0, 32000))[None])
    assert out.shape == (1, 2048) and torch.isfinite(out).all() and (out >= 0).all()  # after ReLU


# ----------------------------------------------------------------------------- tiny-cnn


def test_tiny_is_small_deterministic_and_leaves_global_rng_alone(tiny):
    assert not tiny.training
    assert sum(p.numel() for p in tiny.parameters()) < 10_000
    state = torch.get_rng_state()
    again = build_audio_encoder(tiny.config)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(tiny.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    other = build_audio_encoder(tiny.config, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other.backbone.fc.weight, tiny.backbone.fc.weight)


def test_tiny_forward_and_embed_waveform(tiny):
    x = torch.from_numpy(np.stack([noise(1.0, 16000, 0), noise(1.0, 16000, 1)]))
    out = tiny(x)
    assert out.shape == (2, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out[1], tiny(x[1:])[0])
    emb = tiny.embed_waveform(x[0].numpy(), 16000)
    assert emb.shape == (16,)
    torch.testing.assert_close(emb, out[0])
    # Other rates, int PCM and stereo (S, C) go through prepare_waveform.
    stereo = (np.stack([noise(1.0, 44100, 2), noise(1.0, 44100, 3)], axis=1) * 32767).astype(np.int16)
    assert torch.isfinite(tiny.embed_waveform(stereo, 44100)).all()
    with pytest.raises(AudioError, match="NaN"):
        tiny.embed_waveform(np.full(1000, np.nan, dtype=np.float32), 16000)


def test_very_short_audio_is_padded(tiny):
    emb = tiny.embed_waveform(np.ones(10, dtype=np.float32) * 0.1, 16000)
    assert emb.shape == (16,) and torch.isfinite(emb).all()
    assert tiny(torch.zeros(1, 5)).shape == (1, 16)  # forward pads to min_num_samples too


def test_long_audio_is_the_mean_over_windows(tiny):
    sr = 16000
    x = noise(27.0, sr, seed=4)
    windows = split_windows(torch.from_numpy(x), 10 * sr, 5 * sr, tail="end")  # starts 0,5,10,15,17 s
    assert windows.shape[0] == 5
    expected = tiny(windows).mean(dim=0)
    torch.testing.assert_close(tiny.embed_waveform(x, sr, batch_size=2), expected, rtol=1e-5, atol=1e-6)


def test_long_file_embedding_is_stable_and_cut(tiny, tmp_path):
    sr = 4000  # 200 s of low-rate noise: small file, 16 kHz after resampling
    x = noise(200.0, sr, seed=5)
    path = tmp_path / "long.flac"
    sf.write(path, x, sr)
    full = tiny.embed_file(path)
    half = tiny.embed_waveform(load_audio(path, sr)[: 100 * sr], sr)
    assert full.shape == (16,)
    assert cos(full, half) > 0.999  # stationary input: one stable embedding
    short = build_audio_encoder(dataclasses.replace(tiny.config, max_seconds=30.0))
    with pytest.warns(AudioTruncatedWarning):
        cut = short.embed_file(path)
    torch.testing.assert_close(cut, tiny.embed_waveform(load_audio(path, sr)[: 30 * sr], sr), rtol=1e-4, atol=1e-5)


def test_embed_file_equals_embed_waveform(tiny, tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, np.stack([noise(3.0, 48000, 6), noise(3.0, 48000, 7)], axis=1), 48000, subtype="FLOAT")
    torch.testing.assert_close(tiny.embed_file(path), tiny.embed_waveform(load_audio(path, 16000), 16000))
    with pytest.raises(AudioError, match="not found"):
        tiny.embed_file(tmp_path / "missing.wav")


def test_file_decoding_is_a_plain_function_the_method_delegates_to(tiny, tmp_path, monkeypatch):
    path = tmp_path / "noise.wav"
    sf.write(path, noise(1.0, 22050, 8), 22050)
    torch.testing.assert_close(embed_file(tiny, path), tiny.embed_waveform(load_audio(path, 16000), 16000))
    calls = []
    monkeypatch.setattr("diffatr.encoders.audio.embed_file", lambda enc, p, **kw: calls.append((enc, p, kw)))
    tiny.embed_file(path, batch_size=3)  # the nn.Module's method only delegates
    assert calls == [(tiny, path, {"batch_size": 3})]


# ----------------------------------------------------------------------------- aisfx


def reference_blocking_count(frames: int, block: int, hop: int) -> int:
    """aisfx.preprocessing.blocking's block count, restated (drop_partial_block=True)."""
    count = int(np.ceil((frames - block) / hop + 1))
    if (frames - block) % hop != 0:
        count -= 1
    return max(count, 1)


@settings(max_examples=100, deadline=None)
@given(frames=st.integers(1, 2000))
def test_aisfx_blocking_semantics(frames):
    starts = aisfx_block_starts(frames, 100, 50, drop_partial=True)
    assert len(starts) == reference_blocking_count(frames, 100, 50)
    assert starts == [50 * i for i in range(len(starts))]
    assert frames <= 100 or starts[-1] + 100 <= frames  # partial blocks dropped
    kept = aisfx_block_starts(frames, 100, 50, drop_partial=False)
    assert frames <= 100 or kept[-1] + 100 >= frames  # ... or kept, covering the tail


def test_aisfx_checkpoint_loads_and_embeds(aisfx):
    assert aisfx.weights_path is not None and aisfx.weights_path.name == "aisfx_cnn9.safetensors"
    assert isinstance(aisfx.backbone, AisfxCNN9)
    assert aisfx.backbone.conv_block1.conv1.weight.dtype == torch.float32  # fp16 on disk
    sr = 44100
    t = np.arange(2 * sr) / sr
    clip = (0.3 * np.sin(2 * np.pi * 880 * t) + noise(2.0, sr, 8)).astype(np.float32)
    emb = aisfx.embed_waveform(clip, sr)
    assert emb.shape == (512,) and torch.isfinite(emb).all() and emb.abs().sum() > 0
    random_init = build_audio_encoder(AudioEncoderConfig(weights="random"))
    assert random_init.weights_path is None
    assert cos(random_init.embed_waveform(clip, sr), emb) < 0.99


def test_aisfx_two_crops_of_a_stationary_signal_agree(aisfx):
    sr = 44100
    t = np.arange(8 * sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 660 * t) + noise(8.0, sr, 9, amp=0.2)).astype(np.float32)
    a = aisfx.embed_waveform(x[: 3 * sr], sr)
    b = aisfx.embed_waveform(x[4 * sr : 7 * sr], sr)
    tone = aisfx.embed_waveform((0.5 * np.sin(2 * np.pi * 3000 * t[: 3 * sr])).astype(np.float32), sr)
    assert cos(a, b) > 0.98
    assert cos(a, tone) < cos(a, b) - 0.1


@torch.no_grad()
def test_aisfx_matches_the_authors_pipeline(aisfx):
    """Golden: aisfx 0.1.2's own code + original fp32 weights (tests/data/make_aisfx_golden.py)."""
    data = Path(__file__).parent / "data"
    spec = importlib.util.spec_from_file_location("make_aisfx_golden", data / "make_aisfx_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # for golden_signal() only; aisfx is imported lazily there
    golden = np.load(data / "aisfx_golden.npz")
    peak_normalised = dataclasses.replace(AISFX_LOGMEL, peak_normalize=True)  # their librosa path
    encoder = build_audio_encoder(audio_encoder_config("aisfx-cnn9", frontend=peak_normalised))
    x = torch.from_numpy(module.golden_signal())[None]
    logmel = encoder.frontend(x)
    assert logmel.shape[1] == int(golden["num_frames"])
    blocks = encoder.backbone.block_embeddings(logmel)[0]  # (N, 512)
    expected = torch.from_numpy(golden["block_embeddings"])
    assert blocks.shape == expected.shape == (3, 512)
    for ours, theirs in zip(blocks, expected):
        assert cos(ours, theirs) > 0.99999  # fp16-stored weights: ~1e-3 relative error
        assert float((ours - theirs).norm() / theirs.norm()) < 5e-3


def test_aisfx_clip_embedding_is_mean_of_blocks(aisfx):
    x = torch.from_numpy(noise(5.0, 44100, 10))[None]  # 216 frames -> blocks at 0, 50, 100
    logmel = aisfx.frontend(x)
    blocks = aisfx.backbone.block_embeddings(logmel)
    assert blocks.shape == (1, 3, 512)
    manual = aisfx.backbone.embed_blocks(torch.stack([logmel[0, s : s + 100] for s in (0, 50, 100)]))
    torch.testing.assert_close(blocks[0], manual, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(aisfx(x)[0], manual.mean(0), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- weights files


def save_tiny_weights(encoder, path, **metadata):
    save_file({k: v.contiguous() for k, v in encoder.backbone.state_dict().items()}, str(path), metadata=metadata or None)


def test_weights_roundtrip_and_env_lookup(tiny, tmp_path, monkeypatch):
    trained = build_audio_encoder(tiny.config, generator=torch.Generator().manual_seed(7))
    save_tiny_weights(trained, tmp_path / "tiny.safetensors", arch="tiny-cnn")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    config = dataclasses.replace(tiny.config, weights="tiny.safetensors")
    assert resolve_weights(config) == tmp_path / "tiny.safetensors"
    loaded = build_audio_encoder(config)
    x = torch.from_numpy(noise(1.0, 16000, 11))[None]
    torch.testing.assert_close(loaded(x), trained(x))


def test_missing_panns_weights_say_how_to_get_them(tmp_path):
    config = audio_encoder_config("cnn14", weights=str(tmp_path / "Cnn14.safetensors"))
    with pytest.raises(AudioEncoderError, match="3987831") as info:
        build_audio_encoder(config)
    assert "diffatr convert-panns" in str(info.value)


def test_unfitting_weights_are_rejected(tiny, tmp_path):
    path = tmp_path / "tiny16.safetensors"
    save_tiny_weights(tiny, path)
    with pytest.raises(AudioEncoderError, match="shape mismatches"):
        build_audio_encoder(dataclasses.replace(tiny.config, embed_dim=8, weights=str(path)))
    with pytest.raises(AudioEncoderError, match="missing") as info:
        build_audio_encoder(AudioEncoderConfig(weights=str(path)))  # aisfx from tiny weights
    assert "unexpected" in str(info.value)
    tagged = tmp_path / "tagged.safetensors"
    save_tiny_weights(tiny, tagged, arch="resnet38")
    with pytest.raises(AudioEncoderError, match="resnet38"):
        build_audio_encoder(dataclasses.replace(tiny.config, weights=str(tagged)))
    pth = tmp_path / "model.pth"
    pth.write_bytes(b"not read")
    with pytest.raises(AudioEncoderError, match="convert-panns"):
        build_audio_encoder(dataclasses.replace(tiny.config, weights=str(pth)))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(AudioEncoderError, match="safetensors"):
        build_audio_encoder(dataclasses.replace(tiny.config, weights=str(junk)))


# ----------------------------------------------------------------------------- PANNs conversion


@pytest.fixture(scope="module")
def panns_pth(tmp_path_factory):
    """A synthetic released-style CNN14 checkpoint: random backbone + front end + classifier."""
    generator = torch.Generator().manual_seed(3)
    backbone = init_backbone(build_backbone("cnn14"), generator)
    with torch.no_grad():  # non-trivial BN statistics, so a wrong mapping would show
        backbone.bn0.running_mean.uniform_(-1, 1, generator=generator)
        backbone.fc1.bias.uniform_(-0.1, 0.1, generator=generator)
    state = dict(backbone.state_dict())
    state["spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(513, 1, 1024)
    state["spectrogram_extractor.stft.conv_imag.weight"] = torch.zeros(513, 1, 1024)
    state["logmel_extractor.melW"] = torch.zeros(513, 64)
    state["fc_audioset.weight"] = torch.zeros(527, 2048)
    state["fc_audioset.bias"] = torch.zeros(527)
    path = tmp_path_factory.mktemp("panns") / "Cnn14_mAP=0.431.pth"
    torch.save({"model": state, "iteration": 0}, path)
    return path, backbone


def test_convert_panns_and_load(panns_pth, tmp_path):
    src, original = panns_pth
    dst = tmp_path / "out" / "cnn14.safetensors"
    report = convert_panns(src, dst)
    assert report.arch == "cnn14"
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert set(report.skipped_keys) == {
        "spectrogram_extractor.stft.conv_real.weight",
        "spectrogram_extractor.stft.conv_imag.weight",
        "logmel_extractor.melW",
        "fc_audioset.weight",
        "fc_audioset.bias",
    }
    assert len(report.sha256) == 64
    assert [p.name for p in dst.parent.iterdir()] == ["cnn14.safetensors"]  # no temp files left
    encoder = build_audio_encoder(audio_encoder_config("cnn14", weights=str(dst)))
    for key, value in original.state_dict().items():
        assert torch.equal(encoder.backbone.state_dict()[key], value), key
    out = encoder(torch.from_numpy(noise(1.0, 32000, 12))[None])
    assert out.shape == (1, 2048) and torch.isfinite(out).all()
    with pytest.raises(AudioEncoderError, match="cnn14"):  # metadata says cnn14, not resnet38
        build_audio_encoder(audio_encoder_config("resnet38", weights=str(dst)))


def test_detect_arch_from_keys():
    resnet_keys = set(build_backbone("resnet38", device="meta").state_dict())
    assert detect_panns_arch(resnet_keys | {"fc_audioset.weight"}) == "resnet38"
    assert detect_panns_arch(set(build_backbone("cnn14", device="meta").state_dict())) == "cnn14"
    with pytest.raises(ConversionError, match="cannot tell"):
        detect_panns_arch({"encoder.layers.0.weight", "decoder.weight"})


def test_convert_rejects_other_front_ends_and_partial_files(tmp_path):
    src = tmp_path / "Cnn14_16k.pth"
    torch.save({"model": {"logmel_extractor.melW": torch.zeros(257, 64), "bn0.weight": torch.ones(64)}}, src)
    with pytest.raises(ConversionError, match="front end"):
        convert_panns(src, tmp_path / "x.safetensors")
    partial = tmp_path / "partial.pth"
    keys = build_backbone("cnn14", device="meta").state_dict()
    torch.save({"model": {k: torch.zeros(v.shape) for k, v in keys.items() if not k.startswith("conv_block6")}}, partial)
    with pytest.raises(ConversionError, match="lacks"):
        convert_panns(partial, tmp_path / "y.safetensors", arch="cnn14")
    assert not (tmp_path / "y.safetensors").exists()


def test_full_unpickle_needs_trust(tmp_path):
    path = tmp_path / "legacy.pth"
    # A numpy scalar makes torch's weights-only loader refuse the file (like aisfx's ds_dict).
    torch.save(({"w": torch.ones(2)}, {"ds": np.int64(3)}), path)
    with pytest.raises(ConversionError, match="trust"):
        load_pickled_checkpoint(path)
    state, extra = load_pickled_checkpoint(path, trust=True)
    assert torch.equal(state["w"], torch.ones(2)) and extra["ds"] == 3
    with pytest.raises(ConversionError, match="not found"):
        load_pickled_checkpoint(tmp_path / "none.pth")
