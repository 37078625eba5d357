"""Phase-1 contrastive objective (docs/method.md): symmetric NT-Xent / InfoNCE and its logit scale.

Pure tensor code: no I/O, no device choice, no randomness. The trainer owns the optimiser
and calls ``LogitScale.clamp_()`` after each step when the scale is learnable.

Shape legend: B batch, D embedding width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffatr.errors import DiffatrError

__all__ = ["ContrastiveError", "LogitScale", "nt_xent_loss"]


class ContrastiveError(DiffatrError):
    """Inputs the contrastive loss cannot use (shapes, dtypes, a non-positive scale)."""


class LogitScale(nn.Module):
    """The multiplier 1 / temperature applied to cosine similarities.

    Stored as log(1 / temperature) (CLIP's parameterisation: multiplicative steps, always
    positive). Fixed by default (docs/method.md: temperature 0.07); when learnable, the value used
    is capped at ``max_scale`` (CLIP and the reference code: 100) so the softmax cannot become
    arbitrarily sharp. The forward cap alone would leave a parameter that overshot the cap
    with zero gradient forever, so the trainer also calls ``clamp_()`` after each optimiser
    step to project the parameter back (as open_clip does).

    The fixed value is a persistent buffer and the learnable one a parameter, both named
    ``log_scale``, so checkpoints load across the two modes.

    Args:
        init_temperature: the initial (or fixed) temperature, > 0.
        learnable: whether the scale is an ``nn.Parameter``.
        max_scale: the cap on the learnable scale, > 0; ignored when fixed.
    """

    def __init__(self, init_temperature: float = 0.07, learnable: bool = False, max_scale: float = 100.0):
        super().__init__()
        if not (isinstance(init_temperature, (int, float)) and 0 < init_temperature < math.inf):
            raise ContrastiveError(f"init_temperature must be a positive number, got {init_temperature!r}")
        if not (isinstance(max_scale, (int, float)) and max_scale > 0):
            raise ContrastiveError(f"max_scale must be a positive number, got {max_scale!r}")
        if learnable and 1.0 / init_temperature > max_scale:
            raise ContrastiveError(
                f"the initial scale 1/{init_temperature} = {1.0 / init_temperature:.4g} exceeds "
                f"max_scale={max_scale}: raise max_scale or the temperature"
            )
        self.learnable = bool(learnable)
        self.max_scale = float(max_scale)
        init = torch.tensor(math.log(1.0 / init_temperature), dtype=torch.float32)
        if self.learnable:
            self.log_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_scale", init)

    def forward(self) -> Tensor:
        """Returns the scale as a 0-d tensor: exp(log_scale), capped at max_scale if learnable."""
        log_scale = self.log_scale
        if self.learnable:
            # Capped in log space: exp() of an overshot parameter could overflow to inf, and
            # inf * the clamp's zero gradient is NaN.
            log_scale = log_scale.clamp(max=math.log(self.max_scale))
        return log_scale.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Projects a learnable parameter back to log(max_scale) if an update overshot it."""
        if self.learnable:
            self.log_scale.clamp_(max=math.log(self.max_scale))

    def extra_repr(self) -> str:
        return f"learnable={self.learnable}, max_scale={self.max_scale}"


def nt_xent_loss(
    text_embeds: Tensor,
    audio_embeds: Tensor,
    logit_scale: Tensor | float,
    clip_ids: Tensor | None = None,
) -> Tensor:
    """Symmetric NT-Xent (InfoNCE, as in CLIP) over in-batch cosine similarities.

    logits = scale * cos(text_i, audio_j) (B, B); the loss is the mean of the text -> audio
    cross-entropy over rows and the audio -> text cross-entropy over columns, each with the
    diagonal as the target (van den Oord et al. 2018; Radford et al. 2021, eq. of Fig. 3).

    Duplicates: pairs (i, j), i != j, with the same clip id are masked out of the
    denominators (logit -inf), so each row keeps exactly one positive, its own pair. Why
    masking rather than averaging the log-likelihood over all same-clip positives: the same
    clip twice in a batch has (near-)identical audio embeddings, so its logits equal the
    positive's; averaging over positives would give every such row a floor of log(#positives)
    and a loss that depends on how many duplicates the sampler drew, while masking keeps
    the one-positive optimum (loss -> 0) and still never pushes two captions of one clip
    apart: a masked pair gets no gradient at all (docs/pitfalls.md: the reference code labelled
    such duplicates as negatives).

    Args:
        text_embeds: (B, D) text embeddings. They are L2-normalised here (idempotent for the
            model's already-normalised outputs), so the logits are always cosines.
        audio_embeds: (B, D) audio embeddings of the paired clips (row i pairs with text i).
        logit_scale: a positive float or a one-element tensor, e.g. ``LogitScale()()``.
        clip_ids: optional (B,) integer id of each pair's clip, or of its sound unit
            (``diffatr.data.sounds``; what training passes): pairs with equal ids are never
            negatives. None = all pairs distinct.

    Returns:
        A 0-d tensor: (CE_text->audio + CE_audio->text) / 2, each averaged over the batch.

    Raises:
        ContrastiveError (a ValueError) on mismatched shapes, bad clip ids or a non-positive
        float scale.
    """
    if text_embeds.ndim != 2 or audio_embeds.ndim != 2 or text_embeds.shape != audio_embeds.shape:
        raise ContrastiveError(
            "text_embeds and audio_embeds must both be (B, D) with the same shape, got "
            f"{tuple(text_embeds.shape)} and {tuple(audio_embeds.shape)}"
        )
    batch = text_embeds.shape[0]
    if batch == 0:
        raise ContrastiveError("the batch is empty: nt_xent_loss needs at least one pair")
    if not torch.is_tensor(logit_scale):
        if not (math.isfinite(float(logit_scale)) and float(logit_scale) > 0):
            raise ContrastiveError(f"logit_scale must be positive (1 / temperature), got {logit_scale!r}")
        logit_scale = torch.tensor(float(logit_scale), dtype=text_embeds.dtype, device=text_embeds.device)
    # A tensor scale's sign is not checked: that would sync the device every step, and
    # LogitScale's exp() is positive by construction.
    if logit_scale.numel() != 1:
        raise ContrastiveError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}")

    text_embeds = F.normalize(text_embeds, dim=-1)  # (B, D)
    audio_embeds = F.normalize(audio_embeds, dim=-1)  # (B, D)
    logits = logit_scale.reshape(()) * text_embeds @ audio_embeds.T  # (B, B) rows: text, cols: audio

    if clip_ids is not None:
        clip_ids = torch.as_tensor(clip_ids, device=logits.device)
        if clip_ids.shape != (batch,) or clip_ids.is_floating_point() or clip_ids.dtype == torch.bool:
            raise ContrastiveError(
                f"clip_ids must be a ({batch},) integer tensor (one clip id per pair), got "
                f"shape {tuple(clip_ids.shape)} and dtype {clip_ids.dtype}"
            )
        same_clip = clip_ids.unsqueeze(0) == clip_ids.unsqueeze(1)  # (B, B), symmetric
        duplicate = same_clip & ~torch.eye(batch, dtype=torch.bool, device=logits.device)
        # Symmetric mask: the same entries leave both the row (text -> audio) and the column
        # (audio -> text) softmax; the diagonal always stays, so no row is all -inf.
        logits = logits.masked_fill(duplicate, float("-inf"))

    targets = torch.arange(batch, device=logits.device)  # (B,)
    loss_text_to_audio = F.cross_entropy(logits, targets)
    loss_audio_to_text = F.cross_entropy(logits.T, targets)
    return 0.5 * (loss_text_to_audio + loss_audio_to_text)
