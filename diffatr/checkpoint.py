"""Checkpoints: a folder holding ``config.json`` (the full ModelConfig) and
``model.safetensors`` (heads, temperature, denoisers), and, for a model that keeps one,
``caption_bank.safetensors`` (the training captions' and clips' backbone features that
known-caption expansion looks queries up in; a file of its own so the weights stay small and an
older checkpoint without it still loads). Never pickles.

Loading needs no original flags: the config rebuilds the model. Backbone weights are referenced
by the config (registry name + weights path), not copied. Truncated, mismatched or pickled files
raise CheckpointError with a message that says what to do.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from diffatr.config import ConfigError, ModelConfig, from_dict, to_dict
from diffatr.errors import DiffatrError
from diffatr.fileio import atomic_directory
from diffatr.model import DiffATR

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
BANK_FILE = "caption_bank.safetensors"
BANK_KEYS = {"text": "caption_bank_text", "audio": "caption_bank_audio", "caption_to_clip": "caption_bank_clip"}
FORMAT_VERSION = 1
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"}




class CheckpointError(DiffatrError):
    """A checkpoint that cannot be loaded; the message says why and what to do."""


def _config_digest(config_json: str) -> str:
    return hashlib.sha256(config_json.encode()).hexdigest()[:16]


def save_checkpoint(model: DiffATR, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to the folder ``path`` atomically (an existing checkpoint is replaced whole).

    Args:
        model: the DiffATR module.
        path: the checkpoint folder.
        extra: JSON-able facts to keep with it (training step, metrics, data, seed ...).
    Returns:
        The checkpoint folder.
    """
    payload = {"format_version": FORMAT_VERSION, "model": to_dict(model.config), "extra": extra or {}}
    config_json = json.dumps(payload, indent=2, sort_keys=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_directory(path) as tmp:
        (tmp / CONFIG_FILE).write_text(config_json)
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"config_sha256": _config_digest(config_json)})
        if model.has_caption_bank:
            bank = {name: getattr(model, attr).detach().cpu().contiguous() for name, attr in BANK_KEYS.items()}
            save_file(bank, str(tmp / BANK_FILE), metadata={"config_sha256": _config_digest(config_json)})
    return Path(path)


def _checkpoint_dir(path: str | Path) -> Path:
    path = Path(path)
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES or _looks_like_pickle(path):
            raise CheckpointError(
                f"{path} looks like a PyTorch pickle; diffatr loads only safetensors checkpoints "
                "(pickles can run code). For released PANNs weights run "
                "`diffatr convert-panns FILE.pth` once."
            )
        if path.name in (WEIGHTS_FILE, CONFIG_FILE):
            return path.parent
        raise CheckpointError(f"{path} is a file; a checkpoint is a folder with {CONFIG_FILE} and {WEIGHTS_FILE}")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"checkpoint {path} has no {name}: it is incomplete; save or copy it again")
    return path


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(2)
    return head[:1] == b"\x80" or head == b"PK"  # pickle protocol byte, or torch's zip container


def read_checkpoint(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The ModelConfig and the ``extra`` facts of a checkpoint, without loading weights."""
    folder = _checkpoint_dir(path)
    try:
        payload = json.loads((folder / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{folder / CONFIG_FILE} is not valid JSON ({err}); the checkpoint is damaged") from err
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(f"{folder / CONFIG_FILE} is not a diffatr checkpoint config (no 'model' key)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format {version} is not supported by this diffatr (expects {FORMAT_VERSION}); "
            "upgrade diffatr or re-save the checkpoint"
        )
    try:
        config = from_dict(ModelConfig, payload["model"])
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {err}") from err
    return config, payload.get("extra", {})


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> DiffATR:
    """Rebuild a DiffATR from a checkpoint folder. The model is in eval mode.

    The loaded module carries ``checkpoint_extra`` (the dict given to save_checkpoint) and
    ``checkpoint_path``.

    Raises:
        CheckpointError: missing files, pickles, truncated weights, shape or key mismatches.
    """
    config, extra = read_checkpoint(path)
    folder = _checkpoint_dir(path)
    try:
        state = load_file(str(folder / WEIGHTS_FILE), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{folder / WEIGHTS_FILE} is truncated or corrupt ({err}); copy or download it again"
        ) from err
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's RNG alone
        model = DiffATR(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    # A query bank holds one row per training query: its length is the training set's.
    resizable = {k for k in set(expected) & set(state) if k.endswith(".query_bank")
                 and state[k].ndim == 2 and state[k].shape[1:] == expected[k].shape[1:]}
    wrong_shape = sorted(k for k in set(expected) & set(state) - resizable if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong_shape:
            shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong_shape[:3]]
            details.append(f"shape mismatch {shapes}")
        raise CheckpointError(
            f"weights in {folder} do not match its config ({'; '.join(details)}); "
            "the files come from different runs"
        )
    model.load_state_dict(state)
    _load_caption_bank(model, folder, map_location)
    model.eval()
    model.checkpoint_extra = extra
    model.checkpoint_path = str(folder)
    return model


def _load_caption_bank(model: DiffATR, folder: Path, map_location: str | torch.device) -> None:
    """The checkpoint's caption bank, if it has one, into ``model``."""
    path = folder / BANK_FILE
    if not path.is_file():
        return
    try:
        bank = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise _damaged_bank(path, err) from err
    if set(bank) != set(BANK_KEYS):
        raise CheckpointError(f"{path} holds {sorted(bank)}, not the caption bank {sorted(BANK_KEYS)}; copy it again")
    try:
        model.set_caption_bank(bank["text"], bank["audio"], bank["caption_to_clip"])
    except ValueError as err:
        raise CheckpointError(f"{path} does not fit the checkpoint's model ({err}); copy it again") from err


def caption_bank_size(path: str | Path) -> dict[str, int] | None:
    """{"captions": C, "clips": M} of a checkpoint's caption bank (read from the file's header,
    no tensor loaded), or None when it has none."""
    bank = _checkpoint_dir(path) / BANK_FILE
    if not bank.is_file():
        return None
    try:
        with safe_open(str(bank), "pt") as handle:
            return {"captions": handle.get_slice("text").get_shape()[0],
                    "clips": handle.get_slice("audio").get_shape()[0]}
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as err:
        raise _damaged_bank(bank, err) from err


def _damaged_bank(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(f"{path} is truncated or corrupt ({err}); copy it again, or delete it to search "
                           "without known-caption expansion")
