"""The generation loss of DiffATR's phase 2 (docs/method.md, "Phase 2: generative training").

Owns one function: noise a one-hot x0 at a random timestep, denoise it, and score the x0
estimate with a scaled cross-entropy. Randomness comes only from the ``generator`` passed in.
Shape legend: B batch (queries), K candidates, D embedding width, T diffusion steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diffatr.diffusion.denoiser import Denoiser
from diffatr.diffusion.ddim import DDIMScheduler


def generation_loss(
    denoiser: Denoiser,
    scheduler: DDIMScheduler,
    query: Tensor,
    candidates: Tensor,
    generator: torch.Generator | None = None,
    ce_scale: float = 100.0,
    positive_index: int | Tensor = 0,
    candidate_hubness: Tensor | None = None,
) -> Tensor:
    """Scaled cross-entropy of the denoiser's x0 estimate against the positive candidate.

    x0 is one-hot at ``positive_index``; one timestep t ~ U{0..T-1} per query, then noise
    eps ~ N(0, I) (drawn in that order from ``generator``); x_t = sqrt(abar_t) x0 +
    sqrt(1 - abar_t) eps; out = denoiser(x_t, t, query, candidates);
    loss = mean_b CE(ce_scale * out_b, positive_b).

    The paper calls this a KL loss, and it is one: for a one-hot target y and
    p = softmax(ce_scale * out), CE(y, p) = -log p_pos = KL(y || p) + H(y), and H(y) = 0.

    Args:
        denoiser: the x0 predictor.
        scheduler: supplies T and alpha_bar (``add_noise``).
        query: (B, D) query embeddings.
        candidates: (B, K, D) candidate embeddings, the positive at ``positive_index``.
        generator: source of t and eps (required: this code never uses global randomness).
        ce_scale: the output scale inside the softmax (the reference: 100).
        positive_index: where the positive sits, an int or a (B,) integer tensor.
        candidate_hubness: (B, K), passed to a "shortlist+hubness" denoiser (see its forward).

    Returns:
        The loss, a scalar tensor (mean over the batch).
    """
    if generator is None:
        raise ValueError(
            "generation_loss draws t and noise: pass generator= (a seeded torch.Generator)"
        )
    if candidates.ndim != 3 or query.ndim != 2 or candidates.shape[0] != query.shape[0]:
        raise ValueError(
            "expected query (B, D) and candidates (B, K, D), got "
            f"{tuple(query.shape)} and {tuple(candidates.shape)}"
        )
    B, K = candidates.shape[:2]
    target = torch.as_tensor(positive_index, dtype=torch.long, device=query.device)
    target = target.expand(B) if target.ndim == 0 else target
    if target.shape != (B,):
        raise ValueError(f"positive_index must be an int or have shape ({B},), got {tuple(target.shape)}")
    if B and (int(target.min()) < 0 or int(target.max()) >= K):
        raise ValueError(f"positive_index must lie in 0..{K - 1}")

    x0 = F.one_hot(target, K).to(query.dtype)  # (B, K)
    t = torch.randint(
        0, scheduler.num_train_timesteps, (B,), generator=generator, device=query.device
    )  # (B,)
    eps = torch.randn((B, K), generator=generator, device=query.device, dtype=query.dtype)
    x_t = scheduler.add_noise(x0, eps, t)  # (B, K)
    if candidate_hubness is None:
        out = denoiser(x_t, t, query, candidates)  # (B, K), the x0 estimate
    else:
        out = denoiser(x_t, t, query, candidates, candidate_hubness=candidate_hubness)
    return F.cross_entropy(ce_scale * out, target)
