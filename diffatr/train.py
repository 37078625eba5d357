"""Training loops of DiffATR: phase 1 (contrastive heads, optionally fine-tuned backbones) and
phase 2 (the two denoisers, on frozen and precomputed embeddings). docs/method.md, "Phase 1/2".

Owns batch construction (duplicate positives, unique-clip batches, hardest-first candidates),
the LR schedule, EMA, validation-only model selection, checkpoints, the JSONL log and exact
``--resume``. It parses no flags (cli.py does) and seeds no global RNG: the data order comes
from a CPU ``torch.Generator`` and the diffusion noise from one on the training device, both
seeded from ``TrainConfig.seed`` and saved with the run; initial weights are drawn inside
``torch.random.fork_rng``, which gives the caller's global RNG state back untouched.

A run folder holds ``last/`` and ``best/`` (checkpoints, ``best/`` chosen on the validation
split only), ``log.jsonl`` and ``train_state/`` (what ``--resume`` continues from).

Shape legend: B batch (pairs), K candidates per query (= B), D shared width, Da / Dt backbone
feature widths, N clips, M captions, S batches per epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from diffatr.checkpoint import load_checkpoint, save_checkpoint
from diffatr.config import (
    RESUME_MUTABLE_FIELDS,
    ModelConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from diffatr.contrastive import nt_xent_loss
from diffatr.data.sounds import sound_keys, sound_units
from diffatr.diffusion.denoiser import hubness
from diffatr.diffusion.losses import generation_loss
from diffatr.errors import DiffatrError
from diffatr.features import FeatureSet, LazyEncoders, compute_features, records_of
from diffatr.fileio import atomic_directory, atomic_write_bytes
from diffatr.metrics import retrieval_metrics
from diffatr.model import DIRECTIONS, DiffATR
from diffatr.runtime import autocast, resolve_device
from diffatr.trainstate import (
    TrainState,
    TrainStateError,
    load_train_state,
    save_train_state,
)

__all__ = [
    "EMA",
    "TrainError",
    "TrainResult",
    "contrastive_pairs",
    "diffusion_candidates",
    "epoch_batches",
    "hardest_first",
    "lr_at",
    "resolve_device",
    "select_value",
    "train_contrastive",
    "train_diffusion",
    "unique_clip_batches",
]

LOG_FILE = "log.jsonl"
STATE_DIR = "train_state"
BACKBONES_DIR = "backbones"


class TrainError(DiffatrError):
    """A run that cannot start or continue as asked; the message says what to do."""


@dataclass
class TrainResult:
    """Where a run wrote its outputs, and how it ended.

    Attributes:
        out_dir: the run folder.
        last, best: checkpoint folders (``best`` chosen on the validation split).
        log: the JSONL log.
        step: optimizer steps done in total.
        best_value, best_step: the selection metric at ``best`` and when it was reached.
        metrics: the validation metrics of the last evaluation.
    """

    out_dir: Path
    last: Path
    best: Path
    log: Path
    step: int
    best_value: float | None
    best_step: int | None
    metrics: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- devices, schedule


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up to ``base_lr`` over
    ``warmup_steps`` steps (the first step already gets base_lr / warmup_steps), then cosine
    decay towards 0 at ``total_steps`` (Loshchilov & Hutter, SGDR, without restarts)."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------- batches


def epoch_batches(num_captions: int, batch_size: int, generator: torch.Generator) -> Tensor:
    """Phase-1 batches of one epoch: a random permutation of the captions cut into
    ``num_captions // batch_size`` batches (the remainder is dropped, as CLIP does).

    Two captions of one clip may share a batch; ``contrastive_pairs`` gives them the same
    clip id so the loss treats them as positives, not negatives.

    Returns:
        (S, B) int64 caption rows.
    """
    if not 1 <= batch_size <= num_captions:
        raise TrainError(f"batch_size must be in 1..{num_captions} (the number of captions), got {batch_size}")
    steps = num_captions // batch_size
    perm = torch.randperm(num_captions, generator=generator)  # (M,)
    return perm[: steps * batch_size].view(steps, batch_size)


def unique_clip_batches(caption_to_clip: Tensor, batch_size: int, generator: torch.Generator) -> Tensor:
    """Phase-2 batches of one epoch: every batch holds ``batch_size`` captions of *different* clips.

    The captions are permuted and dealt in order; a caption whose clip is already in the
    batch being filled waits (in order) for the next batch. This is the deduplication rule of
    phase 2 (docs/pitfalls.md: the reference labelled a second copy of the positive as a
    negative): with distinct clips, the in-batch candidates of a text query hold its clip
    exactly once, and those of an audio query hold exactly one of its captions. When the
    waiting captions cannot fill the last batch, it is topped up with a random caption of
    random clips not in it yet. There are always ``M // batch_size`` batches.

    Args:
        caption_to_clip: (M,) int64 owner of each caption: its clip, or its sound unit so that
            a batch never holds two variants of one sound (training passes units).
        batch_size: B, at most the number of distinct owners.
        generator: the only source of randomness.

    Returns:
        (S, B) int64 caption rows.
    """
    owners = caption_to_clip.tolist()
    captions_of: dict[int, list[int]] = {}
    for row, clip in enumerate(owners):
        captions_of.setdefault(clip, []).append(row)
    clips = sorted(captions_of)
    if not 1 <= batch_size <= len(clips):
        raise TrainError(f"batch_size must be in 1..{len(clips)} (the number of clips: phase-2 batches hold "
                         f"distinct clips), got {batch_size}")
    steps = len(owners) // batch_size
    pending = deque(torch.randperm(len(owners), generator=generator).tolist())
    batches = []
    for _ in range(steps):
        batch: list[int] = []
        taken: set[int] = set()
        waiting: list[int] = []
        while pending and len(batch) < batch_size:
            row = pending.popleft()
            if owners[row] in taken:
                waiting.append(row)
            else:
                batch.append(row)
                taken.add(owners[row])
        pending.extendleft(reversed(waiting))  # they lead the next batch, in their order
        if len(batch) < batch_size:
            free = [c for c in clips if c not in taken]
            for j in torch.randperm(len(free), generator=generator)[: batch_size - len(batch)].tolist():
                rows = captions_of[free[j]]
                batch.append(rows[int(torch.randint(len(rows), (1,), generator=generator))])
        batches.append(batch)
    return torch.tensor(batches, dtype=torch.long).view(steps, batch_size)


def contrastive_pairs(features: FeatureSet, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The (caption, clip) pairs of a phase-1 batch.

    Args:
        features: the split's features.
        rows: (B,) caption rows.

    Returns:
        text (B, Dt), audio (B, Da) (a clip with two captions in the batch appears twice) and
        clip_ids (B,): equal ids mark the same clip, which ``nt_xent_loss`` masks out of the
        negatives.
    """
    clip_ids = features.caption_to_clip[rows]  # (B,)
    return features.text[rows], features.audio[clip_ids], clip_ids


@torch.no_grad()
def hardest_first(query: Tensor, pool: Tensor, positive: Tensor | None = None) -> Tensor:
    """The candidate order of each query: its positive first, then every other pool item by
    cosine similarity, highest (hardest) first; ties keep the pool order.

    The positive's fixed slot leaks nothing: the denoiser has no position signal over
    candidates (tests/test_denoiser.py).

    Args:
        query: (B, D) L2-normalised queries.
        pool: (P, D) L2-normalised candidates.
        positive: (B,) pool row of each query's positive; default ``arange(B)`` (row i pairs
            with query i, as in a batch of pairs).

    Returns:
        (B, P) int64 pool rows; column 0 is the positive.
    """
    batch = query.shape[0]
    if positive is None:
        positive = torch.arange(batch, device=query.device)
    scores = (query.float() @ pool.float().T).clone()  # (B, P)
    scores[torch.arange(batch, device=query.device), positive] = float("inf")
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def diffusion_candidates(query: Tensor, pool: Tensor) -> Tensor:
    """Candidates of a phase-2 batch: row i of ``pool`` is the positive of query i; every
    query gets all B pool items, hardest first, positive at index 0.

    Args:
        query: (B, D), pool: (B, D), L2-normalised, with distinct items in ``pool``.

    Returns:
        (B, K = B, D) candidates.
    """
    order = hardest_first(query, pool)  # (B, B)
    return pool[order]  # (B, K, D)


def mined_candidates(query: Tensor, query_owner: Tensor, positive: Tensor, pool: Tensor, pool_owner: Tensor,
                     k: int) -> Tensor:
    """Candidates mined from a whole pool: the positive, then the query's K - 1 nearest pool
    items that belong to another sound, hardest first (what the cosine top-K holds at inference).

    Items of the query's own sound other than the positive (its other captions, the variants
    of its clip) are never negatives.

    Args:
        query: (B, D) L2-normalised queries; query_owner: (B,) the sound unit of each query
            (``diffatr.data.sounds``; clip ids give the clip-only rule).
        positive: (B,) pool row of each query's positive.
        pool: (P, D) L2-normalised candidates; pool_owner: (P,) the sound unit of each pool item.
        k: K, candidates per query (at most 1 + the pool items of other sounds).

    Returns:
        (B, K, D) candidates, the positive at index 0.
    """
    return pool[mined_candidate_rows(query, query_owner, positive, pool, pool_owner, k)]  # (B, K, D)


def mined_candidate_rows(query: Tensor, query_owner: Tensor, positive: Tensor, pool: Tensor, pool_owner: Tensor,
                         k: int) -> Tensor:
    """The (B, K) pool rows behind ``mined_candidates`` (same arguments), the positive in column 0."""
    scores = query.float() @ pool.float().T  # (B, P)
    scores = scores.masked_fill(pool_owner[None, :] == query_owner[:, None], float("-inf"))
    negatives = torch.topk(scores, k - 1, dim=1, sorted=True).indices  # (B, K-1), hardest first
    return torch.cat([positive[:, None], negatives], dim=1)  # (B, K)


# ----------------------------------------------------------------------------- EMA, metrics, log


class EMA:
    """Exponential moving average of a module's trainable parameters (shadow = decay * shadow
    + (1 - decay) * param after every step). Buffers are not averaged."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for name, param in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self, module: nn.Module) -> Iterator[None]:
        """Swap the EMA weights in for the duration of the block."""
        params = dict(module.named_parameters())
        backup = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for name, value in self.shadow.items():
                params[name].copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise TrainStateError("the saved EMA weights do not match the model's trainable parameters")
        for name, value in state.items():
            self.shadow[name].copy_(value)


def select_value(metrics: dict[str, Any], name: str) -> float:
    """The model-selection value: a metric key (``"text_to_audio/R@1"``) or ``"mean/X"`` (the
    mean of ``text_to_audio/X`` and ``audio_to_text/X``)."""
    if name in metrics:
        return float(metrics[name])
    prefix, mean, metric = name.rpartition("mean/")  # "mean/R@1" or a scorer's "gen/mean/R@1"
    if mean and metric and (not prefix or prefix.endswith("/")):
        keys = [f"{prefix}{d}/{metric}" for d in DIRECTIONS]
        if all(k in metrics for k in keys):
            return float(sum(metrics[k] for k in keys) / 2)
    known = sorted(k for k in metrics if "/" in k)
    raise TrainError(f"unknown select metric {name!r}; use one of {', '.join(known)} or mean/<name> "
                     "(e.g. mean/R@1; phase 2 also gen/<key>, gen/mean/<name>)")


def _higher_is_better(name: str) -> bool:
    return "rank" not in name


def _check_select_metric(name: str, phase: str = "contrastive") -> None:
    example = retrieval_metrics(torch.eye(2), None, torch.arange(2))
    if phase == "diffusion":  # phase 2 also validates the diffusion term alone
        example.update({f"gen/{k}": v for k, v in example.items() if "/" in k})
    select_value(example, name)


class RunLog:
    """The JSONL log: one object a line, appended and flushed at once."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()

    def truncate_after(self, step: int) -> None:
        """Drop the lines an interrupted run wrote after its last saved state."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the interruption
            if int(record.get("step", 0)) <= step:
                kept.append(line)
        atomic_write_bytes(self.path, ("\n".join(kept) + "\n" if kept else "").encode("utf-8"))


# ----------------------------------------------------------------------------- the loop


@dataclass
class _Job:
    """What differs between the phases; ``_run`` does the rest.

    ``trained`` holds every module whose state the run changes (saved for resume);
    ``param_groups`` its trainable parameters (each with an ``lr_scale``).
    """

    phase: str
    trained: nn.Module
    param_groups: list[dict[str, Any]]
    steps_per_epoch: int
    generators: dict[str, torch.Generator]
    make_epoch: Callable[[], Tensor]  # (S, B) caption rows, from generators["data"]
    step_loss: Callable[[Tensor], tuple[Tensor, dict[str, float]]]
    validate: Callable[[], dict[str, Any]]  # {"metrics": {...}, optional extra log keys}
    save_model: Callable[[Path, dict[str, Any]], None]
    train_mode: Callable[[], None]
    after_step: Callable[[], None] = lambda: None
    fingerprint: dict[str, Any] = field(default_factory=dict)  # must match on resume
    extra: dict[str, Any] = field(default_factory=dict)  # stored in every checkpoint


def _param_groups(named: Sequence[tuple[str, nn.Parameter]], weight_decay: float, lr_scale: float) -> list[dict]:
    """Weight decay on matrices only: biases, norm gains and the logit scale are not shrunk."""
    decay = [p for n, p in named if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in named if p.requires_grad and p.ndim < 2]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "lr_scale": lr_scale})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": lr_scale})
    return groups


def _check_resume(saved: dict[str, Any], config: TrainConfig, fingerprint: dict[str, Any]) -> None:
    old = from_dict(TrainConfig, saved["train"])
    changed = [f.name for f in dataclasses.fields(TrainConfig)
               if f.name not in RESUME_MUTABLE_FIELDS and getattr(old, f.name) != getattr(config, f.name)]
    if changed:
        raise TrainError(
            "--resume needs the settings of the interrupted run; changed: "
            + ", ".join(f"{n} ({getattr(old, n)!r} -> {getattr(config, n)!r})" for n in changed)
            + f". Only {', '.join(RESUME_MUTABLE_FIELDS)} may change."
        )
    for key, value in fingerprint.items():
        if saved.get("fingerprint", {}).get(key) != value:
            raise TrainError(f"--resume: the {key} differs from the interrupted run's; resume with the same "
                             "data, config and init checkpoint, or start a new run in another folder")


def _run(job: _Job, config: TrainConfig, out_dir: Path, *, resume: bool, device: torch.device,
         progress: bool) -> TrainResult:
    out_dir = Path(out_dir)
    log = RunLog(out_dir / LOG_FILE)
    state_dir = out_dir / STATE_DIR
    spe = job.steps_per_epoch
    total = config.epochs * spe
    stop = min(total, config.max_steps) if config.max_steps else total
    warmup = int(round(config.warmup_fraction * total))
    higher = _higher_is_better(config.select_metric)

    params = [p for g in job.param_groups for p in g["params"]]
    optimizer = torch.optim.AdamW(job.param_groups, lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(job.trained, config.ema_decay) if config.ema_decay > 0 else None

    step, order = 0, None
    sums: dict[str, float] = {}  # running sums of the logged values since the last train line
    count = 0
    best_value: float | None = None
    best_step: int | None = None
    restart = resume and not (state_dir / "state.json").is_file()
    if restart:
        # Interrupted before its first validation: nothing was saved, so start over.
        warnings.warn(f"no saved state in {state_dir}: the run starts from step 0", stacklevel=3)
        if log.path.exists():
            log.path.unlink()
    if resume and not restart:
        try:
            state = load_train_state(state_dir)
        except TrainStateError as err:
            raise TrainError(f"cannot resume: {err}") from err
        _check_resume(state.progress, config, job.fingerprint)
        try:
            job.trained.load_state_dict(state.modules)
            optimizer.load_state_dict(state.optimizer)
        except (RuntimeError, ValueError, KeyError) as err:
            raise TrainError(f"the resume state in {state_dir} does not fit this model ({err})") from err
        if ema is not None:
            if state.ema is None:
                raise TrainError("the interrupted run kept no EMA weights")
            ema.load_state_dict(state.ema)
        for name, generator in job.generators.items():
            generator.set_state(state.generators[name])
        order = state.epoch_order
        step = int(state.progress["step"])
        best_value, best_step = state.progress.get("best_value"), state.progress.get("best_step")
        sums, count = dict(state.progress.get("log_sums", {})), int(state.progress.get("log_count", 0))
        log.truncate_after(step)
        log.write({"type": "resume", "phase": job.phase, "step": step})
    else:
        leftovers = [p.name for p in (state_dir, log.path, out_dir / "last") if p.exists()]
        if leftovers and not restart:
            raise TrainError(f"{out_dir} already holds a run ({', '.join(leftovers)}): pass --resume to "
                             "continue it, or choose another --out")
        log.write({"type": "start", "phase": job.phase, "step": 0, "train": to_dict(config),
                   "total_steps": total, "steps_per_epoch": spe, "warmup_steps": warmup, **job.extra})

    metrics: dict[str, Any] = {}

    def evaluate_and_save() -> None:
        nonlocal best_value, best_step, metrics
        swap = ema.applied(job.trained) if ema is not None else contextlib.nullcontext()
        with swap:
            job.trained.eval()
            with torch.no_grad():
                result = job.validate()
            metrics = result["metrics"]
            value = select_value(metrics, config.select_metric)
            improved = best_value is None or (value > best_value if higher else value < best_value)
            if improved:
                best_value, best_step = value, step
            extra = {"phase": job.phase, "step": step, "epoch": step / spe, "train": to_dict(config),
                     "validation": {"split": "val", "metrics": metrics}, "select_metric": config.select_metric,
                     "select_value": value, "best_value": best_value, "best_step": best_step, **job.extra}
            job.save_model(out_dir / "last", extra)
            if improved:
                job.save_model(out_dir / "best", extra)
        log.write({"type": "val", "phase": job.phase, "step": step, "epoch": step / spe, "split": "val",
                   "select_metric": config.select_metric, "select_value": value, "best": improved,
                   **result})
        # Saved after the checkpoints: a state never refers to a best/ that is not on disk.
        save_train_state(state_dir, TrainState(
            modules={k: v.detach().cpu() for k, v in job.trained.state_dict().items()},
            optimizer=optimizer.state_dict(),
            ema=ema.state_dict() if ema is not None else None,
            generators={name: g.get_state() for name, g in job.generators.items()},
            epoch_order=order,
            progress={"step": step, "best_value": best_value, "best_step": best_step, "train": to_dict(config),
                      "fingerprint": job.fingerprint, "log_sums": sums, "log_count": count},
        ))

    def due(done: int) -> bool:
        if done >= stop:
            return True
        if config.eval_unit == "step":
            return done % config.eval_every == 0
        return done % spe == 0 and (done // spe) % config.eval_every == 0

    bar = tqdm(total=stop, initial=step, desc=job.phase, unit="step", disable=not progress)
    precision = autocast(device, config.amp)
    while step < stop:
        if step % spe == 0 or order is None:
            if step % spe != 0:
                raise TrainError("the resume state has no data order for its epoch; start the run again")
            order = job.make_epoch()  # (S, B)
        lr = lr_at(step, total, warmup, config.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        job.train_mode()
        with precision, _step_rng(job.generators.get("dropout"), device):
            loss, logs = job.step_loss(order[step % spe])
        if not torch.isfinite(loss.detach()):
            raise TrainError(f"the loss became {float(loss)} at step {step}; lower --lr or enable --grad-clip")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip) if config.grad_clip > 0 else None
        optimizer.step()
        job.after_step()
        if ema is not None:
            ema.update(job.trained)
        step += 1
        bar.update(1)

        for key, value in {"loss": float(loss.detach()), **logs}.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        if grad_norm is not None:
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(grad_norm)
        count += 1
        if step % config.log_every == 0 or step == stop:
            record = {k: v / count for k, v in sums.items()}
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            log.write({"type": "train", "phase": job.phase, "step": step, "epoch": step / spe, "lr": lr, **record})
            sums, count = {}, 0
        if due(step):
            evaluate_and_save()  # after the train line: the saved state holds the log sums too
    bar.close()
    if not metrics:  # a finished run resumed again: report the saved state
        metrics = json.loads((out_dir / "last" / "config.json").read_text())["extra"].get("validation", {}).get("metrics", {})
    return TrainResult(out_dir=out_dir, last=out_dir / "last", best=out_dir / "best", log=out_dir / LOG_FILE,
                       step=step, best_value=best_value, best_step=best_step, metrics=metrics)


def _init_model(config: ModelConfig, seed: int) -> DiffATR:
    """A fresh model whose initial weights depend on ``seed`` only (the caller's RNG is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        return DiffATR(config)


def _generators(seed: int, device: torch.device, dropout: bool = False) -> dict[str, torch.Generator]:
    generators = {"data": torch.Generator().manual_seed(int(seed)),
                  "noise": torch.Generator(device=device).manual_seed(int(seed) + 1)}
    if dropout:  # only models with dropout draw from it (older runs resume unchanged)
        generators["dropout"] = torch.Generator().manual_seed(int(seed) + 2)
    return generators


@contextlib.contextmanager
def _step_rng(generator: torch.Generator | None, device: torch.device) -> Iterator[None]:
    """Dropout masks come from the global RNG, which training never touches: for one step,
    the global generators are forked and seeded from the run's ``dropout`` generator, then the
    caller's state comes back. A no-op without that generator."""
    if generator is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
        yield


def _features(split: Any, config: ModelConfig, encoders: LazyEncoders, *, cache_dir, strict: bool,
              progress: bool, desc: str) -> FeatureSet:
    if isinstance(split, FeatureSet):
        split.check_encoders(config)
        return split
    return compute_features(records_of(split), config, cache_dir=cache_dir, encoders=encoders, strict=strict,
                            progress=progress, desc=desc)


def _negative_ids(units: Tensor, num_clips: int, config: TrainConfig) -> Tensor:
    """(N,) the id each clip is compared by when negatives are chosen: its sound unit, or
    (``mask_same_sound=False``) the clip itself. Equal ids are never each other's negatives."""
    return units if config.mask_same_sound else torch.arange(num_clips)


def _data_extra(train: Any, val: Any, data_info: dict[str, Any] | None) -> dict[str, Any]:
    from diffatr.evaluate import with_source_sha256

    data = with_source_sha256(data_info or {})  # the manifest's hash: the same data wherever it lies
    data["train"] = dict(data.get("train", {}), **train.summary())
    data["val"] = dict(data.get("val", {}), **val.summary())
    return data


# ----------------------------------------------------------------------------- phase 1


def train_contrastive(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_split: Any,
    val_split: Any,
    out_dir: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
    data_info: dict[str, Any] | None = None,
) -> TrainResult:
    """Phase 1: fit the projection heads (and the temperature, if learnable) with symmetric
    NT-Xent on (caption, clip) pairs; with ``train_config.finetune`` the backbones too.

    Frozen backbones (the default): the features of both splits are computed once, through
    the feature cache. Fine-tuning: waveforms (a random ``window_seconds`` crop per clip) and
    tokens go through the backbones every step; the backbones run without dropout (BatchNorm
    in training mode), so every random draw comes from the run's generator. Validation
    (R@k etc. of cosine scores on ``val_split``) picks ``best/``.

    Args:
        model_config: the model (backbones, widths, temperature).
        train_config: a TrainConfig with phase "contrastive".
        train_split, val_split: ClipRecords, a ``load_split`` result (``.records``) or a
            FeatureSet. The test split is never an input: selection cannot see it.
        out_dir: the run folder.
        resume: continue the interrupted run in ``out_dir`` exactly.
        device: overrides ``train_config.device``.
        cache_dir: feature cache folder (None: no cache).
        strict: unusable clips raise instead of being skipped.
        progress: tqdm bars.
        data_info: JSON-able facts about the data, stored in every checkpoint.

    Returns:
        TrainResult.
    """
    if train_config.phase != "contrastive":
        raise TrainError(f"train_contrastive needs a TrainConfig with phase 'contrastive', got {train_config.phase!r}")
    _check_select_metric(train_config.select_metric)
    dev = resolve_device(device or train_config.device)
    out_dir = Path(out_dir)
    model = _init_model(model_config, train_config.seed).to(dev)
    model.denoisers.requires_grad_(False)  # phase 2 trains them
    generators = _generators(train_config.seed, dev, dropout=model_config.head_dropout > 0)
    encoders = LazyEncoders(model_config, dev)
    if train_config.finetune:
        return _train_finetune(model, model_config, train_config, train_split, val_split, out_dir, encoders,
                               generators, resume=resume, device=dev, strict=strict, progress=progress,
                               data_info=data_info)

    train = _features(train_split, model_config, encoders, cache_dir=cache_dir, strict=strict, progress=progress,
                      desc="train features")
    val = _features(val_split, model_config, encoders, cache_dir=cache_dir, strict=strict, progress=progress,
                    desc="val features")
    batch_size = _fit_batch(train_config.batch_size, train.num_captions, "captions")
    text, audio, owner = train.text.to(dev), train.audio.to(dev), train.caption_to_clip.to(dev)
    on_device = dataclasses.replace(train, audio=audio, text=text, caption_to_clip=owner)
    negative_ids = _negative_ids(train.sound_units(), train.num_clips, train_config).to(dev)  # (N,)
    val_text, val_audio = val.text.to(dev), val.audio.to(dev)

    def step_loss(rows: Tensor) -> tuple[Tensor, dict[str, float]]:
        text_f, audio_f, clip_ids = contrastive_pairs(on_device, rows.to(dev))  # (B, Dt), (B, Da), (B,)
        scale = model.logit_scale()
        loss = nt_xent_loss(model.project_text(text_f), model.project_audio(audio_f), scale, negative_ids[clip_ids])
        return loss, {"logit_scale": float(scale.detach())}

    def validate() -> dict[str, Any]:
        scores = model.project_text(val_text) @ model.project_audio(val_audio).T  # (Mv, Nv)
        return {"metrics": retrieval_metrics(scores.float().cpu(), None, val.caption_to_clip)}

    named = list(model.text_head.named_parameters()) + list(model.audio_head.named_parameters()) \
        + list(model.logit_scale.named_parameters())
    job = _Job(
        phase="contrastive",
        trained=model,
        param_groups=_param_groups(named, train_config.weight_decay, 1.0),
        steps_per_epoch=train.num_captions // batch_size,
        generators=generators,
        make_epoch=lambda: epoch_batches(train.num_captions, batch_size, generators["data"]),
        step_loss=step_loss,
        validate=validate,
        save_model=lambda path, extra: save_checkpoint(model, path, extra),
        train_mode=lambda: model.train(),
        after_step=model.logit_scale.clamp_,
        fingerprint={"model config": to_dict(model_config), "train data": train.digest(), "val data": val.digest(),
                     "device type": dev.type},
        extra={"batch_size": batch_size, "data": _data_extra(train, val, data_info)},
    )
    return _run(job, train_config, out_dir, resume=resume, device=dev, progress=progress)


def _fit_batch(batch_size: int, available: int, what: str) -> int:
    if available < 2:
        raise TrainError(f"the training split has {available} {what}; at least 2 are needed")
    if batch_size > available:
        warnings.warn(f"batch_size {batch_size} exceeds the {available} training {what}; using {available}",
                      stacklevel=3)
        return available
    return batch_size


# ----------------------------------------------------------------------------- phase 1, fine-tuned


@dataclass
class _ClipTable:
    """Paths and captions of a split, for fine-tuning (no features)."""

    paths: list[str]
    clip_ids: list[str]
    captions: list[str]
    caption_to_clip: Tensor  # (M,)
    skipped: list[tuple[str, str]]
    units: Tensor  # (N,) sound unit of each clip (diffatr.data.sounds)

    def summary(self) -> dict[str, Any]:
        return {"num_clips": len(self.paths), "num_captions": len(self.captions), "num_skipped": len(self.skipped),
                "digest": _digest([self.clip_ids, self.captions])}


def _digest(obj: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def _clip_table(split: Any, sample_rate: int, strict: bool, progress: bool, desc: str) -> _ClipTable:
    """Clips whose audio decodes (checked once here, so training never stops on a bad file)."""
    from diffatr.audio.io import AudioError, decode_audio

    if isinstance(split, FeatureSet):
        return _ClipTable(list(split.paths), list(split.clip_ids), list(split.captions),
                          split.caption_to_clip.clone(), list(split.skipped), split.sound_units())
    paths, ids, captions, owner, skipped, metadata = [], [], [], [], [], []
    for record in tqdm(records_of(split), desc=desc, unit="clip", disable=not progress):
        reason = None if record.captions else "no captions"
        if reason is None:
            try:
                decode_audio(record.path, sample_rate, max_seconds=1.0)
            except (AudioError, OSError) as err:
                reason = str(err)
        if reason is not None:
            if strict:
                raise TrainError(f"{record.path}: {reason} (strict mode: fix or remove this clip)")
            skipped.append((record.path, reason))
            continue
        for caption in record.captions:
            captions.append(caption)
            owner.append(len(paths))
        paths.append(record.path)
        ids.append(record.clip_id)
        metadata.append(record.metadata)
    owner_t = torch.tensor(owner, dtype=torch.long)
    units = sound_units(len(paths), captions, owner_t, sound_keys(ids, metadata))
    return _ClipTable(paths, ids, captions, owner_t, skipped, units)


def _train_finetune(model: DiffATR, model_config: ModelConfig, config: TrainConfig, train_split: Any,
                    val_split: Any, out_dir: Path, encoders: LazyEncoders, generators: dict[str, torch.Generator],
                    *, resume: bool, device: torch.device, strict: bool, progress: bool,
                    data_info: dict[str, Any] | None) -> TrainResult:
    from diffatr.audio.io import load_audio, pad_or_crop

    audio_encoder, text_encoder = encoders.audio, encoders.text
    sample_rate = audio_encoder.sample_rate
    window = max(1, round(model_config.audio.window_seconds * sample_rate))
    train = _clip_table(train_split, sample_rate, strict, progress, "checking train audio")
    val = _clip_table(val_split, sample_rate, strict, progress, "checking val audio")
    batch_size = _fit_batch(config.batch_size, len(train.captions), "captions")
    negative_ids = _negative_ids(train.units, len(train.paths), config)  # (N,)
    pool = ThreadPoolExecutor(config.num_workers) if config.num_workers > 0 else None

    trained = nn.ModuleDict({"model": model, "audio_backbone": audio_encoder.backbone, "text_backbone": text_encoder.model})
    trained.requires_grad_(True)
    model.denoisers.requires_grad_(False)
    if not model.logit_scale.learnable:
        model.logit_scale.requires_grad_(False)

    def crop(path: str, frac: float) -> np.ndarray:
        wave = load_audio(path, sample_rate, max_seconds=model_config.audio.max_seconds)  # (S,)
        start = int(frac * max(0, wave.shape[0] - window))
        return pad_or_crop(wave[start:], window, mode="start")  # (window,)

    def step_loss(rows: Tensor) -> tuple[Tensor, dict[str, float]]:
        clip_ids = train.caption_to_clip[rows]  # (B,)
        unique, inverse = torch.unique(clip_ids, return_inverse=True)  # a clip twice is embedded once
        fracs = torch.rand(len(unique), generator=generators["data"]).tolist()  # drawn here: order-independent
        jobs = [(train.paths[c], f) for c, f in zip(unique.tolist(), fracs)]
        waves = list(pool.map(lambda a: crop(*a), jobs)) if pool else [crop(*a) for a in jobs]
        audio_f = audio_encoder(torch.from_numpy(np.stack(waves)).to(device))[inverse.to(device)]  # (B, Da)
        tokens = text_encoder.tokenize([train.captions[i] for i in rows.tolist()])
        text_f = text_encoder(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))  # (B, Dt)
        scale = model.logit_scale()
        loss = nt_xent_loss(model.project_text(text_f), model.project_audio(audio_f), scale,
                            negative_ids[clip_ids].to(device))
        return loss, {"logit_scale": float(scale.detach())}

    def validate() -> dict[str, Any]:
        audio_f = torch.stack([audio_encoder.embed_file(p) for p in val.paths]).float()  # (Nv, Da)
        text_f = text_encoder.encode(val.captions).to(device)  # (Mv, Dt)
        scores = model.project_text(text_f) @ model.project_audio(audio_f).T  # (Mv, Nv)
        return {"metrics": retrieval_metrics(scores.float().cpu(), None, val.caption_to_clip)}

    def train_mode() -> None:
        trained.train()
        text_encoder.model.eval()  # no dropout: its masks would come from the global RNG

    def save_model(path: Path, extra: dict[str, Any]) -> None:
        # Backbones beside the checkpoint (the checkpoint folder holds only DiffATR's weights);
        # the saved config points at them, so load_checkpoint + build_audio_encoder find them.
        folder = out_dir / BACKBONES_DIR / path.name
        audio_file = folder / "audio.safetensors"
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in audio_encoder.backbone.state_dict().items()}
        atomic_write_bytes(audio_file, save(state, metadata={"arch": model_config.audio.name}))
        with atomic_directory(folder / "text") as tmp:
            text_encoder.model.save_pretrained(tmp, safe_serialization=True)
            text_encoder.tokenizer.save_pretrained(tmp)
        saved = dataclasses.replace(
            model_config,
            audio=dataclasses.replace(model_config.audio, weights=str(audio_file.resolve())),
            text=dataclasses.replace(model_config.text, name_or_path=str((folder / "text").resolve())),
        )
        original, model.config = model.config, saved
        try:
            save_checkpoint(model, path, dict(extra, finetuned_backbones=str(folder.resolve())))
        finally:
            model.config = original

    named = [(n, p) for n, p in model.named_parameters() if not n.startswith("denoisers.")]
    backbone_scale = (config.backbone_lr or config.lr) / config.lr
    backbone_named = list(audio_encoder.backbone.named_parameters()) + list(text_encoder.model.named_parameters())
    job = _Job(
        phase="contrastive",
        trained=trained,
        param_groups=_param_groups(named, config.weight_decay, 1.0)
        + _param_groups(backbone_named, config.weight_decay, backbone_scale),
        steps_per_epoch=len(train.captions) // batch_size,
        generators=generators,
        make_epoch=lambda: epoch_batches(len(train.captions), batch_size, generators["data"]),
        step_loss=step_loss,
        validate=validate,
        save_model=save_model,
        train_mode=train_mode,
        after_step=model.logit_scale.clamp_,
        fingerprint={"model config": to_dict(model_config), "train data": train.summary()["digest"],
                     "val data": val.summary()["digest"], "device type": device.type},
        extra={"batch_size": batch_size, "finetune": True, "data": _data_extra(train, val, data_info)},
    )
    try:
        return _run(job, config, out_dir, resume=resume, device=device, progress=progress)
    finally:
        if pool is not None:
            pool.shutdown()


# ----------------------------------------------------------------------------- phase 2


CROSS_FIT_DIR = "cross_fit"


@torch.no_grad()
def _training_hubness(model: DiffATR, config: ModelConfig, train: FeatureSet, text_emb: Tensor, audio_emb: Tensor,
                      text_unit: Tensor, audio_unit: Tensor) -> dict[str, Tensor]:
    """For "shortlist+hubness" denoisers: store each direction's query bank (the training
    queries as the init heads project them: what inference will measure against) and return
    each training-pool item's hubness against the training embeddings with its own sound left
    out, as an unseen item's would be. Empty for the other contexts."""
    if config.denoiser.context != "shortlist+hubness":
        return {}
    dev = text_emb.device
    model.denoisers["text_to_audio"].set_query_bank(model.project_text(train.text.to(dev)))
    model.denoisers["audio_to_text"].set_query_bank(model.project_audio(train.audio.to(dev)))
    m = config.denoiser.hubness_neighbours
    return {"text_to_audio": hubness(audio_emb, text_emb, m, exclude=audio_unit[:, None] == text_unit[None, :]),
            "audio_to_text": hubness(text_emb, audio_emb, m, exclude=text_unit[:, None] == audio_unit[None, :])}


def sound_folds(units: Tensor, k: int, seed: int) -> Tensor:
    """(N,) fold 0..k-1 of each clip: the sound units are dealt into ``k`` folds by a permutation
    drawn from ``seed``, so the clips of one sound always share a fold."""
    num_units = int(units.max()) + 1 if units.numel() else 0
    if not 2 <= k <= num_units:
        raise TrainError(f"cross-fitting needs 2..{num_units} folds (the number of training sounds), got {k}")
    fold_of_unit = torch.randperm(num_units, generator=torch.Generator().manual_seed(int(seed))) % k
    return fold_of_unit[units]


def cross_fit_embeddings(init: Any, train: FeatureSet, val: FeatureSet, k: int, out_dir: str | Path, *,
                         seed: int = 0, device: str | torch.device | None = None,
                         progress: bool = True) -> tuple[Tensor, Tensor]:
    """Out-of-fold embeddings of the training split (cross-fitting).

    ``k`` phase-1 models, each trained with the ``init`` checkpoint's own phase-1 settings (its
    model config and saved TrainConfig) on the training split without one fold of its sounds
    (``sound_folds``), embed the held-out fold. Phase 2 trained on them sees the cosine errors
    of clips the phase-1 model never saw, as at inference, instead of a training split that
    phase 1 has memorised. Fold runs live in ``out_dir/fold<i>`` and are reused once finished.

    Args:
        init: the phase-1 model (a loaded DiffATR with ``checkpoint_extra``) or its folder.
        train, val: FeatureSets; val only selects each fold model's best epoch.
        k: folds (>= 2).

    Returns:
        (M, D) caption and (N, D) clip embeddings, each from the fold model that did not see it.
    """
    model = load_checkpoint(init) if isinstance(init, (str, Path)) else init
    saved = (getattr(model, "checkpoint_extra", None) or {}).get("train")
    if not saved or saved.get("phase") != "contrastive":
        raise TrainError("cross-fitting retrains phase 1 with the --init checkpoint's settings, but it records no "
                         "phase-1 training settings; use a checkpoint written by diffatr train --phase contrastive")
    phase1 = from_dict(TrainConfig, {**saved, "device": str(device or saved.get("device", "auto"))})
    if phase1.finetune:
        raise TrainError("cross-fitting needs a phase-1 checkpoint with frozen backbones (its features are reused)")
    folds = sound_folds(train.sound_units(), k, seed)
    text = torch.zeros(train.num_captions, model.config.embed_dim)
    audio = torch.zeros(train.num_clips, model.config.embed_dim)
    for fold in range(k):
        held = (folds == fold).nonzero().flatten()  # (n_f,)
        run = Path(out_dir) / f"fold{fold}"
        done = run / "done.json"
        if not done.is_file():
            if run.exists():
                import shutil

                shutil.rmtree(run)  # an interrupted fold starts over (a few seconds)
            train_contrastive(model.config, phase1, train.subset((folds != fold).nonzero().flatten()), val, run,
                              progress=progress)
            atomic_write_bytes(done, b"{}\n")
        fold_model = load_checkpoint(run / "best").eval()
        captions = torch.isin(train.caption_to_clip, held)  # (M,)
        with torch.no_grad():
            audio[held] = fold_model.project_audio(train.audio[held].float())
            text[captions] = fold_model.project_text(train.text[captions].float())
    return text, audio


_BACKBONE_FIELDS = ("text", "audio", "embed_dim", "head_hidden_dim", "text_head", "head_dropout")


def train_diffusion(
    init: str | Path,
    train_config: TrainConfig,
    train_split: Any,
    val_split: Any,
    out_dir: str | Path,
    *,
    model_config: ModelConfig | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    strict: bool = False,
    progress: bool = True,
    data_info: dict[str, Any] | None = None,
    train_embeddings: tuple[Tensor, Tensor] | None = None,
    extra_train: FeatureSet | None = None,
) -> TrainResult:
    """Phase 2: train the text->audio and audio->text denoisers on frozen embeddings.

    The heads of the phase-1 checkpoint ``init`` project the cached backbone features once.
    Each step takes B (caption, clip) pairs of distinct clips (``unique_clip_batches``); a
    text query's candidates are the B clips, an audio query's the B captions, each ordered
    hardest first with the positive at index 0 (``diffusion_candidates``); the loss is
    ``generation_loss`` (CE x ce_scale) summed over both directions. The EMA weights are
    validated (fused cosine + diffusion scores from ``full_fused_scores`` on ``val_split``)
    and saved.

    Args:
        init: the phase-1 checkpoint (heads and temperature; its denoisers too when the
            denoiser config is unchanged).
        train_config: a TrainConfig with phase "diffusion".
        train_split, val_split: as for ``train_contrastive``.
        out_dir: the run folder.
        model_config: overrides the checkpoint's config (e.g. another denoiser width, CE scale
            or validation knobs); its backbones, widths and heads must match the checkpoint's.
        resume, device, cache_dir, strict, progress, data_info: as for ``train_contrastive``.
        train_embeddings: optional (M, D) caption and (N, D) clip embeddings of the training
            split to train on instead of the init heads' projections (e.g. out-of-fold
            embeddings from phase-1 models that never saw each item: cross-fitting, so the
            denoisers meet the cosine errors of unseen items). Validation always uses ``init``.
        extra_train: more training items for the denoisers only (e.g. the corpus's mixtures,
            ``diffatr.features.mixture_features``), appended to the training split's features
            and embedded by the init heads; each keeps its own sound keys. Not with cross-fitting
            (the fold models never saw these items' kind of data).

    Returns:
        TrainResult.
    """
    from diffatr.evaluate import score_matrices

    if train_config.phase != "diffusion":
        raise TrainError(f"train_diffusion needs a TrainConfig with phase 'diffusion', got {train_config.phase!r}")
    _check_select_metric(train_config.select_metric, "diffusion")
    dev = resolve_device(device or train_config.device)
    out_dir = Path(out_dir)
    initial = load_checkpoint(init)
    config = model_config or initial.config
    mismatch = [f for f in _BACKBONE_FIELDS if getattr(config, f) != getattr(initial.config, f)]
    if mismatch:
        raise TrainError(f"the model config differs from the --init checkpoint's in {', '.join(mismatch)}; phase 2 "
                         "keeps the phase-1 backbones and heads: change only denoiser, diffusion or retrieval settings")
    # The temperature is phase 1's (loaded with the heads); its config fields say how it was made.
    config = dataclasses.replace(config, init_temperature=initial.config.init_temperature,
                                 learn_temperature=initial.config.learn_temperature)
    model = _init_model(config, train_config.seed)
    state = initial.state_dict()
    if config.denoiser != initial.config.denoiser:
        state = {k: v for k, v in state.items() if not k.startswith("denoisers.")}  # fresh denoisers
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("denoisers.") for k in missing):
        raise TrainError(f"the --init checkpoint does not fit the model (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})")
    model.to(dev).requires_grad_(False)
    model.denoisers.requires_grad_(True)
    scheduler = model.make_scheduler()
    generators = _generators(train_config.seed, dev)

    encoders = LazyEncoders(config, dev)
    train = _features(train_split, config, encoders, cache_dir=cache_dir, strict=strict, progress=progress,
                      desc="train features")
    val = _features(val_split, config, encoders, cache_dir=cache_dir, strict=strict, progress=progress,
                    desc="val features")
    if extra_train is not None:
        if train_config.cross_fit or train_embeddings is not None:
            raise TrainError("extra training items (e.g. --mixtures) cannot be combined with cross-fitting or given "
                             "train_embeddings: drop one of them")
        extra_train.check_encoders(config)
        train = train.concat(extra_train)
    if train_config.cross_fit and train_embeddings is None:
        train_embeddings = cross_fit_embeddings(initial, train, val, train_config.cross_fit, out_dir / CROSS_FIT_DIR,
                                                seed=train_config.seed, device=dev, progress=progress)
    model.eval()  # the heads' dropout stays off: they project every item once, frozen
    with torch.no_grad():  # the frozen heads project every item once
        if train_embeddings is None:
            text_emb = model.project_text(train.text.to(dev))  # (M, D)
            audio_emb = model.project_audio(train.audio.to(dev))  # (N, D)
        else:
            text_emb, audio_emb = (torch.nn.functional.normalize(e.to(dev, torch.float32), dim=-1)
                                   for e in train_embeddings)
            if text_emb.shape != (train.num_captions, config.embed_dim) or \
                    audio_emb.shape != (train.num_clips, config.embed_dim):
                raise TrainError(f"train_embeddings must be ({train.num_captions}, {config.embed_dim}) text and "
                                 f"({train.num_clips}, {config.embed_dim}) audio embeddings of the training split, "
                                 f"got {tuple(text_emb.shape)} and {tuple(audio_emb.shape)}")
        val_text = model.project_text(val.text.to(dev))  # (Mv, D)
        val_audio = model.project_audio(val.audio.to(dev))  # (Nv, D)
    owner = train.caption_to_clip.to(dev)  # (M,)
    # Negatives are compared by sound: a batch holds distinct sounds, and mining skips every
    # clip (and caption) of the query's own sound.
    audio_unit = _negative_ids(train.sound_units(), train.num_clips, train_config).to(dev)  # (N,)
    text_unit = audio_unit[owner]  # (M,)
    num_units = int(audio_unit.unique().numel())
    batch_size = _fit_batch(train_config.batch_size, num_units, "distinct sounds")
    knobs = dataclasses.asdict(config.retrieval)
    cosine_metrics = retrieval_metrics((val_text @ val_audio.T).float().cpu(), None, val.caption_to_clip)
    # direction -> (P,) hubness of every training-pool item, for "shortlist+hubness" denoisers
    pool_hubness = _training_hubness(model, config, train, text_emb, audio_emb, text_unit, audio_unit)

    def step_loss(rows: Tensor) -> tuple[Tensor, dict[str, float]]:
        rows = rows.to(dev)
        clips = owner[rows]  # (B,) of distinct sounds
        texts, audios = text_emb[rows], audio_emb[clips]  # (B, D) each
        # direction -> (queries, their in-batch pool, each positive's row in the whole training
        # pool, that whole pool, the sound of each of its items)
        sides = {"text_to_audio": (texts, audios, clips, audio_emb, audio_unit),
                 "audio_to_text": (audios, texts, rows, text_emb, text_unit)}
        losses = {}
        for direction, (query, batch_pool, positive, pool, pool_unit) in sides.items():
            if train_config.negatives == "mined":
                pool_rows = mined_candidate_rows(query, audio_unit[clips], positive, pool, pool_unit,
                                                 batch_size)  # (B, K)
            else:  # the batch's own items, hardest first, positive at 0
                pool_rows = positive[hardest_first(query, batch_pool)]  # (B, K = B)
            candidates = pool[pool_rows]  # (B, K, D)
            hub = pool_hubness[direction][pool_rows] if pool_hubness else None  # (B, K)
            losses[direction] = generation_loss(model.denoisers[direction], scheduler, query, candidates,
                                                generator=generators["noise"], ce_scale=config.diffusion.ce_scale,
                                                positive_index=0, candidate_hubness=hub)
        loss = losses["text_to_audio"] + losses["audio_to_text"]
        return loss, {f"loss_{d}": float(v.detach()) for d, v in losses.items()}

    def validate() -> dict[str, Any]:
        # Gen+Dis (the fused score) at the config's knobs, plus Gen (the diffusion term alone)
        # under "gen/...": with a temperature far above 1 / ce_scale the fused ranking barely
        # moves, and Gen still shows whether the denoisers learn.
        scores = score_matrices(model, val.audio.to(dev), val.text.to(dev), knobs, ("gen", "gen+dis"))
        metrics = retrieval_metrics(scores["text_to_audio"]["gen+dis"].float().cpu(),
                                    scores["audio_to_text"]["gen+dis"].float().cpu(), val.caption_to_clip)
        gen = retrieval_metrics(scores["text_to_audio"]["gen"].float().cpu(),
                                scores["audio_to_text"]["gen"].float().cpu(), val.caption_to_clip)
        metrics.update({f"gen/{k}": v for k, v in gen.items() if "/" in k})
        return {"metrics": metrics, "cosine_metrics": cosine_metrics, "knobs": knobs}

    embeds_digest = _digest([train.digest(), val.digest(), float(text_emb.sum()), float(audio_emb.sum())])
    job = _Job(
        phase="diffusion",
        trained=model,
        param_groups=_param_groups(list(model.denoisers.named_parameters(prefix="denoisers")),
                                   train_config.weight_decay, 1.0),
        steps_per_epoch=train.num_captions // batch_size,
        generators=generators,
        make_epoch=lambda: unique_clip_batches(text_unit.cpu(), batch_size, generators["data"]),
        step_loss=step_loss,
        validate=validate,
        save_model=lambda path, extra: save_checkpoint(model, path, extra),
        train_mode=lambda: model.train(),
        fingerprint={"model config": to_dict(config), "embeddings": embeds_digest, "device type": dev.type,
                     "init checkpoint": str(Path(init).resolve())},
        extra={"batch_size": batch_size, "candidates_per_query": batch_size,
               "init": {"path": str(Path(init).resolve()), "phase": initial.checkpoint_extra.get("phase"),
                        "step": initial.checkpoint_extra.get("step"),
                        "select_value": initial.checkpoint_extra.get("select_value"),
                        "train": initial.checkpoint_extra.get("train")},
               "data": _data_extra(train, val, data_info)},
    )
    return _run(job, train_config, out_dir, resume=resume, device=dev, progress=progress)
