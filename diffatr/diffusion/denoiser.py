"""The attention denoiser of docs/method.md and its exact factorisation for inference.

Owns one network (the x0 predictor over K candidates) and two ways to run it: ``forward``,
the plain module used for training (docs/method.md step by step), and ``precompute`` /
``prepare_queries`` / ``forward_cached``, the same function regrouped so that candidate-only
and query-only products are computed once. Pure tensor code: no I/O, no device choice, no RNG.

Shape legend: B batch (queries), N corpus (candidate set), K candidates per query,
D embedding width, d denoiser width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffatr.config import DenoiserConfig

# Floats gathered per query block in ``forward_cached``: ~4 MiB keeps a block's working set
# inside the L2/L3 caches instead of streaming (B, K, 2d) through main memory every step.
_BLOCK_FLOATS = 1 << 20
# Gathered rows are kept across steps when a batch's (B, K, 4d) rows fit in this many floats
# (256 MiB); larger batches gather per step instead of holding a bigger copy.
_MEMO_ROWS_FLOATS = 1 << 26


def _offset_buffer(like: Tensor, rows: int, width: int) -> Tensor:
    """An empty (rows, width) tensor whose start sits half a page away from ``like``'s.

    Rows of the candidate table and of this buffer are 4d floats long (a power of two), so
    both start at the same offset modulo 4 KiB; copying one into the other then hits the
    CPU's 4K-aliasing stall on every load/store pair (measured: gather steps 3x slower in
    some processes). Shifting the buffer by 2 KiB removes the coincidence.
    """
    pad = 512  # floats = 2 KiB
    flat = like.new_empty(rows * width + 2 * pad)
    shift = (pad - (flat.data_ptr() - like.data_ptr()) // like.element_size()) % pad
    shift += pad if shift < pad // 2 else 0
    return flat[shift : shift + rows * width].view(rows, width)


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


def hubness(candidates: Tensor, bank: Tensor, neighbours: int, exclude: Tensor | None = None) -> Tensor:
    """Each candidate's hubness: the mean of its ``neighbours`` highest cosines to a query bank.

    A candidate close to many queries (a "hub") wins rankings it should not; QB-Norm and CSLS
    correct for this, and the "shortlist+hubness" denoiser sees it as an input.

    Args:
        candidates: (N, D) L2-normalised embeddings.
        bank: (M, D) L2-normalised queries (the training queries).
        neighbours: how many of the highest cosines are averaged (at most the bank's size).
        exclude: optional (N, M) bool, True where a bank query must not count for a candidate
            (in training: the queries of the candidate's own sound, which an unseen candidate
            never has in the bank).

    Returns:
        (N,) float32.
    """
    if bank.shape[0] == 0:
        raise ValueError("the query bank is empty: set it with Denoiser.set_query_bank before use")
    sims = candidates.float() @ bank.float().T  # (N, M)
    if exclude is not None:
        sims = sims.masked_fill(exclude, float("-inf"))
    top = torch.topk(sims, min(neighbours, bank.shape[0]), dim=1).values  # (N, m)
    top = torch.where(torch.isfinite(top), top, top.new_zeros(()))  # a candidate with < m allowed queries
    return top.mean(dim=1)


def shortlist_context(query: Tensor, candidates: Tensor, candidate_hubness: Tensor | None) -> Tensor:
    """The per-candidate context features of the "shortlist" denoisers (docs/method.md).

    Args:
        query: (B, D), candidates: (B, K, D), L2-normalised.
        candidate_hubness: (B, K) hubness of each candidate, or None ("shortlist").

    Returns:
        (B, K, F) float: [cos(q, c_k), mean_{j != k} cos(c_k, c_j), max_{j != k} cos(c_k, c_j)]
        (+ [hubness_k]); with K = 1 the candidate-candidate terms are 0.
    """
    K = candidates.shape[1]
    cos_q = torch.einsum("bd,bkd->bk", query, candidates)  # (B, K)
    cc = torch.einsum("bkd,bjd->bkj", candidates, candidates)  # (B, K, K)
    if K > 1:
        eye = torch.eye(K, dtype=torch.bool, device=cc.device)
        cc_mean = cc.masked_fill(eye, 0.0).sum(-1) / (K - 1)  # (B, K)
        cc_max = cc.masked_fill(eye, float("-inf")).amax(-1)  # (B, K)
    else:
        cc_mean = cc_max = torch.zeros_like(cos_q)
    feats = [cos_q, cc_mean, cc_max]
    if candidate_hubness is not None:
        feats.append(candidate_hubness.to(cos_q.dtype))
    return torch.stack(feats, dim=-1)


@dataclass(frozen=True, eq=False)
class CandidateCache:
    """Candidate-only products of a candidate set (N rows), computed once by ``precompute``.

    A snapshot of the weights at ``precompute`` time: recompute it after the weights change.
    With P the input projection (identity when D == d), W1 = [W1h | W1c] the decoder's first
    layer and b1 its bias:

    Attributes:
        keys: (N, d) Wk P c.
            (also memoises the per-timestep key term: a snapshot, like the rest)
        rows: (N, 4d) [W1h Wo Wv P c | W1c P c + W1h b_o + b1]: everything a DDIM step needs
            from a candidate, side by side so that one gather per step fetches it.
        fold: (2d, d) W1h Wo (for the step-shared Wv tau term).
        width: d.
    """

    keys: Tensor
    rows: Tensor
    fold: Tensor
    width: int
    # Only for a denoiser with context: the (N, D) embeddings and their (N,) hubness (or None).
    embeds: Tensor | None = None
    hubness: Tensor | None = None
    # Per timestep t: (<Wq tau_t, Wk P c> for every candidate (N,), W1h Wo Wv tau_t (2d,)).
    # A DDIM loop visits the same few timesteps for every batch of queries, so the (N,)
    # product is paid once per t per index instead of once per step per batch (it dominated
    # at N = 100k).
    _key_tau: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_candidates(self) -> int:
        return self.rows.shape[0]


@dataclass(frozen=True, eq=False)
class QueryCache:
    """Query-only products, computed once per query by ``prepare_queries``.

    Attributes:
        q: (B, d) Wq P q (the step-dependent part Wq tau is added per step).
    The private ``_pair`` memo keeps <Wq P q_b, Wk P c_k> for the last (cache, candidate_ids)
    it was used with: these logits do not depend on the step, so a DDIM loop computes them
    once. For batches up to ``_MEMO_ROWS_FLOATS`` it also keeps the gathered candidate rows
    (B, K, 4d), so later steps read a small contiguous block instead of gathering scattered
    rows of an (N, 4d) table again. It is reused only for the same cache object and equal
    ids, so it never goes stale.
    """

    q: Tensor
    raw: Tensor | None = None  # (B, D) the query embeddings, kept for a denoiser with context
    _pair: dict = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return self.q.shape[0]

    def select(self, index: Tensor | slice) -> "QueryCache":
        """The cache of a subset of the queries (rows ``index``)."""
        return QueryCache(q=self.q[index], raw=None if self.raw is None else self.raw[index])


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

    # ------------------------------------------------------------------ exact factorisation

    @torch.no_grad()
    def precompute(self, candidates: Tensor) -> CandidateCache:
        """Candidate-only products, once per candidate set (no grad).

        Args:
            candidates: (N, D) embeddings of every item a query may be re-ranked against.

        Returns:
            CandidateCache (keys (N, d), rows (N, 4d), fold (2d, d)); see its docstring.
        """
        D, d = self.config.embed_dim, self.width
        if candidates.ndim != 2 or candidates.shape[1] != D:
            raise ValueError(f"candidates must be (N, {D}) (N, D), got {tuple(candidates.shape)}")
        c = self.in_proj(candidates)  # (N, d)
        w1 = self.decoder[0]
        # W1 [h; c] = W1h h + W1c c, and W1h h = W1h Wo (sum_k w_k Wv(c_k + tau)) + W1h b_o.
        w1_h, w1_c = w1.weight[:, :d], w1.weight[:, d:]  # (2d, d) each
        fold = w1_h @ self.w_o.weight  # (2d, d)
        dec_bias = w1_h @ self.w_o.bias + w1.bias  # (2d,): constant, so it rides on each row
        value_rows = self.w_v(c) @ fold.t()  # (N, 2d): W1h Wo Wv P c
        dec_rows = torch.addmm(dec_bias, c, w1_c.t())  # (N, 2d): W1c P c + W1h b_o + b1
        return CandidateCache(
            keys=self.w_k(c).contiguous(),
            rows=torch.cat([value_rows, dec_rows], dim=-1).contiguous(),
            fold=fold.contiguous(),
            width=d,
            embeds=candidates if self.context_features else None,
            hubness=self.candidate_hubness(candidates) if self.context_features else None,
        )

    @torch.no_grad()
    def prepare_queries(self, query: Tensor) -> QueryCache:
        """Query-only products, once per query (no grad).

        Args:
            query: (B, D) query embeddings.

        Returns:
            QueryCache(q = Wq P q, (B, d)).
        """
        D = self.config.embed_dim
        if query.ndim != 2 or query.shape[1] != D:
            raise ValueError(f"query must be (B, {D}) (B, D), got {tuple(query.shape)}")
        return QueryCache(q=self.w_q(self.in_proj(query)).contiguous(),
                          raw=query if self.context_features else None)

    def _pair_logits(
        self, queries: QueryCache, cache: CandidateCache, ids: Tensor, block_size: int
    ) -> Tensor:
        """<Wq P q_b, Wk P c_k> for each query's candidates, (B, K); memoised on ``queries``."""
        memo = queries._pair
        if memo.get("cache") is cache and memo["ids"].shape == ids.shape and torch.equal(
            memo["ids"], ids
        ):
            return memo["logits"]
        B, K = ids.shape
        logits = torch.empty(B, K, dtype=cache.keys.dtype, device=cache.keys.device)
        for start in range(0, B, block_size):  # blocks of queries, for memory only
            stop = min(start + block_size, B)
            keys = cache.keys[ids[start:stop]]  # (b, K, d)
            torch.bmm(keys, queries.q[start:stop, :, None], out=logits[start:stop, :, None])
        context_dec = None
        if self.context_features:  # step-independent too: memoised with the logits
            if cache.embeds is None or queries.raw is None:
                raise ValueError("this denoiser has context: build the caches with its own precompute / "
                                 "prepare_queries")
            hub = None if cache.hubness is None else cache.hubness[ids]  # (B, K)
            context = shortlist_context(queries.raw, cache.embeds[ids], hub)  # (B, K, F)
            logits = logits + self.context_logit(context).squeeze(-1)
            context_dec = self.context_proj(context)  # (B, K, 2d)
        buf = memo.get("buf")
        memo.clear()
        memo.update(cache=cache, ids=ids.clone(), logits=logits, context_dec=context_dec)
        if buf is not None:
            memo["buf"] = buf
        # Only when the copy is smaller than the table itself: a small table sits in cache and
        # gathering from it each step is cheaper; from a large one (N = 100k: 800 MB at
        # d = 512) each step's scattered gather misses cache and TLB, and streaming the
        # contiguous copy is several times faster.
        if B * K * cache.rows.shape[1] <= _MEMO_ROWS_FLOATS and B * K < cache.num_candidates:
            memo["rows"] = cache.rows[ids.reshape(-1)].view(B, K, -1)  # (B, K, 4d)
        return logits

    @torch.no_grad()
    def forward_cached(
        self,
        x_t: Tensor,
        t: int,
        queries: QueryCache,
        cache: CandidateCache,
        candidate_ids: Tensor,
        block_size: int | None = None,
    ) -> Tensor:
        """``forward`` for candidates given by id into ``cache``, regrouped (same scores).

        Equals ``forward(x_t, full(t), query, candidates_all[candidate_ids])`` up to float
        rounding. Per step: O(d^2) once for tau (shared by all queries, since they share t),
        then O(K d) per query: one gather of the candidates' rows, a weighted sum, and the
        decoder's ReLU layer. The step-independent attention logits <Wq P q, Wk P c> are
        computed on the first call and reused while ``candidate_ids`` stay the same.

        Args:
            x_t: (B, K) noisy score vectors.
            t: the timestep, shared by the whole batch.
            queries: ``prepare_queries`` of the B queries.
            cache: ``precompute`` of the candidate set.
            candidate_ids: (B, K) integer rows of ``cache`` for each query.
            block_size: queries per block (memory locality only; the result does not depend
                on it). Default: about 4 MiB of gathered rows per block.

        Returns:
            (B, K) scores.
        """
        d = self.width
        if x_t.ndim != 2:
            raise ValueError(f"x_t must be (B, K), got shape {tuple(x_t.shape)}")
        B, K = x_t.shape
        if candidate_ids.shape != (B, K):
            raise ValueError(
                f"candidate_ids must be ({B}, {K}) like x_t, got {tuple(candidate_ids.shape)}"
            )
        if len(queries) != B:
            raise ValueError(f"queries hold {len(queries)} rows but x_t has B = {B}")
        if cache.width != d:
            raise ValueError(f"cache was made for width {cache.width}, this denoiser has d = {d}")
        ids = candidate_ids.long()
        if ids.numel():
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= cache.num_candidates:
                raise ValueError(
                    f"candidate_ids must lie in 0..{cache.num_candidates - 1}, got [{lo}, {hi}]"
                )
        if block_size is None:
            block_size = max(1, _BLOCK_FLOATS // max(1, K * 4 * d))

        # Step-shared terms: tau depends only on t, and every query in the batch shares t.
        # s_k = <Wq(Pq + tau), Wk(Pc_k + tau)> + x_t[k]
        #     = <Wq Pq, Wk Pc_k> + <Wq tau, Wk Pc_k> + <Wq(Pq + tau), Wk tau> + x_t[k].
        # The third term is the same for every k, so the softmax cancels it exactly: never
        # computed. The first is step-independent (memoised), the second one scalar per candidate.
        # sum_k w_k Wv(Pc_k + tau) = sum_k w_k Wv Pc_k + Wv tau since sum_k w_k = 1, so
        # W1h h = sum_k w_k (W1h Wo Wv Pc_k) + W1h Wo Wv tau + W1h b_o (the last is in rows).
        # Both t-terms are memoised on the cache per timestep: a DDIM loop visits the same few
        # timesteps for every batch of queries.
        step_terms = cache._key_tau.get(int(t))
        if step_terms is None:
            tau = self.time_embedding(torch.tensor([int(t)], device=x_t.device))[0]  # (d,)
            key_tau = cache.keys @ (self.w_q.weight @ tau)  # (N,)
            h_tau = cache.fold @ (self.w_v.weight @ tau)  # (2d,)
            step_terms = cache._key_tau[int(t)] = (key_tau, h_tau)
        key_tau, h_tau = step_terms
        w2 = self.decoder[2].weight[0]  # (2d,)
        b2 = self.decoder[2].bias  # (1,)
        logits = self._pair_logits(queries, cache, ids, block_size)  # (B, K)
        context_dec = queries._pair["context_dec"]  # (B, K, 2d) or None
        logits = logits + key_tau[ids] + x_t  # (B, K)
        w = torch.softmax(logits, dim=-1)  # (B, K)

        out = torch.empty_like(x_t)
        memo_rows = queries._pair.get("rows")  # (B, K, 4d) gathered once, or None
        # One buffer, reused across blocks and across the steps of a DDIM loop (kept on the
        # query cache): a fresh multi-MiB allocation per step is served by mmap and page
        # faults, which made steps up to 3x slower.
        width = 2 * d if memo_rows is not None else 4 * d
        rows_needed = min(block_size, B) * K
        buf = queries._pair.get("buf")
        if buf is None or buf.shape[0] < rows_needed or buf.shape[1] != width or buf.dtype != cache.rows.dtype:
            buf = queries._pair["buf"] = _offset_buffer(cache.rows, rows_needed, width)
        for start in range(0, B, block_size):  # blocks of queries, for cache locality only
            stop = min(start + block_size, B)
            b = stop - start
            if memo_rows is not None:
                rows = memo_rows[start:stop]  # (b, K, 4d), read-only
            else:
                rows = torch.index_select(
                    cache.rows, 0, ids[start:stop].reshape(-1), out=buf[: b * K]
                ).view(b, K, 4 * d)
            values = rows[..., : 2 * d]  # (b, K, 2d)
            w_blk = w[start:stop]  # (b, K)
            h_part = torch.bmm(w_blk[:, None, :], values).squeeze(1) + h_tau  # (b, 2d)
            if memo_rows is not None:  # the memo must stay intact: write the sum to buf
                dec = torch.add(rows[..., 2 * d :], h_part[:, None, :], out=buf[: b * K].view(b, K, 2 * d))
            else:  # the gathered copy is ours: add in place
                dec = rows[..., 2 * d :]
                dec += h_part[:, None, :]  # (b, K, 2d)
            if context_dec is not None:
                dec += context_dec[start:stop]
            dec.relu_()
            torch.mv(dec.reshape(b * K, 2 * d), w2, out=out[start:stop].view(-1))
        out += b2
        if self.config.residual:
            out += w
        return out
