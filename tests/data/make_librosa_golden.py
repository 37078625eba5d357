"""Regenerate tests/data/librosa_mel_golden.npz (dev-time only; the tests never import librosa).

    pip install librosa==0.11.0 && python tests/data/make_librosa_golden.py

Stores librosa's mel filterbanks for a few small settings (float64, shape (F, M) as diffatr
uses them) and two log-mel spectrograms of a fixed 1 s test signal (also stored): a PANNs-style
one (Slaney mel, reflect padding, 10 log10) and an aisfx-style one (HTK mel, unit-sum filters,
constant padding, peak-normalised input, log10(1 + 1e4 x) / 9.4578).
"""

from pathlib import Path

import librosa
import numpy as np

OUT = Path(__file__).with_name("librosa_mel_golden.npz")
# name: (sr, n_fft, n_mels, fmin, fmax, htk, norm)
FILTERBANKS = {
    "htk_l1": (8000, 64, 8, 0.0, 4000.0, True, 1.0),
    "slaney_slaney": (8000, 64, 8, 100.0, 3500.0, False, "slaney"),
    "slaney_none": (16000, 128, 10, 50.0, 8000.0, False, None),
    "htk_slaney": (22050, 128, 12, 0.0, 11025.0, True, "slaney"),
}


def main() -> None:
    arrays = {}
    for name, (sr, n_fft, n_mels, fmin, fmax, htk, norm) in FILTERBANKS.items():
        fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm, dtype=np.float64)
        arrays[f"fb_{name}"] = fb.T  # (F, M)
    sr = 8000
    t = np.arange(sr) / sr
    signal = 0.3 * np.sin(2 * np.pi * (200 * t + 1500 * t**2)) + 0.1 * np.sin(2 * np.pi * 440 * t)
    signal = signal.astype(np.float32)
    arrays["signal"] = signal
    panns = librosa.feature.melspectrogram(y=signal, sr=sr, n_fft=256, hop_length=80, n_mels=16, fmin=50.0, fmax=3500.0, center=True, pad_mode="reflect", power=2.0)
    arrays["logmel_panns_style"] = librosa.power_to_db(panns, ref=1.0, amin=1e-10, top_db=None).T  # (T, M)
    peak = signal / np.abs(signal).max()
    aisfx = librosa.feature.melspectrogram(y=peak, sr=sr, n_fft=256, hop_length=128, n_mels=24, fmin=0.0, fmax=4000.0, htk=True, norm=1.0, center=True, pad_mode="constant", power=2.0)
    arrays["logmel_aisfx_style"] = (np.log10(1 + 1e4 * aisfx) / 9.457798957824707).T  # (T, M)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} with librosa {librosa.__version__}")


if __name__ == "__main__":
    main()
