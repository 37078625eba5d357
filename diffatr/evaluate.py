"""Evaluation: the protocol metrics of three scorers (Dis, Gen, Gen+Dis), in both directions.

Owns the evaluation loop of docs/method.md "Inference" over a test split: project the frozen-backbone
features once, score every caption against every clip with cosine (Dis), with the diffusion
re-rank alone over each query's cosine top-K (Gen), and with the fused score (Gen+Dis), then
docs/protocol.md's metrics; mean and std over DDIM seeds or checkpoints; a sweep over DDIM steps and
K; the out-of-domain flag. ``score_matrices`` is pure tensor code; ``evaluate_model`` may load
checkpoints and compute features through a callable, but never prints or parses flags (cli.py).

Shape legend: N clips, M captions, Q queries, C candidates, K re-ranked candidates per query,
D shared embedding width, Da / Dt audio / text backbone feature widths.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from diffatr.config import DEFAULT_BATCH_SIZE, NOT_EVALUATED, RetrievalConfig, knob_fields
from diffatr.errors import DiffatrError
from diffatr.metrics import retrieval_metrics
from diffatr.retrieval.expansion import expand_text_queries
from diffatr.retrieval.rerank import full_rerank

__all__ = [
    "DIRECTIONS",
    "KNOBS",
    "METRICS",
    "SCORERS",
    "EvaluationError",
    "dataset_identity",
    "evaluate_model",
    "format_results",
    "format_sweep",
    "is_out_of_domain",
    "score_matrices",
    "scorer_metrics",
    "sweep",
    "training_data",
]

DIRECTIONS = ("text_to_audio", "audio_to_text")
SCORERS = ("dis", "gen", "gen+dis")
# The settings an evaluation records (what a search shows, such as the number of results, does
# not change a metric).
KNOBS = tuple(f.name for f in knob_fields() if f.name not in NOT_EVALUATED)
# The per-direction metric names of diffatr.metrics.retrieval_metrics, in table order.
METRICS = ("R@1", "R@5", "R@10", "mAP@10", "median_rank", "mean_rank")
STD_KIND = "sample standard deviation (ddof=1); 0.0 when there is a single value"
# Rows of backbone features projected at once (bounds memory of the heads' activations).
_PROJECT_CHUNK = 8192


class EvaluationError(DiffatrError):
    """An evaluation that cannot run as asked (features that do not fit the model, no seed ...)."""


# ----------------------------------------------------------------------------- features


def _as_features(data: Any) -> tuple[Tensor, Tensor, Tensor]:
    """The three tensors evaluation reads, audio (N, Da), text (M, Dt) and caption_to_clip (M,),
    of a ``diffatr.features.FeatureSet`` (or a RetrievalIndex), a mapping or a 3-tuple."""
    if isinstance(data, Mapping):
        try:
            audio, text, labels = data["audio"], data["text"], data["caption_to_clip"]
        except KeyError as err:
            raise EvaluationError("evaluation features need 'audio', 'text' and 'caption_to_clip'; "
                                  f"missing {err}") from err
    elif isinstance(data, (tuple, list)) and len(data) == 3:
        audio, text, labels = data
    elif all(hasattr(data, name) for name in ("audio", "text", "caption_to_clip")):
        audio, text, labels = data.audio, data.text, data.caption_to_clip
    else:
        raise EvaluationError(
            f"cannot evaluate on a {type(data).__name__}: give split data (diffatr.data.datasets."
            "load_split) or features with audio (N, Da), text (M, Dt) and caption_to_clip (M,)")
    if audio is None or text is None:
        raise EvaluationError("evaluation needs audio and caption features; these clips have "
                              f"{'no audio' if audio is None else 'no caption'} features")
    audio, text = torch.as_tensor(audio), torch.as_tensor(text)
    labels = torch.as_tensor(labels)
    if audio.ndim != 2 or text.ndim != 2 or labels.ndim != 1 or labels.shape[0] != text.shape[0]:
        raise EvaluationError(
            f"expected audio (N, Da), text (M, Dt) and caption_to_clip (M,), got "
            f"{tuple(audio.shape)}, {tuple(text.shape)} and {tuple(labels.shape)}")
    if audio.shape[0] == 0 or text.shape[0] == 0:
        raise EvaluationError(f"nothing to evaluate: {audio.shape[0]} clip(s) and {text.shape[0]} caption(s); "
                              "the split needs clips with captions")
    return audio, text, labels.long()


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


@torch.no_grad()
def _project(project: Callable[[Tensor], Tensor], features: Tensor, device: torch.device) -> Tensor:
    parts = [project(features[i : i + _PROJECT_CHUNK].to(device, torch.float32))
             for i in range(0, features.shape[0], _PROJECT_CHUNK)]
    return torch.cat(parts)


def _check_widths(model: Any, audio: Tensor, text: Tensor) -> None:
    config = getattr(model, "config", None)
    if config is None:
        return
    problems = []
    if audio.shape[1] != config.audio.embed_dim:
        problems.append(f"audio features are {audio.shape[1]}-d, the model's audio backbone "
                        f"({config.audio.name}) gives {config.audio.embed_dim}-d")
    if text.shape[1] != config.text.embed_dim:
        problems.append(f"text features are {text.shape[1]}-d, the model's text backbone "
                        f"gives {config.text.embed_dim}-d")
    if problems:
        raise EvaluationError("; ".join(problems) + ": compute the features with this checkpoint's backbones")


# ----------------------------------------------------------------------------- scoring (pure tensors)


def _direction_scores(model: Any, direction: str, prepared: "_Prepared", config: RetrievalConfig,
                      scorers: Sequence[str], batch_size: int) -> dict[str, Tensor]:
    """The requested scorers' (Q, C) matrices for one direction."""
    if direction == "text_to_audio":  # the first stage ranks with the expanded query, the denoiser sees q
        queries, candidates, cosine = prepared.text_embeds, prepared.audio_embeds, prepared.first_stage_t2a(model, config)
    else:
        queries, candidates, cosine = prepared.audio_embeds, prepared.text_embeds, prepared.cosine_a2t
    out: dict[str, Tensor] = {}
    if "dis" in scorers:
        out["dis"] = cosine
    if not ({"gen", "gen+dis"} & set(scorers)):
        return out  # cosine only: no denoiser is touched
    denoiser = model.denoisers[direction]
    factorised = hasattr(denoiser, "forward_cached")
    full = full_rerank(queries, candidates, denoiser, model.make_scheduler(), config, scores=cosine,
                       candidate_cache=prepared.cache(direction, model) if factorised else None,
                       factorised=factorised, batch_size=batch_size)
    if "gen+dis" in scorers:
        out["gen+dis"] = full.fused  # S + alpha * softmax(x0 / temperature) on the top K
    if "gen" in scorers:
        out["gen"] = full.generated  # the diffusion term alone orders the top K
    return out


@torch.no_grad()
def score_matrices(
    model: Any,
    audio_features: Tensor,
    text_features: Tensor,
    config: RetrievalConfig,
    scorers: Sequence[str] = SCORERS,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    _prepared: "_Prepared | None" = None,
) -> dict[str, dict[str, Tensor]]:
    """Score matrices of the three scorers in both directions (docs/method.md "Inference").

    - "dis": cosine S of the L2-normalised projections (the phase-1 model alone).
    - "gen": the diffusion term alone on each query's cosine top-K: the K entries are ordered by
      softmax(x0 / temperature) (ties by cosine order) and valued 2 + (K - j) / K for the j-th,
      above every cosine; the other entries keep S, so they follow in cosine order. Only the
      ranking is meaningful (what the metrics use).
    - "gen+dis": S + alpha * softmax(x0 / temperature) on the top-K, S elsewhere.
    Each direction uses its own denoiser and candidate cache; the DDIM start noise x_T comes
    from ``config.seed`` and is shared by every query (results do not depend on query order).
    Gen and Gen+Dis come from one DDIM run per direction (``diffatr.retrieval.rerank.full_rerank``).

    Args:
        model: a DiffATR (``project_text``, ``project_audio``, ``denoisers``, ``make_scheduler``);
            computation follows its device. Call ``model.eval()`` first.
        audio_features: (N, Da) audio backbone features.
        text_features: (M, Dt) text backbone features.
        config: the re-rank's settings, as the entry point built them (e.g.
            ``model.config.with_retrieval(seed=1)``); ``num_results`` is not used.
        scorers: which of "dis", "gen", "gen+dis" to compute ("dis" alone runs no diffusion).
        batch_size: queries per denoiser batch (speed only).
        allow_seen: score clips the checkpoint was trained on (the result is marked).

    Returns:
        {"text_to_audio": {scorer: (M, N)}, "audio_to_text": {scorer: (N, M)}}, float32 on the
        model's device.
    """
    bad = sorted(set(scorers) - set(SCORERS))
    if bad or not scorers:
        raise EvaluationError(f"scorers must be a non-empty subset of {list(SCORERS)}, got {list(scorers)}")
    prepared = _prepared or _Prepared.build(model, audio_features, text_features)
    return {direction: _direction_scores(model, direction, prepared, config, scorers, batch_size)
            for direction in DIRECTIONS}


@dataclass
class _Prepared:
    """What depends only on (model, features): projections, cosine matrices, candidate caches.
    Built once and reused across seeds and sweep points."""

    audio_embeds: Tensor  # (N, D)
    text_embeds: Tensor  # (M, D)
    cosine_t2a: Tensor  # (M, N)
    cosine_a2t: Tensor  # (N, M)
    caches: dict[str, Any]
    text_features: Tensor  # (M, Dt): what known-caption expansion looks up
    expanded: dict[tuple, Tensor] = field(default_factory=dict)  # (expansion, neighbours) -> (M, N)

    @classmethod
    @torch.no_grad()
    def build(cls, model: Any, audio_features: Tensor, text_features: Tensor) -> "_Prepared":
        device = _model_device(model)
        audio_embeds = _project(model.project_audio, torch.as_tensor(audio_features), device)  # (N, D)
        text_embeds = _project(model.project_text, torch.as_tensor(text_features), device)  # (M, D)
        cosine = text_embeds @ audio_embeds.T  # (M, N)
        if not bool(torch.isfinite(cosine).all()):
            raise EvaluationError("similarities contain NaN or inf: some features are not finite; "
                                  "recompute them (clear the feature cache for this split)")
        return cls(audio_embeds, text_embeds, cosine, cosine.T.contiguous(), {}, torch.as_tensor(text_features))

    @torch.no_grad()
    def first_stage_t2a(self, model: Any, config: RetrievalConfig) -> Tensor:
        """(M, N) text -> audio first-stage scores: the cosine of each caption's expanded query
        (``expand_text_queries``), or the plain cosine for a model without a caption bank."""
        if not getattr(model, "has_caption_bank", False) or config.expansion == 0:
            return self.cosine_t2a
        key = (config.expansion, config.expansion_neighbours)
        if key not in self.expanded:
            parts = [expand_text_queries(model, self.text_features[i : i + _PROJECT_CHUNK].float(),
                                         self.text_embeds[i : i + _PROJECT_CHUNK], config)
                     for i in range(0, self.text_embeds.shape[0], _PROJECT_CHUNK)]
            self.expanded[key] = torch.cat(parts) @ self.audio_embeds.T  # (M, N)
        return self.expanded[key]

    def cache(self, direction: str, model: Any) -> Any:
        denoiser = model.denoisers[direction]
        if direction not in self.caches and hasattr(denoiser, "precompute"):
            candidates = self.audio_embeds if direction == "text_to_audio" else self.text_embeds
            with torch.no_grad():
                self.caches[direction] = denoiser.precompute(candidates)
        return self.caches.get(direction)


def scorer_metrics(matrices: Mapping[str, Mapping[str, Tensor]],
                   caption_to_clip: Tensor) -> dict[str, dict[str, float]]:
    """``retrieval_metrics`` per scorer.

    Args:
        matrices: the output of ``score_matrices``.
        caption_to_clip: (M,) clip row of each caption.

    Returns:
        {scorer: {"text_to_audio/R@1": ..., "audio_to_text/mean_rank": ...}} (percent for R@k
        and mAP@10; 1-based ranks). Counts are left out (they do not depend on the scorer).
    """
    out = {}
    for scorer in SCORERS:
        if scorer not in matrices["text_to_audio"]:
            continue
        metrics = retrieval_metrics(matrices["text_to_audio"][scorer], matrices["audio_to_text"][scorer],
                                    caption_to_clip)
        out[scorer] = {k: float(v) for k, v in metrics.items() if "/" in k}
    return out


# ----------------------------------------------------------------------------- mean +- std


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    # statistics works in exact fractions: equal values give exactly their value and std 0.0.
    values = [float(v) for v in values]
    mean = float(statistics.mean(values))
    return mean, (float(statistics.stdev(values)) if len(values) > 1 else 0.0)


def _aggregate(per_run: Sequence[Mapping[str, Mapping[str, float]]]) -> tuple[dict, dict]:
    """Mean and sample std over runs, per scorer and metric."""
    means, stds = {}, {}
    for scorer in per_run[0]:
        means[scorer], stds[scorer] = {}, {}
        for key in per_run[0][scorer]:
            mean, std = _mean_std([run[scorer][key] for run in per_run])
            means[scorer][key], stds[scorer][key] = mean, std
    return means, stds


# ----------------------------------------------------------------------------- in / out of domain


_BENCHMARKS = ("audiocaps", "clotho")


def dataset_identity(info: Mapping[str, Any] | None) -> str | None:
    """Which dataset a data description names, for the in/out-of-domain check.

    An explicit ``name`` wins; a Clotho or AudioCaps kind (any layout: official CSVs,
    aac-datasets) is the dataset itself, whatever the split; otherwise (a manifest of one's own
    data) the folder that holds the source, so train.csv and test.csv side by side are one
    dataset. None when nothing is known.
    """
    if not info:
        return None
    if info.get("name"):
        return str(info["name"]).lower()
    kind = str(info.get("kind") or "").lower()
    for bench in _BENCHMARKS:
        if bench in kind:
            return bench
    source = info.get("source")
    if source:
        path = Path(str(source)).expanduser().resolve()
        folder = path.parent if path.suffix else path
        return f"data:{folder}"
    return kind or None


_IDENTITY_KEYS = ("name", "kind", "source", "split", "source_sha256")


def training_data(extra: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What a checkpoint was trained on, from its ``extra`` (written by ``diffatr train``), or None.

    Reads ``extra["train_data"]`` or ``extra["data"]``: a mapping with name / kind / source /
    split at its top level or under its ``"train"`` entry (train.py stores the data facts with
    per-split summaries under "train" and "val"), or a plain string (a source or dataset name).

    Returns:
        {"name"?, "kind"?, "source"?, "split"?} (the keys found) or None.
    """
    if not extra:
        return None
    for key in ("train_data", "data", "dataset"):
        value = extra.get(key)
        if isinstance(value, str) and value:
            return {"source": value}
        if not isinstance(value, Mapping) or not value:
            continue
        out = {k: value[k] for k in _IDENTITY_KEYS if isinstance(value.get(k), str) and value[k]}
        nested = value.get("train")
        if isinstance(nested, Mapping):
            for k in _IDENTITY_KEYS:
                if isinstance(nested.get(k), str) and nested[k]:
                    out.setdefault(k, nested[k])
        if out:
            return out
    return None


# Split names that declare their clips out of domain within one manifest (the built-in
# corpus's "ood": sources held out of training by construction; docs/protocol.md).
OOD_SPLITS = ("ood",)


def is_out_of_domain(train: Mapping[str, Any] | None, evaluation: Mapping[str, Any] | None) -> bool | None:
    """True when the checkpoint was trained on another dataset than the one evaluated (the
    paper's Clotho -> AudioCaps setting) or the evaluated split is declared out of domain
    (``OOD_SPLITS``, e.g. the built-in corpus's ``ood``), False when the same, None when the
    training data is unknown (a checkpoint saved without it). One manifest file (same content
    hash) is one dataset wherever it lies, so a shipped checkpoint evaluated on its shipped
    data from another clone is in domain."""
    split = str((evaluation or {}).get("split") or "").lower()
    if split in OOD_SPLITS and str((train or {}).get("split") or "").lower() not in OOD_SPLITS:
        return True
    digests = {(info or {}).get("source_sha256") for info in (train, evaluation)}
    if len(digests) == 1 and None not in digests and not any((info or {}).get("name") for info in (train, evaluation)):
        return False
    a, b = dataset_identity(train), dataset_identity(evaluation)
    if a is None or b is None:
        return None
    return a != b


# ----------------------------------------------------------------------------- evaluate


def _load(item: Any, device: torch.device | str | None) -> tuple[Any, str | None]:
    """A model (as given, or loaded from a checkpoint folder) and its label."""
    if isinstance(item, (str, Path)):
        from diffatr.checkpoint import load_checkpoint

        model = load_checkpoint(item, map_location="cpu")
        if device is not None:
            model = model.to(device)
        return model, str(item)
    if device is not None and hasattr(item, "to"):
        item = item.to(device)
    return item, getattr(item, "checkpoint_path", None)


def _data_info(data: Any, data_info: Mapping[str, Any] | None) -> dict[str, Any]:
    info = dict(data_info or {})
    for name in ("source", "kind", "split"):
        value = getattr(data, name, None)
        if name not in info and isinstance(value, (str, Path)):
            info[name] = str(value)
    return with_source_sha256(info)


def with_source_sha256(info: Mapping[str, Any]) -> dict[str, Any]:
    """``info`` plus ``source_sha256``, the content hash of its source when that is a file (a
    manifest), so that the same manifest is recognised wherever it lies (a clone, a copy)."""
    out = dict(info)
    source = out.get("source")
    if "source_sha256" not in out and isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.is_file():
            from diffatr.encoders.cache import file_sha256

            out["source_sha256"] = file_sha256(path)
    return out


class SeenDataError(EvaluationError):
    """The evaluation clips include clips the checkpoint was trained on."""


def seen_clips(extra: Mapping[str, Any] | None) -> set[str] | None:
    """The clip ids a checkpoint's weights were fit on (both phases), or None when the
    checkpoint does not record them (saved by an older diffatr)."""
    ids = (extra or {}).get("seen_clips")
    return None if ids is None else {str(i) for i in ids}


def data_clip_ids(data: Any) -> list[str] | None:
    """The clip ids of split data or a FeatureSet (None for bare tensors)."""
    if hasattr(data, "records"):
        return [str(r.clip_id) for r in data.records]
    ids = getattr(data, "clip_ids", None)
    return None if ids is None else [str(i) for i in ids]


def check_unseen(model: Any, label: str | None, clip_ids: list[str] | None, allow_seen: bool) -> dict[str, Any]:
    """What a checkpoint saw of the evaluation clips: ``{"seen": n, "of": N}`` (``seen`` None
    when either side is unknown).

    Raises:
        SeenDataError: some clips were in the checkpoint's training data and ``allow_seen`` is off.
    """
    seen = seen_clips(getattr(model, "checkpoint_extra", None))
    if seen is None or clip_ids is None:
        return {"seen": None, "of": None if clip_ids is None else len(clip_ids)}
    overlap = [c for c in clip_ids if c in seen]
    if overlap and not allow_seen:
        names = ", ".join(overlap[:3]) + (", ..." if len(overlap) > 3 else "")
        raise SeenDataError(
            f"checkpoint {label or '(model)'} was trained on {len(overlap)} of these {len(clip_ids)} clips ({names}): "
            "its scores on them say nothing about unseen sounds. Evaluate a checkpoint trained without them ("
            "docs/usage.md gives the train-only recipe), or pass --allow-seen (allow_seen=True) to score them anyway, "
            "marked as seen data")
    return {"seen": len(overlap), "of": len(clip_ids)}


def evaluate_model(
    checkpoint_or_model: Any,
    split_data_or_features: Any,
    config: RetrievalConfig,
    seeds: Sequence[int] | None = None,
    *,
    scorers: Sequence[str] = SCORERS,
    data_info: Mapping[str, Any] | None = None,
    features_fn: Callable[[Any, Any], Any] | None = None,
    device: torch.device | str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    allow_seen: bool = False,
) -> dict[str, Any]:
    """Evaluate one or several checkpoints on one split: three scorers, both directions.

    Seen data: clips a checkpoint was trained on (``extra["seen_clips"]``) raise ``SeenDataError``
    unless ``allow_seen``; the result says how many were seen (``seen_data``, per checkpoint).

    Out of domain: evaluating a checkpoint trained on one dataset (say Clotho) on another (say
    AudioCaps) is simply an evaluation on that data; the result records the checkpoint's
    training data (``extra["train_data"]`` or ``extra["data"]``, written by ``diffatr train``)
    and the evaluation data, and sets ``out_of_domain`` to True when they name different
    datasets (``dataset_identity``: Clotho / AudioCaps by kind whatever the split or layout,
    own data by the folder of its manifest), False when the same, None when the checkpoint
    does not say what it was trained on.

    Mean and std: with several DDIM seeds, each checkpoint's metrics are averaged over the
    seeds; with one checkpoint the std is over the seeds, with several checkpoints (e.g. 3
    training seeds, as the paper reports) the mean and std are over the checkpoints' seed-means.
    The std is the *sample* standard deviation (ddof = 1), 0.0 for a single value. Dis does
    not depend on the DDIM seed (its std over seeds is 0). Every run is kept under ``runs``.

    Args:
        checkpoint_or_model: a checkpoint folder, a DiffATR model, or a list of these.
        split_data_or_features: features (an object or mapping with audio (N, Da), text
            (M, Dt), caption_to_clip (M,), e.g. diffatr.features.FeatureSet), or split data
            (diffatr.data.datasets.SplitData) turned into features per checkpoint by
            ``features_fn(model, split_data)`` (default: ``diffatr.features``).
        config: the re-rank's settings for every checkpoint, as the entry point built them
            (``ModelConfig.with_retrieval``); ``config.seed`` is used when ``seeds`` is None.
        seeds: DDIM start-noise seeds (None: the config's seed).
        scorers: a subset of ("dis", "gen", "gen+dis").
        data_info: what the evaluation data is ({"source", "kind", "split"} or {"name"}); taken
            from the split data's attributes when not given.
        features_fn: how to turn split data into features for a model.
        device: move models here (default: where they are; checkpoints load on the CPU).
        batch_size: queries per denoiser batch (speed only).
        allow_seen: score clips the checkpoint was trained on (the result is marked).

    Returns:
        A JSON-able dict: {"scorers": {"dis": {"text_to_audio/R@1": mean, ...}, "gen": ...,
        "gen+dis": ...}, "std": (same layout), "std_over": "seeds" | "checkpoints" | "none",
        "std_kind", "num_clips", "num_captions", "knobs", "seeds", "checkpoint" (a path, or a
        list for several), "checkpoints": [{"checkpoint", "train_data", "out_of_domain"}],
        "data", "train_data", "out_of_domain", "runs": [{"checkpoint", "seed", "scorers"}]}.
    """
    items = list(checkpoint_or_model) if isinstance(checkpoint_or_model, (list, tuple)) else [checkpoint_or_model]
    run_seeds = [int(s) for s in (seeds if seeds is not None else [config.seed])]
    if not items or not run_seeds:
        raise EvaluationError("give at least one checkpoint and one seed")
    info = _data_info(split_data_or_features, data_info)
    clip_ids = data_clip_ids(split_data_or_features)
    loaded = [_load(item, device) for item in items]
    seen = [check_unseen(model, label, clip_ids, allow_seen) for model, label in loaded]  # before any work
    runs, per_checkpoint, checkpoints, counts = [], [], [], None
    for (model, label), seen_info in zip(loaded, seen):
        model = model.eval() if hasattr(model, "eval") else model
        audio, text, labels = _features_for(model, split_data_or_features, features_fn)
        if counts is not None and (audio.shape[0], text.shape[0]) != counts:
            raise EvaluationError(f"checkpoints saw different numbers of clips/captions {counts} vs "
                                  f"{(audio.shape[0], text.shape[0])}")
        counts = (audio.shape[0], text.shape[0])
        seed_metrics = _seed_metrics(model, audio, text, labels, config, run_seeds, scorers, batch_size)
        runs += [{"checkpoint": label, "seed": seed, "scorers": m} for seed, m in zip(run_seeds, seed_metrics)]
        per_checkpoint.append(_aggregate(seed_metrics)[0])
        train = training_data(getattr(model, "checkpoint_extra", None))
        checkpoints.append({"checkpoint": label, "train_data": train, "out_of_domain": is_out_of_domain(train, info),
                            "seen_clips": seen_info})
    return _summary(items, runs, per_checkpoint, checkpoints, counts, config, info)


def _features_for(model: Any, data: Any, features_fn: Callable[[Any, Any], Any] | None) -> tuple[Tensor, Tensor, Tensor]:
    """audio (N, Da), text (M, Dt), caption_to_clip (M,) of ``data`` for ``model``'s backbones."""
    raw = data if _looks_like_features(data) else (features_fn or _default_features_fn)(model, data)
    if hasattr(raw, "check_encoders") and getattr(model, "config", None) is not None:
        raw.check_encoders(model.config)  # a FeatureSet knows which backbones made it
    audio, text, labels = _as_features(raw)
    _check_widths(model, audio, text)
    return audio, text, labels


def _seed_metrics(model: Any, audio: Tensor, text: Tensor, labels: Tensor, config: RetrievalConfig,
                  seeds: Sequence[int], scorers: Sequence[str], batch_size: int) -> list[dict[str, dict[str, float]]]:
    """One model's metrics per seed (Dis is computed once: it does not depend on the seed)."""
    prepared = _Prepared.build(model, audio, text)
    labels = labels.to(prepared.cosine_t2a.device)
    out, dis_metrics = [], None
    for seed in seeds:
        wanted = [s for s in scorers if s != "dis" or dis_metrics is None]
        metrics = {}
        if wanted:
            matrices = score_matrices(model, audio, text, dataclasses.replace(config, seed=seed), wanted,
                                      batch_size=batch_size, _prepared=prepared)
            metrics = scorer_metrics(matrices, labels)
        if "dis" in scorers:
            dis_metrics = metrics.get("dis", dis_metrics)
            metrics["dis"] = dis_metrics
        out.append({s: metrics[s] for s in SCORERS if s in metrics})
    return out


def _summary(items: list, runs: list[dict[str, Any]], per_checkpoint: list, checkpoints: list[dict[str, Any]],
             counts: tuple[int, int], config: RetrievalConfig, info: dict[str, Any]) -> dict[str, Any]:
    """``evaluate_model``'s result from its runs."""
    if len(items) > 1:
        means, stds = _aggregate(per_checkpoint)
        std_over = "checkpoints"
    else:
        means, stds = _aggregate([r["scorers"] for r in runs])
        std_over = "seeds" if len(runs) > 1 else "none"
    flags = {c["out_of_domain"] for c in checkpoints}
    trains = [c["train_data"] for c in checkpoints]
    return {
        "scorers": means,
        "std": stds,
        "std_over": std_over,
        "std_kind": STD_KIND,
        "num_runs": len(runs),
        "num_clips": counts[0],
        "num_captions": counts[1],
        "knobs": {name: getattr(config, name) for name in KNOBS},
        "seeds": list(dict.fromkeys(r["seed"] for r in runs)),
        "checkpoint": checkpoints[0]["checkpoint"] if len(items) == 1 else [c["checkpoint"] for c in checkpoints],
        "checkpoints": checkpoints,
        "data": info,
        "train_data": trains[0] if len(items) == 1 or all(t == trains[0] for t in trains) else trains,
        "out_of_domain": flags.pop() if len(flags) == 1 else None,
        "seen_data": any((c["seen_clips"].get("seen") or 0) > 0 for c in checkpoints),
        "runs": runs,
    }


def _looks_like_features(data: Any) -> bool:
    if isinstance(data, (tuple, list, Mapping)):
        return True
    return all(hasattr(data, name) for name in ("audio", "text", "caption_to_clip"))


def _default_features_fn(model: Any, split: Any) -> Any:
    """Features of split data for this model's backbones, through the default on-disk feature
    cache (backbones run on the CPU; the CLI passes its own function with a device)."""
    from diffatr.features import compute_features, records_of
    from diffatr.indexing import default_cache_dir

    return compute_features(records_of(split), model.config, cache_dir=default_cache_dir(), progress=False)


# ----------------------------------------------------------------------------- sweep


def sweep(
    model: Any,
    features: Any,
    config: RetrievalConfig,
    steps: Iterable[int],
    top_ks: Iterable[int],
    seeds: Sequence[int] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[dict[str, Any]]:
    """R@1/5/10 of Gen+Dis for every (DDIM steps, K), both directions.

    Args:
        model: a DiffATR in eval mode.
        features: audio (N, Da), text (M, Dt), caption_to_clip (M,) (as for ``evaluate_model``).
        config: the other settings (alpha, temperature, fusion, seed); the grid sets top_k and
            num_inference_steps.
        steps: DDIM step counts (each in 1..T).
        top_ks: K values (clamped to the corpus size of each direction).
        seeds: DDIM seeds; several give the mean (and "std", sample std) per point (None: the
            config's seed).
        batch_size: queries per denoiser batch (speed only).
        allow_seen: score clips the checkpoint was trained on (the result is marked).

    Returns:
        One dict per (steps, K), steps-major: {"num_inference_steps", "top_k",
        "text_to_audio/R@1", ..., "audio_to_text/R@10", "std": {same keys}}.
    """
    audio, text, labels = _as_features(features)
    _check_widths(model, audio, text)
    steps, top_ks = [int(s) for s in steps], [int(k) for k in top_ks]
    if not steps or not top_ks:
        raise EvaluationError("the sweep needs at least one step count and one K")
    # The whole grid is checked (steps <= T included) before any time is spent on it.
    model_config = getattr(model, "config", None)
    point = model_config.with_retrieval if model_config is not None else RetrievalConfig
    grid = [[point(**{**dataclasses.asdict(config), "num_inference_steps": s, "top_k": k}) for k in top_ks]
            for s in steps]
    run_seeds = [int(s) for s in (seeds if seeds is not None else [config.seed])]
    prepared = _Prepared.build(model, audio, text)
    labels = labels.to(prepared.cosine_t2a.device)
    keys = [f"{d}/R@{k}" for d in DIRECTIONS for k in (1, 5, 10)]
    rows = []
    for cell in (c for row in grid for c in row):
        per_seed = [scorer_metrics(score_matrices(model, audio, text, dataclasses.replace(cell, seed=seed),
                                                  ("gen+dis",), batch_size=batch_size, _prepared=prepared), labels)
                    for seed in run_seeds]
        mean, std = _aggregate(per_seed)
        row: dict[str, Any] = {"num_inference_steps": cell.num_inference_steps, "top_k": cell.top_k}
        row.update({key: mean["gen+dis"][key] for key in keys})
        row["std"] = {key: std["gen+dis"][key] for key in keys}
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- tables


_HEADERS = {"R@1": "R@1", "R@5": "R@5", "R@10": "R@10", "mAP@10": "mAP@10", "median_rank": "medR",
            "mean_rank": "meanR"}
_ARROWS = {"text_to_audio": "text->audio", "audio_to_text": "audio->text"}


def _cell(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f}±{std:.2f}"


def format_results(result: Mapping[str, Any]) -> str:
    """A readable table of ``evaluate_model``'s result: rows scorer x direction, columns
    R@1 R@5 R@10 mAP@10 medR meanR (mean±std when there are several runs)."""
    multi = result.get("std_over") in ("seeds", "checkpoints")
    ckpt = result.get("checkpoint")
    ckpt = ", ".join(map(str, ckpt)) if isinstance(ckpt, list) else ckpt
    data = result.get("data") or {}
    where = " ".join(f"{k}={data[k]}" for k in ("source", "kind", "split") if data.get(k))
    lines = [f"{result['num_clips']} clips, {result['num_captions']} captions"
             + (f"  |  data: {where}" if where else "") + (f"  |  checkpoint: {ckpt}" if ckpt else "")]
    knobs = result.get("knobs") or {}
    lines.append("knobs: " + " ".join(f"{k}={knobs[k]}" for k in KNOBS if k in knobs and k != "seed")
                 + f" seeds={','.join(map(str, result.get('seeds', [])))}")
    if multi:
        n = len(result["checkpoints"]) if result["std_over"] == "checkpoints" else result["num_runs"]
        lines.append(f"mean ± std over {n} {result['std_over']} (sample std, ddof=1)")
    if result.get("seen_data"):
        seen = max((c["seen_clips"]["seen"] or 0) for c in result["checkpoints"])
        lines.append(f"SEEN DATA: the checkpoint was trained on {seen} of these {result['num_clips']} clips "
                     "(--allow-seen); these numbers are not a held-out score")
    if result.get("out_of_domain"):
        train = result.get("train_data")
        lines.append(f"out of domain: trained on {dataset_identity(train) if isinstance(train, Mapping) else train}, "
                     f"evaluated on {dataset_identity(data)}")
    width = 14 if multi else 7
    header = f"{'scorer':<8} {'direction':<12}" + "".join(f" {_HEADERS[m]:>{width}}" for m in METRICS)
    lines += [header, "-" * len(header)]
    for scorer in SCORERS:
        if scorer not in result["scorers"]:
            continue
        for direction in DIRECTIONS:
            cells = []
            for m in METRICS:
                key = f"{direction}/{m}"
                std = result["std"][scorer][key] if multi else None
                cells.append(f" {_cell(result['scorers'][scorer][key], std):>{width}}")
            lines.append(f"{scorer:<8} {_ARROWS[direction]:<12}" + "".join(cells))
    return "\n".join(lines)


def format_sweep(rows: Sequence[Mapping[str, Any]]) -> str:
    """A table of ``sweep`` rows: steps, K, then R@1/5/10 of Gen+Dis per direction."""
    keys = [f"{d}/R@{k}" for d in DIRECTIONS for k in (1, 5, 10)]
    short = {"text_to_audio": "T2A", "audio_to_text": "A2T"}
    header = f"{'steps':>5} {'K':>4}" + "".join(f" {short[k.split('/')[0]]} {k.split('/')[1]:>5}" for k in keys)
    lines = ["Gen+Dis sweep over DDIM steps and K", header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['num_inference_steps']:>5} {row['top_k']:>4}"
                     + "".join(f" {row[k]:>9.2f}" for k in keys))
    return "\n".join(lines)
