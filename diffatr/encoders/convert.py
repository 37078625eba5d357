"""One-time conversion of pickled audio checkpoints (PANNs, aisfx) into safetensors.

The released ``.pth`` files are pickles; unpickling can run code, so it happens only here,
only when asked, and a full (``weights_only=False``) unpickle only when the caller passes
``trust=True``. Everything else in diffatr loads the safetensors this module writes.
Files are written atomically (temp file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_tensors

from diffatr.encoders.audio import AudioEncoderError, build_backbone
from diffatr.fileio import atomic_write_bytes

FORMAT = "diffatr-audio-backbone/1"
PANNS_ARCHS = ("cnn14", "resnet38")
# Parts of a PANNs state dict that diffatr does not keep: the torchlibrosa front end (rebuilt
# from LogMelConfig) and the AudioSet classifier (retrieval uses the embedding before it).
PANNS_SKIPPED_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.", "fc_audioset.")
# PANNs' 32 kHz models: n_fft 1024 -> 513 bins, 64 mel bands (Cnn14_16k & co. differ).
PANNS_MELW_SHAPE = (513, 64)


class ConversionError(AudioEncoderError):
    """A checkpoint that cannot be converted (the message says why and what to do)."""


@dataclass(frozen=True)
class ConversionReport:
    """What ``convert_panns`` did.

    Attributes:
        arch: the architecture written ("cnn14" | "resnet38").
        missing_keys: keys the architecture has but the checkpoint lacks.
        unexpected_keys: checkpoint keys the architecture does not have (dropped).
        skipped_keys: front-end and classifier keys dropped on purpose.
        num_tensors: tensors written.
        sha256: of the source file.
    """

    arch: str
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    skipped_keys: list[str] = field(default_factory=list)
    num_tensors: int = 0
    sha256: str = ""


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_pickled_checkpoint(path: str | os.PathLike, trust: bool = False) -> Any:
    """``torch.load`` on the CPU: ``weights_only=True`` first; a full unpickle only if ``trust``.

    Raises:
        ConversionError: missing file, or a file that needs a full unpickle without ``trust``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError) as err:
        if not trust:
            raise ConversionError(
                f"{path} cannot be read as plain tensors ({type(err).__name__}); reading it needs a"
                " full unpickle, which can run code stored in the file. If you trust where it"
                " came from (e.g. the PANNs Zenodo record), convert it with trust=True"
                " (`diffatr convert-panns --trust ...`)."
            ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # any unpickling failure means: not a checkpoint we can read
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint ({err})") from err


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: ``obj["model"]``, ``obj["state_dict"]`` or ``obj`` itself;
    a DataParallel ``module.`` prefix is removed."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(
            "the checkpoint holds no state dict (expected a dict of tensors, or one under"
            " 'model' / 'state_dict')"
        )
    state = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            state[key.removeprefix("module.")] = value
    return state


def save_safetensors_atomic(tensors: Mapping[str, torch.Tensor], dst: str | os.PathLike, metadata: Mapping[str, str]) -> Path:
    """Write ``tensors`` (made contiguous) to ``dst`` atomically (see diffatr.fileio)."""
    blob = save_tensors({k: v.detach().contiguous() for k, v in tensors.items()}, metadata=dict(metadata))
    return atomic_write_bytes(dst, blob)


def _expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an architecture's state dict, from a meta-device build (no memory)."""
    return {k: tuple(v.shape) for k, v in build_backbone(arch, device="meta").state_dict().items()}


def detect_panns_arch(keys: list[str] | set[str]) -> str:
    """The PANNs architecture whose key set best covers ``keys`` ("cnn14" | "resnet38")."""
    keys = set(keys)
    scores = {arch: len(keys & set(_expected_shapes(arch))) / max(len(keys), 1) for arch in PANNS_ARCHS}
    best = max(scores, key=scores.get)
    if scores[best] < 0.9:
        raise ConversionError(
            f"cannot tell the architecture from the checkpoint's keys (best match {best} covers"
            f" {scores[best]:.0%}); supported: {', '.join(PANNS_ARCHS)}; pass arch= explicitly"
            " if you are sure"
        )
    return best


def convert_panns(
    src_pth: str | os.PathLike,
    dst_safetensors: str | os.PathLike,
    arch: str | None = None,
    *,
    trust: bool = False,
    strict: bool = True,
) -> ConversionReport:
    """Convert a released PANNs checkpoint (e.g. ``Cnn14_mAP=0.431.pth``) to safetensors.

    Keeps the backbone (``bn0``, conv blocks, ResNet layers, ``fc1``), drops the torchlibrosa
    front end and ``fc_audioset``, checks every shape against diffatr's architecture, and
    writes float tensors unchanged with metadata (arch, source name, sha256).

    Args:
        src_pth: the ``.pth`` file ({"model": state_dict, "iteration": ...}).
        dst_safetensors: where to write.
        arch: "cnn14" | "resnet38"; None detects it from the keys.
        trust: allow a full unpickle when plain-tensor loading fails (only for files you trust).
        strict: raise when keys are missing (a partial file would not load anyway).

    Returns:
        ConversionReport.

    Raises:
        ConversionError: unreadable file, unknown architecture, shape mismatches, missing
            keys (with ``strict``), or a front end other than PANNs' 32 kHz one.
    """
    src = Path(src_pth)
    state = extract_state_dict(load_pickled_checkpoint(src, trust=trust))
    skipped = sorted(k for k in state if k.startswith(PANNS_SKIPPED_PREFIXES))
    melw = state.get("logmel_extractor.melW")
    if melw is not None and tuple(melw.shape) != PANNS_MELW_SHAPE:
        raise ConversionError(
            f"{src.name} was trained with another front end (mel matrix {tuple(melw.shape)}, expected"
            f" {PANNS_MELW_SHAPE} for 32 kHz, n_fft 1024, 64 mels); only the 32 kHz PANNs"
            " checkpoints (Cnn14_mAP=0.431.pth, ResNet38_mAP=0.434.pth) are supported"
        )
    kept = {k: v for k, v in state.items() if k not in skipped}
    if arch is None:
        arch = detect_panns_arch(set(kept))
    elif arch not in PANNS_ARCHS:
        raise ConversionError(f"arch must be one of {PANNS_ARCHS}, got {arch!r}")
    expected = _expected_shapes(arch)
    missing = sorted(k for k in expected if k not in kept and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in kept if k not in expected)
    mismatched = [
        f"{k}: {tuple(kept[k].shape)} vs {expected[k]}" for k in sorted(kept) if k in expected and tuple(kept[k].shape) != expected[k]
    ]
    if mismatched:
        raise ConversionError(f"{src.name} does not fit {arch}: shape mismatches {mismatched[:6]}")
    if missing and strict:
        raise ConversionError(
            f"{src.name} lacks {len(missing)} {arch} tensors (e.g. {missing[:6]}); is it a PANNs"
            f" {arch} checkpoint?"
        )
    tensors = {k: v for k, v in kept.items() if k in expected}
    digest = sha256_of(src)
    metadata = {
        "format": FORMAT,
        "arch": arch,
        "source": src.name,
        "source_sha256": digest,
        "origin": "PANNs (Kong et al. 2020), Zenodo record 3987831",
    }
    save_safetensors_atomic(tensors, dst_safetensors, metadata)
    return ConversionReport(
        arch=arch,
        missing_keys=missing,
        unexpected_keys=unexpected,
        skipped_keys=skipped,
        num_tensors=len(tensors),
        sha256=digest,
    )


def convert_aisfx(src_pth: str | os.PathLike, dst_safetensors: str | os.PathLike, *, trust: bool = False, dtype: torch.dtype = torch.float16) -> dict[str, str]:
    """Convert aisfx 0.1.2's ``models/checkpoint.pth`` (a pickled ``(state_dict, ds_dict)``).

    Keeps ``embedding_net.*`` without the prefix (the classifier heads ``fc.*`` are dropped),
    stores float tensors as ``dtype`` (float16 keeps the file under 10 MB; they load back as
    float32) and integer counters unchanged.

    Returns:
        The metadata written.
    """
    src = Path(src_pth)
    obj = load_pickled_checkpoint(src, trust=trust)
    if isinstance(obj, (tuple, list)) and obj and isinstance(obj[0], Mapping):
        obj = obj[0]
    state = extract_state_dict(obj)
    prefix = "embedding_net."
    tensors = {
        k.removeprefix(prefix): (v.to(dtype) if v.is_floating_point() else v)
        for k, v in state.items()
        if k.startswith(prefix)
    }
    expected = _expected_shapes("aisfx-cnn9")
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [k for k in tensors if k in expected and tuple(tensors[k].shape) != expected[k]]
    if missing or unexpected or mismatched:
        raise ConversionError(
            f"{src} is not the aisfx embedding net (missing {missing[:4]}, unexpected"
            f" {unexpected[:4]}, shape mismatches {mismatched[:4]})"
        )
    metadata = {
        "format": FORMAT,
        "arch": "aisfx-cnn9",
        "source": "aisfx 0.1.2 (PyPI), aisfx/models/checkpoint.pth, embedding_net only",
        "source_sha256": sha256_of(src),
        "license": "CC-BY-4.0",
        "authors": "Alison Bernice Ma, Alexander Lerch (ISMIR 2022)",
        "stored_dtype": str(dtype).removeprefix("torch."),
    }
    save_safetensors_atomic(tensors, dst_safetensors, metadata)
    return metadata
