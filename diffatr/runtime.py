"""Where things run and where the shipped data lives.

Devices: ``resolve_device`` and ``autocast`` (mixed precision is CUDA only).

Shipped data (the default checkpoint, the aisfx weights, the built-in corpus and its demo
index) is found, in this order:

1. ``$DIFFATR_DATA``: a folder laid out like the repository (``checkpoints/``,
   ``assets/corpus/``), for data kept outside the package;
2. the git checkout this module runs from (an editable install);
3. the copy inside the installed package (``diffatr/_shipped/``, put there by the wheel build:
   see ``pyproject.toml``), so ``pip install .`` runs the CLI and the app offline.

Nothing here downloads anything.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import warnings
from pathlib import Path

import torch

from diffatr.errors import DiffatrError

DATA_ENV = "DIFFATR_DATA"
CHECKPOINT_ENV = "DIFFATR_DEFAULT_CHECKPOINT"  # the checkpoint used when none is given
INDEX_ENV = "DIFFATR_DEFAULT_INDEX"  # the index searched when none is given
# Environment variables renamed so that no two names differ by a letter: new name -> old name.
# The old names still work, with a FutureWarning, for one release (0.x -> removed in the next).
RENAMED_ENV = {"DIFFATR_DEFAULT_CHECKPOINT": "DIFFATR_CHECKPOINT", "DIFFATR_DEFAULT_INDEX": "DIFFATR_INDEX",
               "DIFFATR_WEIGHTS_DIR": "DIFFATR_CHECKPOINTS", "DIFFATR_APP_INDEX": "DIFFATR_DEMO_INDEX"}
_CHECKOUT = Path(__file__).resolve().parents[1]
# kind -> its place in a checkout (and under $DIFFATR_DATA); in the package: _shipped/<kind>
_LAYOUT = {"checkpoints": ("checkpoints",), "corpus": ("assets", "corpus")}


class DeviceError(DiffatrError):
    """A device name that is unknown or not present on this machine."""


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"``.

    Only CUDA runs touch ``torch.cuda`` beyond the one ``is_available()`` check that ``"auto"``
    needs.
    """
    name = str(name or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: no CUDA device is available on this machine; use --device cpu or auto")
        return torch.device(name)
    raise DeviceError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when asked; a no-op otherwise (mixed precision is CUDA only)."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if amp:
        warnings.warn("--amp applies to CUDA only; this CPU run uses float32", stacklevel=3)
    return contextlib.nullcontext()


def shipped(kind: str) -> Path:
    """The folder of one kind of shipped data: ``"checkpoints"`` or ``"corpus"``.

    Returns the first existing candidate (see the module docstring), or the installed
    package's path when none exists, so that the caller's "not found" error names it.
    """
    if kind not in _LAYOUT:
        raise ValueError(f"unknown kind of shipped data {kind!r}; known: {', '.join(_LAYOUT)}")
    candidates = []
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]).expanduser().joinpath(*_LAYOUT[kind]))
    candidates.append(_CHECKOUT.joinpath(*_LAYOUT[kind]))
    candidates.append(Path(str(importlib.resources.files("diffatr"))) / "_shipped" / kind)
    return next((c for c in candidates if c.is_dir()), candidates[-1])


def env_setting(name: str) -> str | None:
    """``$name`` if set (and not empty), else its old spelling (``RENAMED_ENV``) with a
    FutureWarning, else None."""
    value = os.environ.get(name)
    if value:
        return value
    old = RENAMED_ENV.get(name)
    if old and os.environ.get(old):
        warnings.warn(f"${old} is now ${name}; the old name will stop working in the next release",
                      FutureWarning, stacklevel=2)
        return os.environ[old]
    return None


def portable_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """``path`` as a file meant for other machines (a checkpoint, a results file) records it:
    relative to ``root`` (default: the current folder, e.g. the checkout a run starts in) when
    it lies inside, else its name alone. Never an absolute path of this machine."""
    full = Path(path).expanduser().resolve()
    try:
        return full.relative_to(Path(root or Path.cwd()).resolve()).as_posix()
    except ValueError:
        return full.name


def default_checkpoint_dir() -> Path:
    """The shipped checkpoint, or ``$DIFFATR_DEFAULT_CHECKPOINT``."""
    env = env_setting(CHECKPOINT_ENV)
    return Path(env) if env else shipped("checkpoints") / "default"


def default_index_dir() -> Path:
    """The index of the built-in corpus's demo clips, or ``$DIFFATR_DEFAULT_INDEX``."""
    env = env_setting(INDEX_ENV)
    return Path(env) if env else shipped("corpus") / "demo_index"
