"""The exact first stage (diffatr.retrieval.topk): cosine top-K against a slow reference, ties
broken by index, chunking, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from diffatr.retrieval.topk import SearchError, cosine_topk, stable_topk

D = 16


def unit(n, seed, d=D):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def reference_topk(scores, k):
    """Slow reference: sort by (-score, index)."""
    out_v, out_i = [], []
    for row in scores.tolist():
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        out_i.append(order)
        out_v.append([row[j] for j in order])
    return torch.tensor(out_v), torch.tensor(out_i)


@pytest.mark.parametrize("max_elements", [1, 37, 1 << 24])
def test_cosine_topk_matches_brute_force_in_any_chunking(max_elements):
    q, c = unit(13, 1), unit(150, 2)
    scores, indices = cosine_topk(q, c, 10, max_elements=max_elements)
    ref_v, ref_i = reference_topk(q @ c.T, 10)
    assert torch.equal(indices, ref_i)
    assert torch.allclose(scores, ref_v, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=6, max_size=6), min_size=1, max_size=4),
       st.integers(1, 6))
def test_stable_topk_breaks_ties_by_index(rows, k):
    scores = torch.tensor(rows, dtype=torch.float32)  # few distinct values: many ties
    values, indices = stable_topk(scores, k)
    ref_v, ref_i = reference_topk(scores, k)
    assert torch.equal(indices, ref_i)
    assert torch.equal(values, ref_v)


def test_cosine_topk_ties_from_duplicate_candidates():
    base = unit(4, 3)
    c = torch.cat([base, base, base])  # rows j, j+4, j+8 are identical: exact ties
    scores, indices = cosine_topk(base[:1], c, 5)
    assert indices[0, :3].tolist() == [0, 4, 8]
    assert scores[0, 0] == scores[0, 1] == scores[0, 2]


def test_cosine_topk_clamps_k_and_rejects_bad_input():
    q, c = unit(2, 4), unit(3, 5)
    scores, indices = cosine_topk(q, c, 100)
    assert indices.shape == (2, 3) and sorted(indices[0].tolist()) == [0, 1, 2]
    with pytest.raises(SearchError, match="NaN"):
        cosine_topk(q, torch.cat([c, torch.full((1, D), float("nan"))]), 2)
    with pytest.raises(SearchError, match="width"):
        cosine_topk(q, unit(3, 5, d=8), 2)
    with pytest.raises(SearchError, match="empty"):
        cosine_topk(q, c[:0], 2)
