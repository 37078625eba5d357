"""Noise schedules: the cosine and linear betas and alpha_bar."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffatr.config import DiffusionConfig
from diffatr.diffusion.noise_schedule import alphas_cumprod_from_betas, make_betas


def _cosine_f(u: float, s: float = 0.008) -> float:
    return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def test_cosine_alpha_bar_follows_nichol_dhariwal():
    # Until the 0.999 clip bites, alpha_bar_t = f((t+1)/T) / f(0) (Nichol & Dhariwal, eq. 17).
    T = 50
    betas = make_betas(DiffusionConfig(schedule="cosine", num_train_timesteps=T))
    abar = alphas_cumprod_from_betas(betas)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    for t in range(T - 1):
        assert abar[t].item() == pytest.approx(_cosine_f((t + 1) / T) / _cosine_f(0.0), rel=1e-10)


def test_cosine_last_beta_is_clipped_at_max_beta():
    # f(1) = cos^2(pi/2) = 0, so the raw last beta is 1: the clip must hold it at max_beta.
    betas = make_betas(DiffusionConfig(schedule="cosine", num_train_timesteps=50))
    assert betas[-1].item() == pytest.approx(0.999)
    assert betas.max().item() <= 0.999
    betas = make_betas(DiffusionConfig(schedule="cosine", num_train_timesteps=50, max_beta=0.5))
    assert betas.max().item() == pytest.approx(0.5)


def test_linear_schedule_endpoints():
    cfg = DiffusionConfig(schedule="linear", num_train_timesteps=11, beta_start=1e-3, beta_end=2e-2)
    betas = make_betas(cfg)
    assert betas.shape == (11,)
    assert betas[0].item() == pytest.approx(1e-3)
    assert betas[-1].item() == pytest.approx(2e-2)
    assert torch.allclose(betas.diff(), torch.full((10,), 1.9e-3, dtype=torch.float64))


def test_unknown_schedule_lists_the_choices():
    with pytest.raises(ValueError, match="cosine.*linear"):
        make_betas(DiffusionConfig(schedule="sigmoid"))


@pytest.mark.parametrize(
    "cfg",
    [
        DiffusionConfig(num_train_timesteps=0),
        DiffusionConfig(max_beta=1.0),
        DiffusionConfig(schedule="linear", beta_start=0.1, beta_end=0.01),
    ],
)
def test_bad_numbers_raise(cfg):
    with pytest.raises(ValueError):
        make_betas(cfg)


def test_alphas_cumprod_rejects_bad_betas():
    with pytest.raises(ValueError):
        alphas_cumprod_from_betas(torch.tensor([0.1, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        alphas_cumprod_from_betas(torch.zeros(0, dtype=torch.float64))


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 1000), schedule=st.sampled_from(["cosine", "linear"]))
def test_alpha_bar_strictly_decreasing_in_unit_interval(T, schedule):
    abar = alphas_cumprod_from_betas(make_betas(DiffusionConfig(schedule=schedule, num_train_timesteps=T)))
    assert abar.shape == (T,)
    assert bool((abar > 0).all()) and bool((abar < 1).all())
    assert bool((abar.diff() < 0).all())
