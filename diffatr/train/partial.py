"""Phase 1 with the audio backbone's last N blocks trained (``--finetune-blocks N``), on
augmented copies of every clip. docs/method.md, "Partial fine-tuning".

Why it is cheap enough for a CPU: the frozen blocks cost about three quarters of the
backbone's work and their output for one (clip, augmentation) never changes. So every clip
goes through them once per augmented copy (the clean one and ``augment_variants - 1`` with
a random gain and time shift), their output is kept (float16, through the feature cache),
and each step runs only the trained blocks. The copies are drawn from a generator seeded by
the file's content, so every run, every seed and the cache see the same ones.

BatchNorm keeps its pretrained statistics (eval mode) and only its gain and bias train: a
step's few hundred short blocks are too few and too skewed to re-estimate them, and eval
mode makes the cached outputs valid for the whole run. aisfx has no dropout, so a step is a
pure function of the run's generators.

Shape legend: B batch (pairs), U distinct clips of a batch, R cached block rows, C, T', M'
a cached block map, Da / Dt backbone feature widths.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from diffatr.checkpoint import save_checkpoint
from diffatr.config import ModelConfig, TrainConfig
from diffatr.contrastive import nt_xent_loss
from diffatr.encoders.cache import FeatureCache, file_sha256
from diffatr.features import FeatureSet, LazyEncoders, TextFeatureCache
from diffatr.fileio import atomic_write_bytes
from diffatr.metrics import retrieval_metrics
from diffatr.model import DiffATR
from diffatr.train.common import (BACKBONES_DIR, TrainError, TrainResult, clip_table, fit_batch, negative_groups,
                                  run_job, weight_decay_groups)
from diffatr.train.contrastive import phase1_job

STAGE_CHUNK = 64  # block maps per forward pass outside training (bounds memory)


# ----------------------------------------------------------------------------- augmentation


def augmentation_draws(file_hash: str, variants: int, gain_db: float, shift_seconds: float) -> list[tuple[float, float]]:
    """(gain in dB, time shift in s) of a file's copies: copy 0 is the clean clip; the others
    draw a gain uniform in [-gain_db, gain_db] and a shift uniform in [-shift_seconds,
    shift_seconds] from a generator seeded by the file's content, the same in every run."""
    generator = torch.Generator().manual_seed(int(file_hash[:15], 16))
    draws = [(0.0, 0.0)]
    for _ in range(variants - 1):
        gain, shift = (torch.rand(2, generator=generator, dtype=torch.float64) * 2 - 1).tolist()
        draws.append((gain * gain_db, shift * shift_seconds))
    return draws


def augment_waveform(wave: np.ndarray, sample_rate: int, gain_db: float, shift_seconds: float) -> np.ndarray:
    """(S,) -> (S',): scaled by ``gain_db`` and shifted in time. A positive shift delays the
    sound (silence before it); a negative one starts it later in the recording, keeping at
    least half of it."""
    out = wave * np.float32(10.0 ** (gain_db / 20.0))
    shift = round(abs(shift_seconds) * sample_rate)
    if shift_seconds > 0:
        return np.concatenate([np.zeros(shift, dtype=out.dtype), out])
    return out[min(shift, out.shape[0] // 2):]


# ----------------------------------------------------------------------------- the block split


def check_partial_backbone(backbone: nn.Module, blocks: int) -> int:
    """The index of the first trained block, after checking the backbone can be split there."""
    stages = getattr(backbone, "num_stages", None)
    if stages is None or not hasattr(backbone, "run_stages"):
        raise TrainError(f"--finetune-blocks needs a backbone that embeds fixed log-mel blocks (aisfx-cnn9); "
                         f"{type(backbone).__name__} is not one: use --finetune to train it whole")
    if not 1 <= blocks <= stages:
        raise TrainError(f"--finetune-blocks must be between 1 and {stages} for this backbone, got {blocks}")
    return stages - blocks


@dataclass
class BlockMaps:
    """The frozen blocks' output for every clip and copy: clip i's copy v holds rows
    ``offsets[i * V + v] : offsets[i * V + v + 1]`` of ``maps``."""

    maps: Tensor  # (R, C, T', M') float16
    offsets: Tensor  # (N * V + 1,) int64
    variants: int

    def rows(self, clip: int, variant: int) -> tuple[int, int]:
        index = clip * self.variants + variant
        return int(self.offsets[index]), int(self.offsets[index + 1])


def frozen_block_maps(paths: list[str], encoder: Any, cut: int, config: TrainConfig, variants: int, *,
                      cache_dir: str | Path | None, progress: bool, desc: str) -> BlockMaps:
    """Every file's copies through the backbone's first ``cut`` blocks (through the cache)."""
    from diffatr.audio.io import load_audio

    from diffatr.encoders.batched import FoldedCNN9

    folded = FoldedCNN9(encoder.backbone)  # the indexing path's fast copy of the frozen blocks
    augment = {"gain_db": config.augment_gain_db, "shift_seconds": config.augment_shift_seconds}
    cache = None
    if cache_dir is not None:
        key = {**dataclasses.asdict(encoder.config), "frozen_blocks": cut, "augment": augment}
        cache = FeatureCache(Path(cache_dir) / "block_maps", key)
    pieces, counts = [], []
    for path in tqdm(paths, desc=desc, unit="clip", disable=not progress):
        file_hash = file_sha256(path)
        wave = None
        for variant, (gain, shift) in enumerate(augmentation_draws(file_hash, variants, **augment)):
            maps = cache.get(f"{file_hash}-{variant}") if cache is not None else None
            if maps is None:
                if wave is None:
                    wave = load_audio(path, encoder.sample_rate, max_seconds=encoder.config.max_seconds)  # (S,)
                blocks = encoder.log_mel_blocks(augment_waveform(wave, encoder.sample_rate, gain, shift))  # (n, T, M)
                with torch.inference_mode():
                    maps = torch.cat([folded.run_stages(chunk, cut).contiguous()
                                      for chunk in blocks.split(STAGE_CHUNK)]).half().cpu()  # (n, C, T', M')
                if cache is not None:
                    cache.put(f"{file_hash}-{variant}", maps)
            pieces.append(maps)
            counts.append(maps.shape[0])
    offsets = torch.zeros(len(counts) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(counts, dtype=torch.long).cumsum(0)
    return BlockMaps(torch.cat(pieces), offsets, variants)


def finish_blocks(backbone: nn.Module, maps: Tensor, owner: Tensor, num_clips: int, cut: int) -> Tensor:
    """(R, C, T', M') cached maps of ``num_clips`` clips (``owner``: (R,) the clip of each row)
    -> (num_clips, Da): the trained blocks, the backbone's pooling, the mean over each clip's
    blocks (as inference embeds a clip)."""
    pooled = backbone.pool_blocks(backbone.run_stages(maps.float(), cut, backbone.num_stages))  # (R, Da)
    sums = torch.zeros(num_clips, pooled.shape[1], dtype=pooled.dtype, device=pooled.device)
    sums = sums.index_add(0, owner, pooled)
    counts = torch.bincount(owner, minlength=num_clips).clamp_min(1).to(pooled.dtype)
    return sums / counts[:, None]


def embed_cached(backbone: nn.Module, cached: BlockMaps, cut: int, device: torch.device | str = "cpu",
                 chunk_rows: int = 4 * STAGE_CHUNK) -> Tensor:
    """(N, Da) clip embeddings from one-copy ``cached`` maps, in chunks of whole clips (no grad)."""
    if cached.variants != 1:
        raise ValueError("embed_cached reads one copy per clip")
    counts = cached.offsets.diff()  # (N,)
    out, first = [], 0
    with torch.no_grad():
        while first < counts.numel():
            last = first + 1
            while last < counts.numel() and int(cached.offsets[last + 1] - cached.offsets[first]) <= chunk_rows:
                last += 1
            start, stop = int(cached.offsets[first]), int(cached.offsets[last])
            owner = torch.repeat_interleave(torch.arange(last - first), counts[first:last]).to(device)  # (R,)
            out.append(finish_blocks(backbone, cached.maps[start:stop].to(device), owner, last - first, cut))
            first = last
    return torch.cat(out)


def draw_rows(cached: BlockMaps, clips: list[int], max_blocks: int, generator: torch.Generator
              ) -> tuple[Tensor, Tensor]:
    """One training view per clip: a random copy, and in it a random run of at most
    ``max_blocks`` consecutive blocks (a crop in time). Returns (R,) rows of ``cached.maps``
    and (R,) the position of each row's clip in ``clips``."""
    picks = torch.rand(len(clips), 2, generator=generator).tolist()  # drawn at once: order-independent
    rows, owner = [], []
    for position, (clip, (u_copy, u_start)) in enumerate(zip(clips, picks)):
        start, stop = cached.rows(clip, min(int(u_copy * cached.variants), cached.variants - 1))
        extra = max(0, stop - start - max_blocks)
        first = start + min(int(u_start * (extra + 1)), extra)
        span = min(max_blocks, stop - start)
        rows.extend(range(first, first + span))
        owner.extend([position] * span)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(owner, dtype=torch.long)


# ----------------------------------------------------------------------------- the run


def clips_with_text(split: Any, model_config: ModelConfig, encoders: LazyEncoders, *, cache_dir: str | Path | None,
                    strict: bool, progress: bool, desc: str) -> FeatureSet | None:
    """A split's usable clips and their captions' text features (through the caption cache).
    No audio features: the frozen blocks read the audio themselves, so the whole backbone never
    runs over the split a second time. A FeatureSet is taken as it is."""
    if split is None:
        return None
    if isinstance(split, FeatureSet):
        split.check_encoders(model_config)
        return split
    table = clip_table(split, encoders.audio.sample_rate, strict, progress, f"checking {desc} audio")
    captions = table.flat_captions

    def encode(texts: list[str]) -> Tensor:
        return encoders.text.encode(texts).float().cpu()

    if cache_dir is not None:
        text = TextFeatureCache(Path(cache_dir), dataclasses.asdict(model_config.text)).get_or_compute(captions, encode)
    else:
        text = encode(captions)
    return dataclasses.replace(table, text_features=text)


def train_partial(model: DiffATR, model_config: ModelConfig, config: TrainConfig, train_split: Any,
                  val_split: Any, out_dir: Path, encoders: LazyEncoders, generators: dict[str, torch.Generator],
                  *, resume: bool, device: torch.device, cache_dir: str | Path | None, strict: bool, progress: bool,
                  data_info: dict[str, Any] | None, init_extra: dict[str, Any] | None = None,
                  init_path: str | None = None) -> TrainResult:
    """Phase 1 training the heads and the audio backbone's last ``config.finetune_blocks``
    blocks (the text backbone stays frozen: its features come from the cache)."""
    audio_encoder = encoders.audio
    backbone = audio_encoder.backbone
    cut = check_partial_backbone(backbone, config.finetune_blocks)
    train = clips_with_text(train_split, model_config, encoders, cache_dir=cache_dir, strict=strict,
                            progress=progress, desc="train")
    val = clips_with_text(val_split, model_config, encoders, cache_dir=cache_dir, strict=strict, progress=progress,
                          desc="val")
    train_maps = frozen_block_maps(train.paths, audio_encoder, cut, config, config.augment_variants,
                                   cache_dir=cache_dir, progress=progress, desc="train: frozen blocks")
    val_maps = frozen_block_maps(val.paths, audio_encoder, cut, config, 1, cache_dir=cache_dir, progress=progress,
                                 desc="val: frozen blocks") if val is not None else None
    batch_size = fit_batch(config.batch_size, train.num_captions, "captions")
    text = train.text.to(device)  # (M, Dt)
    negative_ids = negative_groups(train.sound_units(), train.num_clips, config).to(device)  # (N,)
    stages = backbone.stage_modules()
    tuned = nn.ModuleList(stages[cut:])
    backbone.requires_grad_(False)
    tuned.requires_grad_(True)

    def step_loss(rows: Tensor) -> tuple[Tensor, dict[str, float]]:
        clip_ids = train.caption_to_clip[rows]  # (B,)
        unique, inverse = torch.unique(clip_ids, return_inverse=True)  # a clip twice is embedded once
        map_rows, owner = draw_rows(train_maps, unique.tolist(), config.finetune_max_blocks, generators["data"])
        maps = train_maps.maps[map_rows].to(device)  # (R, C, T', M')
        audio_f = finish_blocks(backbone, maps, owner.to(device), len(unique), cut)[inverse.to(device)]  # (B, Da)
        text_f = text[rows.to(device)]  # (B, Dt)
        scale = model.logit_scale()
        loss = nt_xent_loss(model.project_text(text_f), model.project_audio(audio_f), scale,
                            negative_ids[clip_ids.to(device)])
        return loss, {"logit_scale": float(scale.detach())}

    def validate() -> dict[str, Any]:
        audio_f = embed_cached(backbone, val_maps, cut, device)  # (Nv, Da)
        with torch.no_grad():
            scores = model.project_text(val.text.to(device)) @ model.project_audio(audio_f).T  # (Mv, Nv)
        return {"metrics": retrieval_metrics(scores.float().cpu(), None, val.caption_to_clip)}

    def train_mode() -> None:
        model.train()
        backbone.eval()  # pretrained BatchNorm statistics (see the module docstring)

    named = [(n, p) for n, p in model.named_parameters() if not n.startswith("denoisers.")]
    backbone_scale = (config.backbone_lr or config.lr) / config.lr
    job = phase1_job(
        model, model_config, train, val, batch_size, generators, device, data_info,
        trained=nn.ModuleDict({"model": model, "audio_blocks": tuned}),
        param_groups=weight_decay_groups(named, config.weight_decay, 1.0)
        + weight_decay_groups(list(tuned.named_parameters()), config.weight_decay, backbone_scale),
        step_loss=step_loss,
        validate=validate,
        save_model=lambda path, extra: save_partial(model, model_config, backbone, out_dir, path, extra),
        train_mode=train_mode,
        fingerprint={"init checkpoint": init_path},
        extra={"finetune_blocks": config.finetune_blocks,
               **({"init": {k: v for k, v in init_extra.items() if k != "seen_clips"}} if init_extra else {})},
        earlier_seen=(init_extra or {}).get("seen_clips"),
    )
    return run_job(job, config, out_dir, resume=resume, device=device, progress=progress)


def save_partial(model: DiffATR, model_config: ModelConfig, backbone: nn.Module, out_dir: Path, path: Path,
                 extra: dict[str, Any]) -> None:
    """A checkpoint whose config points at the fine-tuned audio backbone, saved in the run folder
    (``BACKBONES_DIR``) under a name made from its content: feature caches key on the weights'
    path, so a ``best/`` that moves on to later weights must not keep the earlier file name.
    Backbone files that neither ``last/`` nor ``best/`` uses any more are removed."""
    from safetensors.torch import save

    from diffatr.checkpoint import CheckpointError, read_checkpoint

    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    folder = out_dir / BACKBONES_DIR
    audio_file = folder / f"audio-{_state_digest(state)[:16]}.safetensors"
    if not audio_file.is_file():
        atomic_write_bytes(audio_file, save(state, metadata={"arch": model_config.audio.name}))
    saved = dataclasses.replace(model_config, audio=dataclasses.replace(
        model_config.audio, weights=str(audio_file.resolve())))
    original, model.config = model.config, saved
    try:
        save_checkpoint(model, path, dict(extra, finetuned_backbone=audio_file.name))
    finally:
        model.config = original
    in_use = {audio_file.name}
    for name in ("last", "best"):
        try:
            weights = read_checkpoint(out_dir / name)[0].audio.weights
        except (CheckpointError, OSError):
            continue
        if weights:
            in_use.add(Path(weights).name)
    for stale in folder.glob("audio-*.safetensors"):
        if stale.name not in in_use:
            stale.unlink(missing_ok=True)


def _state_digest(state: dict[str, Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].numpy().tobytes())
    return digest.hexdigest()
