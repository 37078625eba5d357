"""Noise schedules: the betas beta_1..beta_T and the cumulative products alpha_bar_t.

Owns only the schedule maths (float64, CPU, no state). The DDIM update lives in
``scheduler.py``. Shape legend: T diffusion steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffatr.config import DiffusionConfig

SCHEDULES = ("cosine", "linear")

# Offset s of the cosine schedule (Nichol & Dhariwal 2021, eq. 17): keeps beta_1 from being
# vanishingly small near t = 0.
COSINE_S = 0.008


def _cosine_betas(num_steps: int, max_beta: float) -> Tensor:
    """beta_t = 1 - alpha_bar(t/T) / alpha_bar((t-1)/T), alpha_bar(u) = cos^2((u+s)/(1+s) * pi/2)."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + COSINE_S) / (1.0 + COSINE_S) * math.pi / 2.0) ** 2

    betas = [
        min(1.0 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
        for i in range(num_steps)
    ]
    return torch.tensor(betas, dtype=torch.float64)  # (T,)


def make_betas(config: DiffusionConfig) -> Tensor:
    """The noise schedule named by ``config.schedule``.

    Args:
        config: ``schedule`` ("cosine" | "linear"), ``num_train_timesteps`` (T),
            ``beta_start`` / ``beta_end`` (linear only), ``max_beta`` (upper clip, both).

    Returns:
        betas, (T,) float64, index 0 is the first (least noisy) step.

    Raises:
        ValueError: an unknown schedule name or out-of-range numbers.
    """
    num_steps = config.num_train_timesteps
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_train_timesteps must be an integer >= 1, got {num_steps!r}")
    if not 0.0 < config.max_beta < 1.0:
        raise ValueError(f"max_beta must lie in (0, 1), got {config.max_beta!r}")
    if config.schedule == "cosine":
        betas = _cosine_betas(num_steps, config.max_beta)
    elif config.schedule == "linear":
        if not 0.0 < config.beta_start <= config.beta_end < 1.0:
            raise ValueError(
                "linear schedule needs 0 < beta_start <= beta_end < 1, got "
                f"beta_start={config.beta_start!r}, beta_end={config.beta_end!r}"
            )
        betas = torch.linspace(config.beta_start, config.beta_end, num_steps, dtype=torch.float64)
        betas = betas.clamp(max=config.max_beta)  # (T,)
    else:
        raise ValueError(
            f"unknown noise schedule {config.schedule!r}; choose one of: {', '.join(SCHEDULES)}"
        )
    return betas


def alphas_cumprod_from_betas(betas: Tensor) -> Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s).

    Args:
        betas: (T,) values in (0, 1).

    Returns:
        alphas_cumprod, (T,) in betas' dtype, strictly decreasing when every beta > 0.
    """
    if betas.ndim != 1 or betas.numel() == 0:
        raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
    if bool(((betas <= 0) | (betas >= 1)).any()):
        raise ValueError("betas must lie strictly between 0 and 1")
    return torch.cumprod(1.0 - betas, dim=0)  # (T,)
