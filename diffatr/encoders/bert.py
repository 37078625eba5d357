"""A BERT-family encoder in plain torch, for inference without importing transformers.

Importing transformers costs a cold ``diffatr search`` more than a second, most of it in
modules a forward pass of BERT never uses. The default text model (all-MiniLM-L6-v2) is a
plain BERT, so this module computes it from the model folder's ``config.json``,
``model.safetensors`` and ``tokenizer.json`` (read by the ``tokenizers`` library): the same
numbers as transformers' ``BertModel`` (checked in tests/test_text_encoder.py), the same
parameter names. Other architectures, and training, keep transformers (diffatr.encoders.text).

Shapes: B captions, L tokens, H heads, Dt hidden size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# What this module computes; a folder whose config asks for anything else goes to transformers.
_PLAIN_BERT = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}


def plain_bert_config(folder: str | Path) -> dict[str, Any] | None:
    """The folder's ``config.json`` when this module can compute its model exactly (a BERT with
    GELU and absolute positions, safetensors weights, a ``tokenizer.json``); else None."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not (folder / "model.safetensors").is_file():
        return None
    if not (folder / "tokenizer.json").is_file():
        return None
    config = {"position_embedding_type": "absolute", **config}
    return config if all(config.get(k) == v for k, v in _PLAIN_BERT.items()) else None


def _embedding(rows: int, dim: int) -> nn.Embedding:
    """An embedding table left uninitialised: its weights are loaded next. (nn.Embedding's own
    init draws normal_, which on the meta device goes through torch._refs and imports
    torch._dynamo: 1.9 s of a 5 s cold search.)"""
    return nn.Embedding(rows, dim, _weight=torch.empty(rows, dim))


class _Embeddings(nn.Module):
    def __init__(self, c: dict[str, Any]):
        super().__init__()
        self.word_embeddings = _embedding(c["vocab_size"], c["hidden_size"])
        self.position_embeddings = _embedding(c["max_position_embeddings"], c["hidden_size"])
        self.token_type_embeddings = _embedding(c["type_vocab_size"], c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, input_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (L,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)  # (B, L, Dt)
        return self.LayerNorm(x + self.token_type_embeddings.weight[0])  # one segment: type 0


class _SelfAttention(nn.Module):
    def __init__(self, c: dict[str, Any]):
        super().__init__()
        self.heads = c["num_attention_heads"]
        self.query, self.key, self.value = (nn.Linear(c["hidden_size"], c["hidden_size"]) for _ in range(3))

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        b, n, dim = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, dim // self.heads).transpose(1, 2)  # (B, H, L, Dt / H)

        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                             attn_mask=key_mask)
        return out.transpose(1, 2).reshape(b, n, dim)  # (B, L, Dt)


class _DenseNorm(nn.Module):
    """``LayerNorm(x + dense(h))``: the residual step after attention and after the MLP."""

    def __init__(self, c: dict[str, Any], width: int):
        super().__init__()
        self.dense = nn.Linear(width, c["hidden_size"])
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        return self.LayerNorm(x + self.dense(h))


class _Attention(nn.Module):
    def __init__(self, c: dict[str, Any]):
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _DenseNorm(c, c["hidden_size"])


class _Intermediate(nn.Module):
    def __init__(self, c: dict[str, Any]):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])


class _Layer(nn.Module):
    def __init__(self, c: dict[str, Any]):
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseNorm(c, c["intermediate_size"])

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        x = self.attention.output(self.attention.self(x, key_mask), x)
        return self.output(F.gelu(self.intermediate.dense(x)), x)  # exact (erf) GELU, as "gelu" is


class _Encoder(nn.Module):
    def __init__(self, c: dict[str, Any]):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c["num_hidden_layers"]))


class PlainBert(nn.Module):
    """BERT's encoder (no pooler: the caller pools), with transformers' parameter names.

    Args:
        config: the model folder's ``config.json`` (``plain_bert_config``).
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, L) token ids and mask (1 = a real token) -> (B, L, Dt) last hidden states."""
        x = self.embeddings(input_ids)
        key_mask = attention_mask[:, None, None, :].bool()  # (B, 1, 1, L): padding is never attended to
        for layer in self.encoder.layer:
            x = layer(x, key_mask)
        return x

    @classmethod
    def from_folder(cls, folder: str | Path, config: dict[str, Any]) -> "PlainBert":
        """The model with the folder's weights (missing or misshapen weights raise)."""
        from safetensors.torch import load_file

        with torch.device("meta"):  # no random init: it would draw from the global RNG, and cost time
            model = cls(config)
        state = load_file(str(Path(folder) / "model.safetensors"))
        for prefix in ("bert.",):  # some checkpoints hold the encoder under a task model's prefix
            if not any(k.startswith("embeddings.") for k in state):
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        wanted = model.state_dict().keys()
        missing = [k for k in wanted if k not in state]
        if missing:
            raise ValueError(f"{folder}: model.safetensors lacks {missing[:3]} (not a BERT encoder?)")
        model.load_state_dict({k: state[k] for k in wanted}, assign=True)
        return model.eval()


class FastTokenizer:
    """``tokenizer.json`` through the ``tokenizers`` library: padded to the longest caption,
    cut at ``max_length`` tokens, as transformers' fast tokenizer does with those settings."""

    def __init__(self, folder: str | Path, max_length: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        padding = self.tokenizer.padding or {}
        pad_token = padding.get("pad_token", "[PAD]")
        pad_id = self.tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"{folder}: tokenizer.json has no padding token {pad_token!r}")
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # to the longest in the batch

    def __call__(self, texts: list[str]) -> dict[str, Tensor]:
        encodings = self.tokenizer.encode_batch(texts)
        return {"input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),  # (B, L)
                "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)}
