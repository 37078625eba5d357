"""The DDIM sampling loop: start noise x_T -> x_0 over a query's candidates.

Owns only the loop (the network is a callable, the update rule is the scheduler's); it draws
no randomness of its own: the caller passes the start noise from a seeded generator.
Shape legend: B batch (queries), K candidates, S inference steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from diffatr.diffusion.ddim import DDIMScheduler

DenoiseFn = Callable[[Tensor, int], Tensor]


@dataclass
class Trajectory:
    """A whole DDIM run, for inspection and animation.

    Attributes:
        timesteps: (S,) int64, the timesteps visited, descending.
        x_t: (S+1, B, K) the samples from x_T (the start noise, index 0) to x_0 (index S).
        pred_x0: (S, B, K) the (clamped) x0 estimate made at each step.
    """

    timesteps: Tensor
    x_t: Tensor
    pred_x0: Tensor


def ddim_sample(
    denoise_fn: DenoiseFn,
    scheduler: DDIMScheduler,
    noise: Tensor,
    num_inference_steps: int,
    return_trajectory: bool = False,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor | tuple[Tensor, Trajectory]:
    """Run DDIM from ``noise`` (x_T) to the x0 estimate.

    Calls ``scheduler.set_timesteps(num_inference_steps)``, then for each timestep t:
    pred_x0 = denoise_fn(x_t, t); x_t = scheduler.step(pred_x0, t, x_t).prev_sample.
    The last step returns the (clamped) x0 estimate itself.

    Args:
        denoise_fn: (x_t (B, K), t: int) -> pred_x0 (B, K).
        scheduler: the DDIM scheduler (its timesteps are reset here).
        noise: (B, K) x_T, drawn by the caller from a seeded generator.
        num_inference_steps: S in 1..T.
        return_trajectory: also return every x_t and pred_x0.
        eta: DDIM's eta (0: deterministic); eta > 0 needs ``generator``.
        generator: source of the extra noise when eta > 0.

    Returns:
        x0 (B, K), or (x0, Trajectory) when ``return_trajectory``.
    """
    if noise.ndim != 2:
        raise ValueError(f"noise must be (B, K), got shape {tuple(noise.shape)}")
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps.clone()  # (S,)
    x_t = noise
    xs: list[Tensor] = [noise]
    preds: list[Tensor] = []
    for t in timesteps.tolist():
        pred_x0 = denoise_fn(x_t, t)  # (B, K)
        if pred_x0.shape != x_t.shape:
            raise ValueError(
                f"denoise_fn returned shape {tuple(pred_x0.shape)}, expected {tuple(x_t.shape)}"
            )
        out = scheduler.step(pred_x0, t, x_t, eta=eta, generator=generator)
        x_t = out.prev_sample
        if return_trajectory:
            xs.append(x_t)
            preds.append(out.pred_x0)
    if not return_trajectory:
        return x_t
    return x_t, Trajectory(timesteps=timesteps, x_t=torch.stack(xs), pred_x0=torch.stack(preds))
