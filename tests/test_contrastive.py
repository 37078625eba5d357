"""Tests for diffatr.contrastive: NT-Xent by hand, duplicate masking, gradients, the scale cap."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffatr.contrastive import ContrastiveError, LogitScale, nt_xent_loss


def softplus_neg(x: float) -> float:
    """-log(sigmoid(x)) = log(1 + e^-x): the cross-entropy of a 2-way softmax with margin x."""
    return math.log1p(math.exp(-x))


def reference_loss(text, audio, scale, clip_ids=None):
    """NT-Xent in plain loops: per row and per column, -log softmax over non-duplicate pairs."""
    text = F.normalize(text.double(), dim=-1).tolist()
    audio = F.normalize(audio.double(), dim=-1).tolist()
    batch = len(text)
    ids = list(range(batch)) if clip_ids is None else [int(c) for c in clip_ids]

    def cos(i, j):
        return sum(a * b for a, b in zip(text[i], audio[j]))

    def ce(logit_of, i):
        keep = [j for j in range(batch) if j == i or ids[j] != ids[i]]
        lse = math.log(sum(math.exp(logit_of(j)) for j in keep))
        return lse - logit_of(i)

    t2a = sum(ce(lambda j, i=i: scale * cos(i, j), i) for i in range(batch)) / batch
    a2t = sum(ce(lambda j, i=i: scale * cos(j, i), i) for i in range(batch)) / batch
    return 0.5 * (t2a + a2t)


def test_two_by_two_by_hand():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    audio = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits = 10 * [[1, 0.6], [0, 0.8]]
    t2a = (softplus_neg(10 - 6) + softplus_neg(8 - 0)) / 2  # rows
    a2t = (softplus_neg(10 - 0) + softplus_neg(8 - 6)) / 2  # columns
    loss = nt_xent_loss(text, audio, 10.0)
    assert float(loss) == pytest.approx(0.5 * (t2a + a2t), rel=1e-6)
    # A tensor scale gives the same, and so do unnormalised inputs (normalised inside).
    assert float(nt_xent_loss(3 * text, 2 * audio, torch.tensor(10.0))) == pytest.approx(float(loss), rel=1e-6)


def test_matches_reference_with_duplicates():
    g = torch.Generator().manual_seed(0)
    text = torch.randn(7, 16, generator=g)
    audio = torch.randn(7, 16, generator=g)
    clip_ids = torch.tensor([3, 1, 3, 4, 1, 3, 0])
    for ids in (None, clip_ids):
        expected = reference_loss(text, audio, 14.0, ids)
        assert float(nt_xent_loss(text, audio, 14.0, ids)) == pytest.approx(expected, rel=1e-5)


def test_distinct_clip_ids_equal_no_ids():
    g = torch.Generator().manual_seed(1)
    text, audio = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    assert torch.allclose(nt_xent_loss(text, audio, 20.0, torch.arange(5) * 7), nt_xent_loss(text, audio, 20.0))


def test_duplicate_clip_is_not_a_negative():
    # Rows 0 and 1 are two captions of the same clip (identical audio embeddings), row 2
    # another clip; the embeddings are perfect.
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    text = torch.stack([e0, e0, e1]).double()  # float64: the losses are ~1e-4
    audio = torch.stack([e0, e0, e1]).double()
    scale = 10.0
    masked = float(nt_xent_loss(text, audio, scale, torch.tensor([5, 5, 9])))
    unmasked = float(nt_xent_loss(text, audio, scale))
    # Masked: rows/columns 0 and 1 see only {own pair, clip 9}: log(1 + e^-10) each;
    # row/column 2 sees both copies of clip 5 as negatives: log(1 + 2 e^-10).
    expected = (2 * softplus_neg(scale) + math.log1p(2 * math.exp(-scale))) / 3
    assert masked == pytest.approx(expected, rel=1e-5)
    # Unmasked, the duplicate is a negative as strong as the positive: >= log 2 for rows 0, 1.
    assert unmasked > 2 * math.log(2) / 3
    assert masked < unmasked


def test_loss_is_flat_in_the_similarity_of_a_masked_duplicate():
    # text_i = e_i, so cos(text_k, audio_j) = audio_j[k] for unit audio_j. Audio 1 is made
    # from a free coordinate x0 = cos(text 0, audio 1) plus a spare dimension that keeps it a
    # unit vector, so x0 moves only the (0, 1) similarity. Pairs 0 and 1 share a clip: with
    # masking, the loss must not depend on x0 (value and gradient); without, it must.
    clip_ids = torch.tensor([0, 0, 1, 2])
    text = torch.eye(4, 5)  # (B, D): the last dimension is the spare one
    g = torch.Generator().manual_seed(2)
    base = 0.4 * torch.rand(4, 4, generator=g)  # (B, B) coordinates audio_j[k], k < 4

    def audio_with(x0: torch.Tensor) -> torch.Tensor:
        coords = torch.cat([base[:1], torch.cat([x0.reshape(1), base[1, 1:]]).unsqueeze(0), base[2:]])
        spare = torch.sqrt(1 - (coords**2).sum(dim=1, keepdim=True))
        return torch.cat([coords, spare], dim=1)  # (B, D), unit rows

    losses = {}
    for masked in (True, False):
        ids = clip_ids if masked else None
        values = []
        for start in (0.1, -0.3):
            x0 = torch.tensor(start, requires_grad=True)
            loss = nt_xent_loss(text, audio_with(x0), 10.0, ids)
            loss.backward()
            values.append((float(loss), float(x0.grad)))
        losses[masked] = values
    (v1, g1), (v2, g2) = losses[True]
    assert v1 == pytest.approx(v2, abs=1e-6)
    assert abs(g1) < 1e-5 and abs(g2) < 1e-5
    (u1, h1), (u2, h2) = losses[False]
    assert abs(u1 - u2) > 1e-3
    assert h1 > 1e-3  # unmasked, raising the duplicate's similarity raises the loss


def test_gradient_flows_to_embeddings_and_scale():
    g = torch.Generator().manual_seed(3)
    text = torch.randn(6, 16, generator=g, requires_grad=True)
    audio = torch.randn(6, 16, generator=g, requires_grad=True)
    scale = LogitScale(learnable=True)
    loss = nt_xent_loss(text, audio, scale(), torch.tensor([0, 1, 1, 2, 3, 4]))
    loss.backward()
    for grad in (text.grad, audio.grad, scale.log_scale.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_perfect_batch_loss_goes_to_zero_with_scale():
    emb = torch.eye(4)
    assert float(nt_xent_loss(emb, emb, 100.0)) < 1e-6
    assert float(nt_xent_loss(emb, emb, 1.0)) > 0.5


def test_fixed_scale():
    scale = LogitScale()
    assert float(scale()) == pytest.approx(1 / 0.07, rel=1e-6)
    assert list(scale.parameters()) == []
    assert "log_scale" in scale.state_dict()  # checkpoints load across the two modes
    assert float(LogitScale(init_temperature=0.5, max_scale=1.0)()) == pytest.approx(2.0)  # cap only if learnable


def test_learnable_scale_is_capped():
    scale = LogitScale(init_temperature=0.07, learnable=True, max_scale=100.0)
    assert float(scale()) == pytest.approx(1 / 0.07, rel=1e-6)
    optimiser = torch.optim.SGD(scale.parameters(), lr=10.0)
    for _ in range(5):  # push the scale up hard
        optimiser.zero_grad()
        (-scale()).backward()
        optimiser.step()
    assert float(scale.log_scale) > math.log(100.0)  # the raw parameter overshot ...
    assert float(scale()) == pytest.approx(100.0)  # ... the value used did not
    scale.clamp_()
    assert float(scale.log_scale) == pytest.approx(math.log(100.0))
    assert torch.equal(scale.state_dict()["log_scale"], scale.log_scale.detach())


def test_state_dict_round_trip_between_modes():
    learnable = LogitScale(init_temperature=0.05, learnable=True)
    fixed = LogitScale(init_temperature=0.07)
    fixed.load_state_dict(learnable.state_dict())
    assert float(fixed()) == pytest.approx(20.0, rel=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: nt_xent_loss(torch.ones(2, 4), torch.ones(3, 4), 1.0), "same shape"),
        (lambda: nt_xent_loss(torch.ones(4), torch.ones(4), 1.0), r"\(B, D\)"),
        (lambda: nt_xent_loss(torch.ones(0, 4), torch.ones(0, 4), 1.0), "empty"),
        (lambda: nt_xent_loss(torch.ones(2, 4), torch.ones(2, 4), -1.0), "positive"),
        (lambda: nt_xent_loss(torch.ones(2, 4), torch.ones(2, 4), torch.ones(2)), "scalar"),
        (lambda: nt_xent_loss(torch.ones(2, 4), torch.ones(2, 4), 1.0, torch.tensor([0, 1, 2])), "clip_ids"),
        (lambda: nt_xent_loss(torch.ones(2, 4), torch.ones(2, 4), 1.0, torch.tensor([0.0, 1.0])), "integer"),
        (lambda: LogitScale(init_temperature=0.0), "init_temperature"),
        (lambda: LogitScale(max_scale=0.0), "max_scale"),
        (lambda: LogitScale(init_temperature=0.005, learnable=True), "max_scale"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
    with pytest.raises(ContrastiveError):
        call()
