"""DDIM (Song et al. 2021) over score vectors, predicting x0.

A plain object (``set_timesteps`` / ``step`` / ``add_noise``), separate from the network, in
the spirit of diffusers' ``DDIMScheduler``; it holds no parameters and never touches global
randomness (eta > 0 takes a ``generator=``). Unlike image schedulers it has no dynamic
thresholding: the only clip is the [-1, 1] clamp of the x0 estimate (``config.clip_x0``).

Notation (DDIM paper, eq. 12), with t a training timestep index in 0..T-1:
    alpha_bar_t  ``alphas_cumprod[t]``        prod_{s<=t} (1 - beta_s)
    x_t          ``x_t``                       sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps
    x0           ``pred_x0``                   the network's (clamped) estimate of the clean sample
    eps          ``eps``                       noise implied by (x_t, x0)
    sigma_t      ``sigma``                     eta * sqrt((1-abar_prev)/(1-abar_t)) * sqrt(1-abar_t/abar_prev)
    x_{t_prev}   ``prev_sample``               sqrt(abar_prev) x0 + sqrt(1-abar_prev-sigma^2) eps + sigma z
Before the first training step (t_prev = -1) alpha_bar is 1, so the last step returns x0.
Shape legend: B batch, K candidates, T diffusion steps, S inference steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from diffatr.config import STEPS_LIMIT, DiffusionConfig, check_knob
from diffatr.diffusion.noise_schedule import alphas_cumprod_from_betas, make_betas


@dataclass
class DDIMStepOutput:
    """One DDIM step: ``prev_sample`` is x_{t_prev}; ``pred_x0`` the (clamped) x0 estimate."""

    prev_sample: Tensor
    pred_x0: Tensor


class DDIMScheduler:
    """Deterministic (eta = 0) or stochastic DDIM sampling with an x0-predicting model.

    Args:
        config: the noise schedule (``schedule``, ``num_train_timesteps``, ...) and the
            ``clip_x0`` switch.

    Attributes:
        betas: (T,) float64.
        alphas_cumprod: (T,) float64, alpha_bar_t, strictly decreasing.
        num_train_timesteps: T.
        timesteps: (S,) int64, descending; all T steps until ``set_timesteps`` is called.
    """

    def __init__(self, config: DiffusionConfig) -> None:
        self.config = config
        self.betas = make_betas(config)  # (T,)
        self.alphas_cumprod = alphas_cumprod_from_betas(self.betas)  # (T,)
        self.num_train_timesteps = int(config.num_train_timesteps)
        self.clip_x0 = bool(config.clip_x0)
        self._plans: dict[tuple[int, ...], list[tuple[int, float, float]]] = {}  # deterministic_coefficients
        self.set_timesteps(self.num_train_timesteps)

    # ------------------------------------------------------------------ timesteps

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose S evenly spaced timesteps, descending from T-1 to 0.

        ``round(linspace(T-1, 0, S))``: the first step sees the noisiest timestep (the start
        noise is x_T ~ N(0, I)), the last is t = 0, after which ``step`` returns x0. Spacing is
        >= 1 when S <= T, so the steps are distinct. S = 1 is the single step t = T-1, which
        returns x0 directly.

        Args:
            num_inference_steps: S, an integer in 1..T.

        Raises:
            ConfigError: S not an integer in 1..T (a ``ValueError``; the wording of every bad
                setting, ``diffatr.config.check_knob``).
        """
        check_knob("num_inference_steps", num_inference_steps, high=self.num_train_timesteps, why=STEPS_LIMIT)
        steps = int(num_inference_steps)
        if steps == getattr(self, "num_inference_steps", None):
            return  # already set: the timesteps depend on S and T only
        last = self.num_train_timesteps - 1
        grid = torch.linspace(last, 0, steps, dtype=torch.float64)  # steps = 1 gives [T-1]
        self.num_inference_steps = steps
        self.timesteps = grid.round().to(torch.int64)  # (S,)
        ts = self.timesteps.tolist()
        # t -> the next (less noisy) timestep of this schedule; -1 means "x0 itself".
        self._prev = {t: (ts[i + 1] if i + 1 < len(ts) else -1) for i, t in enumerate(ts)}

    def previous_timestep(self, timestep: int) -> int:
        """The timestep after ``timestep`` in the current schedule (-1 after the last)."""
        t = int(timestep)
        if t not in self._prev:
            raise ValueError(
                f"timestep {t} is not in the current schedule {self.timesteps.tolist()}; "
                "call set_timesteps first and iterate over scheduler.timesteps"
            )
        return self._prev[t]

    def _alpha_bar(self, timestep: int) -> float:
        return 1.0 if timestep < 0 else float(self.alphas_cumprod[timestep])

    def deterministic_coefficients(self) -> list[tuple[int, float, float]]:
        """``step`` at eta = 0 as two numbers per timestep of the current schedule.

        With eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t), eq. 12 at sigma = 0 is linear:
        x_{t_prev} = a x0 + b x_t, a = sqrt(abar_prev) - b sqrt(abar_t),
        b = sqrt(1 - abar_prev) / sqrt(1 - abar_t); after the last step (a, b) = (1, 0).
        ``x0`` is the clamped estimate when ``clip_x0``. For fused samplers that skip ``step``.

        Returns:
            S tuples (t, a, b), in the order of ``self.timesteps``.
        """
        key = tuple(self.timesteps.tolist())
        plan = self._plans.get(key)
        if plan is None:  # a function of the schedule alone: computed once per timestep list
            abar = self.alphas_cumprod.tolist()
            plan = []
            for t in key:
                abar_t, abar_prev = abar[t], (1.0 if self._prev[t] < 0 else abar[self._prev[t]])
                b = math.sqrt(1.0 - abar_prev) / math.sqrt(1.0 - abar_t)
                plan.append((t, math.sqrt(abar_prev) - b * math.sqrt(abar_t), b))
            self._plans[key] = plan
        return list(plan)

    # ------------------------------------------------------------------ forward process

    def add_noise(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """q(x_t | x0): x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4).

        Args:
            x0: (B, ...) clean samples.
            noise: eps, same shape as ``x0``.
            timesteps: (B,) int64, each in 0..T-1.

        Returns:
            x_t, same shape and dtype as ``x0``.
        """
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        timesteps = torch.as_tensor(timesteps)
        if timesteps.ndim != 1 or timesteps.shape[0] != x0.shape[0]:
            raise ValueError(
                f"timesteps must have shape ({x0.shape[0]},) to match x0, got {tuple(timesteps.shape)}"
            )
        if timesteps.numel() and (
            int(timesteps.min()) < 0 or int(timesteps.max()) >= self.num_train_timesteps
        ):
            raise ValueError(f"timesteps must lie in 0..{self.num_train_timesteps - 1}")
        abar = self.alphas_cumprod[timesteps.long().cpu()]  # (B,) float64
        shape = (-1,) + (1,) * (x0.ndim - 1)
        sqrt_abar = abar.sqrt().to(device=x0.device, dtype=x0.dtype).view(shape)
        sqrt_one_minus = (1.0 - abar).sqrt().to(device=x0.device, dtype=x0.dtype).view(shape)
        return sqrt_abar * x0 + sqrt_one_minus * noise

    # ------------------------------------------------------------------ reverse step

    def step(
        self,
        pred_x0: Tensor,
        timestep: int,
        x_t: Tensor,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        variance_noise: Tensor | None = None,
        prev_timestep: int | None = None,
    ) -> DDIMStepOutput:
        """One DDIM update x_t -> x_{t_prev} (DDIM eq. 12).

        Args:
            pred_x0: (B, K) the model's x0 estimate at ``timestep``; clamped to [-1, 1]
                first when ``config.clip_x0``.
            timestep: t, an entry of ``self.timesteps``.
            x_t: (B, K) the current sample.
            eta: 0 gives deterministic DDIM; 1 gives DDPM-like ancestral noise.
            generator: draws the extra noise z when eta > 0 (required then).
            variance_noise: z given directly instead of drawn (same shape as ``x_t``).
            prev_timestep: override the schedule's next timestep (-1 = return x0).

        Returns:
            DDIMStepOutput(prev_sample (B, K), pred_x0 (B, K)).
        """
        if pred_x0.shape != x_t.shape:
            raise ValueError(f"pred_x0 shape {tuple(pred_x0.shape)} != x_t shape {tuple(x_t.shape)}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        if eta > 0 and generator is None and variance_noise is None:
            raise ValueError(
                "eta > 0 draws extra noise: pass generator= (a seeded torch.Generator) "
                "or variance_noise="
            )
        t = int(timestep)
        if not 0 <= t < self.num_train_timesteps:
            raise ValueError(f"timestep must lie in 0..{self.num_train_timesteps - 1}, got {t}")
        t_prev = self.previous_timestep(t) if prev_timestep is None else int(prev_timestep)
        if not -1 <= t_prev < t:
            raise ValueError(f"prev_timestep must lie in -1..{t - 1}, got {t_prev}")

        if self.clip_x0:
            # Score vectors are read as a one-hot estimate: keep them in the data range.
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
        if t_prev < 0:
            # alpha_bar_prev = 1: x_{-1} = x0 exactly (no eps term, no noise).
            return DDIMStepOutput(prev_sample=pred_x0.clone(), pred_x0=pred_x0)

        abar_t = self._alpha_bar(t)
        abar_prev = self._alpha_bar(t_prev)
        # eps implied by the sample and the (clamped) x0 estimate.
        eps = (x_t - math.sqrt(abar_t) * pred_x0) / math.sqrt(1.0 - abar_t)
        sigma = eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar_t)) * math.sqrt(
            1.0 - abar_t / abar_prev
        )
        # max(.., 0) guards against rounding pushing 1 - abar_prev - sigma^2 below zero.
        dir_coef = math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0))
        prev_sample = math.sqrt(abar_prev) * pred_x0 + dir_coef * eps
        if sigma > 0:
            if variance_noise is None:
                variance_noise = torch.randn(
                    x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype
                )
            elif variance_noise.shape != x_t.shape:
                raise ValueError(
                    f"variance_noise shape {tuple(variance_noise.shape)} != x_t shape {tuple(x_t.shape)}"
                )
            prev_sample = prev_sample + sigma * variance_noise
        return DDIMStepOutput(prev_sample=prev_sample, pred_x0=pred_x0)
