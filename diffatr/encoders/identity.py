"""When two encoder configs give the same features: the one rule.

An index, a feature set and a model agree when their backbones agree on the identity fields
below (``encoder_mismatches``); settings that only bound the work (``max_seconds``,
``allow_download``) do not count, and weights are compared by file name so that an index still
loads after the weights moved. Feature caches key on more than this (every field that can change
a feature): a stricter key never serves wrong features, it only recomputes more often.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

IDENTITY_KEYS = {
    "audio": ("name", "weights", "embed_dim", "frontend", "window_seconds", "window_hop_seconds"),
    "text": ("name_or_path", "pooling", "embed_dim", "max_length"),
}
_PATH_KEYS = {"weights", "name_or_path"}


def encoder_mismatches(stored: Mapping[str, Any] | None, current: Mapping[str, Any] | None,
                       kind: str) -> list[str]:
    """Differences that matter between two encoder configs of ``kind`` ("audio" | "text").

    Only identity fields are compared (not e.g. ``max_seconds``); paths by file name, and a path
    left ``None`` (the registry default) matches any. A side that is ``None`` or empty (unknown
    encoder, e.g. synthetic features) is compatible with anything.

    Returns:
        Human-readable differences, ``[]`` when compatible.
    """
    if not stored or not current:
        return []
    out = []
    for key in IDENTITY_KEYS[kind]:
        a, b = stored.get(key), current.get(key)
        if key in _PATH_KEYS:
            if a is None or b is None:
                continue  # None means "the registry default", which may resolve to either path
            a, b = Path(str(a)).name, Path(str(b)).name
        if a != b:
            out.append(f"{kind}.{key}: {a!r} != {b!r}")
    return out
