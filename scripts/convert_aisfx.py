"""Convert the aisfx 0.1.2 sound-effects CNN into checkpoints/aisfx_cnn9.safetensors (run once).

    pip install -e .           # diffatr itself
    pip install aisfx==0.1.2   # or unpack its wheel; only models/checkpoint.pth is read
    python scripts/convert_aisfx.py PATH/TO/aisfx/models/checkpoint.pth \
        [--dst checkpoints/aisfx_cnn9.safetensors] [--verify clip1.mp3 clip2.wav ...]

The checkpoint is a pickle of (state_dict, ds_dict) whose ds_dict holds numpy integers, so
torch's weights-only loader refuses it; this script, and only this script, then falls back
to a full unpickle of that one trusted file. Only ``embedding_net.*`` is kept (classifier
heads dropped), stored as float16 (loaded back as float32).

``--verify`` embeds the given clips with the original float32 weights and with the written
file through diffatr's pipeline and prints the cosine similarity per clip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from diffatr.encoders.audio import (
    AisfxCNN9,
    AudioEncoder,
    audio_encoder_config,
    build_audio_encoder,
    build_backbone,
    init_backbone,
)
from diffatr.encoders.convert import (
    convert_aisfx,
    extract_state_dict,
    load_pickled_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]


def verify(src: Path, dst: Path, clips: list[str]) -> float:
    """Cosine similarity of clip embeddings: float32 original weights vs the written file."""
    converted = build_audio_encoder(audio_encoder_config("aisfx-cnn9", weights=str(dst)))
    state = extract_state_dict(load_pickled_checkpoint(src, trust=True)[0])
    original_net: AisfxCNN9 = init_backbone(build_backbone("aisfx-cnn9"))
    original_net.load_state_dict({k.removeprefix("embedding_net."): v for k, v in state.items() if k.startswith("embedding_net.")})
    original = AudioEncoder(converted.config, original_net).eval()
    worst = 1.0
    for clip in clips:
        a = original.embed_file(clip)
        b = converted.embed_file(clip)
        cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        rel = float((a - b).norm() / a.norm())
        worst = min(worst, cos)
        print(f"{Path(clip).name:24s} cosine {cos:.8f}  relative L2 error {rel:.2e}")
    print(f"worst cosine over {len(clips)} clips: {worst:.8f}")
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="aisfx/models/checkpoint.pth from aisfx 0.1.2")
    parser.add_argument("--dst", type=Path, default=REPO / "checkpoints" / "aisfx_cnn9.safetensors")
    parser.add_argument("--verify", nargs="*", default=[], metavar="AUDIO", help="clips to compare fp32 vs stored weights on")
    args = parser.parse_args(argv)
    metadata = convert_aisfx(args.src, args.dst, trust=True)
    size_mb = args.dst.stat().st_size / 1e6
    print(f"wrote {args.dst} ({size_mb:.2f} MB); source sha256 {metadata['source_sha256']}")
    if args.verify:
        verify(args.src, args.dst, args.verify)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
