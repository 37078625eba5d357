"""The resume state of a training run: everything needed to continue it exactly.

A folder with ``state.safetensors`` (weights, optimizer moments, EMA, RNG states, the current
epoch's data order) and ``state.json`` (step, best metric, configs, optimizer hyper-parameters,
data fingerprints). Never a pickle: the optimizer's state dict is flattened into named tensors
plus JSON. This module knows nothing about the training loop; it only stores and restores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from diffatr.errors import DiffatrError
from diffatr.fileio import atomic_directory

__all__ = ["TrainState", "TrainStateError", "flatten_optimizer_state", "load_train_state",
           "save_train_state", "unflatten_optimizer_state"]

TENSORS_FILE = "state.safetensors"
JSON_FILE = "state.json"
FORMAT_VERSION = 1


class TrainStateError(DiffatrError):
    """A resume state that is missing, damaged or from an incompatible run."""


@dataclass
class TrainState:
    """What a run saves at each validation, and ``--resume`` restores.

    Attributes:
        modules: state dict of every module the run changes (weights and buffers).
        optimizer: ``optimizer.state_dict()`` (the torch structure, tensors on the CPU).
        ema: EMA shadow weights by parameter name, or None when EMA is off.
        generators: ``generator.get_state()`` by name ("data", "noise").
        epoch_order: (S, B) the current epoch's batches of caption rows, or None.
        progress: JSON-able facts (step, best value and step, configs, data fingerprints).
    """

    modules: dict[str, Tensor]
    optimizer: dict[str, Any]
    ema: dict[str, Tensor] | None = None
    generators: dict[str, Tensor] = field(default_factory=dict)
    epoch_order: Tensor | None = None
    progress: dict[str, Any] = field(default_factory=dict)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TrainStateError(f"cannot store optimizer setting of type {type(value).__name__} as JSON")


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_jsonable(v) for v in value["__tuple__"])
        return {k: _from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    return value


def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into named tensors and a JSON-able rest.

    Tensors are named ``<param index>/<key>`` (e.g. ``3/exp_avg``); param groups (tuples such as
    AdamW's betas are kept as tuples) and non-tensor per-parameter entries go to the JSON part.
    """
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}/{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = _jsonable(value)
    meta = {"param_groups": _jsonable(state_dict["param_groups"]), "scalars": scalars}
    return tensors, meta


def unflatten_optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``flatten_optimizer_state``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entries in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(_from_jsonable(entries))
    return {"state": state, "param_groups": _from_jsonable(meta["param_groups"])}


def save_train_state(folder: str | Path, state: TrainState) -> Path:
    """Write ``state`` to ``folder``; the previous state is replaced only once this one is complete."""
    opt_tensors, opt_meta = flatten_optimizer_state(state.optimizer)
    tensors: dict[str, Tensor] = {}
    tensors.update({f"modules/{k}": v for k, v in state.modules.items()})
    tensors.update({f"optimizer/{k}": v for k, v in opt_tensors.items()})
    if state.ema is not None:
        tensors.update({f"ema/{k}": v for k, v in state.ema.items()})
    tensors.update({f"generators/{k}": v for k, v in state.generators.items()})
    if state.epoch_order is not None:
        tensors["epoch_order"] = state.epoch_order
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    payload = {"format_version": FORMAT_VERSION, "optimizer": opt_meta, "has_ema": state.ema is not None,
               "progress": state.progress}
    with atomic_directory(folder) as tmp:
        save_file(tensors, str(tmp / TENSORS_FILE))
        (tmp / JSON_FILE).write_text(json.dumps(payload, indent=1, sort_keys=True))
    return Path(folder)


def load_train_state(folder: str | Path) -> TrainState:
    """Read a state written by ``save_train_state``.

    Raises:
        TrainStateError: the folder is missing, incomplete or damaged.
    """
    folder = Path(folder)
    if not (folder / JSON_FILE).is_file() or not (folder / TENSORS_FILE).is_file():
        raise TrainStateError(f"no resume state in {folder} (nothing was saved yet, or the run folder is wrong)")
    try:
        payload = json.loads((folder / JSON_FILE).read_text())
        tensors = load_file(str(folder / TENSORS_FILE))
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as err:
        raise TrainStateError(f"the resume state in {folder} is damaged ({err}); start the run again") from err
    if payload.get("format_version") != FORMAT_VERSION:
        raise TrainStateError(f"{folder}: resume state format {payload.get('format_version')} is not supported")

    groups: dict[str, dict[str, Tensor]] = {"modules": {}, "optimizer": {}, "ema": {}, "generators": {}}
    epoch_order = None
    for name, value in tensors.items():
        if name == "epoch_order":
            epoch_order = value
            continue
        group, _, key = name.partition("/")
        if group not in groups:
            raise TrainStateError(f"{folder}: unexpected tensor {name!r} in the resume state")
        groups[group][key] = value
    return TrainState(
        modules=groups["modules"],
        optimizer=unflatten_optimizer_state(groups["optimizer"], payload["optimizer"]),
        ema=groups["ema"] if payload.get("has_ema") else None,
        generators=groups["generators"],
        epoch_order=epoch_order,
        progress=payload.get("progress", {}),
    )
