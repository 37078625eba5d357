"""diffatr.retrieval.fusion: scorers and fusion rules, against hand-made cases and properties."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffatr.retrieval.fusion import (
    cosine,
    dual_softmax,
    ensemble,
    fuse,
    gen_rank_scores,
    inverted_softmax,
    qb_norm,
)


def test_inverted_softmax_demotes_a_hub():
    # candidate 0 is close to every query (a hub); query 1's own match is candidate 1
    scores = torch.tensor([[0.9, 0.1, 0.0],
                           [0.8, 0.7, 0.0],
                           [0.85, 0.0, 0.6]])
    assert scores[1].argmax() == 0 and scores[2].argmax() == 0
    normed = inverted_softmax(scores, temperature=0.1)
    assert normed[1].argmax() == 1 and normed[2].argmax() == 2 and normed[0].argmax() == 0
    expected = torch.log(torch.softmax(scores / 0.1, dim=0))
    torch.testing.assert_close(normed, expected)


def test_dual_softmax_and_qb_norm_by_definition():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(5, 7, generator=g)
    torch.testing.assert_close(dual_softmax(scores, 0.5), scores * torch.softmax(scores / 0.5, dim=0))
    # a bank equal to the queries themselves gives the inverted softmax, on the cosine scale
    torch.testing.assert_close(qb_norm(scores, scores, beta=4.0), inverted_softmax(scores, 0.25) / 4.0)
    bank = torch.rand(11, 7, generator=g)
    manual = scores - torch.log(torch.exp(4.0 * bank).sum(dim=0, keepdim=True)) / 4.0
    torch.testing.assert_close(qb_norm(scores, bank, beta=4.0), manual)
    # one query at a time gives the same rows as the batch (the bank, not the batch, normalises)
    torch.testing.assert_close(qb_norm(scores[2:3], bank, 4.0), qb_norm(scores, bank, 4.0)[2:3])


def test_cosine_and_ensemble():
    q, c = torch.eye(2), torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    torch.testing.assert_close(cosine(q, c), torch.tensor([[1.0, 0.6], [0.0, 0.8]]))
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    torch.testing.assert_close(ensemble([a, b]), torch.full((2, 3), 0.5))
    torch.testing.assert_close(ensemble([b]), b)
    with pytest.raises(ValueError):
        ensemble([])


def test_paper_fusion_is_cosine_plus_softmax():
    top = torch.tensor([[0.5, 0.4, 0.1]])
    x0 = torch.tensor([[0.0, 1.0, -1.0]])
    fused, diffusion = fuse(top, x0, rule="paper", alpha=2.0, temperature=0.5)
    torch.testing.assert_close(diffusion, torch.softmax(x0 / 0.5, dim=-1))
    torch.testing.assert_close(fused, top + 2.0 * diffusion)
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse(top, x0, rule="magic", alpha=1.0, temperature=1.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.floats(0.01, 100.0), st.floats(-5.0, 5.0), st.integers(0, 2**16))
def test_zscore_fusion_ignores_the_scale_of_x0(k, scale, shift, seed):
    g = torch.Generator().manual_seed(seed)
    top = torch.rand(3, k, generator=g, dtype=torch.float64)
    x0 = torch.randn(3, k, generator=g, dtype=torch.float64)
    fused, _ = fuse(top, x0, rule="zscore", alpha=1.0, temperature=1.0)
    again, _ = fuse(top, scale * x0 + shift, rule="zscore", alpha=1.0, temperature=1.0)
    torch.testing.assert_close(fused, again)
    # alpha = 1: the diffusion term spans as much as the query's cosines do
    term = fused - top
    torch.testing.assert_close(term.std(dim=-1, unbiased=False), top.std(dim=-1, unbiased=False))
    # a flat x0 adds nothing
    flat, _ = fuse(top, torch.zeros_like(x0), rule="zscore", alpha=1.0, temperature=1.0)
    torch.testing.assert_close(flat, top)


def test_gen_rank_scores_order_the_top_k_by_diffusion_and_keep_the_rest():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    top_indices = torch.tensor([[0, 1, 2]])  # the cosine top 3
    diffusion = torch.tensor([[0.2, 0.5, 0.2]])  # candidate 1 first; 0 and 2 tie -> cosine order
    out = gen_rank_scores(scores, top_indices, diffusion)
    order = out[0].argsort(descending=True).tolist()
    assert order == [1, 0, 2, 3]
    assert out[0, 3] == scores[0, 3] and bool((out[0, :3] > 2).all())
