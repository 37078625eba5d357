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
        # The caption bank of known-caption expansion: the training captions' and clips' backbone
        # features (float16), kept out of the state dict (diffatr.checkpoint stores it in a file
        # of its own; a model without one searches without expansion).
        self.register_buffer("caption_bank_text", torch.zeros(0, config.text.embed_dim, dtype=torch.float16),
                             persistent=False)  # (C, Dt)
        self.register_buffer("caption_bank_audio", torch.zeros(0, config.audio.embed_dim, dtype=torch.float16),
                             persistent=False)  # (M, Da)
        self.register_buffer("caption_bank_clip", torch.zeros(0, dtype=torch.long), persistent=False)  # (C,) into M
        self._bank_embeds: tuple | None = None

    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        """(N, Dt) text backbone features -> (N, D) unit vectors in the shared space."""
        return F.normalize(self.text_head(features), dim=-1)

    def project_audio(self, features: torch.Tensor) -> torch.Tensor:
        """(N, Da) audio backbone features -> (N, D) unit vectors in the shared space."""
        return F.normalize(self.audio_head(features), dim=-1)

    @property
    def has_caption_bank(self) -> bool:
        return self.caption_bank_text.shape[0] > 0

    def set_caption_bank(self, text_features: torch.Tensor, audio_features: torch.Tensor,
                         caption_to_clip: torch.Tensor) -> None:
        """Keep the training captions (C, Dt), their clips (M, Da) and each caption's clip (C,)
        as the bank that known-caption expansion looks queries up in (stored in float16)."""
        text_features, audio_features = torch.as_tensor(text_features), torch.as_tensor(audio_features)
        caption_to_clip = torch.as_tensor(caption_to_clip).long()
        widths = (self.config.text.embed_dim, self.config.audio.embed_dim)
        if text_features.ndim != 2 or audio_features.ndim != 2 or (text_features.shape[1],
                                                                     audio_features.shape[1]) != widths:
            raise ValueError(f"the caption bank needs (C, {widths[0]}) text and (M, {widths[1]}) audio features, "
                             f"got {tuple(text_features.shape)} and {tuple(audio_features.shape)}")
        if not (bool(torch.isfinite(text_features).all()) and bool(torch.isfinite(audio_features).all())):
            raise ValueError("the caption bank's features hold NaN or inf")
        if caption_to_clip.shape != (text_features.shape[0],) or (len(caption_to_clip) and not (
                0 <= int(caption_to_clip.min()) and int(caption_to_clip.max()) < audio_features.shape[0])):
            raise ValueError("caption_to_clip must give each bank caption a row of the bank's clips")
        device = self.caption_bank_text.device
        self.caption_bank_text = text_features.detach().to(device, torch.float16).clone()
        self.caption_bank_audio = audio_features.detach().to(device, torch.float16).clone()
        self.caption_bank_clip = caption_to_clip.detach().to(device).clone()
        self._bank_embeds = None

    @torch.no_grad()
    def caption_bank_embeds(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The bank as known-caption expansion reads it (diffatr.retrieval.expansion): (C, Dt)
        the captions' raw features L2-normalised, (C, D) their embeddings and (C, D) their clips'
        embeddings. Computed once per state of the heads (the key holds the parameters' version
        counters, so an optimiser step or a loaded state dict recomputes them)."""
        heads = [*self.text_head.parameters(), *self.audio_head.parameters()]
        key = (self.caption_bank_text.data_ptr(), self.training,
               tuple((p.data_ptr(), p._version) for p in heads))
        if self._bank_embeds is None or self._bank_embeds[0] != key:
            raw = self.caption_bank_text.float()  # (C, Dt)
            text = self.project_text(raw)  # (C, D)
            audio = self.project_audio(self.caption_bank_audio.float())[self.caption_bank_clip]  # (C, D)
            self._bank_embeds = (key, F.normalize(raw, dim=-1), text, audio)
        return self._bank_embeds[1:]

    def make_scheduler(self) -> DDIMScheduler:
        return DDIMScheduler(self.config.diffusion)
