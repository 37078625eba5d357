"""The trainable part of DiffATR: projection heads, the contrastive temperature, and the two
denoisers (text->audio, audio->text).

Backbones (diffatr.encoders) are kept apart: with frozen backbones their features are computed
once and cached, and a checkpoint stores only what is trained here plus the config that names
the backbones. This module never opens files.

Shapes: N items, Dt text feature width, Da audio feature width, D shared width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffatr.config import ModelConfig
from diffatr.contrastive import LogitScale
from diffatr.diffusion.denoiser import Denoiser
from diffatr.diffusion.ddim import DDIMScheduler

DIRECTIONS = ("text_to_audio", "audio_to_text")


class ResidualAdapter(nn.Module):
    """x + MLP(x), the MLP's last layer zero at the start: a locked tower's own space with a
    small learned correction (it starts exactly as ``identity``, and weight decay keeps the
    correction small, so unseen wording keeps the text encoder's geometry)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.dropout(x))


def projection_head(in_dim: int, out_dim: int, hidden_dim: int | None, kind: str = "linear",
                    dropout: float = 0.0) -> nn.Module:
    """Linear, or Linear -> ReLU -> Linear (the baseline's 2048 -> 2048 -> 1024 style head), or
    ``kind="identity"``: no parameters (a locked tower), or ``kind="residual"``: the identity
    plus a learned correction (``ResidualAdapter``). ``dropout`` acts on the input while training."""
    if kind == "identity":
        return nn.Identity()
    if kind == "residual":
        return ResidualAdapter(in_dim, hidden_dim or in_dim, dropout)
    if hidden_dim is None:
        head = nn.Linear(in_dim, out_dim)
    else:
        head = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(nn.Dropout(dropout), head) if dropout > 0 else head


class DiffATR(nn.Module):
    """Heads + temperature + denoisers, rebuilt from a ModelConfig alone.

    Args:
        config: the model config (it names the backbones and sets every width).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.denoiser.embed_dim != config.embed_dim:
            raise ValueError(
                f"denoiser.embed_dim ({config.denoiser.embed_dim}) must equal the shared "
                f"embed_dim ({config.embed_dim})"
            )
        self.config = config
        self.text_head = projection_head(config.text.embed_dim, config.embed_dim, config.head_hidden_dim,
                                         config.text_head, config.head_dropout)
        self.audio_head = projection_head(config.audio.embed_dim, config.embed_dim, config.head_hidden_dim,
                                          "linear", config.head_dropout)
        self.logit_scale = LogitScale(config.init_temperature, learnable=config.learn_temperature)
        self.denoisers = nn.ModuleDict({name: Denoiser(config.denoiser) for name in DIRECTIONS})

    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        """(N, Dt) text backbone features -> (N, D) unit vectors in the shared space."""
        return F.normalize(self.text_head(features), dim=-1)

    def project_audio(self, features: torch.Tensor) -> torch.Tensor:
        """(N, Da) audio backbone features -> (N, D) unit vectors in the shared space."""
        return F.normalize(self.audio_head(features), dim=-1)

    def make_scheduler(self) -> DDIMScheduler:
        return DDIMScheduler(self.config.diffusion)
