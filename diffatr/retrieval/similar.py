"""Where "sounds like this one" is measured: the vectors of audio -> audio search.

``similar_embeddings`` maps backbone features into the space a ``RetrievalConfig`` names
(``similar_space``): ``"backbone"`` (the audio backbone's embedding), ``"head"`` (the trained
audio head's space, the one captions are searched in) or ``"backbone+head"`` (both unit vectors
concatenated and scaled by 1 / sqrt(2), so that the inner product is the mean of the two
cosines). The inner product of two of these vectors is the similarity; a vector store holds
them as it holds any other. Which space the shipped model uses, and why, is in docs/method.md
("Sounds like this one"), measured by ``benchmarks/similar.py``.

Pure tensor code: no files, no randomness; it follows the device of the model.
Shape legend: N clips, Da backbone width, D shared width.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from diffatr.config import SIMILAR_SPACES

__all__ = ["SAME_AUDIO_COSINE", "similar_embeddings"]

# A library clip whose backbone features are this close to an audio query's is that query itself
# (the same file decoded again gives the same features up to float rounding): it is never a result.
SAME_AUDIO_COSINE = 0.9999


@torch.no_grad()
def similar_embeddings(model: Any, audio_features: Tensor, space: str) -> Tensor:
    """(N, Da) backbone features -> (N, D') unit vectors of the similar-sound space.

    Args:
        model: a DiffATR (``project_audio``: the trained audio head).
        audio_features: (N, Da) backbone features.
        space: one of ``SIMILAR_SPACES``.

    Returns:
        (N, Da) for "backbone", (N, D) for "head", (N, Da + D) for "backbone+head"; float32.
    """
    if space not in SIMILAR_SPACES:
        raise ValueError(f"space must be one of {', '.join(SIMILAR_SPACES)}, got {space!r}")
    features = audio_features.float()
    parts = []
    if space in ("backbone", "backbone+head"):
        parts.append(F.normalize(features, dim=-1))  # (N, Da)
    if space in ("head", "backbone+head"):
        parts.append(model.project_audio(features))  # (N, D), unit vectors already
    if len(parts) == 1:
        return parts[0]
    return torch.cat(parts, dim=-1) / math.sqrt(len(parts))  # (N, Da + D): still unit vectors
