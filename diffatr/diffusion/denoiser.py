"""The attention denoiser of docs/method.md: the readable model.

Owns one network (the x0 predictor over K candidates) and its plain ``forward``, used for
training and as the reference (docs/method.md step by step). Inference runs the same function
regrouped (``precompute`` / ``prepare_queries`` / ``forward_cached`` / ``ddim_sample_cached``),
whose cache engineering lives in ``diffatr.diffusion.factorised``. Pure tensor code: no I/O, no
device choice, no RNG.

Shape legend: B batch (queries), K candidates per query, D embedding width, d denoiser width.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffatr.config import DenoiserConfig
from diffatr.diffusion import factorised
from diffatr.diffusion.context import hubness, shortlist_context
from diffatr.diffusion.factorised import CandidateCache, QueryCache

if TYPE_CHECKING:
    from diffatr.diffusion.sampling import Trajectory
    from diffatr.diffusion.ddim import DDIMScheduler

__all__ = ["CandidateCache", "Denoiser", "QueryCache", "hubness", "shortlist_context", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps (Transformer / DDPM style).

    Args:
        t: (B,) timesteps (any integer or float dtype).
        dim: d, the embedding width.

    Returns:
        (B, d) float32: [sin(t f_0..f_{h-1}), cos(t f_0..f_{h-1})] with h = d // 2 and
        f_i = 10000^(-i/h); a zero column is appended when d is odd.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half, 1)
    )  # (h,)
    args = t.to(torch.float32)[:, None] * freqs[None, :]  # (B, h)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # (B, 2h)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class Denoiser(nn.Module):
    """x0 predictor over K candidates, conditioned on a query (docs/method.md, "The denoiser").

    tau = Linear(d,d) -> SiLU -> Linear(d,d) of sinusoidal(t);
    Q = Wq(q + tau), K_k = Wk(c_k + tau), V_k = Wv(c_k + tau) (bias-free);
    s_k = <Q, K_k> + x_t[k]  (no 1/sqrt(d) scale: docs/method.md writes <Q, K_k>); w = softmax_k(s);
    h = Wo(sum_k w_k V_k) + b_o;  out_k = MLP([h; c_k]) + w_k (the "+ w_k" when
    ``config.residual``), MLP = Linear(2d,2d) -> ReLU -> Linear(2d,1).
    When D != d, query and candidates first pass through one input projection P = Linear(D, d).
    Nothing depends on a candidate's position, so permuting candidates (and x_t) permutes
    the output the same way.

    Args:
        config: ``embed_dim`` (D), ``width`` (d), ``residual``.
    """

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        if config.embed_dim < 1 or config.width < 1:
            raise ValueError(
                f"embed_dim and width must be >= 1, got {config.embed_dim}, {config.width}"
            )
        self.config = config
        d = config.width
        self.width = d
        self.in_proj: nn.Module = (
            nn.Linear(config.embed_dim, d) if config.embed_dim != d else nn.Identity()
        )
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.w_q = nn.Linear(d, d, bias=False)
        self.w_k = nn.Linear(d, d, bias=False)
        self.w_v = nn.Linear(d, d, bias=False)
        self.w_o = nn.Linear(d, d)
        self.decoder = nn.Sequential(nn.Linear(2 * d, 2 * d), nn.ReLU(), nn.Linear(2 * d, 1))
        # Shortlist context (off = the paper): F features per candidate enter the attention
        # logits (one weight each) and the decoder's first layer (as if concatenated to [h; c]).
        self.context_features = {"none": 0, "shortlist": 3, "shortlist+hubness": 4}[config.context]
        if self.context_features:
            self.context_logit = nn.Linear(self.context_features, 1, bias=False)
            self.context_proj = nn.Linear(self.context_features, 2 * d, bias=False)
        if config.context == "shortlist+hubness":
            # (M, D) training queries; resized on load (its M is the training set's).
            self.register_buffer("query_bank", torch.zeros(0, config.embed_dim))

    def set_query_bank(self, bank: Tensor) -> None:
        """Store the (M, D) L2-normalised queries that candidates' hubness is measured against."""
        if self.config.context != "shortlist+hubness":
            raise ValueError(f"this denoiser has context {self.config.context!r}: it keeps no query bank")
        if bank.ndim != 2 or bank.shape[1] != self.config.embed_dim or bank.shape[0] == 0:
            raise ValueError(f"the query bank must be (M >= 1, {self.config.embed_dim}), got {tuple(bank.shape)}")
        self.query_bank = bank.detach().to(self.query_bank.device, self.query_bank.dtype).clone()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # The bank's size is the training set's, unknown at construction: take the saved one.
        key = prefix + "query_bank"
        if hasattr(self, "query_bank") and key in state_dict:
            self.query_bank = torch.empty_like(state_dict[key], device=self.query_bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def candidate_hubness(self, candidates: Tensor) -> Tensor | None:
        """(..., D) -> (...,) hubness against the stored bank; None without the hubness input."""
        if self.config.context != "shortlist+hubness":
            return None
        flat = candidates.reshape(-1, candidates.shape[-1])
        return hubness(flat, self.query_bank, self.config.hubness_neighbours).reshape(candidates.shape[:-1])

    # ------------------------------------------------------------------ plain module

    def time_embedding(self, t: Tensor) -> Tensor:
        """tau = MLP(sinusoidal(t)): (B,) -> (B, d)."""
        emb = timestep_embedding(t, self.width).to(self.w_q.weight.dtype)
        return self.time_mlp(emb)

    def forward(self, x_t: Tensor, t: Tensor, query: Tensor, candidates: Tensor,
                candidate_hubness: Tensor | None = None) -> Tensor:
        """The x0 estimate for each query's candidates (docs/method.md, steps 1-5).

        Args:
            x_t: (B, K) noisy score vectors.
            t: (B,) int64 timesteps.
            query: (B, D) query embeddings.
            candidates: (B, K, D) candidate embeddings.
            candidate_hubness: (B, K), only for context "shortlist+hubness": overrides the
                hubness measured against the stored bank (training passes one that leaves out
                each candidate's own sound).

        Returns:
            (B, K) scores, read as the x0 estimate.
        """
        self._check_inputs(x_t, query, candidates)
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        if t.shape != (x_t.shape[0],):
            raise ValueError(f"t must have shape ({x_t.shape[0]},), got {tuple(t.shape)}")
        q = self.in_proj(query)  # (B, d)
        c = self.in_proj(candidates)  # (B, K, d)
        tau = self.time_embedding(t)  # (B, d)
        Q = self.w_q(q + tau)  # (B, d)
        K = self.w_k(c + tau[:, None, :])  # (B, K, d)
        V = self.w_v(c + tau[:, None, :])  # (B, K, d)
        logits = torch.einsum("bd,bkd->bk", Q, K) + x_t  # (B, K): x_t added to the attention logits
        context = None
        if self.context_features:
            if candidate_hubness is None:
                candidate_hubness = self.candidate_hubness(candidates)
            context = shortlist_context(query, candidates, candidate_hubness)  # (B, K, F)
            logits = logits + self.context_logit(context).squeeze(-1)
        w = torch.softmax(logits, dim=-1)  # (B, K)
        h = self.w_o(torch.einsum("bk,bkd->bd", w, V))  # (B, d)
        hc = torch.cat([h[:, None, :].expand_as(c), c], dim=-1)  # (B, K, 2d)
        hidden = self.decoder[0](hc)  # (B, K, 2d)
        if context is not None:
            hidden = hidden + self.context_proj(context)
        out = self.decoder[2](self.decoder[1](hidden)).squeeze(-1)  # (B, K)
        if self.config.residual:
            out = out + w
        return out

    def _check_inputs(self, x_t: Tensor, query: Tensor, candidates: Tensor) -> None:
        D = self.config.embed_dim
        if x_t.ndim != 2:
            raise ValueError(f"x_t must be (B, K), got shape {tuple(x_t.shape)}")
        B, K = x_t.shape
        if query.shape != (B, D):
            raise ValueError(f"query must be ({B}, {D}) (B, D), got {tuple(query.shape)}")
        if candidates.shape != (B, K, D):
            raise ValueError(
                f"candidates must be ({B}, {K}, {D}) (B, K, D), got {tuple(candidates.shape)}"
            )

    # ------------------------------------------------------------------ fast inference
    # The exact factorisation lives in diffatr.diffusion.factorised; these are its entry points.

    def precompute(self, candidates: Tensor) -> CandidateCache:
        """``factorised.precompute``: the candidate-only products of (N, D) ``candidates``."""
        return factorised.precompute(self, candidates)

    def prepare_queries(self, query: Tensor) -> QueryCache:
        """``factorised.prepare_queries``: the query-only products of (B, D) ``query``."""
        return factorised.prepare_queries(self, query)

    def forward_cached(self, x_t: Tensor, t: int, queries: QueryCache, cache: CandidateCache,
                       candidate_ids: Tensor, block_size: int | None = None) -> Tensor:
        """``factorised.forward_cached``: ``forward`` for candidates given by id (same scores)."""
        return factorised.forward_cached(self, x_t, t, queries, cache, candidate_ids, block_size)

    def ddim_sample_cached(self, scheduler: DDIMScheduler, noise: Tensor, queries: QueryCache,
                           cache: CandidateCache, candidate_ids: Tensor, num_inference_steps: int,
                           return_trajectory: bool = False, block_size: int | None = None
                           ) -> Tensor | tuple[Tensor, Trajectory]:
        """``factorised.ddim_sample_cached``: the whole eta = 0 DDIM loop over cached candidates."""
        return factorised.ddim_sample_cached(self, scheduler, noise, queries, cache, candidate_ids,
                                             num_inference_steps, return_trajectory, block_size)
