"""The shipped corpus as the page shows it: where it is found, its example queries and clips,
the one-line summary of what a session searches, and the names its files go by in responses.

Owns every name a user sees for a file (never a server path); it must not change the index.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffatr.demo.session import DemoSession
from diffatr.retrieval.index import RetrievalIndex
from diffatr.runtime import default_index_dir, env_setting

APP_INDEX_ENV = "DIFFATR_APP_INDEX"  # the corpus the demo searches (default: the shipped demo corpus)

# The first examples the app offers on the shipped demo corpus: queries and clips the shipped
# checkpoint gets right at top 1 (benchmarks/user_queries.py; tests/test_default_model.py fails
# when a retrained checkpoint stops getting one of them right). Text example -> a clip that
# answers it; the audio examples are val / test clips, unseen in training.
EXAMPLE_QUERIES = {
    "dog barking": "gcompris-dog",
    "thunder": "0ad-thunder_10",
    "applause": "opensfx-29_applause",
    "horse neighing": "opensfx-38_horse",
    "car engine": "torcs-ferrarif355",
}
EXAMPLE_AUDIO = ("ovos-rooster", "gcompris-guitar", "0ad-footstep_gravel_walking")
PLACEHOLDER_QUERY = "dog barking"
USER_PREFIX = "yours/"  # the clip ids (and shown file names) of a session's uploads


def demo_index_dir() -> Path:
    """The corpus index the demo searches: ``$DIFFATR_APP_INDEX``, else ``default_index_dir()``."""
    env = env_setting(APP_INDEX_ENV)
    return Path(env) if env else default_index_dir()


class DemoCorpus:
    """The shipped index (read-only) and how the page names it.

    Args:
        index: the demo corpus.
    """

    def __init__(self, index: RetrievalIndex) -> None:
        self.index = index
        # Where the shipped clips are named from in responses (no server path leaves the app).
        paths = [p for p in index.paths if p]
        self._root = os.path.commonpath(paths) if paths else ""
        if self._root and Path(self._root).is_file():
            self._root = str(Path(self._root).parent)

    @property
    def audio_dirs(self) -> list[str]:
        """Folders holding the corpus audio (the app serves files from these)."""
        return sorted({str(Path(p).parent) for p in self.index.paths if p})

    def example_queries(self, n: int = 5) -> list[str]:
        """Up to ``n`` example queries: the checked ``EXAMPLE_QUERIES`` whose answer is in this
        corpus, then captions spread over the corpus (another index than the shipped one)."""
        ids = set(self.index.clip_ids)
        checked = [q for q, clip in EXAMPLE_QUERIES.items() if clip in ids]
        if checked:
            return checked[:n]
        firsts = [caps[0] for caps in self.index.captions if caps]
        if not firsts:
            return ["a dog barking"]
        step = max(1, len(firsts) // n)
        return firsts[::step][:n]

    def example_audio(self, n: int = 3) -> list[str]:
        """Up to ``n`` corpus clips that exist on disk (examples for the audio tab): the checked
        ``EXAMPLE_AUDIO`` clips when this corpus holds them, else clips spread over it."""
        row = {clip: i for i, clip in enumerate(self.index.clip_ids)}
        checked = [self.index.paths[row[c]] for c in EXAMPLE_AUDIO if c in row]
        checked = [p for p in checked if p and Path(p).is_file()]
        if checked:
            return checked[:n]
        paths = [p for p in self.index.paths if p and Path(p).is_file()]
        step = max(1, len(paths) // n)
        return paths[::step][:n]

    def summary(self, session: DemoSession | None) -> str:
        """One line: what a search in this session looks through."""
        text = f"{len(self.index)} shipped clips ({self.index.num_captions} captions)"
        if session is not None and session.user_index is not None:
            ui = session.user_index
            text += f" + {len(ui)} of your clips ({ui.num_captions} captions)"
        return text

    def public_name(self, path: str | None, metadata: Mapping[str, Any]) -> str | None:
        """A clip's file as a user may see it: relative to the shipped corpus folder, or the
        name the user gave an upload."""
        if not path:
            return None
        upload = metadata.get("upload_name")
        if upload:
            return USER_PREFIX + str(upload)
        if self._root:
            try:
                return Path(path).relative_to(self._root).as_posix()
            except ValueError:
                pass
        return Path(path).name
