"""Shared fixtures: tiny configs and generated audio, so the suite runs offline in minutes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

# Nothing in the suite may reach a hub: fail loudly instead of downloading.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_config():
    from diffatr.config import load_model_config

    return load_model_config("tiny")


def write_tone(path: Path, freq: float = 440.0, seconds: float = 1.0, sr: int = 16000,
               channels: int = 1, seed: int = 0) -> Path:
    """A sine tone plus a little seeded noise, written with soundfile (format from the suffix)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    sf.write(str(path), data.astype(np.float32), sr)
    return path


@pytest.fixture
def audio_folder(tmp_path: Path) -> Path:
    """Four short clips with sidecar captions, one without captions, and one corrupt file."""
    folder = tmp_path / "sounds"
    folder.mkdir()
    for i, (name, freq, caption) in enumerate([
        ("low_hum", 110.0, "a low hum"),
        ("beep", 880.0, "a high beep"),
        ("whistle", 2000.0, "a shrill whistle"),
        ("tone", 440.0, "a steady tone"),
    ]):
        write_tone(folder / f"{name}.wav", freq=freq, seed=i)
        (folder / f"{name}.txt").write_text(f"{caption}\n{caption} sound\n")
    write_tone(folder / "uncaptioned.flac", freq=300.0, seed=9)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return folder


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as a module for the duration of a module fixture
    (a generator: ``yield from load_benchmark("quality")``); benchmarks are scripts, not a package."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"{name}_bench", Path(__file__).resolve().parents[1] / "benchmarks"
                                                  / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
