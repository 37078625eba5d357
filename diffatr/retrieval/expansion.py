"""Known-caption query expansion (docs/method.md, "Known-caption expansion").

A text query worded unlike every training caption lands away from the audio it means: the
shared space was fitted to the captions' wording. The text encoder's own space is good at
paraphrase, so the query's nearest training captions there are found, and the query's
embedding moves toward those captions' embeddings and toward their clips' audio embeddings:

    q' = normalise(q + w_t · normalise(mean_j t_j) + w_a · normalise(mean_j a_j))

over the ``neighbours`` nearest captions j (cosine of the raw text features, ties to the lower
index). Only training data is looked up: the bank holds the captions (and clips) a checkpoint
was trained on, so an evaluation never sees its own test captions.

The model keeps the bank (``DiffATR.set_caption_bank``, ``caption_bank_embeds``); the lookup
and the move are here, beside the first stage that uses them.
Shapes: Q queries, C bank captions, Dt raw text width, D shared width.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from torch import Tensor

from diffatr.config import RetrievalConfig
from diffatr.retrieval.topk import stable_topk

__all__ = ["expand_queries", "expand_text_queries", "expand_with_bank", "expansion_weights", "nearest_captions"]


def nearest_captions(query_raw: Tensor, bank_unit: Tensor, neighbours: int) -> Tensor:
    """(Q, m) indices of each query's ``neighbours`` nearest bank captions by cosine of the raw
    text features, nearest first, ties to the lower index; m = min(neighbours, C).

    Args:
        query_raw: (Q, Dt) the queries' text backbone features.
        bank_unit: (C, Dt) the bank captions' text backbone features, L2-normalised, C >= 1.
        neighbours: >= 1.
    """
    sims = F.normalize(query_raw.float(), dim=-1) @ bank_unit.T  # (Q, C)
    return stable_topk(sims, min(neighbours, bank_unit.shape[0]))[1]


def expand_queries(query_embeds: Tensor, neighbours_idx: Tensor, bank_text: Tensor, bank_audio: Tensor,
                   text_weight: float, audio_weight: float) -> Tensor:
    """The expanded query embeddings q' (module docstring).

    Args:
        query_embeds: (Q, D) the queries' L2-normalised embeddings in the shared space.
        neighbours_idx: (Q, m) bank rows of each query's nearest captions (``nearest_captions``).
        bank_text: (C, D) the bank captions' embeddings.
        bank_audio: (C, D) the embedding of each bank caption's clip (a clip with three
            captions appears three times).
        text_weight, audio_weight: w_t and w_a, >= 0 (both 0: q' = q).

    Returns:
        (Q, D) L2-normalised, float32.
    """
    out = query_embeds.float()
    for weight, bank in ((text_weight, bank_text), (audio_weight, bank_audio)):
        if weight > 0:
            centre = bank.float()[neighbours_idx].mean(dim=1)  # (Q, D)
            out = out + weight * F.normalize(centre, dim=-1)
    return F.normalize(out, dim=-1)


def expansion_weights(expansion: float) -> tuple[float, float]:
    """(w_t, w_a) of the ``expansion`` knob λ: half to the captions, half to their sounds
    (the split chosen on val, benchmarks/query_expansion.py)."""
    return expansion / 2, expansion / 2



def expand_with_bank(model: Any, text_features: Tensor, text_embeds: Tensor, neighbours: int, text_weight: float,
                     audio_weight: float) -> Tensor:
    """q' of (Q, Dt) text backbone features and their (Q, D) embeddings against ``model``'s
    caption bank (which it must have), with explicit weights w_t and w_a."""
    bank_unit, bank_text, bank_audio = model.caption_bank_embeds()
    nearest = nearest_captions(text_features.to(bank_unit.device), bank_unit, neighbours)  # (Q, m)
    return expand_queries(text_embeds, nearest, bank_text, bank_audio, text_weight, audio_weight)


def expand_text_queries(model: Any, text_features: Tensor, text_embeds: Tensor, retrieval: RetrievalConfig) -> Tensor:
    """Text queries as the first stage uses them: (Q, D) expanded embeddings at the settings'
    λ and n. A model without a caption bank, λ = 0 or no queries: ``text_embeds`` unchanged."""
    if not getattr(model, "has_caption_bank", False) or retrieval.expansion == 0 or text_embeds.shape[0] == 0:
        return text_embeds
    return expand_with_bank(model, text_features, text_embeds, retrieval.expansion_neighbours,
                            *expansion_weights(retrieval.expansion))
