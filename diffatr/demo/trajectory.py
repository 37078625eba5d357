"""The trajectory view of a search: the JSON-able lists ``diffatr.plots`` draws and the page
animates (candidates in cosine order, x_t per DDIM step, the distribution the model generates).

Builds the view from an engine result and serves a session's last one; it must not draw.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from diffatr.demo.messages import DemoError
from diffatr.demo.session import DemoSession
from diffatr.demo.settings import Settings
from diffatr.retrieval.engine import SearchEngine


def trajectory_view(engine: SearchEngine, result: Any, direction: str, query: str,
                    settings: Settings) -> dict[str, Any]:
    """The JSON-able view ``plots.py`` draws: candidates in cosine order (the denoiser's).

    Args:
        engine: the engine that ran the search (its index labels the candidates).
        result: its ``rerank_features(..., return_trajectory=True)`` result for one query.
        direction: "text_to_audio" (labels are clip ids) or "audio_to_text" (captions).
        query: the query as searched.
        settings: the knobs of the search.

    Returns:
        Lists over the K candidates in cosine order (``labels``, ``rows``, ``final_rank``,
        ``cosine``, ``diffusion``, ``fused``, ``gen_rank``), per step (``timesteps``, ``x_t``
        (S+1, K), ``pred_x0`` (S, K), ``distribution`` (S+1, K)), and the search's settings.
    """
    x_t, pred_x0 = result.query_trajectory(0)  # (S+1, K), (S, K)
    k = int(x_t.shape[-1])
    columns = _by_cosine_position(result, k)
    ce_scale = float(engine.model.config.diffusion.ce_scale)
    index = engine.index
    if direction == "text_to_audio":
        labels = [index.clip_ids[r] for r in columns["rows"]]
    else:
        labels = [index.flat_captions[r] for r in columns["rows"]]
    return {
        "direction": direction,
        "query": query,
        "labels": labels,
        **columns,
        "highlight": min(settings.k, k),
        "timesteps": [int(t) for t in result.trajectory.timesteps.tolist()],
        "x_t": _rounded(x_t),
        "pred_x0": _rounded(pred_x0),
        "distribution": _rounded(_distribution(x_t, pred_x0, ce_scale)),
        "gen_rank": _generated_rank(x_t[-1]),
        "ce_scale": ce_scale,
        "settings": dataclasses.asdict(settings),
    }


def _by_cosine_position(result: Any, k: int) -> dict[str, list]:
    """The result's per-candidate columns (in final order) moved to cosine order."""
    cosine_rank = result.cosine_rank[0, :k].tolist()  # final position -> cosine position
    final_rank = [0] * k
    cosine = [0.0] * k
    rows = [0] * k
    diffusion = [0.0] * k
    fused = [0.0] * k
    for position, cos_pos in enumerate(cosine_rank):
        final_rank[cos_pos] = position
        cosine[cos_pos] = float(result.cosine[0, position])
        rows[cos_pos] = int(result.indices[0, position])
        diffusion[cos_pos] = float(result.diffusion[0, position])
        fused[cos_pos] = float(result.fused[0, position])
    return {"rows": rows, "final_rank": final_rank, "cosine": cosine, "diffusion": diffusion, "fused": fused}


def _distribution(x_t: torch.Tensor, pred_x0: torch.Tensor, ce_scale: float) -> torch.Tensor:
    """What the animation shows: the start noise read as a distribution, then at every step the
    distribution the model was trained to generate, softmax(x̂0 x CE scale) (at the fusion's
    temperature 1 it would look flat: x̂0 spans about 0.1). Returns (S+1, K)."""
    return torch.cat([torch.softmax(x_t[:1].double(), dim=-1),
                      torch.softmax(ce_scale * pred_x0.double(), dim=-1)])


def _generated_rank(x_0: torch.Tensor) -> list[int]:
    """The diffusion's own ranking at x_0 (ties keep the cosine order, as the engine's sort)."""
    gen_order = torch.sort(x_0, descending=True, stable=True).indices.tolist()
    gen_rank = [0] * len(gen_order)
    for position, cos_pos in enumerate(gen_order):
        gen_rank[cos_pos] = position
    return gen_rank


def _rounded(matrix: torch.Tensor) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in matrix.tolist()]


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
