"""Build the example index and fit the bootstrap checkpoint on the ten example clips.

This is a stand-in until the full training pipeline exists: it fits the heads (NT-Xent) and
then the two denoisers (generation loss) on the example clips only, so that the quick start
shows the whole pipeline end to end. It is NOT a general-purpose model.

    python scripts/train_examples.py            # writes assets/examples/index and checkpoints/default
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from diffatr.checkpoint import save_checkpoint
from diffatr.config import load_model_config, to_dict
from diffatr.contrastive import nt_xent_loss
from diffatr.data.manifest import read_manifest
from diffatr.diffusion.losses import generation_loss
from diffatr.encoders.audio import build_audio_encoder
from diffatr.encoders.text import TextEncoder
from diffatr.indexing import build_index
from diffatr.metrics import retrieval_metrics
from diffatr.model import DiffATR

ROOT = Path(__file__).resolve().parents[1]


def hardest_first(query: torch.Tensor, candidates: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """(Q, D), (N, D), (Q,) -> (Q, N) candidate ids: the positive first, then the rest by cosine."""
    scores = query @ candidates.T  # (Q, N)
    scores[torch.arange(len(query)), positive] = float("inf")
    return scores.argsort(dim=1, descending=True, stable=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contrastive-steps", type=int, default=300)
    parser.add_argument("--diffusion-steps", type=int, default=600)
    parser.add_argument("--index-out", default=str(ROOT / "assets/examples/index"))
    parser.add_argument("--checkpoint-out", default=str(ROOT / "checkpoints/default"))
    args = parser.parse_args()

    config = load_model_config(args.config)
    records = read_manifest(ROOT / "assets/examples/manifest.csv")
    index, report = build_index(records, build_audio_encoder(config.audio), TextEncoder(config.text))
    assert not report.skipped, report.skipped
    # Paths relative to the index folder, so the shipped index works from any clone.
    index.paths = [os.path.relpath(p, args.index_out) for p in index.paths]
    index.save(args.index_out)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = DiffATR(config)
    audio, text = index.audio_features, index.text_features  # (N, Da), (M, Dt)
    owner = index.caption_to_clip  # (M,)

    # Phase 1: heads, one caption per clip per step.
    heads = list(model.text_head.parameters()) + list(model.audio_head.parameters())
    opt = torch.optim.AdamW(heads, lr=1e-3, weight_decay=0.01)
    for step in range(args.contrastive_steps):
        pick = torch.stack([torch.nonzero(owner == c).flatten()[torch.randint(0, int((owner == c).sum()), (1,), generator=gen)]
                            for c in range(len(audio))]).flatten()
        loss = nt_xent_loss(model.project_text(text[pick]), model.project_audio(audio), model.logit_scale())
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"contrastive loss {loss.item():.4f}")

    # Phase 2: denoisers on frozen embeddings, candidates hardest first, positive at index 0.
    with torch.no_grad():
        t_emb, a_emb = model.project_text(text), model.project_audio(audio)
    scheduler = model.make_scheduler()
    denoisers = model.denoisers
    opt = torch.optim.AdamW(denoisers.parameters(), lr=3e-4, weight_decay=0.2)
    for step in range(args.diffusion_steps):
        t2a_ids = hardest_first(t_emb, a_emb, owner)  # (M, N)
        loss_t2a = generation_loss(denoisers["text_to_audio"], scheduler, t_emb, a_emb[t2a_ids], gen,
                                   ce_scale=config.diffusion.ce_scale)
        # audio -> text: one caption per clip as that clip's candidate
        pick = torch.stack([torch.nonzero(owner == c).flatten()[torch.randint(0, int((owner == c).sum()), (1,), generator=gen)]
                            for c in range(len(audio))]).flatten()  # (N,)
        cands = t_emb[pick]  # (N, D): row c is a caption of clip c
        a2t_ids = hardest_first(a_emb, cands, torch.arange(len(audio)))
        loss_a2t = generation_loss(denoisers["audio_to_text"], scheduler, a_emb, cands[a2t_ids], gen,
                                   ce_scale=config.diffusion.ce_scale)
        loss = loss_t2a + loss_a2t
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoisers.parameters(), 1.0)
        opt.step()
    print(f"generation loss {loss.item():.4f}")

    model.eval()
    with torch.no_grad():
        metrics = retrieval_metrics(t_emb @ a_emb.T, None, owner)
    save_checkpoint(model, args.checkpoint_out, extra={
        "trained_on": "assets/examples (10 clips, 20 captions): a bootstrap model, not a general retriever",
        "seed": args.seed, "contrastive_steps": args.contrastive_steps, "diffusion_steps": args.diffusion_steps,
        "train_metrics_cosine": metrics, "config": args.config,
    })
    print(json.dumps({k: round(v, 2) for k, v in metrics.items()}, indent=1))


if __name__ == "__main__":
    main()
