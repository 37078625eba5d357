"""The generation loss: its value by hand, its KL reading, and that it trains."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffatr.config import DenoiserConfig, DiffusionConfig
from diffatr.diffusion import DDIMScheduler, Denoiser, generation_loss


def _setup(B=4, K=5, D=16, seed=0):
    torch.manual_seed(seed)
    m = Denoiser(DenoiserConfig(embed_dim=D, width=16))
    g = torch.Generator().manual_seed(seed + 100)
    return m, DDIMScheduler(DiffusionConfig()), torch.randn(B, D, generator=g), torch.randn(B, K, D, generator=g)


@pytest.mark.parametrize("positive_index", [0, 3, torch.tensor([1, 0, 4, 2])])
def test_loss_matches_a_hand_computation(positive_index):
    m, sched, q, c = _setup()
    B, K = 4, 5
    loss = generation_loss(m, sched, q, c, generator=torch.Generator().manual_seed(42), positive_index=positive_index)

    # Same draws, in the documented order: t, then eps.
    g = torch.Generator().manual_seed(42)
    t = torch.randint(0, 50, (B,), generator=g)
    eps = torch.randn(B, K, generator=g)
    pos = torch.as_tensor(positive_index).expand(B)
    total = 0.0
    for b in range(B):
        abar = sched.alphas_cumprod[t[b]].item()
        x0 = torch.zeros(K)
        x0[pos[b]] = 1.0
        x_t = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps[b]
        with torch.no_grad():
            out = m(x_t[None], t[b : b + 1], q[b : b + 1], c[b : b + 1])[0]
        z = 100.0 * out
        total += -(z[pos[b]] - torch.logsumexp(z, 0)).item()
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(total / B, rel=1e-5)


def test_loss_is_the_kl_to_the_one_hot_target():
    m, sched, q, c = _setup()
    loss = generation_loss(m, sched, q, c, generator=torch.Generator().manual_seed(1), ce_scale=3.0)
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 50, (4,), generator=g)
    x_t = sched.add_noise(F.one_hot(torch.zeros(4, dtype=torch.long), 5).float(), torch.randn(4, 5, generator=g), t)
    with torch.no_grad():
        log_p = F.log_softmax(3.0 * m(x_t, t, q, c), dim=-1)
    target = F.one_hot(torch.zeros(4, dtype=torch.long), 5).float()
    kl = F.kl_div(log_p, target, reduction="batchmean")  # KL(target || p)
    assert loss.item() == pytest.approx(kl.item(), rel=1e-5)


def test_same_generator_seed_gives_the_same_loss():
    m, sched, q, c = _setup()
    a = generation_loss(m, sched, q, c, generator=torch.Generator().manual_seed(5))
    b = generation_loss(m, sched, q, c, generator=torch.Generator().manual_seed(5))
    other = generation_loss(m, sched, q, c, generator=torch.Generator().manual_seed(6))
    assert a.item() == b.item()
    assert a.item() != other.item()


def test_tiny_denoiser_overfits_a_toy_problem():
    # Each query's positive is a noisy copy of it, at a different index per query: the loss
    # can only fall if the one-hot target, the noise and the output agree on the index.
    torch.manual_seed(0)
    B, K, D = 8, 4, 16
    m = Denoiser(DenoiserConfig(embed_dim=D, width=16))
    sched = DDIMScheduler(DiffusionConfig())
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, D, generator=g)
    c = torch.randn(B, K, D, generator=g)
    pos = torch.arange(B) % K
    c[torch.arange(B), pos] = q + 0.1 * torch.randn(B, D, generator=g)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        loss = generation_loss(m, sched, q, c, generator=g, positive_index=pos)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.1 * first, (first, last)


def test_loss_needs_a_generator_and_valid_shapes():
    m, sched, q, c = _setup()
    with pytest.raises(ValueError, match="generator"):
        generation_loss(m, sched, q, c)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="positive_index"):
        generation_loss(m, sched, q, c, generator=g, positive_index=5)
    with pytest.raises(ValueError):
        generation_loss(m, sched, q[:3], c, generator=g)
