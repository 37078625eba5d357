"""Audio backbones by name: waveforms -> one embedding per clip.

Registry (``list_audio_encoders()``):
  ``aisfx-cnn9``  the default: the pretrained sound-effects CNN of Ma & Lerch (ISMIR 2022,
                  PyPI ``aisfx`` 0.1.2, CC-BY-4.0), shipped as checkpoints/aisfx_cnn9.safetensors.
  ``cnn14``, ``resnet38``  PANNs (Kong et al. 2020) with the released state-dict names; random
                  init unless a converted Zenodo checkpoint is given (``diffatr convert-panns``).
  ``tiny-cnn``    a few-thousand-parameter random CNN for tests and from-scratch baselines.

An ``AudioEncoder`` = a ``LogMel`` front end + a backbone + the length policy (resampling,
max/min length, windows). Weights load from safetensors only. Module construction never draws
from the global RNG: random init takes a ``generator``. The module (nn.Module) never opens
files: ``embed_file(encoder, path)`` decodes through ``diffatr.audio.io``, then embeds.

Shapes: B batch, S samples, T log-mel frames, M mel bands, W windows, N blocks, Da width.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from diffatr.audio.frontend import LogMel, check_logmel_config
from diffatr.audio.io import (
    AudioTruncatedWarning,
    decode_audio,
    prepare_waveform,
    split_windows,
)
from diffatr.config import AISFX_LOGMEL, PANNS_LOGMEL, AudioEncoderConfig, LogMelConfig
from diffatr.errors import DiffatrError

# A small front end for the tiny test/baseline CNN: 16 kHz, 32 mel bands, 16 ms hop.
TINY_LOGMEL = LogMelConfig(
    sample_rate=16000, n_fft=512, hop_length=256, n_mels=32, f_min=50.0, f_max=8000.0
)

WEIGHTS_ENV = "DIFFATR_WEIGHTS_DIR"  # more folders searched for weights files
RANDOM_WEIGHTS = "random"  # config.weights value that forces random init

PANNS_HOW_TO = (
    "Download the PANNs checkpoint ({file}) from Zenodo record 3987831"
    " (https://zenodo.org/records/3987831), then convert it once with"
    " `diffatr convert-panns {file} {name}.safetensors` and point `weights` at the result"
    " (or put it in the checkpoints folder / ${env})."
)


class AudioEncoderError(DiffatrError):
    """An unusable audio-encoder config or weights file (the message says how to fix it)."""


# ============================================================================ building blocks


class ConvBlock(nn.Module):
    """Two 3x3 conv (no bias) + BN + ReLU layers, then a pool (PANNs / DCASE baseline block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool_size: tuple[int, int] = (2, 2), pool: str = "avg") -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        if pool_size == (1, 1):
            return x
        if pool == "max":
            return F.max_pool2d(x, kernel_size=pool_size)
        return F.avg_pool2d(x, kernel_size=pool_size)


def _bn_over_mels(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """PANNs' ``bn0``: one BatchNorm channel per mel band. x: (B, 1, T, M)."""
    return bn(x.transpose(1, 3)).transpose(1, 3)


def _max_plus_mean_over_time(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, M') -> (B, C): mean over frequency, then max + mean over time (PANNs)."""
    x = x.mean(dim=3)  # (B, C, T')
    return x.amax(dim=2) + x.mean(dim=2)


# ============================================================================ aisfx CNN9


def _panns_spec(name: str, network: type, file: str, description: str) -> BackboneSpec:
    """A PANNs backbone: AudioSet-pretrained, 2048-d, its released weights converted by the user."""
    return BackboneSpec(
        name=name,
        build=lambda config: network(config.frontend.n_mels),
        frontend=PANNS_LOGMEL,
        embed_dim=2048,
        n_mels=64,
        min_mels=32,
        min_frames=32,
        default_weights=None,
        own_blocks=False,
        how_to_get_weights=PANNS_HOW_TO.format(file=file, name=name, env=WEIGHTS_ENV),
        description=description,
    )


def aisfx_block_starts(num_frames: int, block: int = 100, hop: int = 50, drop_partial: bool = True) -> list[int]:
    """Start frames of aisfx's ``blocking()``.

    ``ceil((T - block) / hop + 1)`` blocks, minus the last one when it would be partial and
    ``drop_partial``; always at least one (zero-padded when T < block). Unlike aisfx, which
    asserts ``hop < T``, a clip of at most ``hop`` frames gives one padded block.
    """
    if num_frames <= block:
        return [0]
    rest = num_frames - block
    count = rest // hop + 1 + (1 if rest % hop and not drop_partial else 0)
    return [i * hop for i in range(count)]


class AisfxCNN9(nn.Module):
    """The aisfx embedding net (``EmbeddingNet('max', 3, 1, 64)``), applied in blocks.

    Four ConvBlocks (64/128/256/512 channels, max-pool 2x2 after blocks 1-3), mean over
    frequency, max over time -> 512-d per block of ``block`` frames; a clip's embedding is the
    mean over its blocks (hop ``hop`` frames; aisfx's ``emb_hop_size=0.5``).
    State-dict names are aisfx's ``embedding_net.*`` without the prefix.
    """

    embed_dim = 512

    def __init__(self, block: int = 100, hop: int = 50, drop_partial: bool = True, max_blocks_per_batch: int = 32) -> None:
        super().__init__()
        self.block, self.hop, self.drop_partial = block, hop, drop_partial
        self.max_blocks_per_batch = max_blocks_per_batch  # bounds memory on long clips
        self.conv_block1 = ConvBlock(1, 64)
        self.conv_block2 = ConvBlock(64, 128)
        self.conv_block3 = ConvBlock(128, 256)
        self.conv_block4 = ConvBlock(256, 512)

    num_stages = 4  # the ConvBlocks, the unit of ``--finetune-blocks``

    def stage_modules(self) -> list[nn.Module]:
        """The conv blocks in order: the last N are what ``--finetune-blocks N`` trains."""
        return [self.conv_block1, self.conv_block2, self.conv_block3, self.conv_block4]

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Conv blocks ``start`` .. ``stop - 1`` (0-based). x: (N, 1, block, M) for start 0,
        else the output of block ``start - 1``; max-pool 2x2 after blocks 1-3."""
        for index, block in enumerate(self.stage_modules()[start:stop], start=start):
            x = block(x, (2, 2) if index < 3 else (1, 1), "max")
        return x

    @staticmethod
    def pool_blocks(x: torch.Tensor) -> torch.Tensor:
        """(N, 512, T', M') last-block maps -> (N, 512): mean over frequency, max over time."""
        return x.mean(dim=3).amax(dim=2)

    def embed_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        """(N, block, M) log-mel blocks -> (N, 512) block embeddings."""
        return self.pool_blocks(self.run_stages(blocks.unsqueeze(1), 0, self.num_stages))

    def cut_blocks(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, T, M) log-mel -> (B, N, block, M): the blocks aisfx's inference embeds."""
        frames = logmel.shape[1]
        starts = aisfx_block_starts(frames, self.block, self.hop, self.drop_partial)
        # aisfx pads with `block` zero frames (log10(1 + 0) = 0: silence) before slicing.
        padded = F.pad(logmel, (0, 0, 0, max(0, starts[-1] + self.block - frames)))  # (B, T+, M)
        return torch.stack([padded[:, s : s + self.block] for s in starts], dim=1)  # (B, N, block, M)

    def block_embeddings(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, T, M) -> (B, N, 512): the per-block embeddings aisfx's inference returns."""
        batch, _, mels = logmel.shape
        blocks = self.cut_blocks(logmel)  # (B, N, block, M)
        flat = blocks.reshape(-1, self.block, mels)  # (B*N, block, M)
        embeds = torch.cat(
            [self.embed_blocks(chunk) for chunk in flat.split(self.max_blocks_per_batch)]
        )  # (B*N, 512)
        return embeds.reshape(batch, blocks.shape[1], -1)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, T, M) log-mel -> (B, 512): the mean of the block embeddings."""
        return self.block_embeddings(logmel).mean(dim=1)


# ============================================================================ PANNs


class Cnn14(nn.Module):
    """PANNs CNN14 (Kong et al., 2020) without its front end and AudioSet classifier.

    bn0 over mel bands, 6 ConvBlocks (64..2048, avg-pool 2x2 for 1-5, none for 6), mean over
    frequency, max + mean over time, fc1 + ReLU -> 2048-d (PANNs' ``embedding`` output).
    """

    embed_dim = 2048

    def __init__(self, n_mels: int = 64) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(n_mels)
        widths = [1, 64, 128, 256, 512, 1024, 2048]
        for i in range(6):
            self.add_module(f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(2048, 2048)
        self.dropout_block = nn.Dropout(0.2)
        self.dropout_head = nn.Dropout(0.5)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, T, M) -> (B, 2048); T >= 32 (five 2x pools)."""
        x = _bn_over_mels(self.bn0, logmel.unsqueeze(1))  # (B, 1, T, M)
        for i in range(1, 7):
            block: ConvBlock = getattr(self, f"conv_block{i}")
            x = self.dropout_block(block(x, (2, 2) if i < 6 else (1, 1), "avg"))
        x = self.dropout_head(_max_plus_mean_over_time(x))  # (B, 2048)
        return F.relu(self.fc1(x))


class ResnetBasicBlock(nn.Module):
    """PANNs' ResNet basic block: stride 2 is an avg-pool before conv1 (and in the shortcut)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(0.1)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or inplanes != planes:
            # Index 0 is a parameter-free pool, so the released names are downsample.1 / .2.
            pool = nn.AvgPool2d(kernel_size=2) if stride == 2 else nn.Identity()
            self.downsample = nn.Sequential(
                pool, nn.Conv2d(inplanes, planes, kernel_size=1, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool2d(x, kernel_size=2) if self.stride == 2 else x
        out = self.dropout(F.relu(self.bn1(self.conv1(out))))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class _ResNetLayers(nn.Module):
    """The ``resnet`` submodule: layer1..layer4 of basic blocks."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        inplanes = 64
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if index == 0 else 2
            blocks = [ResnetBasicBlock(inplanes, planes, stride)]
            blocks += [ResnetBasicBlock(planes, planes) for _ in range(count - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            inplanes = planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ResNet38(nn.Module):
    """PANNs ResNet38 without its front end and AudioSet classifier -> 2048-d embedding.

    conv_block1 (avg-pool 2x2), ResNet [3, 4, 6, 3] (64..512), avg-pool 2x2,
    conv_block_after1 (512 -> 2048, no pool), then the CNN14 head.
    """

    embed_dim = 2048

    def __init__(self, n_mels: int = 64) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.conv_block1 = ConvBlock(1, 64)
        self.resnet = _ResNetLayers((3, 4, 6, 3))
        self.conv_block_after1 = ConvBlock(512, 2048)
        self.fc1 = nn.Linear(2048, 2048)
        self.dropout_block = nn.Dropout(0.2)
        self.dropout_head = nn.Dropout(0.5)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, T, M) -> (B, 2048); T >= 32."""
        x = _bn_over_mels(self.bn0, logmel.unsqueeze(1))  # (B, 1, T, M)
        x = self.dropout_block(self.conv_block1(x, (2, 2), "avg"))
        x = self.dropout_block(F.avg_pool2d(self.resnet(x), kernel_size=2))
        x = self.dropout_block(self.conv_block_after1(x, (1, 1), "avg"))  # (B, 2048, T', M')
        x = self.dropout_head(_max_plus_mean_over_time(x))
        return F.relu(self.fc1(x))


# ============================================================================ tiny


class TinyCNN(nn.Module):
    """A ~5k-parameter stand-in: bn0, two ConvBlocks (8, 16 channels, avg-pool 2x2), PANNs
    pooling, a linear layer to ``embed_dim``. For tests and from-scratch baselines."""

    def __init__(self, n_mels: int = 32, embed_dim: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.bn0 = nn.BatchNorm2d(n_mels)
        self.conv_block1 = ConvBlock(1, 8)
        self.conv_block2 = ConvBlock(8, 16)
        self.fc = nn.Linear(16, embed_dim)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, T, M) -> (B, embed_dim); T >= 4, M >= 4."""
        x = _bn_over_mels(self.bn0, logmel.unsqueeze(1))
        x = self.conv_block2(self.conv_block1(x, (2, 2), "avg"), (2, 2), "avg")
        return self.fc(_max_plus_mean_over_time(x))


# ============================================================================ registry


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows about one backbone."""

    name: str
    build: Callable[[AudioEncoderConfig], nn.Module]
    frontend: LogMelConfig  # the front end its weights were trained with
    embed_dim: int | None  # None: the config's embed_dim is used (tiny-cnn)
    n_mels: int | None  # the mel bands it needs; None: any, at least min_mels
    min_mels: int  # shortest frequency axis the pooling stack accepts
    min_frames: int  # shortest log-mel input the pooling stack accepts
    default_weights: str | None  # a file in the checkpoints folder, or None (random init)
    own_blocks: bool  # True: the backbone blocks the whole clip itself (aisfx)
    how_to_get_weights: str
    description: str


_REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="aisfx-cnn9",
            build=lambda config: AisfxCNN9(),
            frontend=AISFX_LOGMEL,
            embed_dim=512,
            n_mels=None,
            min_mels=8,
            min_frames=1,
            default_weights="aisfx_cnn9.safetensors",
            own_blocks=True,
            how_to_get_weights=(
                "The file ships in the repository's checkpoints/ folder; to rebuild it, install"
                " aisfx==0.1.2 and run `python scripts/convert_aisfx.py"
                " .../aisfx/models/checkpoint.pth`."
            ),
            description="pretrained sound-effects CNN (Ma & Lerch, ISMIR 2022), 512-d",
        ),
        _panns_spec("cnn14", Cnn14, "Cnn14_mAP=0.431.pth", "PANNs CNN14 (AudioSet), 2048-d"),
        _panns_spec("resnet38", ResNet38, "ResNet38_mAP=0.434.pth", "PANNs ResNet38 (AudioSet), 2048-d"),
        BackboneSpec(
            name="tiny-cnn",
            build=lambda config: TinyCNN(config.frontend.n_mels, config.embed_dim),
            frontend=TINY_LOGMEL,
            embed_dim=None,
            n_mels=None,
            min_mels=4,
            min_frames=4,
            default_weights=None,
            own_blocks=False,
            how_to_get_weights="tiny-cnn has no released weights; train it or save your own.",
            description="tiny random CNN for tests and from-scratch baselines, 16-d by default",
        ),
    )
}


def list_audio_encoders() -> list[str]:
    """Names accepted by ``AudioEncoderConfig.name``."""
    return list(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise AudioEncoderError(
            f"unknown audio encoder {name!r}; known: {', '.join(_REGISTRY)}"
        ) from None


def audio_encoder_config(name: str, **overrides) -> AudioEncoderConfig:
    """The matching ``AudioEncoderConfig`` for a registry name (front end, width), with overrides.

    Example: ``audio_encoder_config("cnn14", weights="cnn14.safetensors")``.
    """
    spec = get_backbone_spec(name)
    base = AudioEncoderConfig(
        name=name,
        frontend=spec.frontend,
        embed_dim=spec.embed_dim if spec.embed_dim is not None else 16,
    )
    return dataclasses.replace(base, **overrides)


def build_backbone(name: str, config: AudioEncoderConfig | None = None, *, device: str | torch.device = "cpu") -> nn.Module:
    """An uninitialised backbone (``device="meta"`` allocates nothing: for key/shape checks)."""
    spec = get_backbone_spec(name)
    config = config or audio_encoder_config(name)
    # Built on the meta device so construction draws nothing from the global RNG; the
    # caller initialises (``init_backbone``) or loads weights.
    with torch.device("meta"):
        backbone = spec.build(config)
    if torch.device(device).type == "meta":
        return backbone
    # ``to_empty`` would call ``empty_like`` on meta tensors, whose Python reference imports
    # sympy (about 0.5 s of a cold start); plain ``empty`` of each shape allocates the same.
    return backbone._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device=device))


@torch.no_grad()
def init_backbone(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Random init (xavier-uniform convs/linears, zero biases, identity BatchNorm), in place.

    Follows PANNs' ``init_layer`` / ``init_bn`` and zero-inits the last BN of each residual
    block. Draws only from ``generator`` (default: a fresh one seeded with 0).
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    for sub in module.modules():
        if isinstance(sub, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(sub.weight, generator=generator)
            if sub.bias is not None:
                sub.bias.zero_()
        elif isinstance(sub, nn.BatchNorm2d):
            sub.weight.fill_(1.0)
            sub.bias.zero_()
            sub.running_mean.zero_()
            sub.running_var.fill_(1.0)
            sub.num_batches_tracked.zero_()
    for sub in module.modules():
        if isinstance(sub, ResnetBasicBlock):
            sub.bn2.weight.zero_()
    return module


# ============================================================================ weights


def checkpoints_dirs() -> list[Path]:
    """Folders searched for weights files: ``$DIFFATR_WEIGHTS_DIR`` (if set), then the shipped
    ``checkpoints/`` (``diffatr.runtime.shipped``: a checkout's or the installed package's)."""
    from diffatr.runtime import env_setting, shipped

    dirs = []
    if env_setting(WEIGHTS_ENV):
        dirs.append(Path(env_setting(WEIGHTS_ENV)).expanduser())
    dirs.append(shipped("checkpoints"))
    return dirs


def resolve_weights(config: AudioEncoderConfig) -> Path | None:
    """The weights file ``config`` asks for, or None for random init.

    ``weights=None`` means the registry default (aisfx: the shipped checkpoint; others:
    random init); ``"random"`` forces random init; a relative path is looked up as given,
    then in each of ``checkpoints_dirs()``.

    Raises:
        AudioEncoderError: the file is not found (the message says how to get it).
    """
    spec = get_backbone_spec(config.name)
    wanted = config.weights if config.weights is not None else spec.default_weights
    if wanted is None or wanted == RANDOM_WEIGHTS:
        return None
    path = Path(wanted).expanduser()
    candidates = [path] if path.is_absolute() else [path] + [d / path for d in checkpoints_dirs()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise AudioEncoderError(
        f"weights file for audio encoder {config.name!r} not found: {wanted} (looked at: {searched})."
        f" {spec.how_to_get_weights}"
    )


def read_weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors header."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise AudioEncoderError(f"{path} is not a readable safetensors file ({err})") from err


def load_backbone_weights(module: nn.Module, path: str | os.PathLike, arch: str | None = None) -> dict[str, str]:
    """Load a safetensors state dict into ``module``, strictly.

    Tensors are cast to the module's dtypes (fp16-stored weights load as float32). Missing
    ``num_batches_tracked`` counters are allowed; any other missing or unexpected key, or a
    shape mismatch, raises. If the file's metadata names an ``arch`` it must equal ``arch``.

    Returns:
        The file's metadata.
    """
    path = Path(path)
    if path.suffix in (".pth", ".pt", ".ckpt", ".pkl"):
        raise AudioEncoderError(
            f"{path} looks like a pickled PyTorch checkpoint; only safetensors files are loaded."
            " Convert it once with `diffatr convert-panns FILE.pth OUT.safetensors`."
        )
    metadata = read_weights_metadata(path)
    if arch is not None and metadata.get("arch") not in (None, arch):
        raise AudioEncoderError(
            f"{path} holds weights for {metadata['arch']!r}, not {arch!r};"
            f" set the audio encoder name to {metadata['arch']!r}"
        )
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
            tensors[key] = f.get_tensor(key)
    expected = module.state_dict()
    missing = sorted(k for k in expected if k not in tensors and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in tensors if k not in expected)
    mismatched = sorted(
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in tensors
        if k in expected and tensors[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        def show(items: list[str]) -> str:
            return ", ".join(items[:6]) + (f" ... (+{len(items) - 6})" if len(items) > 6 else "")

        parts = [f"{label} {len(items)}: {show(items)}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched)) if items]
        raise AudioEncoderError(
            f"weights in {path} do not fit the {arch or type(module).__name__} architecture ("
            + "; ".join(parts)
            + "). Is it the right file for this encoder name?"
        )
    state = {k: v.to(dtype=expected[k].dtype) for k, v in tensors.items()}
    module.load_state_dict(state, strict=False)
    return metadata


# ============================================================================ encoder


class AudioEncoder(nn.Module):
    """Front end + backbone + length policy: audio -> one ``embed_dim`` vector per clip.

    ``forward`` is the plain tensor path (equal-length waveforms at ``sample_rate``, no
    resampling, no windowing beyond the backbone's own); ``embed_waveform`` applies the full
    policy: resample, cut at ``max_seconds``, pad to ``min_seconds``, and average over windows
    of ``window_seconds`` every ``window_hop_seconds`` (aisfx: over its own 100-frame blocks of
    the whole clip instead, as the authors' inference does). The module never opens files: the
    module-level ``embed_file(encoder, path)`` decodes one through ``diffatr.audio.io``.
    """

    def __init__(self, config: AudioEncoderConfig, backbone: nn.Module, weights_path: Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.spec = get_backbone_spec(config.name)
        self.frontend = LogMel(config.frontend)
        self.backbone = backbone
        self.weights_path = weights_path

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def sample_rate(self) -> int:
        return self.config.frontend.sample_rate

    @property
    def min_num_samples(self) -> int:
        """The shortest input ``forward`` accepts without padding."""
        return self.frontend.min_samples(self.spec.min_frames)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Embed a batch of waveforms.

        Args:
            waveforms: (B, S) float at ``sample_rate``; shorter than ``min_num_samples`` is
                zero-padded at the end.

        Returns:
            (B, embed_dim).
        """
        return self.backbone(self._log_mel(waveforms))  # (B, Da)

    def _log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, S) -> (B, T, M), zero-padding input shorter than ``min_num_samples`` at the end."""
        if waveforms.ndim != 2:
            raise ValueError(f"expected waveforms shaped (B, S), got {tuple(waveforms.shape)}")
        if waveforms.shape[1] < self.min_num_samples:
            waveforms = F.pad(waveforms, (0, self.min_num_samples - waveforms.shape[1]))
        return self.frontend(waveforms)

    def log_mel_blocks(self, waveform: np.ndarray) -> torch.Tensor:
        """The log-mel blocks ``embed_waveform`` embeds for one clip (backbones that block the
        whole clip themselves: aisfx), so that blocks of several clips can share a forward pass
        (``diffatr.encoders.batched``).

        Args:
            waveform: (S,) float32 at ``sample_rate``, already cut at ``max_seconds``.

        Returns:
            (N, block, M) on the module's device.
        """
        if not self.spec.own_blocks:
            raise AudioEncoderError(f"{self.name} embeds windows of audio, not log-mel blocks")
        return self.backbone.cut_blocks(self._log_mel(self._prepare(waveform)[None]))[0]

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _window_lengths(self) -> tuple[int, int]:
        cfg = self.config
        window = max(1, round(cfg.window_seconds * self.sample_rate))
        hop_seconds = cfg.window_hop_seconds if cfg.window_hop_seconds is not None else cfg.window_seconds
        hop = max(1, round(hop_seconds * self.sample_rate))
        return window, hop

    def _prepare(self, waveform: np.ndarray) -> torch.Tensor:
        """(S,) float32 at ``sample_rate``, already cut at max_seconds -> (S',) on the module's
        device, zero-padded to ``min_seconds``."""
        min_len = max(1, round(self.config.min_seconds * self.sample_rate))
        if waveform.shape[0] < min_len:
            waveform = np.pad(waveform, (0, min_len - waveform.shape[0]))
        return torch.from_numpy(np.ascontiguousarray(waveform)).to(self._device())  # (S',)

    def _embed_mono(self, waveform: np.ndarray, batch_size: int) -> torch.Tensor:
        """(S,) float32 at ``sample_rate``, already cut at max_seconds -> (embed_dim,)."""
        x = self._prepare(waveform)  # (S,)
        window, hop = self._window_lengths()
        if self.spec.own_blocks or x.shape[0] <= window:
            return self(x[None])[0]
        windows = split_windows(x, window, hop, tail="end")  # (W, window)
        embeds = torch.cat([self(chunk) for chunk in windows.split(batch_size)])  # (W, Da)
        return embeds.mean(dim=0)

    @torch.no_grad()
    def embed_waveform(self, waveform: np.ndarray | torch.Tensor, sample_rate: int, *, batch_size: int = 8) -> torch.Tensor:
        """Embed one recording held in memory.

        Args:
            waveform: (S,), (S, C) or (C, S) samples, int PCM or float (see
                ``diffatr.audio.io.prepare_waveform``), at ``sample_rate``.
            sample_rate: its rate in Hz; it is resampled to the front end's rate.
            batch_size: windows embedded per forward pass (bounds memory on long audio).

        Returns:
            (embed_dim,) float32 on the module's device.

        Raises:
            AudioError: unusable audio (empty, NaN, bad rate...).
        """
        x = prepare_waveform(waveform, sample_rate, self.sample_rate, max_seconds=self.config.max_seconds)
        return self._embed_mono(x, batch_size)

    def embed_file(self, path: str | os.PathLike, *, batch_size: int = 8) -> torch.Tensor:
        """``embed_file(self, path)``: kept for callers that take any object with an
        ``embed_file(path)`` method (indexing, features, the engine); the module decodes nothing."""
        return embed_file(self, path, batch_size=batch_size)


@torch.no_grad()
def embed_file(encoder: AudioEncoder, path: str | os.PathLike, *, batch_size: int = 8) -> torch.Tensor:
    """Decode an audio file with ``diffatr.audio.io`` and embed it with ``encoder``.

    At most ``encoder.config.max_seconds`` of the file are decoded (an ``AudioTruncatedWarning``
    says when it was cut), at the encoder's sample rate.

    Args:
        encoder: the ``AudioEncoder`` (its length policy applies).
        path: the audio file.
        batch_size: windows embedded per forward pass.

    Returns:
        (embed_dim,) float32 on the encoder's device.

    Raises:
        AudioError: missing, empty, corrupt or unsupported file.
    """
    max_seconds = encoder.config.max_seconds
    decoded = decode_audio(path, encoder.sample_rate, max_seconds=max_seconds)
    if decoded.truncated:
        warnings.warn(
            f"{path} is longer than {max_seconds:g} s; only its first {max_seconds:g} s are embedded",
            AudioTruncatedWarning,
            stacklevel=2,
        )
    return encoder._embed_mono(decoded.waveform, batch_size)  # already at the rate and cut


def _check_encoder_config(config: AudioEncoderConfig, spec: BackboneSpec) -> None:
    try:
        check_logmel_config(config.frontend)
    except ValueError as err:
        raise AudioEncoderError(f"audio encoder {config.name!r}: {err}") from None
    fix = f"use diffatr.encoders.audio.audio_encoder_config({config.name!r}) for matching settings"
    if spec.embed_dim is not None and config.embed_dim != spec.embed_dim:
        raise AudioEncoderError(
            f"audio encoder {config.name!r} outputs {spec.embed_dim}-d embeddings, but the config"
            f" says embed_dim={config.embed_dim}; {fix}"
        )
    if config.embed_dim < 1:
        raise AudioEncoderError(f"embed_dim must be positive, got {config.embed_dim}")
    if spec.n_mels is not None and config.frontend.n_mels != spec.n_mels:
        raise AudioEncoderError(
            f"audio encoder {config.name!r} needs {spec.n_mels} mel bands, but the front end has"
            f" {config.frontend.n_mels}; {fix}"
        )
    if config.frontend.n_mels < spec.min_mels:
        raise AudioEncoderError(
            f"audio encoder {config.name!r} needs at least {spec.min_mels} mel bands (its 2x2"
            f" pools), but the front end has {config.frontend.n_mels}"
        )
    hop = config.window_hop_seconds
    if not config.window_seconds > 0 or (hop is not None and not hop > 0):
        raise AudioEncoderError("window_seconds and window_hop_seconds must be positive")
    if not config.max_seconds > 0 or config.min_seconds < 0:
        raise AudioEncoderError("max_seconds must be positive and min_seconds non-negative")


def build_audio_encoder(config: AudioEncoderConfig, *, generator: torch.Generator | None = None) -> AudioEncoder:
    """Build the encoder ``config`` names, load its weights, and put it in eval mode.

    Args:
        config: which backbone, its weights (see ``resolve_weights``), front end and length
            policy. ``audio_encoder_config(name)`` gives matching settings for each name.
        generator: random init draws from it (default: seeded with 0); unused when weights load.

    Returns:
        An ``AudioEncoder`` in eval mode, on the CPU.

    Raises:
        AudioEncoderError: unknown name, inconsistent config, missing or unfitting weights.
    """
    spec = get_backbone_spec(config.name)
    _check_encoder_config(config, spec)
    weights_path = resolve_weights(config)
    backbone = init_backbone(build_backbone(config.name, config), generator)
    if weights_path is not None:
        load_backbone_weights(backbone, weights_path, arch=config.name)
        if config.frontend != spec.frontend:
            warnings.warn(
                f"the front end differs from the one {config.name!r} weights were trained with"
                f" ({spec.frontend}); embeddings will be off-distribution",
                stacklevel=2,
            )
    return AudioEncoder(config, backbone, weights_path).eval()
