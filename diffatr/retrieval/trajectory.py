"""The trajectory view of one query's re-rank: the JSON-able lists a page draws and animates
(candidates in cosine order, x_t per DDIM step, the distribution the model generates).

A pure function of a ``RerankResult`` recorded with ``return_trajectory=True``;
``SearchEngine.trajectory_view`` supplies the labels. It must not draw or read files.

Shape legend: K candidates re-ranked, S DDIM steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from diffatr.retrieval.rerank import RerankResult

__all__ = ["trajectory_view"]


def trajectory_view(result: RerankResult, query: int, labels: Sequence[str], ce_scale: float,
                    highlight: int) -> dict[str, Any]:
    """One query's DDIM path over its K candidates, in cosine order (the denoiser's).

    Args:
        result: a re-rank recorded with ``return_trajectory=True``.
        query: which query of ``result`` (its row).
        labels: a label for every candidate row (clip ids, or captions for audio -> text).
        ce_scale: the training loss's scale: the distribution shown is softmax(ce_scale * x̂0),
            the sharpness the denoisers were trained at.
        highlight: how many of the final top results the page marks (clamped to K).

    Returns:
        Lists over the K candidates in cosine order (``labels``, ``rows``, ``final_rank``,
        ``cosine``, ``diffusion``, ``fused``, ``gen_rank``), per step (``timesteps``, ``x_t``
        (S+1, K), ``pred_x0`` (S, K), ``distribution`` (S+1, K)), ``highlight`` and ``ce_scale``.
    """
    x_t, pred_x0 = result.query_trajectory(query)  # (S+1, K), (S, K)
    k = int(x_t.shape[-1])
    columns = _by_cosine_position(result, query, k)
    return {
        "labels": [labels[r] for r in columns["rows"]],
        **columns,
        "highlight": min(int(highlight), k),
        "timesteps": [int(t) for t in result.trajectory.timesteps.tolist()],
        "x_t": _rounded(x_t),
        "pred_x0": _rounded(pred_x0),
        "distribution": _rounded(_distribution(x_t, pred_x0, float(ce_scale))),
        "gen_rank": _generated_rank(x_t[-1]),
        "ce_scale": float(ce_scale),
    }


def _by_cosine_position(result: RerankResult, query: int, k: int) -> dict[str, list]:
    """The result's per-candidate columns (in final order) moved to cosine order."""
    cosine_rank = result.cosine_rank[query, :k].tolist()  # final position -> cosine position
    final_rank = [0] * k
    cosine = [0.0] * k
    rows = [0] * k
    diffusion = [0.0] * k
    fused = [0.0] * k
    for position, cos_pos in enumerate(cosine_rank):
        final_rank[cos_pos] = position
        cosine[cos_pos] = float(result.cosine[query, position])
        rows[cos_pos] = int(result.indices[query, position])
        diffusion[cos_pos] = float(result.diffusion[query, position])
        fused[cos_pos] = float(result.fused[query, position])
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
