"""Embedding many clips at a time: the aisfx backbone runs on blocks cut from several clips.

``embed_clips(encoder, clips)`` turns a stream of decoded clips into a stream of clip
embeddings, in order, each equal to ``AudioEncoder.embed_waveform`` of that clip up to float
rounding (tests/test_batched_embedding.py). For the aisfx backbone the blocks of consecutive
clips (100 log-mel frames, hop 50: ``AisfxCNN9.cut_blocks``) go through ``FoldedCNN9`` (batch
norms folded, channels-last, Winograd on the deep layers) a batch at a time and each clip is
the mean of its blocks; other backbones embed clip by clip. Pure
tensor code: decoding is ``diffatr.audio.io``'s, the worker processes ``diffatr.extraction``'s.

Shapes: N blocks, B blocks per batch, M mel bands, Da feature width.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffatr.encoders.audio import AisfxCNN9, AudioEncoder, ConvBlock

# Blocks per forward pass. Measured on one core of the development machine (AMD EPYC, AVX2,
# float32, channels-last): 45-48 ms per block from 1 to 8 blocks, 52 at 32 (the activations
# of a larger batch leave the cache); a batch of 8 still shares the per-call costs.
DEFAULT_BATCH_BLOCKS = 8


# Winograd F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
# 2016): Y = A^T [(G g G^T) * (B^T d B)] A turns a 6x6 input tile d and a 3x3 kernel g into a
# 4x4 output tile with 36 multiplications per pair of channels instead of 144. Float32 results
# differ from the direct convolution's by about 4e-7 (relative), a cosine of 1 - 1e-7.
_WINOGRAD_BT = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                             [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
_WINOGRAD_G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                            [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)
_WINOGRAD_AT = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                             [0, 1, -1, 8, -8, 1]], dtype=torch.float64)
# The convolutions after the second pool (25 x 24 and 12 x 12 maps, 128-512 channels) run as
# Winograd: there the products dominate and the tile transforms are cheap (1.35-1.4x for the
# whole CNN, measured on one core of the development machine). On the larger maps before, the
# transforms' memory traffic eats the gain.
WINOGRAD_FROM_LAYER = 4
_WINOGRAD_INPUT = torch.kron(_WINOGRAD_BT, _WINOGRAD_BT)  # (36, 36): vec(B^T d B) = kron(B^T, B^T) vec(d)
_WINOGRAD_OUTPUT = torch.kron(_WINOGRAD_AT, _WINOGRAD_AT)  # (16, 36): vec(A^T m A)


class FoldedCNN9:
    """``AisfxCNN9.embed_blocks`` rewritten for inference, with the same numbers up to rounding.

    Each BatchNorm (eval statistics) is folded into the convolution before it:
    ``W' = W * g / sqrt(v + eps)``, ``b' = beta - m * g / sqrt(v + eps)``, which removes two
    passes over every activation; tensors are channels-last, oneDNN's fastest layout for these
    3x3 convolutions (1.2-1.4x over NCHW here); the ReLUs run in place; and the convolutions
    from ``winograd_from`` on run as Winograd F(4x4, 3x3). A snapshot of the weights: build it
    again after they change.

    Args:
        backbone: the aisfx CNN (eval statistics are used).
        winograd_from: the first of the 8 convolutions run as Winograd (8: none).
    """

    def __init__(self, backbone: AisfxCNN9, winograd_from: int = WINOGRAD_FROM_LAYER) -> None:
        self.layers: list[tuple[Tensor, Tensor]] = []  # 8 x (weight (C', C, 3, 3), bias (C',))
        self.winograd: dict[int, Tensor] = {}  # layer -> (36, C, C') transformed kernels
        with torch.no_grad():
            for index in range(1, 5):
                block: ConvBlock = getattr(backbone, f"conv_block{index}")
                for conv, bn in ((block.conv1, block.bn1), (block.conv2, block.bn2)):
                    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C',)
                    weight = (conv.weight * scale[:, None, None, None]).contiguous(memory_format=torch.channels_last)
                    self.layers.append((weight, bn.bias - bn.running_mean * scale))
            for index in range(winograd_from, len(self.layers)):
                self.winograd[index] = _winograd_kernels(self.layers[index][0])

    def __call__(self, blocks: Tensor) -> Tensor:
        """(N, block, M) log-mel blocks -> (N, 512) block embeddings."""
        return AisfxCNN9.pool_blocks(self.run_stages(blocks, AisfxCNN9.num_stages))

    def run_stages(self, blocks: Tensor, stop: int) -> Tensor:
        """(N, block, M) log-mel blocks through conv blocks 1 .. ``stop``, as
        ``AisfxCNN9.run_stages(blocks.unsqueeze(1), 0, stop)`` computes (up to rounding):
        (N, C, T', M'), channels-last."""
        x = blocks.unsqueeze(1).contiguous(memory_format=torch.channels_last)  # (N, 1, block, M)
        for index, (weight, bias) in enumerate(self.layers[: 2 * stop]):
            if index in self.winograd:
                x = _winograd_conv3x3_relu(x, self.winograd[index], bias)
            else:
                x = F.conv2d(x, weight, bias, padding=1).relu_()
            if index in (1, 3, 5):  # after conv blocks 1-3, as AisfxCNN9.run_stages
                x = F.max_pool2d(x, kernel_size=2)
        return x


def _winograd_kernels(weight: Tensor) -> Tensor:
    """(C', C, 3, 3) kernels -> (36, C, C'): G g G^T of every pair, flattened 6x6 first."""
    g = _WINOGRAD_G.to(weight.device)
    out_channels, in_channels = weight.shape[:2]
    kernels = weight.new_empty(36, in_channels, out_channels)
    for start in range(0, out_channels, 64):  # in float64, a few output channels at a time: small
        part = weight[start : start + 64].double()  # (c', C, 3, 3)
        u = g @ part @ g.T  # (c', C, 6, 6)
        kernels[:, :, start : start + 64] = u.permute(2, 3, 1, 0).reshape(36, in_channels, -1).to(weight.dtype)
    return kernels


def _winograd_conv3x3_relu(x: Tensor, kernels: Tensor, bias: Tensor) -> Tensor:
    """relu(conv3x3(x, padding=1) + bias) by Winograd F(4x4, 3x3).

    Args:
        x: (N, C, H, W) channels-last (an (N, H, W, C) array in memory).
        kernels: (36, C, C') from ``_winograd_kernels``.
        bias: (C',).

    Returns:
        (N, C', H, W) channels-last.
    """
    n, c, h, w = x.shape
    tiles_h, tiles_w = -(-h // 4), -(-w // 4)  # 4x4 output tiles, the last ones cut
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 4 * tiles_w + 1 - w, 1, 4 * tiles_h + 1 - h))  # (N, H+, W+, C)
    s_n, s_h, s_w, _ = padded.stride()
    p = n * tiles_h * tiles_w
    # Every 6x6 input tile (stride 4), laid out (36, P, C) so that each transform is one product.
    tiles = padded.as_strided((6, 6, n, tiles_h, tiles_w, c), (s_h, s_w, s_n, 4 * s_h, 4 * s_w, 1))
    v = (_WINOGRAD_INPUT.to(x) @ tiles.reshape(36, p * c)).view(36, p, c)  # (36, P, C)
    m = torch.bmm(v, kernels)  # (36, P, C'): the 36 elementwise products, summed over C
    y = (_WINOGRAD_OUTPUT.to(x) @ m.view(36, -1)).view(4, 4, n, tiles_h, tiles_w, -1)  # (4, 4, N, tiles_h, tiles_w, C')
    y = y.permute(2, 3, 0, 4, 1, 5).reshape(n, 4 * tiles_h, 4 * tiles_w, -1)[:, :h, :w]  # (N, H, W, C')
    return torch.add(y, bias).relu_().permute(0, 3, 1, 2)


def batches_blocks(encoder: nn.Module) -> bool:
    """Whether ``embed_clips`` batches blocks across clips for this encoder (the aisfx backbone)."""
    return isinstance(encoder, AudioEncoder) and isinstance(encoder.backbone, AisfxCNN9)


@torch.no_grad()
def embed_clips(encoder: AudioEncoder, clips: Iterable[tuple[Hashable, np.ndarray]],
                batch_blocks: int = DEFAULT_BATCH_BLOCKS, net: FoldedCNN9 | None = None
                ) -> Iterator[tuple[Hashable, Tensor]]:
    """Embed a stream of decoded clips, blocks of several clips per forward pass.

    Args:
        encoder: the ``AudioEncoder`` (eval mode).
        clips: (key, waveform) pairs; each waveform (S,) float32 at ``encoder.sample_rate``,
            already cut at ``max_seconds`` (``diffatr.audio.io.decode_audio``'s output).
        batch_blocks: blocks per forward pass (speed only).
        net: ``FoldedCNN9(encoder.backbone)``, built once by a caller that embeds many times
            (building it transforms the kernels: a fraction of a second); default: built here.

    Yields:
        (key, (Da,) float32 features on the encoder's device) per clip, in input order, each as
        soon as its last block is embedded: at most one batch of blocks waits in memory.
    """
    if not batches_blocks(encoder):
        for key, waveform in clips:
            yield key, encoder._embed_mono(waveform, batch_size=8)
        return
    net = net or FoldedCNN9(encoder.backbone)
    waiting: deque[tuple[Hashable, int]] = deque()  # clips with blocks not yet embedded: (key, N)
    inputs: deque[Tensor] = deque()  # blocks cut, not yet embedded, in order
    outputs: deque[Tensor] = deque()  # block embeddings not yet handed out, in order
    counts = {"queued": 0, "ready": 0}  # blocks in ``inputs``, rows in ``outputs``

    def run(count: int) -> None:
        with torch.inference_mode():
            outputs.append(net(_take(inputs, count)))  # (B, 512)
        counts["queued"] -= count
        counts["ready"] += count

    def finished() -> Iterator[tuple[Hashable, Tensor]]:
        while waiting and waiting[0][1] <= counts["ready"]:
            key, count = waiting.popleft()
            counts["ready"] -= count
            yield key, _take(outputs, count).mean(dim=0)  # (Da,): outside inference mode, a plain tensor

    for key, waveform in clips:
        blocks = encoder.log_mel_blocks(waveform)  # (N, block, M)
        waiting.append((key, blocks.shape[0]))
        inputs.append(blocks)
        counts["queued"] += blocks.shape[0]
        while counts["queued"] >= batch_blocks:
            run(batch_blocks)
            yield from finished()
    while counts["queued"]:
        run(min(counts["queued"], batch_blocks))
        yield from finished()


def _take(parts: deque[Tensor], count: int) -> Tensor:
    """The first ``count`` rows of the concatenation of ``parts``, removed from it (the rest of a
    long clip's blocks is never copied)."""
    taken: list[Tensor] = []
    while count:
        head = parts[0]
        if head.shape[0] <= count:
            taken.append(parts.popleft())
            count -= head.shape[0]
        else:
            taken.append(head[:count])
            parts[0] = head[count:]
            count = 0
    return taken[0] if len(taken) == 1 else torch.cat(taken)
