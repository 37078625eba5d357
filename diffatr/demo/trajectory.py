"""The trajectory of a session's last search on the page: serving its view (built by
``SearchEngine.trajectory_view``) and pacing its animation. It must not draw or search.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from diffatr.demo.messages import DemoError
from diffatr.demo.session import DemoSession


def last_trajectory(session: DemoSession | None) -> dict[str, Any]:
    """The last search's trajectory view in this session.

    Raises:
        DemoError: no search yet in this session.
    """
    if session is None or session.trajectory is None:
        raise DemoError("No search yet in this session: search by text or by sound first.")
    return session.trajectory


def frame_pause(num_frames: int, animation_seconds: float = 3.0, fixed: float | None = None,
                longest: float = 0.3) -> float:
    """Seconds between two frames of an animation: the whole run x_T -> x_0 lasts about
    ``animation_seconds`` whatever the number of DDIM steps (51 frames: 0.06 s each; 11 frames:
    0.27 s), never more than ``longest`` a frame; ``fixed`` overrides (a constant pace)."""
    if fixed is not None:
        return max(0.0, float(fixed))
    return min(longest, max(0.0, animation_seconds) / max(1, int(num_frames)))


def iter_steps(view: Mapping[str, Any], start: int = 0) -> Iterable[int]:
    """The steps an animation shows from ``start`` to x_0 (restarts at 0 when at the end)."""
    last = len(view["x_t"]) - 1
    start = 0 if start >= last else max(0, int(start))
    return range(start, last + 1)
