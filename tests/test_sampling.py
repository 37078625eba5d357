"""The DDIM sampling loop and its trajectory."""

import pytest
import torch

from diffatr.config import DenoiserConfig, DiffusionConfig
from diffatr.diffusion import DDIMScheduler, Denoiser, Trajectory, ddim_sample


def _tiny(seed=0):
    torch.manual_seed(seed)
    m = Denoiser(DenoiserConfig(embed_dim=16, width=16)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    bank = torch.randn(10, 16, generator=g)
    query = torch.randn(3, 16, generator=g)
    ids = torch.stack([torch.randperm(10, generator=g)[:6] for _ in range(3)])  # (3, 6)
    return m, bank, query, ids


def _plain_fn(m, bank, query, ids):
    def fn(x_t, t):
        with torch.no_grad():
            return m(x_t, torch.full((x_t.shape[0],), t), query, bank[ids])

    return fn


def _noise(seed, shape=(3, 6)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("steps", [1, 5, 50])
def test_trajectory_runs_from_the_noise_to_the_result(steps):
    m, bank, query, ids = _tiny()
    sched = DDIMScheduler(DiffusionConfig())
    noise = _noise(0)
    x0, traj = ddim_sample(_plain_fn(m, bank, query, ids), sched, noise, steps, return_trajectory=True)
    assert isinstance(traj, Trajectory)
    assert traj.x_t.shape == (steps + 1, 3, 6) and traj.pred_x0.shape == (steps, 3, 6)
    assert torch.equal(traj.timesteps, sched.timesteps) and traj.timesteps.shape == (steps,)
    assert torch.equal(traj.x_t[0], noise)
    assert torch.equal(traj.x_t[-1], x0)
    assert torch.equal(traj.pred_x0[-1], x0)  # the last step returns its x0 estimate
    assert traj.pred_x0.abs().max() <= 1.0  # clamped (clip_x0 is on by default)
    assert torch.equal(ddim_sample(_plain_fn(m, bank, query, ids), sched, noise, steps), x0)


def test_same_noise_same_result_and_different_noise_differs():
    m, bank, query, ids = _tiny()
    sched = DDIMScheduler(DiffusionConfig())
    fn = _plain_fn(m, bank, query, ids)
    a = ddim_sample(fn, sched, _noise(3), 10)
    b = ddim_sample(fn, sched, _noise(3), 10)
    c = ddim_sample(fn, sched, _noise(4), 10)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_the_loop_feeds_each_step_its_own_output():
    sched = DDIMScheduler(DiffusionConfig())
    calls = []

    def fn(x_t, t):
        assert isinstance(t, int)
        calls.append((t, x_t.clone()))
        return torch.tanh(x_t + 0.01 * t)

    noise = _noise(5, (2, 4))
    _, traj = ddim_sample(fn, sched, noise, 7, return_trajectory=True)
    assert [t for t, _ in calls] == sched.timesteps.tolist()
    for i, (_, x) in enumerate(calls):
        assert torch.equal(x, traj.x_t[i])


def test_cached_denoiser_gives_the_same_samples_as_the_plain_one():
    m, bank, query, ids = _tiny()
    sched = DDIMScheduler(DiffusionConfig())
    cache, queries = m.precompute(bank), m.prepare_queries(query)
    plain = ddim_sample(_plain_fn(m, bank, query, ids), sched, _noise(6), 50)
    cached = ddim_sample(lambda x, t: m.forward_cached(x, t, queries, cache, ids), sched, _noise(6), 50)
    assert (plain - cached).abs().max() <= 1e-5


def test_eta_positive_sampling_is_reproducible():
    m, bank, query, ids = _tiny()
    sched = DDIMScheduler(DiffusionConfig())
    fn = _plain_fn(m, bank, query, ids)
    runs = [
        ddim_sample(fn, sched, _noise(7), 10, eta=1.0, generator=torch.Generator().manual_seed(s))
        for s in (0, 0, 1)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    with pytest.raises(ValueError, match="generator"):
        ddim_sample(fn, sched, _noise(7), 10, eta=1.0)


def test_bad_arguments():
    sched = DDIMScheduler(DiffusionConfig())
    with pytest.raises(ValueError):
        ddim_sample(lambda x, t: x, sched, _noise(0), 0)
    with pytest.raises(ValueError):
        ddim_sample(lambda x, t: x, sched, torch.zeros(3), 5)
    with pytest.raises(ValueError, match="denoise_fn"):
        ddim_sample(lambda x, t: x[:, :2], sched, _noise(0), 5)
