"""The fused DDIM loop (``Denoiser.ddim_sample_cached``): the same samples as ``ddim_sample`` over
the plain denoiser, whatever the batch, block size, read-out, clamp or context."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffatr.config import DenoiserConfig, DiffusionConfig
from diffatr.diffusion import DDIMScheduler, Denoiser, ddim_sample


def _setup(B=4, K=6, N=15, D=16, d=16, residual=True, context="none", seed=0, weight_scale=1.0):
    torch.manual_seed(seed)
    m = Denoiser(DenoiserConfig(embed_dim=D, width=d, residual=residual, context=context,
                                hubness_neighbours=3)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # larger weights push estimates past [-1, 1], so the clamp is exercised
        for p in m.parameters():
            p.mul_(weight_scale)
        m.decoder[2].bias.fill_(0.3)  # a read-out bias the fused loop keeps out of its steps
    if context == "shortlist+hubness":
        m.set_query_bank(F.normalize(torch.randn(12, D, generator=g), dim=-1))
    bank = F.normalize(torch.randn(N, D, generator=g), dim=-1)
    query = F.normalize(torch.randn(B, D, generator=g), dim=-1)
    ids = torch.stack([torch.randperm(N, generator=g)[:K] for _ in range(B)])  # (B, K)
    noise = torch.randn(B, K, generator=g)
    return m, bank, query, ids, noise


def _reference(m, bank, query, ids, noise, sched, steps):
    def fn(x_t, t):
        with torch.no_grad():
            return m(x_t, torch.full((x_t.shape[0],), t), query, bank[ids])

    return ddim_sample(fn, sched, noise, steps, return_trajectory=True)


@pytest.mark.parametrize(
    "B,K,N,D,d,residual,context,clip,steps,block,weight_scale",
    [
        (4, 6, 15, 16, 16, True, "none", True, 50, None, 1.0),
        (4, 6, 15, 16, 16, True, "none", True, 50, None, 4.0),
        (5, 4, 9, 24, 16, False, "none", True, 7, 2, 4.0),
        (3, 8, 40, 12, 8, True, "none", False, 10, 1, 2.0),
        (1, 1, 3, 16, 8, True, "none", True, 1, None, 1.0),
        (6, 5, 20, 16, 16, True, "shortlist", True, 13, 4, 3.0),
        (6, 5, 20, 16, 16, False, "shortlist+hubness", True, 50, None, 3.0),
        (40, 3, 8, 16, 16, True, "none", True, 20, 7, 3.0),  # B K > N: the whole-set key table
    ],
)
def test_the_fused_loop_equals_ddim_sample_over_the_plain_denoiser(B, K, N, D, d, residual, context, clip,
                                                                     steps, block, weight_scale):
    m, bank, query, ids, noise = _setup(B, K, N, D, d, residual, context, weight_scale=weight_scale)
    sched = DDIMScheduler(DiffusionConfig(clip_x0=clip))
    x0_ref, traj_ref = _reference(m, bank, query, ids, noise, sched, steps)
    cache, queries = m.precompute(bank), m.prepare_queries(query)
    x0, traj = m.ddim_sample_cached(sched, noise, queries, cache, ids, steps, return_trajectory=True, block_size=block)
    assert x0.shape == (B, K) and not x0.requires_grad and not x0.is_inference()
    tol = 1e-5 * weight_scale**3  # float32 rounding grows with the activations' size
    assert (x0 - x0_ref).abs().max() <= tol
    assert torch.equal(traj.timesteps, traj_ref.timesteps)
    assert (traj.x_t - traj_ref.x_t).abs().max() <= 10 * tol
    assert (traj.pred_x0 - traj_ref.pred_x0).abs().max() <= tol
    assert torch.equal(traj.x_t[-1], x0)
    assert torch.equal(m.ddim_sample_cached(sched, noise, queries, cache, ids, steps, block_size=block), x0)
    if weight_scale >= 3.0 and clip:  # the case meant to clamp did clamp
        assert (traj_ref.pred_x0.abs() == 1.0).any()


def test_a_query_gets_the_same_sample_alone_in_any_batch_or_block():
    # Equal up to float rounding (BLAS may sum in another order for another batch shape), and
    # ranked the same; bitwise equal when the batch is the same.
    m, bank, query, ids, noise = _setup(B=9, K=6, N=30, weight_scale=2.0)
    sched = DDIMScheduler(DiffusionConfig())
    cache, queries = m.precompute(bank), m.prepare_queries(query)
    batch = m.ddim_sample_cached(sched, noise, queries, cache, ids, 50)
    assert torch.equal(m.ddim_sample_cached(sched, noise, queries, cache, ids, 50), batch)
    order = batch.argsort(dim=1, descending=True, stable=True)
    for block in (1, 2, 4):
        again = m.ddim_sample_cached(sched, noise, queries, cache, ids, 50, block_size=block)
        assert (again - batch).abs().max() <= 1e-6
        assert torch.equal(again.argsort(dim=1, descending=True, stable=True), order)
    for i in (0, 5, 8):
        alone = m.ddim_sample_cached(sched, noise[i : i + 1], queries.select(slice(i, i + 1)), cache, ids[i : i + 1], 50)
        assert (alone[0] - batch[i]).abs().max() <= 1e-6


def test_the_fused_loop_follows_weight_changes_of_every_kind():
    # The weight-only products are memoised per denoiser: an in-place update, a load, a tensor
    # assigned in place of a weight, new ``.data`` and a dtype change must each be seen.
    m, bank, query, ids, noise = _setup(weight_scale=2.0)
    sched = DDIMScheduler(DiffusionConfig())
    g = torch.Generator().manual_seed(9)
    changes = [
        lambda: [p.add_(0.3 * torch.randn(p.shape, generator=g)) for p in m.parameters()],
        lambda: m.load_state_dict({k: v * 1.1 for k, v in m.state_dict().items()}),
        lambda: setattr(m.time_mlp[2], "weight", nn.Parameter(0.25 * torch.randn(16, 16, generator=g))),
        lambda: setattr(m.w_k, "weight", nn.Parameter(0.25 * torch.randn(16, 16, generator=g))),
        lambda: setattr(m.w_v.weight, "data", 0.25 * torch.randn(16, 16, generator=g)),  # no version bump
    ]
    for change in [None, *changes]:
        if change is not None:
            with torch.no_grad():
                change()
        x0_ref, _ = _reference(m, bank, query, ids, noise, sched, 10)
        x0 = m.ddim_sample_cached(sched, noise, m.prepare_queries(query), m.precompute(bank), ids, 10)
        assert (x0 - x0_ref).abs().max() <= 1e-5
    m64 = m.double()
    x0_ref, _ = _reference(m64, bank.double(), query.double(), ids, noise.double(), sched, 10)
    x0 = m64.ddim_sample_cached(sched, noise.double(), m64.prepare_queries(query.double()),
                                m64.precompute(bank.double()), ids, 10)
    assert x0.dtype == torch.float64 and (x0 - x0_ref).abs().max() <= 1e-10


def test_the_fused_loop_rejects_bad_input():
    m, bank, query, ids, noise = _setup()
    sched = DDIMScheduler(DiffusionConfig())
    cache, queries = m.precompute(bank), m.prepare_queries(query)
    with pytest.raises(ValueError, match="candidate_ids must lie in"):
        m.ddim_sample_cached(sched, noise, queries, cache, ids + 100, 5)
    with pytest.raises(ValueError, match="like x_t"):
        m.ddim_sample_cached(sched, noise, queries, cache, ids[:, :2], 5)
    with pytest.raises(ValueError, match="queries hold"):
        m.ddim_sample_cached(sched, noise, queries.select(slice(0, 2)), cache, ids, 5)
    with pytest.raises(ValueError, match="num_inference_steps"):
        m.ddim_sample_cached(sched, noise, queries, cache, ids, 0)


def test_the_automatic_block_size_changes_no_sample_trajectory_or_ranking(monkeypatch):
    # Left to itself, the loop measures its block size once per process (or reads it from the
    # L2 size); whatever it picks, and whatever a fixed size is, the result is the same.
    from diffatr.diffusion import factorised

    m, bank, query, ids, noise = _setup(B=37, K=6, N=30, weight_scale=2.0)
    sched = DDIMScheduler(DiffusionConfig())
    cache, queries = m.precompute(bank), m.prepare_queries(query)
    x0, traj = m.ddim_sample_cached(sched, noise, queries, cache, ids, 20, return_trajectory=True)
    chosen = factorised.calibrated_block_size(6, 16)
    assert chosen in (*factorised._BLOCK_SIZES_TRIED, factorised.l2_block_size(6, 16))
    order = x0.argsort(dim=1, descending=True, stable=True)
    for block in (1, 2, 5, 16, 37, chosen, factorised.l2_block_size(6, 16)):
        other, other_traj = m.ddim_sample_cached(sched, noise, queries, cache, ids, 20, return_trajectory=True,
                                                 block_size=block)
        assert (other - x0).abs().max() <= 1e-6
        assert (other_traj.x_t - traj.x_t).abs().max() <= 1e-6
        assert (other_traj.pred_x0 - traj.pred_x0).abs().max() <= 1e-6
        assert torch.equal(other.argsort(dim=1, descending=True, stable=True), order)
    # Another calibration outcome (another machine) gives the same samples too.
    key = (6, 16, torch.float32, torch.get_num_threads())
    monkeypatch.setitem(factorised._CALIBRATED, key, 3)
    assert (m.ddim_sample_cached(sched, noise, queries, cache, ids, 20) - x0).abs().max() <= 1e-6


def test_the_block_size_is_measured_once_per_process_and_never_for_one_query(monkeypatch):
    from diffatr.diffusion import factorised

    calls = []
    monkeypatch.setattr(factorised, "_CALIBRATED", {})
    monkeypatch.setattr(factorised, "_calibrate", lambda K, d, dtype: calls.append((K, d)) or 2)
    m, bank, query, ids, noise = _setup(B=5, K=4, N=12)
    sched = DDIMScheduler(DiffusionConfig())
    cache, queries = m.precompute(bank), m.prepare_queries(query)
    m.ddim_sample_cached(sched, noise[:1], queries.select(slice(0, 1)), cache, ids[:1], 5)  # one query: one block
    assert calls == []
    for _ in range(3):
        m.ddim_sample_cached(sched, noise, queries, cache, ids, 5)
    m.forward_cached(noise, 3, queries, cache, ids)
    assert calls == [(4, 16)]


def test_the_l2_rule_fills_three_quarters_of_the_core_and_has_a_fallback(monkeypatch):
    from diffatr.diffusion import factorised

    # K = 32, d = 512: 3 (K, 2d) floats = 384 KiB per query.
    assert factorised.l2_block_size(32, 512, l2_bytes=2 << 20) == 4  # Intel Xeon, 2 MiB L2
    assert factorised.l2_block_size(32, 512, l2_bytes=512 << 10) == 1  # AMD EPYC, 512 KiB L2
    assert factorised.l2_block_size(1000, 512, l2_bytes=512 << 10) == 1  # never 0
    monkeypatch.setattr(factorised, "l2_bytes_per_core", lambda: None)  # no sysfs
    assert factorised.l2_block_size(32, 512) == 2  # as if 1 MiB
