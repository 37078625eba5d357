"""The attention denoiser: docs/method.md maths, permutation equivariance, exact factorisation."""

import pytest
import torch

from diffatr.config import DenoiserConfig
from diffatr.diffusion.denoiser import Denoiser, timestep_embedding


def _model(D=16, d=16, residual=True, seed=0) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(DenoiserConfig(embed_dim=D, width=d, residual=residual)).eval()


def _inputs(B, K, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, K, generator=g),  # x_t
        torch.randint(0, 50, (B,), generator=g),  # t
        torch.randn(B, D, generator=g),  # query
        torch.randn(B, K, D, generator=g),  # candidates
    )


def _reference(m: Denoiser, x_t, t, query, candidates):
    """docs/method.md written out one query and one candidate at a time (slow, obvious)."""
    d = m.width
    P = m.in_proj
    W1 = m.decoder[0]
    W2 = m.decoder[2]
    outs = []
    for b in range(x_t.shape[0]):
        tau = m.time_mlp(timestep_embedding(t[b : b + 1], d))[0]
        q = P(query[b])
        Q = m.w_q.weight @ (q + tau)
        cs = [P(c) for c in candidates[b]]
        keys = [m.w_k.weight @ (c + tau) for c in cs]
        vals = [m.w_v.weight @ (c + tau) for c in cs]
        s = torch.stack([torch.dot(Q, k_) for k_ in keys]) + x_t[b]
        w = torch.exp(s - s.max()) / torch.exp(s - s.max()).sum()
        h = m.w_o.weight @ sum(w[k] * vals[k] for k in range(len(cs))) + m.w_o.bias
        row = []
        for k, c in enumerate(cs):
            z = torch.relu(W1.weight @ torch.cat([h, c]) + W1.bias)
            o = W2.weight[0] @ z + W2.bias[0]
            row.append(o + w[k] if m.config.residual else o)
        outs.append(torch.stack(row))
    return torch.stack(outs)


@pytest.mark.parametrize("D,d,residual", [(16, 16, True), (12, 16, False), (16, 8, True)])
def test_forward_matches_method_written_out(D, d, residual):
    m = _model(D, d, residual)
    x_t, t, q, c = _inputs(3, 5, D)
    with torch.no_grad():
        out = m(x_t, t, q, c)
        ref = _reference(m, x_t, t, q, c)
    assert out.shape == (3, 5)
    assert torch.allclose(out, ref, atol=1e-5)


def test_input_projection_only_when_widths_differ():
    assert isinstance(_model(16, 16).in_proj, torch.nn.Identity)
    proj = _model(24, 16).in_proj
    assert isinstance(proj, torch.nn.Linear) and proj.in_features == 24 and proj.out_features == 16
    m = _model(16, 16)
    for name in ("w_q", "w_k", "w_v"):
        assert getattr(m, name).bias is None  # bias-free maps, as in docs/method.md


# One tiny forward pass, every parameter set by formula (see below).
GOLDEN = torch.tensor([[0.485147, 0.267688, 0.540540]])


def test_golden_tiny_forward():
    # Update deliberately: every parameter set by formula, so this pins the maths exactly.
    m = Denoiser(DenoiserConfig(embed_dim=4, width=4, residual=True))
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(m.named_parameters())):
            p.copy_(0.3 * torch.sin(torch.arange(p.numel(), dtype=torch.float32) + i).view_as(p))
    x_t = torch.tensor([[0.5, -0.5, 0.0]])
    q = torch.tensor([[1.0, 0.0, -1.0, 0.5]])
    c = torch.tensor([[[1.0, 0.0, -1.0, 0.5], [0.0, 1.0, 0.0, 0.0], [-1.0, 0.5, 0.5, 0.0]]])
    with torch.no_grad():
        out = m(x_t, torch.tensor([7]), q, c)
        ref = _reference(m, x_t, torch.tensor([7]), q, c)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(out, GOLDEN, atol=1e-5)


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 3]), 7)
    assert emb.shape == (2, 7)
    assert torch.equal(emb[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]))
    assert torch.allclose(emb[1, 0], torch.sin(torch.tensor(3.0)))
    assert not torch.allclose(emb[0], emb[1])


def test_permuting_candidates_permutes_the_output():
    # No positional signal over candidates: the positive's fixed index leaks nothing.
    m = _model(16, 16)
    x_t, t, q, c = _inputs(4, 8, 16, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        out = m(x_t, t, q, c)
        for _ in range(5):
            perm = torch.randperm(8, generator=g)
            out_p = m(x_t[:, perm], t, q, c[:, perm])
            assert torch.allclose(out_p, out[:, perm], atol=1e-6)


def test_output_depends_on_every_input():
    m = _model(16, 16)
    x_t, t, q, c = _inputs(2, 6, 16, seed=3)
    with torch.no_grad():
        base = m(x_t, t, q, c)
        assert not torch.allclose(base, m(x_t + 1.0 * torch.eye(6)[:2], t, q, c))
        assert not torch.allclose(base, m(x_t, (t + 7) % 50, q, c))
        assert not torch.allclose(base, m(x_t, t, -q, c))
        assert not torch.allclose(base, m(x_t, t, q, c.flip(-1)))


def test_residual_switch_adds_the_attention_weights():
    on = _model(16, 16, residual=True)
    off = Denoiser(DenoiserConfig(embed_dim=16, width=16, residual=False))
    off.load_state_dict(on.state_dict())
    x_t, t, q, c = _inputs(3, 5, 16, seed=4)
    with torch.no_grad():
        diff = on(x_t, t, q, c) - off(x_t, t, q, c)
    assert bool((diff > 0).all())
    assert torch.allclose(diff.sum(-1), torch.ones(3), atol=1e-5)  # softmax weights


def test_gradients_reach_every_parameter():
    m = _model(12, 16).train()
    x_t, t, q, c = _inputs(2, 4, 12, seed=5)
    m(x_t, t, q, c).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_forward_rejects_bad_shapes():
    m = _model(16, 16)
    x_t, t, q, c = _inputs(2, 4, 16)
    with pytest.raises(ValueError, match="candidates"):
        m(x_t, t, q, c[:, :3])
    with pytest.raises(ValueError, match="query"):
        m(x_t, t, q[:, :8], c)
    with pytest.raises(ValueError, match="t must"):
        m(x_t, t[:1].repeat(3), q, c)


# ---------------------------------------------------------------- exact factorisation


@pytest.mark.parametrize(
    "B,K,N,D,d,residual,block",
    [
        (5, 8, 20, 16, 16, True, None),
        (5, 8, 20, 16, 16, False, 2),
        (7, 4, 9, 24, 16, True, 3),
        (3, 8, 8, 12, 16, False, None),
        (1, 1, 3, 16, 8, True, 1),
        (6, 6, 30, 16, 32, True, 4),
    ],
)
def test_forward_cached_equals_forward(B, K, N, D, d, residual, block):
    m = _model(D, d, residual, seed=B + K)
    g = torch.Generator().manual_seed(N)
    bank = torch.randn(N, D, generator=g)
    query = torch.randn(B, D, generator=g)
    ids = torch.stack([torch.randperm(N, generator=g)[:K] for _ in range(B)])  # (B, K)
    cache = m.precompute(bank)
    queries = m.prepare_queries(query)
    for t in (0, 13, 49):
        x_t = 2.0 * torch.randn(B, K, generator=g)
        with torch.no_grad():
            plain = m(x_t, torch.full((B,), t), query, bank[ids])
        cached = m.forward_cached(x_t, t, queries, cache, ids, block_size=block)
        assert cached.shape == (B, K)
        assert (plain - cached).abs().max().item() <= 1e-5


def test_forward_cached_with_repeated_ids_and_new_ids_each_call():
    # The step-independent logits are memoised on the QueryCache: a different candidate_ids
    # (or a different cache) must not reuse them.
    m = _model(16, 16)
    g = torch.Generator().manual_seed(6)
    bank = torch.randn(10, 16, generator=g)
    other_bank = torch.randn(10, 16, generator=g)
    query = torch.randn(3, 16, generator=g)
    queries = m.prepare_queries(query)
    x_t = torch.randn(3, 4, generator=g)
    for b, ids in [
        (bank, torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]])),
        (bank, torch.tensor([[0, 0, 2, 2], [4, 5, 6, 7], [8, 9, 0, 1]])),
        (other_bank, torch.tensor([[0, 0, 2, 2], [4, 5, 6, 7], [8, 9, 0, 1]])),
        (bank, torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]])),
    ]:
        cache = m.precompute(b)
        with torch.no_grad():
            plain = m(x_t, torch.full((3,), 20), query, b[ids])
        for _ in range(2):  # second call uses the memo
            cached = m.forward_cached(x_t, 20, queries, cache, ids)
            assert (plain - cached).abs().max().item() <= 1e-5


def test_forward_cached_follows_weight_changes_and_dtypes():
    # The per-timestep terms (Wq tau_t, W1h Wo Wv tau_t) are memoised per denoiser across
    # caches: a weight update (optimiser step, load) or another dtype must not reuse them.
    m = _model(16, 16)
    g = torch.Generator().manual_seed(8)
    bank, query = torch.randn(9, 16, generator=g), torch.randn(2, 16, generator=g)
    ids = torch.tensor([[0, 3, 5], [8, 1, 2]])
    x_t = torch.randn(2, 3, generator=g)
    for change in range(3):
        if change == 1:
            with torch.no_grad():  # an optimiser-like in-place update of every weight
                for p in m.parameters():
                    p.add_(0.3 * torch.randn(p.shape, generator=g))
        if change == 2:
            m.load_state_dict({k: v + 0.1 for k, v in m.state_dict().items()})
        with torch.no_grad():
            plain = m(x_t, torch.full((2,), 31), query, bank[ids])
        cached = m.forward_cached(x_t, 31, m.prepare_queries(query), m.precompute(bank), ids)
        assert (plain - cached).abs().max().item() <= 1e-5, change
    m64 = m.double()
    with torch.no_grad():
        plain = m64(x_t.double(), torch.full((2,), 31), query.double(), bank.double()[ids])
    cached = m64.forward_cached(x_t.double(), 31, m64.prepare_queries(query.double()),
                                m64.precompute(bank.double()), ids)
    assert cached.dtype == torch.float64 and (plain - cached).abs().max().item() <= 1e-10


def test_forward_cached_with_a_query_subset():
    m = _model(16, 16)
    g = torch.Generator().manual_seed(7)
    bank, query = torch.randn(12, 16, generator=g), torch.randn(6, 16, generator=g)
    ids = torch.randint(0, 12, (2, 5), generator=g)
    x_t = torch.randn(2, 5, generator=g)
    sub = m.prepare_queries(query).select(torch.tensor([4, 1]))
    with torch.no_grad():
        plain = m(x_t, torch.full((2,), 3), query[[4, 1]], bank[ids])
    assert (m.forward_cached(x_t, 3, sub, m.precompute(bank), ids) - plain).abs().max() <= 1e-5


def test_caches_carry_no_grad():
    m = _model(24, 16).train()
    cache = m.precompute(torch.randn(5, 24))
    queries = m.prepare_queries(torch.randn(2, 24))
    assert not cache.rows.requires_grad and not cache.keys.requires_grad
    assert not queries.q.requires_grad
    assert cache.rows.shape == (5, 64) and cache.keys.shape == (5, 16)


def test_forward_cached_rejects_bad_input():
    m = _model(16, 16)
    cache = m.precompute(torch.randn(6, 16))
    queries = m.prepare_queries(torch.randn(2, 16))
    x_t = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="candidate_ids must lie"):
        m.forward_cached(x_t, 0, queries, cache, torch.tensor([[0, 1, 6], [0, 1, 2]]))
    with pytest.raises(ValueError, match="candidate_ids must be"):
        m.forward_cached(x_t, 0, queries, cache, torch.tensor([[0, 1], [0, 1]]))
    with pytest.raises(ValueError, match="queries hold"):
        m.forward_cached(torch.zeros(3, 3), 0, queries, cache, torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="width"):
        _model(16, 8).forward_cached(x_t, 0, queries, cache, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        m.precompute(torch.randn(6, 8))


def test_forward_cached_with_weights_made_in_inference_mode():
    # inference tensors carry no version counter: the per-timestep memo must still work
    with torch.inference_mode():
        m = _model(16, 16)
        g = torch.Generator().manual_seed(9)
        bank, query = torch.randn(9, 16, generator=g), torch.randn(2, 16, generator=g)
        ids, x_t = torch.tensor([[0, 3, 5], [8, 1, 2]]), torch.randn(2, 3, generator=g)
        plain = m(x_t, torch.full((2,), 31), query, bank[ids])
        cached = m.forward_cached(x_t, 31, m.prepare_queries(query), m.precompute(bank), ids)
    assert (plain - cached).abs().max().item() <= 1e-5
