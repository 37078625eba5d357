"""Training loops of DiffATR: phase 1 (contrastive heads, optionally fine-tuned backbones) and
phase 2 (the two denoisers, on frozen and precomputed embeddings). docs/method.md, "Phase 1/2".

One module per concern: ``common`` (the run loop: LR schedule, EMA, validation-only model
selection, checkpoints, the JSONL log, exact ``--resume``), ``batches`` (duplicate positives,
batches of distinct sounds, hardest-first candidates), ``contrastive`` (phase 1) and
``diffusion`` (phase 2). This package parses no flags (cli.py does) and seeds no global RNG: the data order comes
from a CPU ``torch.Generator`` and the diffusion noise from one on the training device, both
seeded from ``TrainConfig.seed`` and saved with the run; initial weights are drawn inside
``torch.random.fork_rng``, which gives the caller's global RNG state back untouched.

A run folder holds ``last/`` and ``best/`` (checkpoints, ``best/`` chosen on the validation
split only), ``log.jsonl`` and ``train_state/`` (what ``--resume`` continues from).

Shape legend: B batch (pairs), K candidates per query (= B), D shared width, Da / Dt backbone
feature widths, N clips, M captions, S batches per epoch.
"""

from diffatr.runtime import resolve_device
from diffatr.train.batches import (
    contrastive_pairs,
    diffusion_candidates,
    epoch_batches,
    hardest_first,
    mined_candidate_rows,
    mined_candidates,
    unique_clip_batches,
)
from diffatr.train.common import (
    BACKBONES_DIR,
    EMA,
    LOG_FILE,
    STATE_DIR,
    RunLog,
    TrainError,
    TrainResult,
    lr_at,
    select_value,
)
from diffatr.train.contrastive import train_contrastive
from diffatr.train.diffusion import (
    CROSS_FIT_DIR,
    cross_fit_embeddings,
    sound_folds,
    train_diffusion,
)

__all__ = [
    "BACKBONES_DIR",
    "CROSS_FIT_DIR",
    "EMA",
    "LOG_FILE",
    "RunLog",
    "STATE_DIR",
    "TrainError",
    "TrainResult",
    "contrastive_pairs",
    "cross_fit_embeddings",
    "diffusion_candidates",
    "epoch_batches",
    "hardest_first",
    "lr_at",
    "mined_candidate_rows",
    "mined_candidates",
    "resolve_device",
    "select_value",
    "sound_folds",
    "train_contrastive",
    "train_diffusion",
    "unique_clip_batches",
]
