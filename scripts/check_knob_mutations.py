"""Mutation check of the knob tests: make the engine ignore each retrieval setting, run the
engine-level tests, and report which test goes red (each must).

For every ``RetrievalConfig`` field, ``SearchEngine`` is changed in place (where a search's
settings come in, ``_search``) to take that field from the checkpoint instead of the config it
is given (the wiring bug of issue 21), the
tests run (``tests/test_engine_knobs.py`` by default, no Gradio needed), and the file is
restored, whatever happens. Exit code 1 if a mutation survives.

    python scripts/check_knob_mutations.py [pytest args ...]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "diffatr" / "retrieval" / "engine.py"
ANCHOR = "        config = self.model.config.retrieval if config is None else config\n"
KNOBS = ("fusion", "temperature", "alpha", "num_inference_steps", "top_k", "seed", "num_results", "one_per_sound",
         "similar_space")


def main(pytest_args: list[str]) -> int:
    original = ENGINE.read_text()
    if original.count(ANCHOR) != 1:
        print(f"cannot find the place to mutate in {ENGINE}", file=sys.stderr)
        return 2
    survivors = []
    try:
        for knob in KNOBS:
            mutation = f"        config = dataclasses.replace(config, {knob}=self.model.config.retrieval.{knob})\n"
            ENGINE.write_text(original.replace(ANCHOR, ANCHOR + mutation))
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf",
                                  *(pytest_args or ["tests/test_engine_knobs.py"])],
                                 cwd=ROOT, capture_output=True, text=True)
            failed = sorted({line.split(" ")[1].split("[")[0] + "[" + line.split("[", 1)[1].split("]")[0] + "]"
                             for line in run.stdout.splitlines() if line.startswith("FAILED ")})
            if run.returncode == 0:
                survivors.append(knob)
                print(f"{knob}: SURVIVED (no test went red)")
            else:
                print(f"{knob}: caught by {len(failed)} test(s): {', '.join(failed)}")
    finally:
        ENGINE.write_text(original)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
