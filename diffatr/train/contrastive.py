"""Phase 1: the contrastive heads on cached backbone features, or the backbones fine-tuned
end to end (``--finetune``). docs/method.md, "Phase 1".

Shape legend: B batch (pairs), D shared width, Da / Dt backbone feature widths.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from diffatr.checkpoint import save_checkpoint
from diffatr.config import (
    ModelConfig,
    TrainConfig,
    to_dict,
)
from diffatr.contrastive import nt_xent_loss
from diffatr.features import FeatureSet, LazyEncoders
from diffatr.fileio import atomic_directory, atomic_write_bytes
from diffatr.metrics import retrieval_metrics
from diffatr.model import DiffATR
from diffatr.runtime import resolve_device
from diffatr.train.batches import contrastive_pairs, epoch_batches
from diffatr.train.common import (BACKBONES_DIR, Job, TrainError, TrainResult, check_select_metric, clip_table, data_extra,
                                  fit_batch, init_model, make_generators, negative_groups, no_validation,
                                  phase_features, run_job, seen_clip_ids, weight_decay_groups)

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
    init: str | Path | None = None,
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
        init: with ``train_config.finetune_blocks``, a phase-1 checkpoint whose heads and
            temperature the run starts from (heads first, then the blocks with them: "LP-FT");
            ``model_config`` must be its config.

    Returns:
        TrainResult.
    """
    if train_config.phase != "contrastive":
        raise TrainError(f"train_contrastive needs a TrainConfig with phase 'contrastive', got {train_config.phase!r}")
    check_select_metric(train_config.select_metric)
    dev = resolve_device(device or train_config.device)
    out_dir = Path(out_dir)
    if init is not None and not train_config.finetune_blocks:
        raise TrainError("a phase-1 init checkpoint goes with finetune_blocks (heads first, then the blocks)")
    model = init_model(model_config, train_config.seed).to(dev)
    init_extra = _load_init_heads(model, model_config, init) if init is not None else None
    model.denoisers.requires_grad_(False)  # phase 2 trains them
    generators = make_generators(train_config.seed, dev, dropout=model_config.head_dropout > 0)
    encoders = LazyEncoders(model_config, dev)
    common = dict(resume=resume, device=dev, cache_dir=cache_dir, strict=strict, progress=progress, data_info=data_info)
    if train_config.finetune_blocks:
        from diffatr.train.partial import train_partial

        return train_partial(model, model_config, train_config, train_split, val_split, out_dir, encoders, generators,
                             init_extra=init_extra, init_path=str(Path(init).resolve()) if init else None, **common)
    run = _train_finetune if train_config.finetune else _train_frozen
    return run(model, model_config, train_config, train_split, val_split, out_dir, encoders, generators, **common)


def _load_init_heads(model: DiffATR, model_config: ModelConfig, init: str | Path) -> dict[str, Any]:
    """The heads and temperature of phase-1 checkpoint ``init`` copied into ``model``; returns
    what the new checkpoints record of it."""
    from diffatr.checkpoint import load_checkpoint
    from diffatr.runtime import portable_path

    initial = load_checkpoint(init)
    if to_dict(initial.config) != to_dict(model_config):
        raise TrainError(f"the model config differs from the init checkpoint's ({init}): a run that starts from "
                         "its heads trains that model (leave out --config and the model flags)")
    state = {k: v for k, v in initial.state_dict().items() if not k.startswith("denoisers.")}
    model.load_state_dict(state, strict=False)
    return {"path": portable_path(init),
            **{k: initial.checkpoint_extra.get(k) for k in ("phase", "step", "select_value", "seen_clips")}}


def _train_frozen(model: DiffATR, model_config: ModelConfig, train_config: TrainConfig, train_split: Any,
                  val_split: Any, out_dir: Path, encoders: LazyEncoders, generators: dict[str, torch.Generator],
                  *, resume: bool, device: torch.device, cache_dir: str | Path | None, strict: bool, progress: bool,
                  data_info: dict[str, Any] | None) -> TrainResult:
    """Phase 1 on frozen backbones: their features are computed once (through the cache)."""
    train = phase_features(train_split, model_config, encoders, cache_dir=cache_dir, strict=strict,
                           progress=progress, desc="train features")
    val = phase_features(val_split, model_config, encoders, cache_dir=cache_dir, strict=strict, progress=progress,
                         desc="val features")
    # Known-caption expansion looks queries up among the training captions (the backbones are
    # frozen, so their features are the bank for good; fine-tuned runs keep none).
    model.set_caption_bank(train.text, train.audio, train.caption_to_clip)
    batch_size = fit_batch(train_config.batch_size, train.num_captions, "captions")
    text, audio, owner = train.text.to(device), train.audio.to(device), train.caption_to_clip.to(device)
    on_device = dataclasses.replace(train, audio_features=audio, text_features=text, caption_to_clip=owner)
    negative_ids = negative_groups(train.sound_units(), train.num_clips, train_config).to(device)  # (N,)

    def step_loss(rows: Tensor) -> tuple[Tensor, dict[str, float]]:
        text_f, audio_f, clip_ids = contrastive_pairs(on_device, rows.to(device))  # (B, Dt), (B, Da), (B,)
        scale = model.logit_scale()
        loss = nt_xent_loss(model.project_text(text_f), model.project_audio(audio_f), scale, negative_ids[clip_ids])
        return loss, {"logit_scale": float(scale.detach())}

    def validate() -> dict[str, Any]:
        scores = model.project_text(val.text.to(device)) @ model.project_audio(val.audio.to(device)).T  # (Mv, Nv)
        return {"metrics": retrieval_metrics(scores.float().cpu(), None, val.caption_to_clip)}

    named = list(model.text_head.named_parameters()) + list(model.audio_head.named_parameters()) \
        + list(model.logit_scale.named_parameters())
    job = phase1_job(
        model, model_config, train, val, batch_size, generators, device, data_info,
        trained=model,
        param_groups=weight_decay_groups(named, train_config.weight_decay, 1.0),
        step_loss=step_loss,
        validate=validate,
        save_model=lambda path, extra: save_checkpoint(model, path, extra),
        train_mode=lambda: model.train(),
    )
    return run_job(job, train_config, out_dir, resume=resume, device=device, progress=progress)


def phase1_job(model: DiffATR, model_config: ModelConfig, train: FeatureSet, val: FeatureSet | None, batch_size: int,
               generators: dict[str, torch.Generator], device: torch.device, data_info: dict[str, Any] | None, *,
               trained: nn.Module, param_groups: list[dict[str, Any]], step_loss: Callable, validate: Callable,
               save_model: Callable, train_mode: Callable, fingerprint: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None, earlier_seen: Any = None) -> Job:
    """A phase-1 run's Job. What every phase-1 run shares is filled in here: epochs over the
    training captions, validation when there is a val split, the temperature's clamp, the
    fingerprint of model and data, and the data and seen clips in every checkpoint. The
    keyword arguments are the run's own (``fingerprint`` and ``extra`` add to the shared ones;
    ``earlier_seen``: clips an init checkpoint had seen)."""
    return Job(
        phase="contrastive",
        trained=trained,
        param_groups=param_groups,
        steps_per_epoch=train.num_captions // batch_size,
        generators=generators,
        make_epoch=lambda: epoch_batches(train.num_captions, batch_size, generators["data"]),
        step_loss=step_loss,
        validate=validate if val is not None else no_validation,
        save_model=save_model,
        train_mode=train_mode,
        after_step=model.logit_scale.clamp_,
        fingerprint={"model config": to_dict(model_config), "train data": train.digest(),
                     "val data": val.digest() if val is not None else None, "device type": device.type,
                     **(fingerprint or {})},
        extra={"batch_size": batch_size, **(extra or {}), "data": data_extra(train, val, data_info),
               "seen_clips": seen_clip_ids(train, earlier_seen)},
    )


# ----------------------------------------------------------------------------- phase 1, fine-tuned


def _train_finetune(model: DiffATR, model_config: ModelConfig, config: TrainConfig, train_split: Any,
                    val_split: Any, out_dir: Path, encoders: LazyEncoders, generators: dict[str, torch.Generator],
                    *, resume: bool, device: torch.device, cache_dir: str | Path | None, strict: bool, progress: bool,
                    data_info: dict[str, Any] | None) -> TrainResult:
    """Phase 1 fine-tuning the backbones: waveforms and tokens go through them every step (no
    feature cache: ``cache_dir`` is not used)."""
    from diffatr.audio.io import load_audio, pad_or_crop

    audio_encoder, text_encoder = encoders.audio, encoders.text
    sample_rate = audio_encoder.sample_rate
    window = max(1, round(model_config.audio.window_seconds * sample_rate))
    train = clip_table(train_split, sample_rate, strict, progress, "checking train audio")
    val = clip_table(val_split, sample_rate, strict, progress, "checking val audio") if val_split is not None else None
    train_captions = train.flat_captions  # (M,) text rows
    batch_size = fit_batch(config.batch_size, train.num_captions, "captions")
    negative_ids = negative_groups(train.sound_units(), train.num_clips, config)  # (N,)
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
        tokens = text_encoder.tokenize([train_captions[i] for i in rows.tolist()])
        text_f = text_encoder(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))  # (B, Dt)
        scale = model.logit_scale()
        loss = nt_xent_loss(model.project_text(text_f), model.project_audio(audio_f), scale,
                            negative_ids[clip_ids].to(device))
        return loss, {"logit_scale": float(scale.detach())}

    def validate() -> dict[str, Any]:
        audio_f = torch.stack([audio_encoder.embed_file(p) for p in val.paths]).float()  # (Nv, Da)
        text_f = text_encoder.encode(val.flat_captions).to(device)  # (Mv, Dt)
        scores = model.project_text(text_f) @ model.project_audio(audio_f).T  # (Mv, Nv)
        return {"metrics": retrieval_metrics(scores.float().cpu(), None, val.caption_to_clip)}

    def train_mode() -> None:
        trained.train()
        text_encoder.model.eval()  # no dropout: its masks would come from the global RNG

    named = [(n, p) for n, p in model.named_parameters() if not n.startswith("denoisers.")]
    backbone_scale = (config.backbone_lr or config.lr) / config.lr
    backbone_named = list(audio_encoder.backbone.named_parameters()) + list(text_encoder.model.named_parameters())
    job = phase1_job(
        model, model_config, train, val, batch_size, generators, device, data_info,
        trained=trained,
        param_groups=weight_decay_groups(named, config.weight_decay, 1.0)
        + weight_decay_groups(backbone_named, config.weight_decay, backbone_scale),
        step_loss=step_loss,
        validate=validate,
        save_model=lambda path, extra: _save_finetuned(model, model_config, encoders, out_dir, path, extra),
        train_mode=train_mode,
        extra={"finetune": True},
    )
    try:
        return run_job(job, config, out_dir, resume=resume, device=device, progress=progress)
    finally:
        if pool is not None:
            pool.shutdown()


def _save_finetuned(model: DiffATR, model_config: ModelConfig, encoders: LazyEncoders, out_dir: Path, path: Path,
                    extra: dict[str, Any]) -> None:
    """A fine-tuned checkpoint: the backbones beside it (the checkpoint folder holds only DiffATR's
    weights), and a saved config that points at them, so that ``load_checkpoint`` +
    ``build_audio_encoder`` find them."""
    from safetensors.torch import save

    audio_encoder, text_encoder = encoders.audio, encoders.text
    folder = out_dir / BACKBONES_DIR / path.name
    audio_file = folder / "audio.safetensors"
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
