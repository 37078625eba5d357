"""What both training phases share: the run loop (steps, LR schedule, EMA, validation-only
model selection, checkpoints, the JSONL log, exact ``--resume``), seeded generators, and the
result and error types. docs/method.md, "Training".

Shape legend: B batch (pairs), N clips, M captions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from diffatr.config import (
    RESUME_MUTABLE_FIELDS,
    ModelConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from diffatr.data.sounds import sound_keys
from diffatr.errors import DiffatrError
from diffatr.features import FeatureSet, LazyEncoders, compute_features, records_of
from diffatr.fileio import atomic_write_bytes
from diffatr.metrics import retrieval_metrics
from diffatr.model import DIRECTIONS, DiffATR
from diffatr.runtime import autocast
from diffatr.trainstate import (
    TrainState,
    TrainStateError,
    load_train_state,
    save_train_state,
)

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


def check_select_metric(name: str, phase: str = "contrastive") -> None:
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
class Job:
    """What differs between the phases; ``run_job`` does the rest.

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


def weight_decay_groups(named: Sequence[tuple[str, nn.Parameter]], weight_decay: float,
                        lr_scale: float) -> list[dict]:
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


def run_job(job: Job, config: TrainConfig, out_dir: Path, *, resume: bool, device: torch.device,
            progress: bool) -> TrainResult:
    """Run one training phase to its end (or ``max_steps``): steps, the LR schedule, the EMA,
    validation and checkpoints every ``eval_every`` units, the log, and exact ``--resume``."""
    loop = _RunLoop(job, config, Path(out_dir), device)
    loop.start(resume)
    bar = tqdm(total=loop.stop, initial=loop.step, desc=job.phase, unit="step", disable=not progress)
    while loop.step < loop.stop:
        loop.train_step()
        bar.update(1)
        if loop.logged is not None:
            bar.set_postfix(loss=f"{loop.logged:.4f}")
        if loop.due():
            loop.evaluate_and_save()  # after the train line: the saved state holds the log sums too
    bar.close()
    return loop.result()


class _RunLoop:
    """The state of one run (``run_job``): where it is, its optimizer and EMA, the best value."""

    def __init__(self, job: Job, config: TrainConfig, out_dir: Path, device: torch.device) -> None:
        self.job, self.config, self.out_dir, self.device = job, config, out_dir, device
        self.log = RunLog(out_dir / LOG_FILE)
        self.state_dir = out_dir / STATE_DIR
        self.spe = job.steps_per_epoch
        self.total = config.epochs * self.spe
        self.stop = min(self.total, config.max_steps) if config.max_steps else self.total
        self.warmup = int(round(config.warmup_fraction * self.total))
        self.params = [p for g in job.param_groups for p in g["params"]]
        self.optimizer = torch.optim.AdamW(job.param_groups, lr=config.lr, weight_decay=config.weight_decay)
        self.ema = EMA(job.trained, config.ema_decay) if config.ema_decay > 0 else None
        self.precision = autocast(device, config.amp)
        self.step, self.order = 0, None
        self.sums: dict[str, float] = {}  # running sums of the logged values since the last train line
        self.count = 0
        self.logged: float | None = None  # the loss of the last train line
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.metrics: dict[str, Any] = {}

    def start(self, resume: bool) -> None:
        restart = resume and not (self.state_dir / "state.json").is_file()
        if restart:
            # Interrupted before its first validation: nothing was saved, so start over.
            warnings.warn(f"no saved state in {self.state_dir}: the run starts from step 0", stacklevel=4)
            if self.log.path.exists():
                self.log.path.unlink()
        if resume and not restart:
            self._resume()
            return
        leftovers = [p.name for p in (self.state_dir, self.log.path, self.out_dir / "last") if p.exists()]
        if leftovers and not restart:
            raise TrainError(f"{self.out_dir} already holds a run ({', '.join(leftovers)}): pass --resume to "
                             "continue it, or choose another --out")
        self.log.write({"type": "start", "phase": self.job.phase, "step": 0, "train": to_dict(self.config),
                        "total_steps": self.total, "steps_per_epoch": self.spe, "warmup_steps": self.warmup,
                        **self.job.extra})

    def _resume(self) -> None:
        job = self.job
        try:
            state = load_train_state(self.state_dir)
        except TrainStateError as err:
            raise TrainError(f"cannot resume: {err}") from err
        _check_resume(state.progress, self.config, job.fingerprint)
        try:
            job.trained.load_state_dict(state.modules)
            self.optimizer.load_state_dict(state.optimizer)
        except (RuntimeError, ValueError, KeyError) as err:
            raise TrainError(f"the resume state in {self.state_dir} does not fit this model ({err})") from err
        if self.ema is not None:
            if state.ema is None:
                raise TrainError("the interrupted run kept no EMA weights")
            self.ema.load_state_dict(state.ema)
        for name, generator in job.generators.items():
            generator.set_state(state.generators[name])
        self.order = state.epoch_order
        self.step = int(state.progress["step"])
        self.best_value, self.best_step = state.progress.get("best_value"), state.progress.get("best_step")
        self.sums, self.count = dict(state.progress.get("log_sums", {})), int(state.progress.get("log_count", 0))
        self.log.truncate_after(self.step)
        self.log.write({"type": "resume", "phase": job.phase, "step": self.step})

    def train_step(self) -> None:
        job, config, step = self.job, self.config, self.step
        if step % self.spe == 0 or self.order is None:
            if step % self.spe != 0:
                raise TrainError("the resume state has no data order for its epoch; start the run again")
            self.order = job.make_epoch()  # (S, B)
        lr = lr_at(step, self.total, self.warmup, config.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        job.train_mode()
        with self.precision, _step_rng(job.generators.get("dropout"), self.device):
            loss, logs = job.step_loss(self.order[step % self.spe])
        if not torch.isfinite(loss.detach()):
            raise TrainError(f"the loss became {float(loss)} at step {step}; lower --lr or enable --grad-clip")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip) if config.grad_clip > 0 else None
        self.optimizer.step()
        job.after_step()
        if self.ema is not None:
            self.ema.update(job.trained)
        self.step = step = step + 1
        self._accumulate({"loss": float(loss.detach()), **logs}, grad_norm, lr)

    def _accumulate(self, values: dict[str, float], grad_norm: Tensor | None, lr: float) -> None:
        """Add a step's logged values; every ``log_every`` steps, write their means."""
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        if grad_norm is not None:
            self.sums["grad_norm"] = self.sums.get("grad_norm", 0.0) + float(grad_norm)
        self.count += 1
        self.logged = None
        if self.step % self.config.log_every == 0 or self.step == self.stop:
            record = {k: v / self.count for k, v in self.sums.items()}
            self.logged = record["loss"]
            self.log.write({"type": "train", "phase": self.job.phase, "step": self.step, "epoch": self.step / self.spe,
                            "lr": lr, **record})
            self.sums, self.count = {}, 0

    def due(self) -> bool:
        done, config = self.step, self.config
        if done >= self.stop:
            return True
        if config.eval_unit == "step":
            return done % config.eval_every == 0
        return done % self.spe == 0 and (done // self.spe) % config.eval_every == 0

    def evaluate_and_save(self) -> None:
        job, config, step = self.job, self.config, self.step
        swap = self.ema.applied(job.trained) if self.ema is not None else contextlib.nullcontext()
        with swap:
            job.trained.eval()
            with torch.no_grad():
                result = job.validate()
            self.metrics = result["metrics"]
            if self.metrics:
                value: float | None = select_value(self.metrics, config.select_metric)
                higher = _higher_is_better(config.select_metric)
                improved = self.best_value is None or (value > self.best_value if higher else value < self.best_value)
            else:  # no validation split: the latest checkpoint is the one kept
                value, improved = None, True
            if improved:
                self.best_value, self.best_step = value, step
            extra = {"phase": job.phase, "step": step, "epoch": step / self.spe, "train": to_dict(config),
                     "validation": {"split": "val", "metrics": self.metrics}, "select_metric": config.select_metric,
                     "select_value": value, "best_value": self.best_value, "best_step": self.best_step, **job.extra}
            job.save_model(self.out_dir / "last", extra)
            if improved:
                job.save_model(self.out_dir / "best", extra)
        self.log.write({"type": "val", "phase": job.phase, "step": step, "epoch": step / self.spe, "split": "val",
                        "select_metric": config.select_metric, "select_value": value, "best": improved, **result})
        # Saved after the checkpoints: a state never refers to a best/ that is not on disk.
        save_train_state(self.state_dir, TrainState(
            modules={k: v.detach().cpu() for k, v in job.trained.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            ema=self.ema.state_dict() if self.ema is not None else None,
            generators={name: g.get_state() for name, g in job.generators.items()},
            epoch_order=self.order,
            progress={"step": step, "best_value": self.best_value, "best_step": self.best_step,
                      "train": to_dict(config), "fingerprint": job.fingerprint, "log_sums": self.sums,
                      "log_count": self.count},
        ))

    def result(self) -> TrainResult:
        out_dir, metrics = self.out_dir, self.metrics
        if not metrics:  # a finished run resumed again: report the saved state
            saved = json.loads((out_dir / "last" / "config.json").read_text())["extra"]
            metrics = saved.get("validation", {}).get("metrics", {})
        return TrainResult(out_dir=out_dir, last=out_dir / "last", best=out_dir / "best", log=out_dir / LOG_FILE,
                           step=self.step, best_value=self.best_value, best_step=self.best_step, metrics=metrics)


def init_model(config: ModelConfig, seed: int) -> DiffATR:
    """A fresh model whose initial weights depend on ``seed`` only (the caller's RNG is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        return DiffATR(config)


def make_generators(seed: int, device: torch.device, dropout: bool = False) -> dict[str, torch.Generator]:
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


def phase_features(split: Any, config: ModelConfig, encoders: LazyEncoders, *, cache_dir, strict: bool,
              progress: bool, desc: str) -> FeatureSet | None:
    if split is None:  # no validation split: a fixed-length run
        return None
    if isinstance(split, FeatureSet):
        split.check_encoders(config)
        return split
    return compute_features(records_of(split), config, cache_dir=cache_dir, encoders=encoders, strict=strict,
                            progress=progress, desc=desc)


def clip_table(split: Any, sample_rate: int, strict: bool, progress: bool, desc: str) -> FeatureSet:
    """The clips whose audio decodes (checked once here, so training never stops on a bad file),
    as a FeatureSet without features: fine-tuning reads the audio itself."""
    from diffatr.audio.io import AudioError, decode_audio

    if isinstance(split, FeatureSet):  # its clips, not its features (the run's fingerprint stays ids + captions)
        return dataclasses.replace(split, audio_features=None, text_features=None)
    kept, skipped = [], []
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
        kept.append(record)
    ids = [r.clip_id for r in kept]
    return FeatureSet(audio_features=None, clip_ids=ids, paths=[r.path for r in kept],
                      captions=[list(r.captions) for r in kept], metadata=[r.metadata for r in kept],
                      sound_keys=sound_keys(ids, [r.metadata for r in kept]), skipped=skipped)


def negative_groups(units: Tensor, num_clips: int, config: TrainConfig) -> Tensor:
    """(N,) the id each clip is compared by when negatives are chosen: its sound unit, or
    (``mask_same_sound=False``) the clip itself. Equal ids are never each other's negatives."""
    return units if config.mask_same_sound else torch.arange(num_clips)


def data_extra(train: Any, val: Any, data_info: dict[str, Any] | None) -> dict[str, Any]:
    from diffatr.evaluate import with_source_sha256

    data = with_source_sha256(data_info or {})  # the manifest's hash: the same data wherever it lies
    data["train"] = dict(data.get("train", {}), **train.summary())
    data["val"] = dict(data.get("val", {}), **val.summary()) if val is not None else None
    return data


def seen_clip_ids(train: Any, earlier: Any = None) -> list[str]:
    """The clip ids a checkpoint's weights were fit on: this run's training clips and those its
    --init checkpoint recorded (``extra["seen_clips"]``), sorted. ``diffatr evaluate`` refuses to
    score a checkpoint on them."""
    return sorted({str(c) for c in train.clip_ids} | {str(c) for c in (earlier or ())})


def no_validation() -> dict[str, Any]:
    """The validation of a run without a validation split: nothing is measured."""
    return {"metrics": {}}


def fit_batch(batch_size: int, available: int, what: str) -> int:
    if available < 2:
        raise TrainError(f"the training split has {available} {what}; at least 2 are needed")
    if batch_size > available:
        warnings.warn(f"batch_size {batch_size} exceeds the {available} training {what}; using {available}",
                      stacklevel=3)
        return available
    return batch_size


def digest(obj: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]
