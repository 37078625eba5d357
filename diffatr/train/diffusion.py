"""Phase 2: the text->audio and audio->text denoisers on frozen, precomputed embeddings, with
optional cross-fitting, extra items (mixtures) and the shortlist context's hubness.
docs/method.md, "Phase 2".

Shape legend: B batch (pairs), K candidates per query (= B), D shared width, N clips, M captions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from diffatr.checkpoint import load_checkpoint, save_checkpoint
from diffatr.config import (
    ModelConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from diffatr.diffusion.denoiser import hubness
from diffatr.diffusion.losses import generation_loss
from diffatr.features import FeatureSet, LazyEncoders
from diffatr.fileio import atomic_write_bytes
from diffatr.metrics import retrieval_metrics
from diffatr.model import DiffATR
from diffatr.runtime import portable_path, resolve_device
from diffatr.train.batches import (
    hardest_first,
    mined_candidate_rows,
    unique_clip_batches,
)
from diffatr.train.common import (Job, TrainError, TrainResult, check_select_metric, data_extra, digest, fit_batch,
                                  init_model, make_generators, negative_groups, no_validation, phase_features, run_job,
                                  seen_clip_ids, weight_decay_groups)
from diffatr.train.contrastive import train_contrastive

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


def train_diffusion(init: str | Path, train_config: TrainConfig, train_split: Any, val_split: Any,
                    out_dir: str | Path, *, model_config: ModelConfig | None = None, resume: bool = False,
                    device: str | torch.device | None = None, cache_dir: str | Path | None = None,
                    strict: bool = False, progress: bool = True, data_info: dict[str, Any] | None = None,
                    train_embeddings: tuple[Tensor, Tensor] | None = None,
                    extra_train: FeatureSet | None = None) -> TrainResult:
    """Phase 2: train the text->audio and audio->text denoisers on frozen embeddings.

    The heads of the phase-1 checkpoint ``init`` project the cached backbone features once.
    Each step takes B (caption, clip) pairs of distinct clips (``unique_clip_batches``); a
    text query's candidates are the B clips, an audio query's the B captions, each ordered
    hardest first with the positive at index 0 (``diffusion_candidates``); the loss is
    ``generation_loss`` (CE x ce_scale) summed over both directions. The EMA weights are
    validated (fused cosine + diffusion scores from ``evaluate.score_matrices`` on ``val_split``)
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
    if train_config.phase != "diffusion":
        raise TrainError(f"train_diffusion needs a TrainConfig with phase 'diffusion', got {train_config.phase!r}")
    check_select_metric(train_config.select_metric, "diffusion")
    dev = resolve_device(device or train_config.device)
    out_dir = Path(out_dir)
    initial = load_checkpoint(init)
    config, model = _phase2_model(initial, model_config or initial.config, train_config.seed, dev)
    encoders = LazyEncoders(config, dev)
    train, val = (phase_features(split, config, encoders, cache_dir=cache_dir, strict=strict, progress=progress,
                                 desc=f"{name} features") for name, split in (("train", train_split), ("val", val_split)))
    train = _with_extra_items(train, extra_train, config, train_config, train_embeddings, val)
    if train_config.cross_fit and train_embeddings is None:
        train_embeddings = cross_fit_embeddings(initial, train, val, train_config.cross_fit, out_dir / CROSS_FIT_DIR,
                                                seed=train_config.seed, device=dev, progress=progress)
    pools = _TrainingPools.build(model, config, train, train_embeddings, train_config)
    generators = make_generators(train_config.seed, dev)
    job = Job(
        phase="diffusion", trained=model,
        param_groups=weight_decay_groups(list(model.denoisers.named_parameters(prefix="denoisers")),
                                         train_config.weight_decay, 1.0),
        steps_per_epoch=train.num_captions // pools.batch_size, generators=generators,
        make_epoch=lambda: unique_clip_batches(pools.text_unit.cpu(), pools.batch_size, generators["data"]),
        step_loss=_step_loss(model, config, train_config, pools, generators),
        validate=_validation(model, config, val) if val is not None else no_validation,
        save_model=lambda path, extra: save_checkpoint(model, path, extra),
        train_mode=lambda: model.train(),
        fingerprint={"model config": to_dict(config), "device type": dev.type,
                     "embeddings": digest([train.digest(), val.digest() if val is not None else None,
                                           *pools.sums()]),
                     "init checkpoint": str(Path(init).resolve())},
        extra={"batch_size": pools.batch_size, "candidates_per_query": pools.batch_size,
               "init": {"path": portable_path(init), **{k: initial.checkpoint_extra.get(k)
                                                        for k in ("phase", "step", "select_value", "train")}},
               "data": data_extra(train, val, data_info),
               "seen_clips": seen_clip_ids(train, initial.checkpoint_extra.get("seen_clips"))},
    )
    return run_job(job, train_config, out_dir, resume=resume, device=dev, progress=progress)


def _with_extra_items(train: FeatureSet, extra_train: FeatureSet | None, config: ModelConfig,
                      train_config: TrainConfig, train_embeddings: Any, val: FeatureSet | None) -> FeatureSet:
    """The training items: the split's, and ``extra_train`` appended (checked against the
    options it cannot be combined with)."""
    if train_config.cross_fit and val is None:
        raise TrainError("cross-fitting picks each fold model on a validation split: give one (--val-split)")
    if extra_train is None:
        return train
    if train_config.cross_fit or train_embeddings is not None:
        raise TrainError("extra training items (e.g. --mixtures) cannot be combined with cross-fitting or given "
                         "train_embeddings: drop one of them")
    extra_train.check_encoders(config)
    return train.concat(extra_train)


def _phase2_model(initial: DiffATR, config: ModelConfig, seed: int, device: torch.device) -> tuple[ModelConfig, DiffATR]:
    """The model phase 2 trains: the phase-1 checkpoint's heads and temperature (frozen), its
    denoisers too when their config is unchanged (else fresh ones, from ``seed``)."""
    mismatch = [f for f in _BACKBONE_FIELDS if getattr(config, f) != getattr(initial.config, f)]
    if mismatch:
        raise TrainError(f"the model config differs from the --init checkpoint's in {', '.join(mismatch)}; phase 2 "
                         "keeps the phase-1 backbones and heads: change only denoiser, diffusion or retrieval settings")
    # The temperature is phase 1's (loaded with the heads); its config fields say how it was made.
    config = dataclasses.replace(config, init_temperature=initial.config.init_temperature,
                                 learn_temperature=initial.config.learn_temperature)
    model = init_model(config, seed)
    state = initial.state_dict()
    if config.denoiser != initial.config.denoiser:
        state = {k: v for k, v in state.items() if not k.startswith("denoisers.")}  # fresh denoisers
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("denoisers.") for k in missing):
        raise TrainError(f"the --init checkpoint does not fit the model (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})")
    if initial.has_caption_bank:  # known-caption expansion keeps phase 1's training captions
        model.set_caption_bank(initial.caption_bank_text, initial.caption_bank_audio, initial.caption_bank_clip)
    model.to(device).requires_grad_(False)
    model.denoisers.requires_grad_(True)
    return config, model


@dataclass
class _TrainingPools:
    """The training items as the denoisers see them: embedded once by the frozen heads (or given
    out-of-fold), with the sound each belongs to and, for "shortlist+hubness", its hubness.

    Negatives are compared by sound: a batch holds distinct sounds, and mining skips every clip
    (and caption) of the query's own sound.
    """

    text_emb: Tensor  # (M, D)
    audio_emb: Tensor  # (N, D)
    owner: Tensor  # (M,) each caption's clip
    audio_unit: Tensor  # (N,) each clip's sound (negative_groups)
    text_unit: Tensor  # (M,)
    batch_size: int
    hubness: dict[str, Tensor]  # direction -> (P,) of every training-pool item; {} for other contexts

    @classmethod
    @torch.no_grad()
    def build(cls, model: DiffATR, config: ModelConfig, train: FeatureSet,
              train_embeddings: tuple[Tensor, Tensor] | None, train_config: TrainConfig) -> _TrainingPools:
        dev = next(model.parameters()).device
        model.eval()  # the heads' dropout stays off: they project every item once, frozen
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
        owner = train.caption_to_clip.to(dev)  # (M,)
        audio_unit = negative_groups(train.sound_units(), train.num_clips, train_config).to(dev)  # (N,)
        text_unit = audio_unit[owner]  # (M,)
        batch_size = fit_batch(train_config.batch_size, int(audio_unit.unique().numel()), "distinct sounds")
        hub = _training_hubness(model, config, train, text_emb, audio_emb, text_unit, audio_unit)
        return cls(text_emb, audio_emb, owner, audio_unit, text_unit, batch_size, hub)

    def sums(self) -> list[float]:
        return [float(self.text_emb.sum()), float(self.audio_emb.sum())]


def _step_loss(model: DiffATR, config: ModelConfig, train_config: TrainConfig, pools: _TrainingPools,
               generators: dict[str, torch.Generator]) -> Callable[[Tensor], tuple[Tensor, dict[str, float]]]:
    """Phase 2's loss of one batch of caption rows: ``generation_loss`` in both directions."""
    scheduler = model.make_scheduler()
    text_emb, audio_emb, text_unit, audio_unit = pools.text_emb, pools.audio_emb, pools.text_unit, pools.audio_unit

    def step_loss(rows: Tensor) -> tuple[Tensor, dict[str, float]]:
        rows = rows.to(text_emb.device)
        clips = pools.owner[rows]  # (B,) of distinct sounds
        texts, audios = text_emb[rows], audio_emb[clips]  # (B, D) each
        # direction -> (queries, their in-batch pool, each positive's row in the whole training
        # pool, that whole pool, the sound of each of its items)
        sides = {"text_to_audio": (texts, audios, clips, audio_emb, audio_unit),
                 "audio_to_text": (audios, texts, rows, text_emb, text_unit)}
        losses = {}
        for direction, (query, batch_pool, positive, pool, pool_unit) in sides.items():
            if train_config.negatives == "mined":
                pool_rows = mined_candidate_rows(query, audio_unit[clips], positive, pool, pool_unit,
                                                 pools.batch_size)  # (B, K)
            else:  # the batch's own items, hardest first, positive at 0
                pool_rows = positive[hardest_first(query, batch_pool)]  # (B, K = B)
            candidates = pool[pool_rows]  # (B, K, D)
            hub = pools.hubness[direction][pool_rows] if pools.hubness else None  # (B, K)
            losses[direction] = generation_loss(model.denoisers[direction], scheduler, query, candidates,
                                                generator=generators["noise"], ce_scale=config.diffusion.ce_scale,
                                                positive_index=0, candidate_hubness=hub)
        loss = losses["text_to_audio"] + losses["audio_to_text"]
        return loss, {f"loss_{d}": float(v.detach()) for d, v in losses.items()}

    return step_loss


def _validation(model: DiffATR, config: ModelConfig, val: FeatureSet) -> Callable[[], dict[str, Any]]:
    """Phase 2's validation: Gen+Dis (the fused score) at the config's retrieval settings, plus Gen
    (the diffusion term alone) under "gen/...": with a temperature far above 1 / ce_scale the
    fused ranking barely moves, and Gen still shows whether the denoisers learn."""
    from diffatr.evaluate import score_matrices

    dev = next(model.parameters()).device
    with torch.no_grad():
        val_text, val_audio = model.project_text(val.text.to(dev)), model.project_audio(val.audio.to(dev))  # (Mv|Nv, D)
    cosine_metrics = retrieval_metrics((val_text @ val_audio.T).float().cpu(), None, val.caption_to_clip)

    def validate() -> dict[str, Any]:
        scores = score_matrices(model, val.audio.to(dev), val.text.to(dev), config.retrieval, ("gen", "gen+dis"))
        metrics = retrieval_metrics(scores["text_to_audio"]["gen+dis"].float().cpu(),
                                    scores["audio_to_text"]["gen+dis"].float().cpu(), val.caption_to_clip)
        gen = retrieval_metrics(scores["text_to_audio"]["gen"].float().cpu(),
                                scores["audio_to_text"]["gen"].float().cpu(), val.caption_to_clip)
        metrics.update({f"gen/{k}": v for k, v in gen.items() if "/" in k})
        return {"metrics": metrics, "cosine_metrics": cosine_metrics, "knobs": dataclasses.asdict(config.retrieval)}

    return validate
