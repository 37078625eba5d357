"""The denoiser regrouped for inference: exact, and fast at any corpus size.

``precompute`` folds every candidate-only product of the denoiser (docs/method.md) into one
table per candidate set, ``prepare_queries`` every query-only product, and the products of the
weights alone are kept per denoiser. ``forward_cached`` runs one step from these with O(K d)
work per query instead of the plain module's O(K d^2); ``ddim_sample_cached`` runs the whole
DDIM loop (eta = 0) that way, all steps of a block of queries at once. The scores equal
``Denoiser.forward`` (and ``ddim_sample`` over it) up to float rounding (tests/test_denoiser.py,
tests/test_sampling.py). Everything here is cache engineering; the readable model is
``diffatr.diffusion.denoiser``.

The regrouping, with tau = tau_t and P the input projection (identity when D == d):
    s_k = <Wq(Pq + tau), Wk(Pc_k + tau)> + x_t[k]
        = <Wq Pq, Wk Pc_k> + <Wq tau, Wk Pc_k> + <Wq(Pq + tau), Wk tau> + x_t[k].
The third term is the same for every k, so the softmax cancels it exactly: never computed.
The first is step-independent, the second one scalar per candidate and step. Since
sum_k w_k = 1, sum_k w_k Wv(Pc_k + tau) = sum_k w_k Wv Pc_k + Wv tau, so with W1 = [W1h | W1c]
the decoder's first layer:
    W1 [h; c_k] + b1 = sum_j w_j (W1h Wo Wv Pc_j) + W1h Wo Wv tau + (W1c Pc_k + W1h b_o + b1).
Per candidate, a table row holds [W1h Wo Wv Pc_k | W1c Pc_k + W1h b_o + b1] and the key side
is Pc_k itself: Wk moves to the query side, <Wq x, Wk Pc_k> = <Wk^T Wq x, Pc_k>. Per timestep,
Wk^T Wq tau and W1h Wo Wv tau depend on the weights only.

Shape legend: B batch (queries), N corpus (candidate set), K candidates per query,
D embedding width, d denoiser width, S inference steps.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from diffatr.diffusion.context import shortlist_context
from diffatr.machine import l2_bytes_per_core

if TYPE_CHECKING:
    from diffatr.diffusion.denoiser import Denoiser
    from diffatr.diffusion.sampling import Trajectory
    from diffatr.diffusion.ddim import DDIMScheduler


# Queries per block. The fused loop runs all the steps of a block of b queries on rows gathered
# once; each step is 8 tensor ops whose dispatch costs a few us whatever b is, and streams the
# block's working set, 3 (b, K, 2d) floats (values, decoder terms, hidden), once. Large blocks
# share the dispatch cost, small ones stay in a fast cache, and which cache is fast enough is
# the CPU's business: on the AMD EPYC this project is developed on (512 KiB L2 per core, 32 MiB
# L3), 8-16 queries streaming from L3 run 2x faster than 1 that fits L2; on an Intel Xeon with
# 2 MiB L2 (issue 22), 2-4 queries that fit L2 run 1.8x faster than 16 from L3. So on the CPU
# the size is measured once per process and shape (``calibrated_block_size``, tens of ms, only
# for a batch of several queries); ``l2_block_size``, from the L2 size in sysfs, is the first
# candidate and the answer where nothing is measured.
_BLOCK_SIZES_TRIED = (1, 2, 4, 8, 16, 32)
_MAX_BLOCK_BYTES = 32 << 20  # a working set beyond any core's share of L3: never tried
_FALLBACK_L2_BYTES = 1 << 20  # when sysfs does not say: between today's x86 cores (0.5-2 MiB)
_OTHER_DEVICE_BLOCK_FLOATS = 1 << 20  # CUDA: 4 MiB of gathered rows per block, as before
_CALIBRATION_BYTES = 32 << 20  # working set streamed per candidate and round: a few ms
_CALIBRATION_ROUNDS = 3  # the fastest of three, against a noisy neighbour
_CALIBRATED: dict[tuple, int] = {}  # (K, d, dtype, threads) -> queries per block, this process


@dataclass(frozen=True, eq=False)
class CandidateCache:
    """Candidate-only products of a candidate set (N rows), computed once by ``precompute``.

    A snapshot of the weights at ``precompute`` time: recompute it after the weights change.

    Attributes:
        keys: (N, d) P c, the key side of the attention logits (Wk is on the query side).
        rows: (N, 4d) [W1h Wo Wv P c | W1c P c + W1h b_o + b1]: everything a step needs from
            a candidate, side by side so that one gather fetches it.
        width: d.
        embeds: (N, D) the embeddings, only for a denoiser with context.
        hubness: (N,) their hubness, only for the "shortlist+hubness" context.
    """

    keys: Tensor
    rows: Tensor
    width: int
    embeds: Tensor | None = None
    hubness: Tensor | None = None

    @property
    def num_candidates(self) -> int:
        return self.rows.shape[0]


@dataclass(frozen=True, eq=False)
class QueryCache:
    """Query-only products, computed once per query by ``prepare_queries``.

    Attributes:
        q: (B, d) Wk^T Wq P q (the step-dependent part Wk^T Wq tau is added per step).
        raw: (B, D) the query embeddings, kept for a denoiser with context.
    """

    q: Tensor
    raw: Tensor | None = None

    def __len__(self) -> int:
        return self.q.shape[0]

    def select(self, index: Tensor | slice) -> "QueryCache":
        """The cache of a subset of the queries (rows ``index``)."""
        return QueryCache(q=self.q[index], raw=None if self.raw is None else self.raw[index])


# ----------------------------------------------------------------------------- weight-only terms


@dataclass
class _WeightTerms:
    """Products of the weights alone, for one device and dtype.

    row_weight: (4d, d) [W1h Wo Wv ; W1c];  row_bias: (4d,) [0 ; W1h b_o + b1];
    key_query: (d, d) Wk^T Wq;  query_weight: (d, D), query_bias: (d,): Wk^T Wq P as an affine map;
    stacks: timesteps -> ``_timestep_terms`` of them.
    """

    row_weight: Tensor
    row_bias: Tensor
    key_query: Tensor
    query_weight: Tensor
    query_bias: Tensor
    stacks: dict = field(default_factory=dict)


# denoiser -> (its weights' versions, {(device, dtype): _WeightTerms}). A store-backed search
# builds a fresh K-row CandidateCache per query: recomputing W1h Wo (a (2d, d) x (d, d)
# product), tau_t (the time MLP) and two (d, d) products for it at every step was most of the
# re-rank's cost. An optimiser step or a load bumps a weight's version and empties the memo.
_WEIGHT_TERMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_fingerprint(denoiser: Denoiser) -> tuple:
    """(version, address) of every weight: an in-place update (optimiser step, load) bumps a
    version, a replaced tensor (``.to``, assignment) has another address. Walks the module's
    own dictionaries: ``parameters()`` costs 20 us, as much as a quarter of a search's fixed cost."""
    stack, marks = [denoiser], []
    while stack:
        module = stack.pop()
        for weight in module._parameters.values():
            if weight is not None:
                try:
                    marks.append((weight._version, weight.data_ptr()))
                except RuntimeError:  # made in inference mode: no version (and never updated in place)
                    marks.append(weight.data_ptr())
        stack.extend(child for child in module._modules.values() if child is not None)
    return tuple(marks)


def _weight_terms(denoiser: Denoiser) -> _WeightTerms:
    """The memoised weight-only products of ``denoiser`` for its weights' device and dtype."""
    versions = _weights_fingerprint(denoiser)
    memo = _WEIGHT_TERMS.get(denoiser)
    if memo is None or memo[0] != versions:
        memo = _WEIGHT_TERMS[denoiser] = (versions, {})
    weight = denoiser.w_q.weight
    terms = memo[1].get((weight.device, weight.dtype))
    if terms is None:
        with torch.no_grad():
            d = denoiser.width
            w1 = denoiser.decoder[0]
            w1_h, w1_c = w1.weight[:, :d], w1.weight[:, d:]  # (2d, d) each
            fold = w1_h @ denoiser.w_o.weight  # (2d, d) W1h Wo
            row_weight = torch.cat([fold @ denoiser.w_v.weight, w1_c])  # (4d, d)
            row_bias = torch.cat([torch.zeros_like(w1.bias), w1_h @ denoiser.w_o.bias + w1.bias])  # (4d,)
            key_query = denoiser.w_k.weight.t() @ denoiser.w_q.weight  # (d, d)
            if isinstance(denoiser.in_proj, torch.nn.Linear):
                query_weight = key_query @ denoiser.in_proj.weight  # (d, D)
                query_bias = key_query @ denoiser.in_proj.bias  # (d,)
            else:
                query_weight, query_bias = key_query, torch.zeros_like(denoiser.w_o.bias)
        terms = memo[1][(weight.device, weight.dtype)] = _WeightTerms(
            row_weight, row_bias, key_query, query_weight, query_bias)
    return terms


def _timestep_terms(denoiser: Denoiser, timesteps: tuple[int, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """(Wk^T Wq tau_t (S, d), S x W1h Wo Wv tau_t (2d,)) for the S ``timesteps``, memoised."""
    terms = _weight_terms(denoiser)
    stacked = terms.stacks.get(timesteps)
    if stacked is None:
        with torch.no_grad():
            tau = denoiser.time_embedding(torch.tensor(timesteps, device=terms.query_weight.device))  # (S, d)
            q_tau = tau @ terms.key_query.t()  # (S, d) Wk^T Wq tau
            h_tau = tau @ terms.row_weight[: 2 * denoiser.width].t()  # (S, 2d) W1h Wo Wv tau
        stacked = terms.stacks[timesteps] = (q_tau, h_tau.unbind(0))
    return stacked


# ----------------------------------------------------------------------------- caches


@torch.no_grad()
def precompute(denoiser: Denoiser, candidates: Tensor) -> CandidateCache:
    """Candidate-only products, once per candidate set (no grad).

    Args:
        candidates: (N, D) embeddings of every item a query may be re-ranked against.

    Returns:
        CandidateCache (keys (N, d), rows (N, 4d)); see its docstring.
    """
    D = denoiser.config.embed_dim
    if candidates.ndim != 2 or candidates.shape[1] != D:
        raise ValueError(f"candidates must be (N, {D}) (N, D), got {tuple(candidates.shape)}")
    terms = _weight_terms(denoiser)
    c = denoiser.in_proj(candidates)  # (N, d)
    return CandidateCache(
        keys=c.contiguous(),
        rows=torch.addmm(terms.row_bias, c, terms.row_weight.t()),  # (N, 4d)
        width=denoiser.width,
        embeds=candidates if denoiser.context_features else None,
        hubness=denoiser.candidate_hubness(candidates) if denoiser.context_features else None,
    )


@torch.no_grad()
def prepare_queries(denoiser: Denoiser, query: Tensor) -> QueryCache:
    """Query-only products, once per query (no grad).

    Args:
        query: (B, D) query embeddings.

    Returns:
        QueryCache(q = Wk^T Wq P q, (B, d)).
    """
    D = denoiser.config.embed_dim
    if query.ndim != 2 or query.shape[1] != D:
        raise ValueError(f"query must be (B, {D}) (B, D), got {tuple(query.shape)}")
    terms = _weight_terms(denoiser)
    return QueryCache(q=torch.addmm(terms.query_bias, query, terms.query_weight.t()),  # (B, d)
                      raw=query if denoiser.context_features else None)


# ----------------------------------------------------------------------------- blocks


@dataclass
class _Block:
    """What the steps of a block of b queries read, gathered once.

    base: (S, b, 1, K) the step's attention logits before x_t is added:
        <Wk^T Wq P q, P c_k> + <Wk^T Wq tau_t, P c_k> (+ the context logit).
    values: (b, K, 2d) W1h Wo Wv P c_k.
    dec: (b, K, 2d) W1c P c_k + W1h b_o + b1 (+ the context's decoder term).
    """

    base: Tensor
    values: Tensor
    dec: Tensor


def _check_ids(ids: Tensor, cache: CandidateCache) -> None:
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= cache.num_candidates:
            raise ValueError(f"candidate_ids must lie in 0..{cache.num_candidates - 1}, got [{lo}, {hi}]")


def _gather_block(denoiser: Denoiser, queries: QueryCache, cache: CandidateCache, ids: Tensor,
                  q_tau: Tensor, key_tau: Tensor | None) -> _Block:
    """The block of queries ``queries`` (b rows) over their candidates ``ids`` (b, K).

    ``q_tau``: (S, d) Wk^T Wq tau_t per step; ``key_tau``: (N, S) <Wk^T Wq tau_t, P c> for the whole
    candidate set when the caller found that cheaper than per gathered row, else None.
    """
    d = cache.width
    keys = cache.keys[ids]  # (b, K, d)
    pair = torch.bmm(keys, queries.q[:, :, None])  # (b, K, 1): step-independent
    step = key_tau[ids] if key_tau is not None else keys @ q_tau.t()  # (b, K, S)
    rows = cache.rows[ids]  # (b, K, 4d), our own copy
    values, dec = rows[..., : 2 * d], rows[..., 2 * d :]
    if denoiser.context_features:
        if cache.embeds is None or queries.raw is None:
            raise ValueError("this denoiser has context: build the caches with its own precompute / "
                             "prepare_queries")
        hub = None if cache.hubness is None else cache.hubness[ids]  # (b, K)
        context = shortlist_context(queries.raw, cache.embeds[ids], hub)  # (b, K, F)
        pair = pair + denoiser.context_logit(context)  # (b, K, 1)
        dec += denoiser.context_proj(context)  # (b, K, 2d)
    base = (step + pair).permute(2, 0, 1).unsqueeze(2).contiguous()  # (S, b, 1, K)
    return _Block(base=base, values=values, dec=dec)


def _readout(denoiser: Denoiser) -> tuple[Tensor, float, bool]:
    """(w2 (2d,), b2, residual): the decoder's last layer, looked up once per call."""
    last = denoiser.decoder[2]
    return last.weight[0], float(last.bias.detach()), bool(denoiser.config.residual)


def _unbiased_estimate(w2: Tensor, residual: bool, base: Tensor, y: Tensor, scale: float, values: Tensor,
                       dec: Tensor, h_tau: Tensor, hidden: Tensor, out: Tensor) -> None:
    """One step's x0 estimate for a block of b queries, less the decoder's last bias b2, into ``out``.

    Args:
        w2: (2d,) the decoder's last weight; residual: add w_k (``config.residual``).
        base: (b, 1, K) this step's slice of ``_Block.base``; values, dec: ``_Block``'s.
        y, scale: the sample is x_t = scale * y (+ a constant per query, which the softmax
            ignores); y is (b, 1, K).
        h_tau: (2d,) W1h Wo Wv tau_t.
        hidden: (b K, 2d) scratch, reused across steps (a fresh multi-MiB tensor per step is
            served by mmap and page faults: measured up to 3x slower steps).
        out: (b K,) the estimate.
    """
    w = torch.softmax(torch.add(base, y, alpha=scale), dim=-1)  # (b, 1, K)
    h = torch.baddbmm(h_tau, w, values)  # (b, 1, 2d): sum_k w_k rows + tau term
    torch.add(dec, h, out=hidden.view(dec.shape)).relu_()  # (b, K, 2d)
    if residual:  # + w_k, as the read-out's accumulator
        torch.addmv(w.view(-1), hidden, w2, out=out)
    else:
        torch.mv(hidden, w2, out=out)


def _working_set_bytes(K: int, d: int, itemsize: int) -> int:
    """Bytes one query adds to a block's per-step working set: values, dec and hidden, (K, 2d) each."""
    return 3 * K * 2 * d * itemsize


def l2_block_size(K: int, d: int, itemsize: int = 4, l2_bytes: int | None = None) -> int:
    """Queries per block whose per-step working set fills about 3/4 of one core's L2.

    Args:
        K, d: candidates per query, denoiser width.
        itemsize: bytes per float.
        l2_bytes: the L2 of one core; default: sysfs (``diffatr.machine``), or 1 MiB when it
            does not say.
    """
    l2 = l2_bytes if l2_bytes is not None else (l2_bytes_per_core() or _FALLBACK_L2_BYTES)
    return max(1, (3 * l2 // 4) // _working_set_bytes(K, d, itemsize))


def calibrated_block_size(K: int, d: int, dtype: torch.dtype = torch.float32) -> int:
    """The fastest block size for (K, d) on this CPU, measured on the first call, then memoised.

    Times the fused loop's steps (``_run_block``) on a synthetic block of each size in
    ``_BLOCK_SIZES_TRIED`` and ``l2_block_size`` (working sets up to 32 MiB; 32 MiB streamed
    per size and round), fastest of three rounds per query-step. The result never changes a score: only the time it takes.
    """
    key = (K, d, dtype, torch.get_num_threads())
    size = _CALIBRATED.get(key)
    if size is None:
        size = _CALIBRATED[key] = _calibrate(K, d, dtype)
    return size


def _calibrate(K: int, d: int, dtype: torch.dtype) -> int:
    itemsize = torch.empty(0, dtype=dtype).element_size()
    per_query = _working_set_bytes(K, d, itemsize)
    sizes = sorted({b for b in (*_BLOCK_SIZES_TRIED, l2_block_size(K, d, itemsize))
                    if b == 1 or b * per_query <= _MAX_BLOCK_BYTES})
    g = torch.Generator().manual_seed(0)  # the values only need to be ordinary floats
    query_steps = min(512, max(2, _CALIBRATION_BYTES // per_query))  # per candidate and round
    largest, steps = sizes[-1], max(2, query_steps // sizes[0])
    with torch.inference_mode():
        def uniform(*shape: int) -> Tensor:
            return torch.empty(shape, dtype=dtype).uniform_(-1.0, 1.0, generator=g)

        base, values, dec = uniform(steps, largest, 1, K), uniform(largest, K, 2 * d), uniform(largest, K, 2 * d)
        h_taus, w2 = uniform(steps, 2 * d).unbind(0), uniform(2 * d)
        best = dict.fromkeys(sizes, float("inf"))
        for _ in range(_CALIBRATION_ROUNDS):
            for b in sizes:
                b_steps = max(2, query_steps // b)
                plan = [(0, 0.0, 1.0)] * b_steps  # x_prev = x_t: every op runs, nothing grows
                block = _Block(base=base[:b_steps, :b], values=values[:b], dec=dec[:b])
                y = uniform(b, 1, K)
                start = time.perf_counter()
                _run_block(block, y, plan, h_taus, w2, 0.0, True, -1.0, 1.0, None)
                best[b] = min(best[b], (time.perf_counter() - start) / (b * b_steps))
    return min(sizes, key=best.__getitem__)


def _block_size(K: int, d: int, like: Tensor, batch: int, block_size: int | None) -> int:
    """Queries per block: ``block_size`` when given; else, for a batch of several queries, the
    calibrated size on the CPU and 4 MiB of gathered rows elsewhere. One query is one block."""
    if block_size is not None:
        return block_size
    if batch <= 1:
        return 1
    if like.device.type != "cpu":
        return max(1, _OTHER_DEVICE_BLOCK_FLOATS // max(1, K * 4 * d))
    return calibrated_block_size(K, d, like.dtype)


def _key_tau_table(cache: CandidateCache, q_tau: Tensor, gathered_rows: int) -> Tensor | None:
    """(N, S) <Wk^T Wq tau_t, P c> for the whole set when that is less work than per gathered row
    (a small corpus searched by many queries), else None."""
    return cache.keys @ q_tau.t() if cache.num_candidates <= gathered_rows else None


def _check_step_inputs(denoiser: Denoiser, x_t: Tensor, queries: QueryCache, cache: CandidateCache,
                       candidate_ids: Tensor) -> None:
    if x_t.ndim != 2:
        raise ValueError(f"x_t must be (B, K), got shape {tuple(x_t.shape)}")
    B, K = x_t.shape
    if candidate_ids.shape != (B, K):
        raise ValueError(f"candidate_ids must be ({B}, {K}) like x_t, got {tuple(candidate_ids.shape)}")
    if len(queries) != B:
        raise ValueError(f"queries hold {len(queries)} rows but x_t has B = {B}")
    if cache.width != denoiser.width:
        raise ValueError(f"cache was made for width {cache.width}, this denoiser has d = {denoiser.width}")
    _check_ids(candidate_ids, cache)


def _run_block(block: _Block, y: Tensor, plan: list, h_taus: tuple[Tensor, ...], w2: Tensor, b2: float,
               residual: bool, low: float | None, high: float | None,
               record: tuple[Tensor, Tensor] | None) -> Tensor:
    """Every DDIM step (eta = 0) of one block of b queries, in inference mode.

    Args:
        block: the gathered block (``_Block``; ``base`` holds one (b, 1, K) slice per step).
        y: (b, 1, K) x_T; overwritten.
        plan: S x (t, a, c): x_prev = a x0 + c x_t (``DDIMScheduler.deterministic_coefficients``).
        h_taus: S x (2d,) W1h Wo Wv tau_t.
        w2, b2, residual: the read-out (``_readout``).
        low, high: the clamp of the estimate less b2, or None for no clamp.
        record: (xs (S+1, b, K), preds (S, b, K)) to fill with every x_t and x0 estimate, or None.

    Returns:
        (b K,) the last x0 estimate less b2.
    """
    b, _, K = y.shape
    S = len(plan)
    # The sample is kept as x_t = scale * y + shift (scale, shift: numbers; y: (b, 1, K)).
    # The DDIM update x <- a x0 + c x then touches y once (y += a / scale' * o) instead of
    # twice, and b2 and the shift, the same for every candidate, stay out of the loop:
    # the softmax ignores them and only the last x0 estimate is returned.
    scale, shift = 1.0, 0.0
    o = y.new_empty(b * K)  # the estimate less b2
    hidden = y.new_empty(b * K, block.values.shape[-1])  # (b K, 2d)
    hidden_3d, y_flat = hidden.view(b, K, -1), y.view(-1)
    bases = block.base.unbind(0)  # S x (b, 1, K)
    if record is not None:
        record[0][0] = y.view(b, K)
    for i, (_, a, c) in enumerate(plan):
        # ``_unbiased_estimate``, inlined: the call alone cost 3 of a step's 19 us.
        w = torch.softmax(torch.add(bases[i], y, alpha=scale), dim=-1)  # (b, 1, K)
        h = torch.baddbmm(h_taus[i], w, block.values)  # (b, 1, 2d)
        torch.add(block.dec, h, out=hidden_3d).relu_()  # (b, K, 2d)
        if residual:
            torch.addmv(w.view(-1), hidden, w2, out=o)
        else:
            torch.mv(hidden, w2, out=o)
        if low is not None:
            o.clamp_(low, high)
        if i < S - 1:  # x_{t_prev} = a (o + b2) + c (scale y + shift)
            scale, shift = c * scale, c * shift + a * b2
            y_flat.add_(o, alpha=a / scale)
        if record is not None:
            xs, preds = record
            preds[i] = o.view(b, K) + b2
            xs[i + 1] = preds[i] if i == S - 1 else y.view(b, K) * scale + shift
    return o


# ----------------------------------------------------------------------------- entry points


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
    rounding, with O(K d) work per query after the caches. A whole DDIM loop is faster
    through ``ddim_sample_cached``, which gathers each candidate's row once, not per step.

    Args:
        x_t: (B, K) noisy score vectors.
        t: the timestep, shared by the whole batch.
        queries: ``prepare_queries`` of the B queries.
        cache: ``precompute`` of the candidate set.
        candidate_ids: (B, K) integer rows of ``cache`` for each query.
        block_size: queries per block (memory locality only; the result does not depend
            on it). Default: measured once per process on the CPU (``calibrated_block_size``).

    Returns:
        (B, K) scores.
    """
    _check_step_inputs(denoiser, x_t, queries, cache, candidate_ids)
    B, K = x_t.shape
    ids = candidate_ids.long()
    q_tau, h_tau = _timestep_terms(denoiser, (int(t),))  # (1, d), 1 x (2d,)
    key_tau = _key_tau_table(cache, q_tau, B * K)
    block = _block_size(K, denoiser.width, x_t, B, block_size)
    w2, b2, residual = _readout(denoiser)
    out = x_t.new_empty(B * K)
    for start in range(0, B, block):
        stop = min(start + block, B)
        gathered = _gather_block(denoiser, queries.select(slice(start, stop)), cache, ids[start:stop], q_tau, key_tau)
        hidden = x_t.new_empty((stop - start) * K, 2 * denoiser.width)
        _unbiased_estimate(w2, residual, gathered.base[0], x_t[start:stop].reshape(-1, 1, K), 1.0, gathered.values,
                           gathered.dec, h_tau[0], hidden, out[start * K : stop * K])
    return out.view(B, K).add_(b2)


@torch.no_grad()
def ddim_sample_cached(denoiser: Denoiser, scheduler: DDIMScheduler, noise: Tensor, queries: QueryCache,
                       cache: CandidateCache, candidate_ids: Tensor, num_inference_steps: int,
                       return_trajectory: bool = False, block_size: int | None = None) -> Tensor | tuple[Tensor, Trajectory]:
    """``ddim_sample`` (eta = 0) with ``forward_cached`` as the network, fused: same result up to
    float rounding, several times faster.

    Each block of queries gathers its candidates' rows once and runs every step on them while
    they sit in cache; a step is then eight small tensor ops (the generic loop's network call
    and scheduler step take about forty), run in inference mode, where each costs less.

    Args:
        scheduler: the DDIM scheduler (its timesteps are reset here).
        noise: (B, K) x_T.
        queries, cache, candidate_ids: as for ``forward_cached``.
        num_inference_steps: S in 1..T.
        return_trajectory: also return every x_t and x0 estimate (``Trajectory``).
        block_size: queries per block (memory locality only; the result does not depend on it).

    Returns:
        x0 (B, K), or (x0, Trajectory) when ``return_trajectory``.
    """
    from diffatr.diffusion.sampling import Trajectory

    _check_step_inputs(denoiser, noise, queries, cache, candidate_ids)
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps.clone()  # (S,)
    plan = scheduler.deterministic_coefficients()  # S x (t, a, b): x_prev = a x0 + b x_t
    B, K = noise.shape
    ids = candidate_ids.long()
    q_tau, h_taus = _timestep_terms(denoiser, tuple(t for t, _, _ in plan))  # (S, d), S x (2d,)
    key_tau = _key_tau_table(cache, q_tau, B * K)
    block = _block_size(K, denoiser.width, noise, B, block_size)
    w2, b2, residual = _readout(denoiser)
    S = len(plan)
    x0 = torch.empty_like(noise)  # (B, K)
    xs = noise.new_empty(S + 1, B, K) if return_trajectory else None
    preds = noise.new_empty(S, B, K) if return_trajectory else None
    # The estimate is clamp(o + b2, -1, 1) = clamp(o, -1 - b2, 1 - b2) + b2 with o the read-out
    # before its bias; without the clamp, o + b2.
    low, high = (-1.0 - b2, 1.0 - b2) if scheduler.clip_x0 else (None, None)
    for start in range(0, B, block):
        stop = min(start + block, B)
        b = stop - start
        gathered = _gather_block(denoiser, queries.select(slice(start, stop)), cache, ids[start:stop], q_tau, key_tau)
        with torch.inference_mode():  # plain tensors in, plain tensors out; cheaper dispatch inside
            y = noise[start:stop].reshape(b, 1, K).clone()
            record = None if xs is None else (xs[:, start:stop], preds[:, start:stop])
            o = _run_block(gathered, y, plan, h_taus, w2, b2, residual, low, high, record)
            x0[start:stop] = o.view(b, K) + b2  # the last step returns the x0 estimate itself
    if not return_trajectory:
        return x0
    return x0, Trajectory(timesteps=timesteps, x_t=xs, pred_x0=preds)
