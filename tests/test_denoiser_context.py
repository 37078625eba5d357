"""The denoiser's shortlist context (config.denoiser.context): the maths written out, the
factorised path, the query bank's round trip, and hubness with a candidate's own sound left out."""

import pytest
import torch
import torch.nn.functional as F

from diffatr.config import ConfigError, DenoiserConfig
from diffatr.diffusion.denoiser import Denoiser, hubness, timestep_embedding


def _model(context, D=16, d=16, seed=0, bank_size=12) -> Denoiser:
    torch.manual_seed(seed)
    m = Denoiser(DenoiserConfig(embed_dim=D, width=d, context=context, hubness_neighbours=3)).eval()
    if context == "shortlist+hubness":
        g = torch.Generator().manual_seed(seed + 100)
        m.set_query_bank(F.normalize(torch.randn(bank_size, D, generator=g), dim=-1))
    return m


def _inputs(B, K, N, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    table = F.normalize(torch.randn(N, D, generator=g), dim=-1)
    query = F.normalize(torch.randn(B, D, generator=g), dim=-1)
    ids = torch.stack([torch.randperm(N, generator=g)[:K] for _ in range(B)])
    return 2.0 * torch.randn(B, K, generator=g), torch.randint(0, 50, (B,), generator=g), query, table, ids


def _reference(m: Denoiser, x_t, t, query, candidates):
    """docs/method.md's denoiser with the shortlist context, one query and candidate at a time."""
    d, m_hub = m.width, m.config.hubness_neighbours
    outs = []
    for b in range(x_t.shape[0]):
        cs = list(candidates[b])
        feats = []
        for k, c in enumerate(cs):
            others = [torch.dot(c, o) for j, o in enumerate(cs) if j != k]
            f = [torch.dot(query[b], c), sum(others) / len(others), max(others)]
            if m.config.context == "shortlist+hubness":
                sims = sorted((torch.dot(c, q) for q in m.query_bank), reverse=True)[:m_hub]
                f.append(sum(sims) / len(sims))
            feats.append(torch.stack(f))
        tau = m.time_mlp(timestep_embedding(t[b : b + 1], d))[0]
        Q = m.w_q.weight @ (query[b] + tau)
        s = torch.stack([torch.dot(Q, m.w_k.weight @ (c + tau)) + m.context_logit.weight[0] @ f
                         for c, f in zip(cs, feats)]) + x_t[b]
        w = torch.softmax(s, dim=0)
        h = m.w_o.weight @ sum(w[k] * (m.w_v.weight @ (c + tau)) for k, c in enumerate(cs)) + m.w_o.bias
        row = []
        for k, (c, f) in enumerate(zip(cs, feats)):
            z = torch.relu(m.decoder[0].weight @ torch.cat([h, c]) + m.decoder[0].bias + m.context_proj.weight @ f)
            row.append(m.decoder[2].weight[0] @ z + m.decoder[2].bias[0] + w[k])
        outs.append(torch.stack(row))
    return torch.stack(outs)


@pytest.mark.parametrize("context", ["shortlist", "shortlist+hubness"])
def test_context_forward_matches_the_maths_and_the_factorised_path(context):
    m = _model(context)
    x_t, t, query, table, ids = _inputs(3, 5, 20, 16)
    with torch.no_grad():
        out = m(x_t, t, query, table[ids])
        assert torch.allclose(out, _reference(m, x_t, t, query, table[ids]), atol=1e-5)
        cache, queries = m.precompute(table), m.prepare_queries(query)
        for step in (0, 13, 49):  # the memoised context terms are reused across steps
            plain = m(x_t / (step + 1), torch.full((3,), step), query, table[ids])
            assert (plain - m.forward_cached(x_t / (step + 1), step, queries, cache, ids, block_size=2)).abs().max() < 1e-5
        # the context is an input: off (the paper) gives another function of the same weights
        state = {k: v for k, v in m.state_dict().items() if not k.startswith(("context_", "query_bank"))}
        paper = Denoiser(DenoiserConfig(embed_dim=16, width=16)).eval()
        paper.load_state_dict(state)
        assert not torch.allclose(paper(x_t, t, query, table[ids]), out, atol=1e-3)


def test_context_keeps_permutation_equivariance():
    m = _model("shortlist+hubness")
    x_t, t, query, table, ids = _inputs(4, 8, 30, 16, seed=1)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = m(x_t, t, query, table[ids])
        assert torch.allclose(m(x_t[:, perm], t, query, table[ids][:, perm]), out[:, perm], atol=1e-6)


def test_the_paper_denoiser_has_no_context_parameters():
    names = set(Denoiser(DenoiserConfig(embed_dim=8, width=8)).state_dict())
    assert not any(n.startswith(("context_", "query_bank")) for n in names)
    assert {"context_logit.weight", "context_proj.weight"} <= set(_model("shortlist").state_dict())
    with pytest.raises(ConfigError, match="context"):
        DenoiserConfig(context="hubs")
    with pytest.raises(ValueError, match="no query bank"):
        _model("shortlist").set_query_bank(torch.randn(3, 16))


def test_query_bank_round_trips_whatever_its_size():
    m = _model("shortlist+hubness", bank_size=7)
    fresh = Denoiser(DenoiserConfig(embed_dim=16, width=16, context="shortlist+hubness", hubness_neighbours=3))
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.query_bank, m.query_bank) and fresh.query_bank.shape == (7, 16)
    x_t, t, query, table, ids = _inputs(2, 4, 10, 16)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x_t, t, query, table[ids]), m(x_t, t, query, table[ids]))
    empty = Denoiser(DenoiserConfig(embed_dim=16, width=16, context="shortlist+hubness"))
    with pytest.raises(ValueError, match="query bank is empty"):
        empty(x_t, t, query, table[ids])


def test_hubness_is_the_mean_of_the_top_cosines_with_exclusions():
    g = torch.Generator().manual_seed(0)
    cands, bank = F.normalize(torch.randn(6, 8, generator=g), dim=-1), F.normalize(torch.randn(9, 8, generator=g), dim=-1)
    exclude = torch.rand(6, 9, generator=g) < 0.4
    got = hubness(cands, bank, 3, exclude=exclude)
    for i in range(6):
        allowed = sorted((float(cands[i] @ bank[j]) for j in range(9) if not exclude[i, j]), reverse=True)
        assert got[i].item() == pytest.approx(sum(allowed[:3]) / 3, abs=1e-6)
    assert torch.allclose(hubness(cands, bank, 100), (cands @ bank.T).mean(dim=1), atol=1e-6)
