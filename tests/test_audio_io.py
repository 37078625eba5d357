"""diffatr.audio.io: decoding, resampling, bad input, length policy (generated audio only)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffatr.audio import io
from diffatr.audio.io import (
    AudioError,
    AudioTruncatedWarning,
    decode_audio,
    is_silent,
    load_audio,
    pad_or_crop,
    prepare_waveform,
    split_windows,
)


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_freq(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    "fmt,subtype,atol",
    [("WAV", "PCM_16", 1e-4), ("FLAC", "PCM_16", 1e-4), ("WAV", "FLOAT", 1e-7), ("OGG", "VORBIS", None)],
)
def test_roundtrip_formats(tmp_path, fmt, subtype, atol):
    sr = 16000
    x = sine(440.0, 1.0, sr)
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, x, sr, format=fmt, subtype=subtype)
    y = load_audio(path, sr)
    assert y.dtype == np.float32 and y.ndim == 1
    if atol is None:  # lossy: same length and pitch, similar level
        assert abs(len(y) - len(x)) <= 1
        assert abs(dominant_freq(y, sr) - 440.0) < 5
        assert np.std(y) == pytest.approx(np.std(x), rel=0.1)
    else:
        np.testing.assert_allclose(y, x, atol=atol)


def test_stereo_48k_is_mixed_to_mono_and_resampled(tmp_path):
    sr = 48000
    left = sine(1000.0, 2.0, sr, amp=0.6)
    right = sine(1000.0, 2.0, sr, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")
    decoded = decode_audio(path, 16000)
    assert decoded.source_sample_rate == 48000 and decoded.source_channels == 2
    assert decoded.sample_rate == 16000
    assert len(decoded.waveform) == pytest.approx(2.0 * 16000, abs=2)
    assert decoded.duration_s == pytest.approx(2.0, abs=1e-3)
    # The mean of the channels: amplitude (0.6 + 0.2) / 2, pitch preserved.
    middle = decoded.waveform[1000:-1000]
    assert np.abs(middle).max() == pytest.approx(0.4, abs=0.01)
    assert abs(dominant_freq(decoded.waveform, 16000) - 1000.0) < 2


def test_mp3_decodes(tmp_path):
    if not io.mp3_supported():
        pytest.skip("this libsndfile has no MP3 support")
    path = tmp_path / "tone.mp3"
    sf.write(path, sine(440.0, 1.0, 44100), 44100, format="MP3", subtype="MPEG_LAYER_III")
    y = load_audio(path, 22050)
    assert abs(dominant_freq(y, 22050) - 440.0) < 5


def test_mp3_with_old_libsndfile_gives_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "x.mp3"
    path.write_bytes(b"ID3" + bytes(200))
    monkeypatch.setattr(sf, "__libsndfile_version__", "1.0.31")
    with pytest.raises(AudioError, match="MP3"):
        load_audio(path, 16000)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav", 16000)


def test_directory(tmp_path):
    with pytest.raises(AudioError, match="folder"):
        load_audio(tmp_path, 16000)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(path, 16000)


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError, match="cannot decode") as caught:
        load_audio(path, 16000)
    # one path, a plain reason, none of libsndfile's guesses
    message = str(caught.value)
    assert message.count(str(path)) == 1 and "pipe" not in message and "not a recognised audio format" in message


def test_garbage_mp3_gets_a_plain_reason(tmp_path):
    path = tmp_path / "song.mp3"
    path.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(AudioError) as caught:
        load_audio(path, 16000)
    message = str(caught.value)
    assert "pipe" not in message.lower() and message.count("song.mp3") == 1


def test_truncated_header_is_corrupt(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, sine(440.0, 0.5, 8000), 8000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(good.read_bytes()[:30])
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(bad, 8000)


def test_zero_length_audio(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 8000)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(path, 8000)


def test_nan_samples_in_float_wav(tmp_path):
    x = sine(440.0, 0.2, 8000)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(path, 8000)


@pytest.mark.parametrize("rate", [0, -16000, 44.1, 10_000_000, True, "16000"])
def test_absurd_target_rate(tmp_path, rate):
    path = tmp_path / "ok.wav"
    sf.write(path, sine(440.0, 0.1, 8000), 8000)
    with pytest.raises(AudioError):
        load_audio(path, rate)


def test_silent_file_decodes_and_is_silent(tmp_path):
    path = tmp_path / "silence.flac"
    sf.write(path, np.zeros(8000, dtype=np.float32), 8000)
    y = load_audio(path, 8000)
    assert len(y) == 8000 and is_silent(y)
    assert not is_silent(sine(440.0, 0.1, 8000, amp=0.01))
    assert is_silent(np.full(10, 1e-5, dtype=np.float32))  # -100 dBFS
    assert not is_silent(np.full(10, 1e-5, dtype=np.float32), threshold_db=-120)
    assert is_silent(torch.zeros(5)) and is_silent(np.zeros(0))


def test_long_file_is_cut_at_max_seconds(tmp_path):
    sr = 2000
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(200 * sr)).astype(np.float32)  # 200 s
    path = tmp_path / "long.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    decoded = decode_audio(path, sr, max_seconds=30.0)
    assert decoded.truncated and len(decoded.waveform) == 30 * sr
    np.testing.assert_array_equal(decoded.waveform, x[: 30 * sr])
    with pytest.warns(AudioTruncatedWarning):
        assert len(load_audio(path, sr, max_seconds=30.0)) == 30 * sr
    full = decode_audio(path, sr, max_seconds=None)
    assert not full.truncated and len(full.waveform) == len(x)
    exact = decode_audio(path, sr, max_seconds=200.0)  # exactly the length: nothing cut
    assert not exact.truncated
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(path, sr, max_seconds=300.0)


def test_bad_max_seconds(tmp_path):
    path = tmp_path / "ok.wav"
    sf.write(path, sine(440.0, 0.1, 8000), 8000)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(AudioError, match="max_seconds"):
            load_audio(path, 8000, max_seconds=bad)


# ----------------------------------------------------------------------------- arrays


def test_prepare_waveform_int_pcm_scaling():
    pcm16 = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    np.testing.assert_allclose(prepare_waveform(pcm16, 16000, 16000), [0, 0.5, -1, 32767 / 32768], atol=1e-7)
    pcm32 = np.array([2**30, -(2**31)], dtype=np.int32)
    np.testing.assert_allclose(prepare_waveform(pcm32, 16000, 16000), [0.5, -1.0], atol=1e-7)
    pcm8 = np.array([128, 255, 0], dtype=np.uint8)
    np.testing.assert_allclose(prepare_waveform(pcm8, 16000, 16000), [0, 127 / 128, -1], atol=1e-7)
    out = prepare_waveform(np.array([0.25, -0.5]), 16000, 16000)
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]


def test_prepare_waveform_channel_layouts_agree():
    rng = np.random.default_rng(1)
    stereo = rng.standard_normal((4000, 2)).astype(np.float32)  # (S, C) as Gradio gives it
    a = prepare_waveform(stereo, 8000, 8000)
    b = prepare_waveform(stereo.T, 8000, 8000)  # (C, S)
    c = prepare_waveform(torch.from_numpy(stereo), 8000, 8000)
    np.testing.assert_allclose(a, stereo.mean(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    mono_column = prepare_waveform(stereo[:, :1], 8000, 8000)
    np.testing.assert_array_equal(mono_column, stereo[:, 0])


def test_prepare_waveform_resamples():
    x = sine(300.0, 1.0, 44100)
    y = prepare_waveform(x, 44100, 16000)
    assert len(y) == 16000
    assert abs(dominant_freq(y, 16000) - 300.0) < 2


@pytest.mark.parametrize(
    "array,match",
    [
        (np.array([0.0, np.nan, 0.1], dtype=np.float32), "NaN"),
        (np.array([0.0, np.inf]), "NaN or infinite"),
        (np.zeros(0), "empty"),
        (np.zeros((2, 3, 4)), "dimensions"),
        (np.zeros((1000, 1000)), "channel axis"),
        (np.array([1 + 1j, 2j]), "dtype"),
        (np.array(["a", "b"]), "dtype"),
    ],
)
def test_prepare_waveform_rejects(array, match):
    with pytest.raises(AudioError, match=match):
        prepare_waveform(array, 16000, 16000)


def test_prepare_waveform_rejects_bad_rates():
    with pytest.raises(AudioError, match="Hz"):
        prepare_waveform(np.zeros(10), 0, 16000)
    with pytest.raises(AudioError, match="Hz"):
        prepare_waveform(np.zeros(10), 16000, 16)


def test_prepare_waveform_max_seconds_warns():
    x = np.ones(3000, dtype=np.float32)
    with pytest.warns(AudioTruncatedWarning):
        y = prepare_waveform(x, 1000, 1000, max_seconds=2.0)
    assert len(y) == 2000


# ----------------------------------------------------------------------------- length policy


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 300), n=st.integers(1, 300), mode=st.sampled_from(["center", "start"]))
def test_pad_or_crop_properties(length, n, mode):
    x = np.arange(1, length + 1, dtype=np.float32)
    y = pad_or_crop(x, n, mode)
    assert y.shape == (n,)
    if length <= n:
        np.testing.assert_array_equal(y[:length], x)
        assert not y[length:].any()
    else:
        start = (length - n) // 2 if mode == "center" else 0
        np.testing.assert_array_equal(y, x[start : start + n])
    yt = pad_or_crop(torch.from_numpy(x), n, mode)
    assert isinstance(yt, torch.Tensor)
    np.testing.assert_array_equal(yt.numpy(), y)


def test_pad_or_crop_batched_and_bad_args():
    x = np.arange(20, dtype=np.float32).reshape(2, 10)
    np.testing.assert_array_equal(pad_or_crop(x, 4), x[:, 3:7])
    with pytest.raises(AudioError):
        pad_or_crop(x, 0)
    with pytest.raises(AudioError):
        pad_or_crop(x, 4, mode="end")


@settings(max_examples=80, deadline=None)
@given(length=st.integers(1, 400), window=st.integers(1, 60), hop=st.integers(1, 60))
def test_split_windows_pad_properties(length, window, hop):
    x = np.arange(1, length + 1, dtype=np.float32)
    w = split_windows(x, window, hop)
    expected_count = 1 + math.ceil(max(0, length - window) / hop)
    assert w.shape == (expected_count, window)
    for i, row in enumerate(w):
        piece = x[i * hop : i * hop + window]
        np.testing.assert_array_equal(row[: len(piece)], piece)
        assert not row[len(piece) :].any()  # zero padding only at the very end
    if hop <= window:  # windows cover every sample
        assert set(np.unique(w[w > 0])) == set(x)
    np.testing.assert_array_equal(split_windows(torch.from_numpy(x), window, hop).numpy(), w)


@settings(max_examples=80, deadline=None)
@given(length=st.integers(1, 400), window=st.integers(1, 60), hop=st.integers(1, 60))
def test_split_windows_end_properties(length, window, hop):
    x = np.arange(1, length + 1, dtype=np.float32)
    w = split_windows(x, window, hop, tail="end")
    if length <= window:
        assert w.shape == (1, window)
        np.testing.assert_array_equal(w[0, :length], x)
        return
    assert (w > 0).all()  # no padding at all
    np.testing.assert_array_equal(w[-1], x[-window:])  # flush with the end
    if hop <= window:
        assert set(np.unique(w)) == set(x)


def test_split_windows_rejects_bad_args():
    with pytest.raises(AudioError):
        split_windows(np.zeros((2, 10)), 4, 2)
    with pytest.raises(AudioError):
        split_windows(np.zeros(10), 0, 2)
    with pytest.raises(AudioError):
        split_windows(np.zeros(10), 4, 2, tail="drop")
