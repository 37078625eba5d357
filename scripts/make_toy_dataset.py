"""Write a small Clotho-layout dataset of generated sounds (tones, clicks, chirps, noise) with
captions that name exactly what is in each clip: enough to try `diffatr train` and
`diffatr evaluate` end to end in a minute on a CPU.

    python scripts/make_toy_dataset.py /tmp/toy --clips 120 40 40
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import datagen  # noqa: E402  (the generator the test suite uses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder to write (Clotho v2 layout)")
    parser.add_argument("--clips", type=int, nargs=3, default=(120, 40, 40), metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--layout", choices=["clotho", "audiocaps"], default="clotho")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make = datagen.make_clotho if args.layout == "clotho" else datagen.make_audiocaps
    root = make(Path(args.root), clips_per_split=tuple(args.clips), seed=args.seed)
    print(f"wrote a {args.layout}-layout dataset to {root}")


if __name__ == "__main__":
    main()
