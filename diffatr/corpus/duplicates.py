"""Find the same audio under different names: waveform cross-correlation of the processed
clips, plus the pairs the corpus scouting verified (``known_duplicates.tsv``).

A duplicate pair (correlation >= ``SAME_AUDIO``) keeps one clip; a near-duplicate pair
(>= ``RELATED``) must land in one split. Pure numpy; the build passes arrays in.

Shapes: S samples.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FINGERPRINT_RATE = 4_000
FINGERPRINT_SECONDS = 4.0
SAME_AUDIO = 0.95   # the same recording (possibly re-encoded, re-levelled or trimmed)
RELATED = 0.80      # the threshold the scouting used for "the same audio under different names"
KNOWN_DUPLICATES_PATH = Path(__file__).with_name("known_duplicates.tsv")


def fingerprint(audio: np.ndarray, rate: int) -> np.ndarray:
    """(S,) -> (S',) float32: the first seconds at 4 kHz, zero-mean, unit L2 norm."""
    import soxr

    short = audio[: int(FINGERPRINT_SECONDS * rate)].astype(np.float32)
    low = soxr.resample(short, rate, FINGERPRINT_RATE) if rate != FINGERPRINT_RATE else short
    low = low - low.mean()
    norm = float(np.linalg.norm(low))
    return (low / norm).astype(np.float32) if norm > 0 else low.astype(np.float32)


def max_xcorr(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |normalised cross-correlation| of two fingerprints over all lags."""
    size = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    spectrum = np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size))
    return float(np.max(np.abs(np.fft.irfft(spectrum, size))))


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    score: float


def find_similar(prints: dict[str, np.ndarray], durations: dict[str, float], threshold: float = RELATED,
                 min_ratio: float = 0.5) -> list[Pair]:
    """All pairs of clips whose fingerprints correlate at ``threshold`` or more.

    Only pairs whose durations are within ``min_ratio`` of each other are compared (the
    same audio has about the same length); the order of ``prints`` sets the order of each
    pair (a before b).
    """
    ids = list(prints)
    spectra: dict[tuple[str, int], np.ndarray] = {}

    def spectrum(key: str, size: int) -> np.ndarray:
        if (key, size) not in spectra:
            spectra[(key, size)] = np.fft.rfft(prints[key], size)
        return spectra[(key, size)]

    pairs = []
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            da, db = durations[a], durations[b]
            if min(da, db) < min_ratio * max(da, db):
                continue
            size = 1 << int(np.ceil(np.log2(len(prints[a]) + len(prints[b]))))
            score = float(np.max(np.abs(np.fft.irfft(spectrum(a, size) * np.conj(spectrum(b, size)), size))))
            if score >= threshold:
                pairs.append(Pair(a, b, score))
    return pairs


def read_known_duplicates(path: str | Path = KNOWN_DUPLICATES_PATH) -> list[tuple[str, str, float]]:
    """The scouting's verified pairs as ``(source_key:inner_path, source_key:inner_path, xcorr)``.

    The scouting wrote ``registry:package:path``; packages are mapped to source keys and
    paths to the catalog's form (below each source's root) by ``scout_to_catalog_path``.
    Pairs from packages the corpus does not use are dropped.
    """
    pairs = []
    with open(path, encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            a, b = scout_to_catalog_path(row["a"]), scout_to_catalog_path(row["b"])
            if a and b:
                pairs.append((a, b, float(row["xcorr"])))
    return pairs


def scout_to_catalog_path(spec: str) -> str | None:
    """``deb:0ad-data:public.zip:audio/x.ogg`` -> ``0ad:x.ogg`` (None for unused packages)."""
    from diffatr.corpus.sources import SOURCES

    _registry, package, path = spec.split(":", 2)
    package = package.split("@", 1)[0]
    for source in SOURCES:
        if source.package != package:
            continue
        root = source.root
        if path.startswith("public.zip:"):          # 0ad: the scout wrote public.zip:audio/...
            path = "usr/share/games/0ad/mods/public/public.zip!" + path.split(":", 1)[1]
        elif path.startswith("extracted/sound/"):   # ufoai pk3
            path = "usr/share/games/ufoai/base/0snd.pk3!" + path[len("extracted/"):]
        elif path.startswith("sound_extracted/"):   # openclonk C4Group
            path = "usr/share/games/openclonk/Sound.ocg!" + path[len("sound_extracted/"):]
        elif path.startswith("extracted/") and source.key == "opensfx":
            path = "usr/share/games/openttd/baseset/opensfx/opensfx.cat!" + path[len("extracted/"):]
        elif source.registry == "pypi" and not path.startswith("!"):
            path = "!" + path
        if not path.startswith(root):
            return None
        return f"{source.key}:{path[len(root):]}"
    return None
