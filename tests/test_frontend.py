"""diffatr.audio.frontend: mel scales, filterbanks and LogMel.

References that do not need librosa at test time:
- ``slow_filterbank`` below: an independent per-bin loop over the textbook formulas;
- tests/data/librosa_mel_golden.npz: librosa 0.11.0 output for small settings, made by
  tests/data/make_librosa_golden.py (the note there says how to regenerate it).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffatr.audio.frontend import LogMel, hz_to_mel, mel_filterbank, mel_to_hz
from diffatr.config import AISFX_LOGMEL, PANNS_LOGMEL, LogMelConfig

GOLDEN = np.load(Path(__file__).parent / "data" / "librosa_mel_golden.npz")


def slow_mel(f: float, scale: str) -> float:
    if scale == "htk":
        return 2595.0 * math.log10(1.0 + f / 700.0)
    # Slaney: 3 mels per 200 Hz up to 1 kHz (= 15 mels), then 27 mels per factor 6.4.
    return f * 3.0 / 200.0 if f < 1000.0 else 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)


def slow_hz(m: float, scale: str) -> float:
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return m * 200.0 / 3.0 if m < 15.0 else 1000.0 * 6.4 ** ((m - 15.0) / 27.0)


def slow_filterbank(sr, n_fft, n_mels, fmin, fmax, scale, norm):
    """Per-bin triangles between mel-spaced edges, written with plain loops."""
    lo, hi = slow_mel(fmin, scale), slow_mel(fmax, scale)
    edges = [slow_hz(lo + (hi - lo) * i / (n_mels + 1), scale) for i in range(n_mels + 2)]
    out = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        left, center, right = edges[m], edges[m + 1], edges[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if left < f <= center:
                out[k, m] = (f - left) / (center - left)
            elif center < f < right:
                out[k, m] = (right - f) / (right - center)
        if norm == "slaney":
            out[:, m] *= 2.0 / (right - left)
        elif norm == "l1" and out[:, m].sum() > 0:
            out[:, m] /= out[:, m].sum()
    return out


# ----------------------------------------------------------------------------- mel scales


def test_mel_scale_landmarks():
    # Slaney: linear below the 1 kHz break (500 Hz -> 7.5, 1 kHz -> 15), log above.
    np.testing.assert_allclose(hz_to_mel([0.0, 500.0, 1000.0], "slaney"), [0.0, 7.5, 15.0])
    np.testing.assert_allclose(hz_to_mel(6400.0, "slaney"), 15.0 + 27.0)
    # HTK: 2595 log10(1 + f / 700); 1 kHz is ~1000 mel by construction.
    np.testing.assert_allclose(hz_to_mel(700.0, "htk"), 2595.0 * math.log10(2.0))
    assert abs(float(hz_to_mel(1000.0, "htk")) - 1000.0) < 0.1
    with pytest.raises(ValueError):
        hz_to_mel(100.0, "bark")


@settings(max_examples=50, deadline=None)
@given(f=st.floats(0.0, 24000.0), scale=st.sampled_from(["slaney", "htk"]))
def test_mel_roundtrip_and_reference(f, scale):
    m = float(hz_to_mel(f, scale))
    assert m == pytest.approx(slow_mel(f, scale), rel=1e-12, abs=1e-12)
    assert float(mel_to_hz(m, scale)) == pytest.approx(f, rel=1e-9, abs=1e-9)


# ----------------------------------------------------------------------------- filterbanks


@pytest.mark.parametrize(
    "name,args",
    [
        ("htk_l1", (8000, 64, 8, 0.0, 4000.0, "htk", "l1")),
        ("slaney_slaney", (8000, 64, 8, 100.0, 3500.0, "slaney", "slaney")),
        ("slaney_none", (16000, 128, 10, 50.0, 8000.0, "slaney", None)),
        ("htk_slaney", (22050, 128, 12, 0.0, 11025.0, "htk", "slaney")),
    ],
)
def test_filterbank_matches_librosa_golden(name, args):
    ours = mel_filterbank(*args)
    golden = GOLDEN[f"fb_{name}"]
    assert ours.shape == golden.shape == (args[1] // 2 + 1, args[2])
    np.testing.assert_allclose(ours, golden, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "args",
    [
        (32000, 1024, 64, 50.0, 14000.0, "slaney", "slaney"),  # PANNs
        (44100, 2048, 96, 0.0, 22050.0, "htk", "l1"),  # aisfx
        (16000, 512, 32, 50.0, 8000.0, "slaney", None),
        (8000, 256, 20, 300.0, 3000.0, "htk", "slaney"),
    ],
)
def test_filterbank_matches_slow_reference(args):
    np.testing.assert_allclose(mel_filterbank(*args), slow_filterbank(*args), rtol=1e-9, atol=1e-12)


def test_filterbank_norms():
    l1 = mel_filterbank(44100, 2048, 96, 0.0, 22050.0, "htk", "l1")
    np.testing.assert_allclose(l1.sum(axis=0), 1.0, rtol=1e-12)
    peak = mel_filterbank(32000, 1024, 64, 50.0, 14000.0, "slaney", None)
    area = mel_filterbank(32000, 1024, 64, 50.0, 14000.0, "slaney", "slaney")
    assert peak.max() <= 1.0 and (area >= 0).all()
    # Slaney area normalisation: a wide triangle of height 2 / width has area ~1 (Hz units).
    bin_hz = 32000 / 1024
    np.testing.assert_allclose(area[:, -10:].sum(axis=0) * bin_hz, 1.0, rtol=0.02)


def test_empty_filters_stay_zero():
    # 40 bands below 200 Hz with 31 Hz bins: some triangles fall between bins.
    fb = mel_filterbank(8000, 256, 40, 0.0, 200.0, "htk", "l1")
    sums = fb.sum(axis=0)
    assert (sums == 0).any() and np.isfinite(fb).all()
    np.testing.assert_allclose(sums[sums > 0], 1.0)


# ----------------------------------------------------------------------------- LogMel


def test_panns_frame_count_shape_dtype():
    lm = LogMel(PANNS_LOGMEL)
    out = lm(torch.zeros(2, 320000))  # 10 s at 32 kHz
    assert out.shape == (2, 1001, 64) and out.dtype == torch.float32
    assert lm.num_frames(320000) == 1001
    assert not any(k for k in lm.state_dict())  # buffers are rebuilt, never saved


def test_frame_count_without_centering():
    cfg = dataclasses.replace(PANNS_LOGMEL, center=False)
    lm = LogMel(cfg)
    for n in (1024, 1343, 5000):
        assert lm(torch.zeros(1, n)).shape[1] == 1 + (n - 1024) // 320 == lm.num_frames(n)
    with pytest.raises(ValueError, match="too short"):
        lm(torch.zeros(1, 1000))


def test_reflect_padding_needs_enough_samples():
    lm = LogMel(PANNS_LOGMEL)
    with pytest.raises(ValueError, match="too short"):
        lm(torch.zeros(1, 400))
    assert lm(torch.zeros(1, lm.min_samples())).shape == (1, 2, 64)


def test_silence():
    db = LogMel(PANNS_LOGMEL)(torch.zeros(1, 32000))
    torch.testing.assert_close(db, torch.full_like(db, -100.0))  # 10 log10(amin = 1e-10)
    peak = dataclasses.replace(AISFX_LOGMEL, peak_normalize=True)
    aisfx = LogMel(peak)(torch.zeros(1, 44100))  # peak normalisation must not divide by 0
    assert torch.isfinite(aisfx).all() and (aisfx == 0).all()


def test_peak_normalisation_makes_level_irrelevant():
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 44100)).astype(np.float32)) * 0.3
    on = LogMel(dataclasses.replace(AISFX_LOGMEL, peak_normalize=True))
    off = LogMel(dataclasses.replace(AISFX_LOGMEL, peak_normalize=False))
    torch.testing.assert_close(on(x), on(0.1 * x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(off(x), off(0.1 * x), atol=1e-3)
    torch.testing.assert_close(on(x), off(x / x.abs().max()))


def test_batch_rows_are_independent():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((3, 16000)).astype(np.float32))
    x[1] *= 0.01
    lm = LogMel(AISFX_LOGMEL)
    batched = lm(x)
    for i in range(3):
        torch.testing.assert_close(batched[i], lm(x[i : i + 1])[0], rtol=1e-5, atol=1e-5)


def test_sine_lands_in_its_mel_band():
    sr, f0 = 32000, 2000.0
    t = torch.arange(sr) / sr
    out = LogMel(PANNS_LOGMEL)(torch.sin(2 * math.pi * f0 * t)[None])[0]  # (T, M)
    fb = mel_filterbank(sr, 1024, 64, 50.0, 14000.0)
    expected_band = int(np.argmax(fb[round(f0 * 1024 / sr)]))
    assert int(out[10:-10].mean(0).argmax()) == expected_band


def test_logmel_matches_librosa_golden_panns_style():
    signal = torch.from_numpy(GOLDEN["signal"])[None]
    cfg = LogMelConfig(sample_rate=8000, n_fft=256, hop_length=80, n_mels=16, f_min=50.0, f_max=3500.0)
    ours = LogMel(cfg)(signal)[0].numpy()
    golden = GOLDEN["logmel_panns_style"]
    assert ours.shape == golden.shape
    # float32 FFT rounding moves near-silent bins (-90 dB) by ~0.02 dB: compare audible bins
    # in dB, and everything in the power domain relative to the loudest bin.
    loud = golden > golden.max() - 60.0
    np.testing.assert_allclose(ours[loud], golden[loud], atol=1e-3)
    np.testing.assert_allclose(10 ** (ours / 10), 10 ** (golden / 10), atol=1e-6 * 10 ** (golden.max() / 10))


def test_logmel_matches_librosa_golden_aisfx_style():
    signal = torch.from_numpy(GOLDEN["signal"])[None]
    cfg = dataclasses.replace(
        AISFX_LOGMEL, sample_rate=8000, n_fft=256, hop_length=128, n_mels=24, f_max=4000.0, peak_normalize=True
    )
    ours = LogMel(cfg)(signal)[0].numpy()
    golden = GOLDEN["logmel_aisfx_style"]
    assert ours.shape == golden.shape
    np.testing.assert_allclose(ours, golden, atol=1e-5)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"mel_scale": "bark"}, "mel_scale"),
        ({"mel_norm": "max"}, "mel_norm"),
        ({"f_max": 20000.0}, "f_max"),
        ({"pad_mode": "circular"}, "pad_mode"),
        ({"compression": "ln"}, "compression"),
        ({"hop_length": 0}, "hop_length"),
    ],
)
def test_bad_config(change, match):
    with pytest.raises(ValueError, match=match):
        LogMel(dataclasses.replace(PANNS_LOGMEL, **change))


def test_bad_input_shapes():
    lm = LogMel(PANNS_LOGMEL)
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        lm(torch.zeros(32000))
    with pytest.raises(ValueError, match="float"):
        lm(torch.zeros(1, 32000, dtype=torch.int16))
