"""Gradio's values -> the plain types ``diffatr.demo`` takes (the UI layer's conversions).

Gradio hands handlers file paths, ``FileData`` dicts (``{"path": ..., "orig_name": ...}``),
tempfile wrappers and microphone values ``(sample_rate, array)``. Only this module knows those
shapes; the demo and the engine take paths, or a waveform with its ``sample_rate``. No Gradio
import here, so the conversions are tested without a server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["audio_query", "upload_paths"]


def _file_path(value: Any) -> Any:
    """A path from a FileData dict or a tempfile wrapper; anything else as given."""
    if isinstance(value, Mapping):
        return value.get("path") or value.get("name")
    if hasattr(value, "name") and not isinstance(value, (str, os.PathLike)):
        return value.name  # a tempfile wrapper (older Gradio)
    return value


def audio_query(value: Any) -> tuple[Any, int | None]:
    """An audio input's value as ``(audio, sample_rate)`` for ``Searcher.search_audio``.

    Args:
        value: what ``gr.Audio`` gives: a file path (``type="filepath"``), a FileData dict,
            Gradio's microphone value ``(sample_rate, array)`` (``type="numpy"``), or None.

    Returns:
        ``(path, None)`` for a file; ``(array, sample_rate)`` for a recording. A value of any
        other shape comes back as ``(value, None)`` for the demo to refuse with a message.
    """
    if isinstance(value, (tuple, list)) and len(value) == 2:
        rate, array = value
        if isinstance(rate, (int, np.integer)) and not isinstance(rate, bool):
            return array, int(rate)  # Gradio's documented order: (sample_rate, data)
        return value, None
    return _file_path(value), None


def upload_paths(files: Any) -> list[str]:
    """The server paths of a ``gr.File`` value (one file or several; paths, FileData dicts or
    tempfile wrappers), for ``UserSounds.index_uploads``; None gives []."""
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike, Mapping)):
        files = [files]
    paths = (_file_path(item) for item in files)
    return [str(path) for path in paths if path]
