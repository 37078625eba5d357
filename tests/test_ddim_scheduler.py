"""DDIM scheduler: timesteps, the forward process, the update rule, golden loops."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffatr.config import DiffusionConfig
from diffatr.diffusion.ddim import DDIMScheduler


def _sched(**kw) -> DDIMScheduler:
    return DDIMScheduler(DiffusionConfig(**kw))


def _loop(sched, model, x_T, steps, **step_kw):
    sched.set_timesteps(steps)
    x = x_T
    for t in sched.timesteps.tolist():
        x = sched.step(model(x, t), t, x, **step_kw).prev_sample
    return x


# ---------------------------------------------------------------- timesteps


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_set_timesteps_spacing(data):
    T = data.draw(st.integers(1, 200))
    S = data.draw(st.integers(1, T))
    sched = _sched(num_train_timesteps=T)
    sched.set_timesteps(S)
    ts = sched.timesteps
    assert ts.dtype == torch.int64 and ts.shape == (S,)
    assert ts[0].item() == T - 1
    assert bool((ts.diff() < 0).all())  # strictly descending, hence distinct
    if S > 1:
        assert ts[-1].item() == 0
        gaps = (-ts.diff()).tolist()
        assert max(gaps) - min(gaps) <= 1  # evenly spaced up to rounding


@pytest.mark.parametrize("bad", [0, -1, 51, 2.5, True, "10"])
def test_set_timesteps_bounds(bad):
    sched = _sched(num_train_timesteps=50)
    with pytest.raises(ValueError):
        sched.set_timesteps(bad)


def test_default_timesteps_are_all_T():
    sched = _sched(num_train_timesteps=50)
    assert sched.timesteps.tolist() == list(range(49, -1, -1))


def test_alphas_cumprod_monotone():
    for schedule in ("cosine", "linear"):
        abar = _sched(schedule=schedule).alphas_cumprod
        assert bool((abar.diff() < 0).all())
        assert 0 < abar[-1].item() < abar[0].item() < 1


# ---------------------------------------------------------------- add_noise


def test_add_noise_formula():
    sched = _sched()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 6, generator=g)
    eps = torch.randn(4, 6, generator=g)
    t = torch.tensor([0, 10, 30, 49])
    x_t = sched.add_noise(x0, eps, t)
    for i, ti in enumerate(t.tolist()):
        abar = sched.alphas_cumprod[ti].item()
        expected = math.sqrt(abar) * x0[i] + math.sqrt(1 - abar) * eps[i]
        assert torch.allclose(x_t[i], expected, atol=1e-6)
    assert x_t.dtype == torch.float32


def test_add_noise_rejects_bad_input():
    sched = _sched(num_train_timesteps=50)
    x0 = torch.zeros(2, 3)
    with pytest.raises(ValueError):
        sched.add_noise(x0, torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        sched.add_noise(x0, x0, torch.tensor([0, 50]))
    with pytest.raises(ValueError):
        sched.add_noise(x0, x0, torch.tensor([0]))


# ---------------------------------------------------------------- golden loops


@pytest.mark.parametrize("steps", [1, 2, 7, 50])
def test_full_loop_ends_exactly_at_a_constant_prediction(steps):
    target = torch.tensor([[0.25, -0.5, 1.0, 0.0], [-1.0, 0.75, 0.1, -0.3]])
    x_T = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
    out = _loop(_sched(), lambda x, t: target.clone(), x_T, steps)
    assert torch.equal(out, target)


def test_full_loop_clamps_to_the_data_range():
    raw = torch.tensor([[3.0, -2.0, 0.5, -0.25]])
    x_T = torch.randn(1, 4, generator=torch.Generator().manual_seed(2))
    clamped = _loop(_sched(clip_x0=True), lambda x, t: raw.clone(), x_T, 10)
    assert torch.equal(clamped, torch.tensor([[1.0, -1.0, 0.5, -0.25]]))
    unclamped = _loop(_sched(clip_x0=False), lambda x, t: raw.clone(), x_T, 10)
    assert torch.equal(unclamped, raw)


def test_two_step_example_by_hand():
    # T = 3, linear betas [0.1, 0.3, 0.5] -> alpha_bar = [0.9, 0.63, 0.315]; S = 2 -> t = 2, 0.
    # Step t=2 (x = 0.5, pred 0.2): eps = (0.5 - sqrt(0.315)*0.2) / sqrt(0.685) = 0.46849702,
    #   x_0 = sqrt(0.9)*0.2 + sqrt(0.1)*eps = 0.33788843.
    # Step t=2 (x = -1, pred 1.7 -> clamped 1): eps = (-1 - sqrt(0.315)) / sqrt(0.685) = -1.88636955,
    #   x_0 = sqrt(0.9)*1 + sqrt(0.1)*eps = 0.35216087.
    # Step t=0 returns the (clamped) prediction, here -0.4.
    sched = _sched(schedule="linear", num_train_timesteps=3, beta_start=0.1, beta_end=0.5)
    assert torch.allclose(sched.alphas_cumprod, torch.tensor([0.9, 0.63, 0.315], dtype=torch.float64))
    seen = []

    def model(x, t):
        seen.append((t, x.clone()))
        return torch.tensor([[0.2, 1.7]]) if t == 2 else torch.tensor([[-0.4, -0.4]])

    out = _loop(sched, model, torch.tensor([[0.5, -1.0]]), 2)
    assert [t for t, _ in seen] == [2, 0]
    assert torch.allclose(seen[1][1], torch.tensor([[0.33788843, 0.35216087]]), atol=1e-6)
    assert torch.equal(out, torch.tensor([[-0.4, -0.4]]))


def test_deterministic_ddim_follows_the_forward_process_for_a_perfect_model():
    # With eta = 0 and a model that always returns the true x0, eps is conserved, so every
    # x_{t_prev} is exactly add_noise(x0, eps, t_prev).
    sched = _sched(clip_x0=False)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 5, generator=g)
    eps = torch.randn(3, 5, generator=g)
    sched.set_timesteps(8)
    ts = sched.timesteps.tolist()
    x = sched.add_noise(x0, eps, torch.full((3,), ts[0]))
    for i, t in enumerate(ts):
        x = sched.step(x0, t, x).prev_sample
        t_prev = ts[i + 1] if i + 1 < len(ts) else None
        expected = x0 if t_prev is None else sched.add_noise(x0, eps, torch.full((3,), t_prev))
        assert torch.allclose(x, expected, atol=1e-5)


# ---------------------------------------------------------------- eta and errors


def _noisy_model(x, t):
    return torch.tanh(x + 0.1 * t)


def test_eta_positive_is_reproducible_with_the_same_seed():
    x_T = torch.randn(2, 6, generator=torch.Generator().manual_seed(4))
    runs = [
        _loop(_sched(), _noisy_model, x_T, 10, eta=1.0, generator=torch.Generator().manual_seed(seed))
        for seed in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    deterministic = _loop(_sched(), _noisy_model, x_T, 10)
    assert not torch.equal(runs[0], deterministic)


def test_eta_zero_ignores_the_generator():
    x_T = torch.randn(2, 6, generator=torch.Generator().manual_seed(5))
    a = _loop(_sched(), _noisy_model, x_T, 10)
    b = _loop(_sched(), _noisy_model, x_T, 10, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_eta_positive_needs_a_generator():
    sched = _sched()
    x = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="generator"):
        sched.step(x, 49, x, eta=0.5)


def test_step_rejects_timesteps_outside_the_schedule():
    sched = _sched()
    sched.set_timesteps(10)
    x = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="set_timesteps"):
        sched.step(x, 48, x)  # 48 is not one of round(linspace(49, 0, 10))
    with pytest.raises(ValueError):
        sched.step(x, 50, x)
    with pytest.raises(ValueError):
        sched.step(torch.zeros(1, 4), 49, x)


def test_step_returns_the_clamped_estimate():
    sched = _sched()
    out = sched.step(torch.tensor([[2.0, -3.0, 0.5]]), 49, torch.zeros(1, 3))
    assert torch.equal(out.pred_x0, torch.tensor([[1.0, -1.0, 0.5]]))
    assert _sched(clip_x0=False).step(torch.tensor([[2.0]]), 49, torch.zeros(1, 1)).pred_x0.item() == 2.0


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_deterministic_coefficients_are_the_eta_zero_step(data):
    T = data.draw(st.integers(1, 120))
    S = data.draw(st.integers(1, T))
    sched = _sched(num_train_timesteps=T, schedule=data.draw(st.sampled_from(["cosine", "linear"])))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    for steps in (S, T, S):  # a second schedule in between: the memo must follow the steps
        sched.set_timesteps(steps)
        plan = sched.deterministic_coefficients()
        assert [t for t, _, _ in plan] == sched.timesteps.tolist()
        a_last, b_last = plan[-1][1:]
        assert (a_last, b_last) == (1.0, 0.0)  # the last step returns the estimate itself
        for t, a, b in plan:
            x_t, x0 = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.rand(3, 5, generator=g, dtype=torch.float64) * 2 - 1
            expected = sched.step(x0, t, x_t).prev_sample
            assert torch.allclose(a * x0 + b * x_t, expected, rtol=1e-9, atol=1e-9)


def test_set_timesteps_again_with_the_same_steps_keeps_the_schedule():
    sched = _sched(num_train_timesteps=50)
    sched.set_timesteps(7)
    first = sched.timesteps.clone()
    sched.set_timesteps(7)
    assert torch.equal(sched.timesteps, first) and sched.previous_timestep(int(first[0])) == int(first[1])
    sched.set_timesteps(3)
    assert sched.timesteps.tolist() == [49, 24, 0] and sched.previous_timestep(49) == 24
