"""The denoiser regrouped for inference: exact, and fast at any corpus size.

``precompute`` folds every candidate-only product of the denoiser (docs/method.md) into one
table per candidate set, ``prepare_queries`` every query-only product, and ``forward_cached``
runs one DDIM step from these with O(K d) work per query instead of the plain module's
O(K d^2). The scores equal ``Denoiser.forward`` up to float rounding (tests/test_denoiser.py).
Everything here is cache engineering; the readable model is ``diffatr.diffusion.denoiser``.

Shape legend: B batch (queries), N corpus (candidate set), K candidates per query,
D embedding width, d denoiser width.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from diffatr.diffusion.context import shortlist_context

if TYPE_CHECKING:
    from diffatr.diffusion.denoiser import Denoiser


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


@torch.no_grad()
def precompute(denoiser: Denoiser, candidates: Tensor) -> CandidateCache:
    """Candidate-only products, once per candidate set (no grad).

    Args:
        candidates: (N, D) embeddings of every item a query may be re-ranked against.

    Returns:
        CandidateCache (keys (N, d), rows (N, 4d), fold (2d, d)); see its docstring.
    """
    D, d = denoiser.config.embed_dim, denoiser.width
    if candidates.ndim != 2 or candidates.shape[1] != D:
        raise ValueError(f"candidates must be (N, {D}) (N, D), got {tuple(candidates.shape)}")
    c = denoiser.in_proj(candidates)  # (N, d)
    w1 = denoiser.decoder[0]
    # W1 [h; c] = W1h h + W1c c, and W1h h = W1h Wo (sum_k w_k Wv(c_k + tau)) + W1h b_o.
    w1_h, w1_c = w1.weight[:, :d], w1.weight[:, d:]  # (2d, d) each
    fold = w1_h @ denoiser.w_o.weight  # (2d, d)
    dec_bias = w1_h @ denoiser.w_o.bias + w1.bias  # (2d,): constant, so it rides on each row
    value_rows = denoiser.w_v(c) @ fold.t()  # (N, 2d): W1h Wo Wv P c
    dec_rows = torch.addmm(dec_bias, c, w1_c.t())  # (N, 2d): W1c P c + W1h b_o + b1
    return CandidateCache(
        keys=denoiser.w_k(c).contiguous(),
        rows=torch.cat([value_rows, dec_rows], dim=-1).contiguous(),
        fold=fold.contiguous(),
        width=d,
        embeds=candidates if denoiser.context_features else None,
        hubness=denoiser.candidate_hubness(candidates) if denoiser.context_features else None,
    )

@torch.no_grad()
def prepare_queries(denoiser: Denoiser, query: Tensor) -> QueryCache:
    """Query-only products, once per query (no grad).

    Args:
        query: (B, D) query embeddings.

    Returns:
        QueryCache(q = Wq P q, (B, d)).
    """
    D = denoiser.config.embed_dim
    if query.ndim != 2 or query.shape[1] != D:
        raise ValueError(f"query must be (B, {D}) (B, D), got {tuple(query.shape)}")
    return QueryCache(q=denoiser.w_q(denoiser.in_proj(query)).contiguous(),
                      raw=query if denoiser.context_features else None)

# denoiser -> (its weights' versions, {t: (Wq tau_t (d,), W1h Wo Wv tau_t (2d,))}). Both depend
# on the weights and t only, not on the candidates: a store-backed search builds a fresh
# CandidateCache of K rows per query, and recomputing tau_t (the time MLP) and two (d, d)
# products at each of its 50 steps was most of the re-rank's cost.
_TIMESTEP_TERMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _timestep_terms(denoiser: Denoiser, cache: CandidateCache, t: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(Wq tau_t (d,), W1h Wo Wv tau_t (2d,)), memoised per denoiser until its weights change
    (an optimiser step or a load bumps a parameter's version)."""
    try:
        versions = tuple(p._version for p in denoiser.parameters())
    except RuntimeError:  # weights made in inference mode carry no version (and stay as they are)
        versions = None
    memo = _TIMESTEP_TERMS.get(denoiser)
    if memo is None or memo[0] != versions:
        memo = _TIMESTEP_TERMS[denoiser] = (versions, {})
    key = (t, device, cache.fold.dtype)
    terms = memo[1].get(key)
    if terms is None:
        tau = denoiser.time_embedding(torch.tensor([t], device=device))[0]  # (d,)
        # cache.fold is W1h Wo: weights only, so the second term is candidate-free too
        terms = memo[1][key] = (denoiser.w_q.weight @ tau, cache.fold @ (denoiser.w_v.weight @ tau))
    return terms


def _pair_logits(
    denoiser: Denoiser, queries: QueryCache, cache: CandidateCache, ids: Tensor, block_size: int
) -> Tensor:
    """<Wq P q_b, Wk P c_k> for each query's candidates, (B, K); memoised on ``queries``."""
    memo = queries._pair
    if memo.get("cache") is cache and memo["ids"].shape == ids.shape and torch.equal(
        memo["ids"], ids
    ):
        return memo["logits"]
    B, K = ids.shape
    if ids.numel():  # checked once per (queries, ids): later steps reuse the memo
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= cache.num_candidates:
            raise ValueError(
                f"candidate_ids must lie in 0..{cache.num_candidates - 1}, got [{lo}, {hi}]"
            )
    logits = torch.empty(B, K, dtype=cache.keys.dtype, device=cache.keys.device)
    for start in range(0, B, block_size):  # blocks of queries, for memory only
        stop = min(start + block_size, B)
        keys = cache.keys[ids[start:stop]]  # (b, K, d)
        torch.bmm(keys, queries.q[start:stop, :, None], out=logits[start:stop, :, None])
    context_dec = None
    if denoiser.context_features:  # step-independent too: memoised with the logits
        if cache.embeds is None or queries.raw is None:
            raise ValueError("this denoiser has context: build the caches with its own precompute / "
                             "prepare_queries")
        hub = None if cache.hubness is None else cache.hubness[ids]  # (B, K)
        context = shortlist_context(queries.raw, cache.embeds[ids], hub)  # (B, K, F)
        logits = logits + denoiser.context_logit(context).squeeze(-1)
        context_dec = denoiser.context_proj(context)  # (B, K, 2d)
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
    denoiser: Denoiser,
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
    d = denoiser.width
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
        q_tau, h_tau = _timestep_terms(denoiser, cache, int(t), x_t.device)
        step_terms = cache._key_tau[int(t)] = (cache.keys @ q_tau, h_tau)  # (N,), (2d,)
    key_tau, h_tau = step_terms
    w2 = denoiser.decoder[2].weight[0]  # (2d,)
    b2 = denoiser.decoder[2].bias  # (1,)
    logits = _pair_logits(denoiser, queries, cache, ids, block_size)  # (B, K)
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
    if denoiser.config.residual:
        out += w
    return out
