"""Tests for diffatr.metrics: hand examples, properties, a slow reference, torchmetrics."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffatr.metrics import (
    MetricsError,
    audio_to_text_ranks,
    retrieval_metrics,
    text_to_audio_ranks,
)

DIRECTIONS = ("text_to_audio", "audio_to_text")
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)


# ----------------------------------------------------------------------------- fixtures


def make_problem(seed: int, num_clips: int, max_captions: int, tied: bool, separate_a2t: bool = True):
    """A random retrieval problem: (scores_t2a (Q, N), scores_a2t (N, Q), caption_to_clip (Q,)).

    Each clip gets 1..max_captions captions, in shuffled caption order. With ``tied`` the
    scores take only 3 values, so ties are everywhere; otherwise they are continuous (ties
    have probability 0).
    """
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, max_captions + 1, size=num_clips)
    caption_to_clip = rng.permutation(np.repeat(np.arange(num_clips), counts))
    num_captions = caption_to_clip.shape[0]

    def draw(shape):
        if tied:
            return rng.integers(0, 3, size=shape).astype(np.float64)
        return rng.standard_normal(shape)

    scores_t2a = draw((num_captions, num_clips))
    scores_a2t = draw((num_clips, num_captions)) if separate_a2t else scores_t2a.T.copy()
    return torch.from_numpy(scores_t2a), torch.from_numpy(scores_a2t), torch.from_numpy(caption_to_clip)


problems = st.builds(
    make_problem,
    seed=st.integers(0, 2**32 - 1),
    num_clips=st.integers(1, 12),
    max_captions=st.integers(1, 5),
    tied=st.booleans(),
    separate_a2t=st.booleans(),
)
continuous_problems = st.builds(
    make_problem,
    seed=st.integers(0, 2**32 - 1),
    num_clips=st.integers(1, 12),
    max_captions=st.integers(1, 5),
    tied=st.just(False),
)


def reference_metrics(scores_t2a, scores_a2t, caption_to_clip, ks=(1, 5, 10), ties="pessimistic"):
    """The protocol in plain Python loops: a full sort per query, the tie rule as a sort key."""
    s_t2a = scores_t2a.tolist()
    s_a2t = scores_a2t.tolist()
    labels = [int(c) for c in caption_to_clip]
    num_clips, num_captions = len(s_a2t), len(labels)

    def ranking(row, relevant):
        if ties == "pessimistic":  # equal scores: non-relevant first, then by index
            return sorted(range(len(row)), key=lambda j: (-row[j], j in relevant, j))
        return sorted(range(len(row)), key=lambda j: (-row[j], j))

    def summary(ranks):
        out = {f"R@{k}": 100.0 * sum(r < k for r in ranks) / len(ranks) for k in ks}
        out["median_rank"] = math.floor(statistics.median(ranks)) + 1
        out["mean_rank"] = sum(ranks) / len(ranks) + 1
        return out

    t2a_ranks = []
    for q in range(num_captions):
        t2a_ranks.append(ranking(s_t2a[q], {labels[q]}).index(labels[q]))
    t2a = summary(t2a_ranks)
    t2a["mAP@10"] = 100.0 * sum(1 / (r + 1) if r < 10 else 0.0 for r in t2a_ranks) / num_captions

    best_ranks, aps = [], []
    for i in range(num_clips):
        relevant = {m for m in range(num_captions) if labels[m] == i}
        order = ranking(s_a2t[i], relevant)
        positions = sorted(order.index(m) + 1 for m in relevant)
        best_ranks.append(positions[0] - 1)
        in_top = [p for p in positions if p <= 10]
        aps.append(sum((j + 1) / p for j, p in enumerate(in_top)) / min(len(relevant), 10))
    a2t = summary(best_ranks)
    a2t["mAP@10"] = 100.0 * sum(aps) / num_clips

    out = {f"text_to_audio/{k}": v for k, v in t2a.items()}
    out.update({f"audio_to_text/{k}": v for k, v in a2t.items()})
    out["num_clips"], out["num_captions"] = num_clips, num_captions
    return out


def assert_metrics_equal(actual, expected):
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=1e-9), key


# ----------------------------------------------------------------------------- hand examples


def test_keys_and_types():
    scores_t2a, scores_a2t, labels = make_problem(0, num_clips=4, max_captions=5, tied=False)
    metrics = retrieval_metrics(scores_t2a, scores_a2t, labels)
    expected = [
        f"{d}/{m}" for d in DIRECTIONS for m in ("R@1", "R@5", "R@10", "mAP@10", "median_rank", "mean_rank")
    ]
    assert list(metrics) == expected + ["num_clips", "num_captions"]
    assert all(type(metrics[k]) is float for k in expected)
    assert metrics["num_clips"] == 4 and metrics["num_captions"] == labels.shape[0]
    assert type(metrics["num_clips"]) is int and type(metrics["num_captions"]) is int


def test_text_to_audio_hand_example():
    # 12 captions of clips 0..11 against the 12 clips; own-clip ranks 0, 1, 9, 10, then 11 x 8.
    wanted = [0, 1, 9, 10] + [11] * 8
    scores = torch.zeros(12, 12)
    for q, rank in enumerate(wanted):
        scores[q] = torch.linspace(1.0, 0.0, 12)  # clip j sits at rank j ...
        scores[q, [q, rank]] = scores[q, [rank, q]]  # ... then clip q swaps into `rank`
    labels = torch.arange(12)
    assert text_to_audio_ranks(scores, labels).tolist() == wanted
    m = retrieval_metrics(scores, None, labels)
    assert m["text_to_audio/R@1"] == pytest.approx(100.0 / 12)
    assert m["text_to_audio/R@5"] == pytest.approx(200.0 / 12)
    assert m["text_to_audio/R@10"] == pytest.approx(300.0 / 12)
    assert m["text_to_audio/mAP@10"] == pytest.approx(100.0 * (1 + 1 / 2 + 1 / 10) / 12)
    assert m["text_to_audio/median_rank"] == 12.0  # floor(median = 11) + 1
    assert m["text_to_audio/mean_rank"] == pytest.approx((0 + 1 + 9 + 10 + 88) / 12 + 1)


def test_median_rank_uses_the_true_median_for_even_counts():
    # Ranks 0, 3, 0, 3: the median is 1.5, so floor + 1 = 2 (the lower median would give 1).
    scores = torch.tensor(
        [[1.0, 0.5, 0.4, 0.3], [1.0, 0.0, 0.5, 0.4], [0.0, 0.5, 1.0, 0.3], [1.0, 0.5, 0.4, 0.0]]
    )
    labels = torch.arange(4)
    assert text_to_audio_ranks(scores, labels).tolist() == [0, 3, 0, 3]
    m = retrieval_metrics(scores, None, labels)
    assert m["text_to_audio/median_rank"] == 2.0
    assert m["text_to_audio/mean_rank"] == pytest.approx(2.5)


def test_tie_rule_text_to_audio():
    scores = torch.tensor([[0.5, 0.5, 0.2]] * 2 + [[0.3, 0.3, 0.3]] * 2)
    labels = torch.tensor([0, 1, 0, 2])
    # Pessimistic: a tied non-relevant candidate always ranks first, whatever its index.
    assert text_to_audio_ranks(scores, labels).tolist() == [1, 1, 2, 2]
    # Stable: ties broken by candidate index alone.
    assert text_to_audio_ranks(scores, labels, ties="stable").tolist() == [0, 1, 0, 2]


def test_tie_rule_audio_to_text():
    # Clip 0 owns captions {0, 2}, clip 1 owns {1, 3}.
    labels = torch.tensor([0, 1, 0, 1])
    scores = torch.tensor([[0.9, 0.9, 0.9, 0.1], [0.3, 0.3, 0.3, 0.3]])
    best, positions = audio_to_text_ranks(scores, labels)
    # Row 0: the tied negative (caption 1) goes first, then captions 0 and 2 by index.
    # Row 1: both tied negatives (0, 2) go first, then captions 1 and 3.
    assert positions.tolist() == [[2, 3], [3, 4]]
    assert best.tolist() == [1, 2]
    best, positions = audio_to_text_ranks(scores, labels, ties="stable")
    assert positions.tolist() == [[1, 3], [2, 4]]
    assert best.tolist() == [0, 1]


def test_tied_relevant_items_take_consecutive_positions():
    # A clip's own captions tying with each other (and above everything) occupy 1..n.
    labels = torch.tensor([0, 0, 0, 1, 1])
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0]])
    for ties in ("pessimistic", "stable"):
        best, positions = audio_to_text_ranks(scores, labels, ties=ties)
        assert positions.tolist() == [[1, 2, 3], [1, 2, 0]]  # clip 1 has 2 captions: padded with 0
        assert best.tolist() == [0, 0]


def test_laion_unsorted_positions_bug():
    # Clip 0's 5 captions rank 4, 3, 2, 1, 0 (caption 4 first). Their positions taken in
    # caption order, [5, 4, 3, 2, 1], give LAION-CLAP's AP of 1.74; sorted, AP is 1.0.
    labels = torch.tensor([0] * 5 + [1] * 5)
    scores_a2t = torch.zeros(2, 10)
    scores_a2t[0, :5] = torch.tensor([0.5, 0.6, 0.7, 0.8, 0.9])
    scores_a2t[1, 5:] = 1.0
    best, positions = audio_to_text_ranks(scores_a2t, labels)
    assert positions[0].tolist() == [1, 2, 3, 4, 5]
    unsorted = [5, 4, 3, 2, 1]
    assert sum((j + 1) / p for j, p in enumerate(unsorted)) / 5 == pytest.approx(1.74)
    m = retrieval_metrics(scores_a2t.T.contiguous(), scores_a2t, labels)
    assert m["audio_to_text/mAP@10"] == pytest.approx(100.0)


def test_audio_to_text_ap_divides_by_caption_count():
    # 5 captions at 1-based positions 7, 1, 3 (sorted: 1, 3, 7) and two beyond the top 10.
    labels = torch.tensor([0] * 5 + [1] * 20)
    order = [1] + [5] + [2] + [6, 7, 8] + [0] + [9, 10, 11, 12, 13, 3, 4] + list(range(14, 25))
    scores_a2t = torch.zeros(2, 25)
    scores_a2t[0, order] = torch.linspace(1.0, 0.0, 25)  # caption order[p - 1] at position p
    scores_a2t[1, 5:] = 1.0
    best, positions = audio_to_text_ranks(scores_a2t, labels)
    assert positions[0, :5].tolist() == [1, 3, 7, 13, 14]
    m = retrieval_metrics(scores_a2t.T.contiguous(), scores_a2t, labels)
    # Clip 1 has 20 captions all on top: AP = 10 found / min(20, 10) = 1.
    expected = ((1 / 1 + 2 / 3 + 3 / 7) / 5 + 1.0) / 2
    assert m["audio_to_text/mAP@10"] == pytest.approx(100.0 * expected)
    assert m["audio_to_text/R@1"] == pytest.approx(100.0)


def test_variable_caption_counts_perfect_ap():
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 2, 2])
    scores_a2t = (labels.unsqueeze(0) == torch.arange(3).unsqueeze(1)).double()
    m = retrieval_metrics(scores_a2t.T, scores_a2t, labels)
    assert m["audio_to_text/mAP@10"] == pytest.approx(100.0)


def test_numpy_input_matches_torch():
    scores_t2a, scores_a2t, labels = make_problem(3, num_clips=6, max_captions=5, tied=False)
    assert retrieval_metrics(scores_t2a.numpy(), scores_a2t.numpy(), labels.numpy()) == retrieval_metrics(
        scores_t2a, scores_a2t, labels
    )


def test_scores_a2t_defaults_to_transpose():
    scores_t2a, _, labels = make_problem(4, num_clips=6, max_captions=5, tied=False)
    assert retrieval_metrics(scores_t2a, None, labels) == retrieval_metrics(scores_t2a, scores_t2a.T, labels)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: retrieval_metrics(torch.tensor([[0.1, float("nan")]]), None, torch.tensor([0])), "NaN"),
        (
            lambda: retrieval_metrics(torch.ones(2, 2), torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), [0, 1]),
            "NaN",
        ),
        (lambda: text_to_audio_ranks(torch.tensor([[float("nan"), 1.0]]), [1]), "NaN"),
        (lambda: audio_to_text_ranks(torch.tensor([[float("nan"), 1.0]]), [0, 0]), "NaN"),
        (lambda: retrieval_metrics(torch.ones(3, 2), None, torch.tensor([0, 1])), "3 captions"),
        (lambda: retrieval_metrics(torch.ones(2, 2), torch.ones(2, 3), torch.tensor([0, 1])), "scores_a2t"),
        (lambda: retrieval_metrics(torch.ones(2, 2), None, torch.tensor([0, 2])), r"\[0, 2\)"),
        (lambda: retrieval_metrics(torch.ones(2, 2), None, torch.tensor([0.0, 1.0])), "integer"),
        (lambda: retrieval_metrics(torch.ones(2, 3), None, torch.tensor([0, 0])), "no caption"),
        (lambda: retrieval_metrics(torch.ones(2), None, torch.tensor([0, 0])), "2-D"),
        (lambda: retrieval_metrics(torch.ones(2, 2), None, None), "caption_to_clip"),
        (lambda: retrieval_metrics(torch.ones(2, 2), None, [0, 1], ks=(0, 5)), "positive"),
        (lambda: text_to_audio_ranks(torch.ones(2, 2), [0, 1], ties="random"), "ties"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
    with pytest.raises(MetricsError):
        call()


def test_infinite_scores_are_ranked():
    scores = torch.tensor([[float("-inf"), 0.0, float("inf")], [float("-inf"), float("-inf"), 0.0]])
    assert text_to_audio_ranks(scores, [2, 0]).tolist() == [0, 2]


# ----------------------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(problem=problems, ties=st.sampled_from(["pessimistic", "stable"]))
def test_matches_slow_reference(problem, ties):
    scores_t2a, scores_a2t, labels = problem
    assert_metrics_equal(
        retrieval_metrics(scores_t2a, scores_a2t, labels, ties=ties),
        reference_metrics(scores_t2a, scores_a2t, labels, ties=ties),
    )


@PROPERTY_SETTINGS
@given(problem=problems)
def test_bounds_and_monotone_recall(problem):
    scores_t2a, scores_a2t, labels = problem
    num_captions, num_clips = scores_t2a.shape
    ks = tuple(sorted(set(range(1, max(num_clips, num_captions) + 2)) | {10}))
    m = retrieval_metrics(scores_t2a, scores_a2t, labels, ks=ks)
    for direction, num_candidates in (("text_to_audio", num_clips), ("audio_to_text", num_captions)):
        recalls = [m[f"{direction}/R@{k}"] for k in ks]
        assert all(0.0 <= r <= 100.0 for r in recalls)
        assert all(a <= b for a, b in zip(recalls, recalls[1:]))
        assert m[f"{direction}/R@{num_candidates}"] == 100.0  # every rank is < the candidate count
        mean_ap = m[f"{direction}/mAP@10"]
        # AP is at most 1, and 0 without a hit in the top 10.
        assert 0.0 <= mean_ap <= m[f"{direction}/R@10"] + 1e-9
        if direction == "text_to_audio":  # reciprocal rank is 1 on every hit at rank 0
            assert mean_ap >= m["text_to_audio/R@1"] - 1e-9
        assert 1.0 <= m[f"{direction}/median_rank"] <= num_candidates
        assert 1.0 <= m[f"{direction}/mean_rank"] <= num_candidates


def permute(scores_t2a, scores_a2t, labels, seed):
    """The same problem with clips and captions renumbered by random permutations."""
    g = torch.Generator().manual_seed(seed)
    num_captions, num_clips = scores_t2a.shape
    clip_perm = torch.randperm(num_clips, generator=g)  # new clip c is old clip clip_perm[c]
    caption_perm = torch.randperm(num_captions, generator=g)
    new_label_of_old_clip = torch.argsort(clip_perm)
    return (
        scores_t2a[caption_perm][:, clip_perm],
        scores_a2t[clip_perm][:, caption_perm],
        new_label_of_old_clip[labels[caption_perm]],
        clip_perm,
        caption_perm,
    )


@PROPERTY_SETTINGS
@given(problem=continuous_problems, seed=st.integers(0, 2**31 - 1), ties=st.sampled_from(["pessimistic", "stable"]))
def test_rank_functions_equivariant_to_permutations(problem, seed, ties):
    scores_t2a, scores_a2t, labels = problem
    p_t2a, p_a2t, p_labels, clip_perm, caption_perm = permute(scores_t2a, scores_a2t, labels, seed)
    # Candidates reordered: ranks unchanged; queries reordered: ranks reordered alike.
    ranks = text_to_audio_ranks(scores_t2a, labels, ties=ties)
    assert torch.equal(text_to_audio_ranks(p_t2a, p_labels, ties=ties), ranks[caption_perm])
    best, positions = audio_to_text_ranks(scores_a2t, labels, ties=ties)
    p_best, p_positions = audio_to_text_ranks(p_a2t, p_labels, ties=ties)
    assert torch.equal(p_best, best[clip_perm])
    assert torch.equal(p_positions, positions[clip_perm])


@PROPERTY_SETTINGS
@given(problem=problems, seed=st.integers(0, 2**31 - 1))
def test_pessimistic_metrics_invariant_to_order_even_with_ties(problem, seed):
    scores_t2a, scores_a2t, labels = problem
    p_t2a, p_a2t, p_labels, _, _ = permute(scores_t2a, scores_a2t, labels, seed)
    assert_metrics_equal(retrieval_metrics(p_t2a, p_a2t, p_labels), retrieval_metrics(scores_t2a, scores_a2t, labels))


def test_stable_rule_depends_on_order_under_ties():
    # Constant scores: the stable rule rewards whichever clip sits at index 0.
    scores = torch.zeros(2, 2)
    labels = torch.tensor([0, 1])
    assert text_to_audio_ranks(scores, labels, ties="stable").tolist() == [0, 1]
    assert text_to_audio_ranks(scores, labels).tolist() == [1, 1]


@PROPERTY_SETTINGS
@given(problem=problems, exact=st.booleans())
def test_perfect_scores(problem, exact):
    _, _, labels = problem
    num_clips = int(labels.max()) + 1
    own = (labels.unsqueeze(1) == torch.arange(num_clips).unsqueeze(0)).double()  # (Q, N)
    if not exact:  # noise below the margin keeps every positive strictly on top
        own = own + 0.4 * torch.rand(own.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m = retrieval_metrics(own, own.T, labels)
    for direction in DIRECTIONS:
        assert m[f"{direction}/R@1"] == 100.0
        assert m[f"{direction}/mAP@10"] == pytest.approx(100.0)
        assert m[f"{direction}/median_rank"] == 1.0
        assert m[f"{direction}/mean_rank"] == 1.0


def test_large_inputs_are_chunked_correctly(monkeypatch):
    # Force many chunks and compare against the single-chunk result.
    import diffatr.metrics as metrics_module

    scores_t2a, scores_a2t, labels = make_problem(7, num_clips=30, max_captions=5, tied=True)
    expected = retrieval_metrics(scores_t2a, scores_a2t, labels)
    monkeypatch.setattr(metrics_module, "_CHUNK_ELEMENTS", 50)
    assert retrieval_metrics(scores_t2a, scores_a2t, labels) == expected


# ----------------------------------------------------------------------------- torchmetrics


def test_agrees_with_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.retrieval")
    g = torch.Generator().manual_seed(1)
    num_clips = 60
    counts = torch.randint(1, 6, (num_clips,), generator=g)
    labels = torch.repeat_interleave(torch.arange(num_clips), counts)
    labels = labels[torch.randperm(labels.shape[0], generator=g)]
    num_captions = labels.shape[0]
    relevant = labels.unsqueeze(1) == torch.arange(num_clips).unsqueeze(0)  # (Q, N)
    # A moderately good model, so both partial and complete top-10 hits occur.
    signal = 2.5 * relevant.double()
    scores_t2a = torch.randn(num_captions, num_clips, generator=g, dtype=torch.float64) + signal
    scores_a2t = torch.randn(num_clips, num_captions, generator=g, dtype=torch.float64) + signal.T
    m = retrieval_metrics(scores_t2a, scores_a2t, labels, ks=(1, 5, 10))

    # torchmetrics 1.x zeroes the relevance of items whose pred is <= 0
    # (`torch.where(preds > 0, target, 0)` in recall / AP / reciprocal rank): shift the
    # scores to be positive (rank-preserving), and check the shift created no ties.
    preds_t2a = scores_t2a - scores_t2a.min() + 1.0
    preds_a2t = scores_a2t - scores_a2t.min() + 1.0
    for preds in (preds_t2a, preds_a2t):
        assert all(torch.unique(row).numel() == row.numel() for row in preds)

    # Text -> audio: one relevant clip, so recall@k = hit rate@k = our R@k, and
    # AP@10 = reciprocal rank@10 = our mAP@10.
    for k in (1, 5, 10):
        recall = torch.stack([tm.retrieval_recall(p, t, top_k=k) for p, t in zip(preds_t2a, relevant)])
        hit = torch.stack([tm.retrieval_hit_rate(p, t, top_k=k) for p, t in zip(preds_t2a, relevant)])
        assert m[f"text_to_audio/R@{k}"] == pytest.approx(100.0 * float(recall.mean()))
        assert m[f"text_to_audio/R@{k}"] == pytest.approx(100.0 * float(hit.mean()))
    rr = torch.stack([tm.retrieval_reciprocal_rank(p, t, top_k=10) for p, t in zip(preds_t2a, relevant)])
    ap = torch.stack([tm.retrieval_average_precision(p, t, top_k=10) for p, t in zip(preds_t2a, relevant)])
    assert m["text_to_audio/mAP@10"] == pytest.approx(100.0 * float(rr.mean()))
    assert m["text_to_audio/mAP@10"] == pytest.approx(100.0 * float(ap.mean()))

    # Audio -> text R@k: "any of the clip's captions in the top k" is torchmetrics' hit rate
    # (its recall is the share of the captions found, a different quantity).
    relevant_a2t = relevant.T  # (N, Q)
    for k in (1, 5, 10):
        hit = torch.stack([tm.retrieval_hit_rate(p, t, top_k=k) for p, t in zip(preds_a2t, relevant_a2t)])
        assert m[f"audio_to_text/R@{k}"] == pytest.approx(100.0 * float(hit.mean()))

    # Audio -> text mAP@10: torchmetrics' AP@k (checked on 1.9) averages j / P_j over the
    # captions *found* in the top k, i.e. divides by n_found; the protocol divides by the
    # clip's caption count n (5 in the protocol). They coincide on clips whose captions are
    # all in the top 10; elsewhere ours = torchmetrics * n_found / n. Check both.
    ap = torch.stack([tm.retrieval_average_precision(p, t, top_k=10) for p, t in zip(preds_a2t, relevant_a2t)])
    _, positions = audio_to_text_ranks(scores_a2t, labels)
    n_found = ((positions > 0) & (positions <= 10)).sum(dim=1).double()
    n = counts.double()
    complete = n_found == n
    assert 0 < int(complete.sum()) < num_clips  # the check below covers both cases
    per_clip = []  # the protocol's AP per clip, from our positions
    for i in range(num_clips):
        pos = [p for p in positions[i].tolist() if 0 < p <= 10]
        per_clip.append(sum((j + 1) / p for j, p in enumerate(pos)) / int(n[i]))
    ours_ap = torch.tensor(per_clip, dtype=torch.float64)
    assert m["audio_to_text/mAP@10"] == pytest.approx(100.0 * float(ours_ap.mean()))
    assert torch.allclose(ours_ap[complete], ap.double()[complete])
    assert m["audio_to_text/mAP@10"] == pytest.approx(100.0 * float((ap.double() * n_found / n).mean()))
