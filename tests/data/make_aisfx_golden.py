"""Regenerate tests/data/aisfx_golden.npz (dev-time only; the tests need neither aisfx nor librosa).

    pip install librosa==0.11.0 && pip download aisfx==0.1.2 --no-deps  # unpack the wheel
    python tests/data/make_aisfx_golden.py PATH/CONTAINING/aisfx

Runs the authors' own pipeline (aisfx 0.1.2: its librosa spectrogram, transposed to the
time-major layout its model expects, 'original' normalisation, blocking with hop 0.5, the
CrossNet embedding net with the original float32 weights) on the deterministic test signal
``golden_signal()`` and stores the per-block embeddings. tests/test_audio_encoders.py
recomputes the signal and compares diffatr's aisfx-cnn9 (peak-normalised front end).
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

OUT = Path(__file__).with_name("aisfx_golden.npz")


def golden_signal(sr: int = 44100, seconds: float = 5.0) -> np.ndarray:
    """A chirp, an amplitude-modulated tone and a click train: no RNG, so it is reproducible."""
    t = np.arange(int(sr * seconds)) / sr
    chirp = 0.3 * np.sin(2 * np.pi * (100 * t + 1300 * t**2))
    tone = 0.2 * (1 + np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 440 * t)
    clicks = 0.5 * (np.mod(np.arange(len(t)), sr // 8) < 40)
    return (chirp + tone + clicks).astype(np.float32)


def main(aisfx_root: str) -> None:
    sys.path.insert(0, aisfx_root)
    from aisfx.inference import load_bestModel, model_get_embedding
    from aisfx.preprocessing import spectrogram_normalize
    from aisfx.spectrogram.spectrogram_librosa import compute_spectrogram

    weights, ds_dict = torch.load(Path(aisfx_root) / "aisfx/models/checkpoint.pth", map_location="cpu", weights_only=False)
    model = load_bestModel(weights, ds_dict, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "golden.wav"
        sf.write(path, golden_signal(), 44100, subtype="FLOAT")
        spec = compute_spectrogram(str(path), 44100, 2048, 1024, 96, 0.0, 22050.0).T  # (T, 96)
    blocks = model_get_embedding(spectrogram_normalize(spec, "original"), 0.5, True, model, "cpu")
    np.savez_compressed(OUT, block_embeddings=blocks.numpy().astype(np.float32), num_frames=spec.shape[0])
    print(f"wrote {OUT}: {tuple(blocks.shape)} block embeddings from {spec.shape[0]} frames")


if __name__ == "__main__":
    main(sys.argv[1])
