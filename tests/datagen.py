"""Tiny generated datasets in the real on-disk layouts, for tests (import as ``import datagen``).

Each clip mixes one or two "sound words" from a small vocabulary (a 110 Hz hum, an 880 Hz
beep, a 2 kHz whistle, a click train, a noise burst, a rising chirp) and its captions name
exactly those words in varied phrasing, so a tiny model can learn to retrieve them. All
output is a deterministic function of the arguments (seeded ``numpy.random.Generator``;
nothing global). Clips are short 16-bit WAVs, so a whole dataset writes in milliseconds.

Layouts written (the readers in ``diffatr.data`` read them back):
- ``make_clotho``: Clotho v2.x (``clotho_captions_<split>.csv`` + ``<split>/*.wav``).
- ``make_audiocaps``: official AudioCaps CSVs (one row per caption) + ``audio/<split>/<ytid>_<start>.wav``.
- ``make_aac_clotho`` / ``make_aac_audiocaps``: the aac-datasets folder layout.
- ``make_manifest``: a generic CSV manifest with a ``split`` column.
Every maker also writes ``datagen_truth.json`` (clip id -> sound words) next to the data,
which no reader looks at; tests may use it as ground truth.
"""

from __future__ import annotations

import csv
import itertools
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

# name -> (noun phrases, gerunds). Phrasing varies; the word each phrase refers to does not.
SOUND_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "hum": (("a low hum", "a deep hum", "a low humming sound", "a low drone"), ("humming", "droning")),
    "beep": (("a beep", "a high beep", "repeated beeps", "a beeping tone"), ("beeping",)),
    "whistle": (("a whistle", "a shrill whistle", "a high whistle"), ("whistling",)),
    "clicks": (("clicks", "a series of clicks", "rapid ticking"), ("clicking", "ticking")),
    "noise": (("a burst of noise", "hissing static", "a noise burst", "white noise"), ("hissing",)),
    "chirp": (("a rising chirp", "a sweeping tone", "an upward sweep"), ("chirping", "sweeping")),
}
WORDS: tuple[str, ...] = tuple(SOUND_WORDS)

_SINGLE_TEMPLATES = (
    "{n1}", "{n1} can be heard", "you can hear {n1}", "something is {g1} in a quiet room",
    "a recording of {n1}", "we hear {n1} for a moment", "{g1} close to the microphone",
)
_PAIR_TEMPLATES = (
    "{n1} and {n2}", "{g1} over {n2}", "{n1} with {n2} in the background", "{n1}, then {n2}",
    "{n2} together with {n1}", "{g1} and {g2} at the same time", "{n1} mixed with {n2}",
    "a recording of {n1} and {n2}",
)

CLOTHO_SPLITS = ("development", "validation", "evaluation")
AUDIOCAPS_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class GeneratedClip:
    """One generated clip: ``waveform`` (S,) float32 at ``sample_rate``, its words and captions."""

    words: tuple[str, ...]
    waveform: np.ndarray
    sample_rate: int
    captions: tuple[str, ...]


def synth_word(word: str, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One sound word as a (S,) float32 signal with peak about 1 (small seeded variations)."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    jitter = 1.0 + 0.03 * rng.uniform(-1, 1)
    if word == "hum":
        f = 110.0 * jitter
        x = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2 * f * t)
    elif word == "beep":
        gate = (np.sin(2 * np.pi * 4.0 * jitter * t + rng.uniform(0, 2 * np.pi)) > 0).astype(float)
        x = gate * np.sin(2 * np.pi * 880.0 * jitter * t)
    elif word == "whistle":
        x = np.sin(2 * np.pi * 2000.0 * jitter * t + 3.0 * np.sin(2 * np.pi * 6.0 * t))
    elif word == "clicks":
        x = np.zeros(n)
        period = max(1, int(sr / (10.0 * jitter)))
        click = np.exp(-np.arange(min(n, int(0.004 * sr)) + 1) / (0.0008 * sr))
        for start in range(int(rng.integers(0, period)), n, period):
            end = min(n, start + len(click))
            x[start:end] += click[: end - start] * rng.choice([-1.0, 1.0])
    elif word == "noise":
        x = rng.standard_normal(n)
        onset = rng.uniform(0.1, 0.3) * n
        window = ((t * sr >= onset) & (t * sr < onset + 0.5 * n)).astype(float)
        x = x * window / 3.0
    elif word == "chirp":
        f0, f1 = 300.0 * jitter, min(4000.0 * jitter, 0.45 * sr)
        # Exponential sweep: phase = 2*pi*f0*T/ln(f1/f0) * ((f1/f0)^(t/T) - 1).
        duration = max(seconds, 1e-6)
        k = np.log(f1 / f0)
        x = np.sin(2 * np.pi * f0 * duration / k * (np.exp(k * t / duration) - 1.0))
    else:
        raise ValueError(f"unknown sound word {word!r}; choose from {', '.join(WORDS)}")
    peak = float(np.max(np.abs(x))) or 1.0
    return (x / peak).astype(np.float32)


def make_captions(words: Sequence[str], count: int, rng: np.random.Generator) -> tuple[str, ...]:
    """``count`` distinct captions naming exactly ``words`` (1 or 2), in Clotho's style
    (capitalised, ending in a full stop) so caption normalisation has work to do."""
    templates = _SINGLE_TEMPLATES if len(words) == 1 else _PAIR_TEMPLATES
    captions: list[str] = []
    for _ in range(200 * count):
        if len(captions) == count:
            break
        order = list(words) if len(words) == 1 else list(rng.permutation(list(words)))
        fill = {}
        for i, word in enumerate(order, 1):
            nouns, gerunds = SOUND_WORDS[word]
            fill[f"n{i}"] = nouns[int(rng.integers(len(nouns)))]
            fill[f"g{i}"] = gerunds[int(rng.integers(len(gerunds)))]
        text = templates[int(rng.integers(len(templates)))].format(**fill)
        text = text[0].upper() + text[1:] + "."
        if text not in captions:
            captions.append(text)
    if len(captions) < count:
        raise ValueError(f"cannot make {count} distinct captions for {list(words)}")
    return tuple(captions)


def _combos(singles_first: bool, rng: np.random.Generator) -> list[tuple[str, ...]]:
    singles = [(w,) for w in WORDS]
    pairs = list(itertools.combinations(WORDS, 2))
    if singles_first:
        # Training data sees every word alone before any mixture (when it has >= 6 clips).
        return [singles[i] for i in rng.permutation(len(singles))] + [pairs[i] for i in rng.permutation(len(pairs))]
    every = singles + pairs
    return [every[i] for i in rng.permutation(len(every))]


def generate_clips(n: int, *, captions_per_clip: int = 5, seconds: float = 1.0, sr: int = 16000,
                   rng: np.random.Generator, singles_first: bool = False) -> list[GeneratedClip]:
    """``n`` clips; within the first 21 every clip has a different word set.

    Args:
        n: number of clips.
        captions_per_clip: distinct captions per clip.
        seconds, sr: clip length and sample rate.
        rng: the only source of randomness.
        singles_first: cycle through the 6 one-word clips before the 15 two-word mixes.
    """
    combos = _combos(singles_first, rng)
    clips = []
    for i in range(n):
        words = combos[i % len(combos)]
        mix = sum(synth_word(w, seconds, sr, rng) for w in words)
        mix = mix / max(float(np.max(np.abs(mix))), 1e-6) * rng.uniform(0.3, 0.6)
        mix = (mix + 0.003 * rng.standard_normal(mix.shape)).astype(np.float32)
        clips.append(GeneratedClip(tuple(words), mix, sr, make_captions(words, captions_per_clip, rng)))
    return clips


def write_wav(path: str | Path, clip: GeneratedClip) -> Path:
    """Write ``clip`` to ``path`` (format from the suffix: 16-bit for .wav/.flac, the
    format's default otherwise), creating folders as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = "PCM_16" if path.suffix.lower() in (".wav", ".flac") else None
    sf.write(str(path), clip.waveform, clip.sample_rate, subtype=subtype)
    return path


def break_audio(path: str | Path, how: str = "garbage") -> Path:
    """Damage an audio file in place: ``"empty"`` (zero bytes), ``"garbage"`` (a header that
    libsndfile rejects) or ``"missing"`` (delete it)."""
    path = Path(path)
    if how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(64))
    elif how == "missing":
        path.unlink()
    else:
        raise ValueError(f"unknown damage {how!r}: use empty, garbage or missing")
    return path


def _write_truth(root: Path, truth: dict[str, dict[str, list[str]]]) -> None:
    (root / "datagen_truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _clotho_like(csv_dir: Path, audio_dir_for, clips_per_split, seconds, sr, seed, root: Path) -> Path:
    rng = np.random.default_rng(seed)
    truth: dict[str, dict[str, list[str]]] = {}
    for split, count in zip(CLOTHO_SPLITS, clips_per_split):
        clips = generate_clips(count, seconds=seconds, sr=sr, rng=rng, singles_first=split == "development")
        rows = []
        truth[split] = {}
        for i, clip in enumerate(clips):
            # Clotho file names contain spaces; keep one here so readers must cope.
            name = f"{split[:3]} clip {i:03d}.wav"
            write_wav(audio_dir_for(split) / name, clip)
            rows.append([name, *clip.captions])
            truth[split][Path(name).stem] = list(clip.words)
        _write_csv(csv_dir / f"clotho_captions_{split}.csv",
                   ["file_name", *(f"caption_{k}" for k in range(1, 6))], rows)
    _write_truth(root, truth)
    return root


def make_clotho(root: str | Path, clips_per_split: Sequence[int] = (6, 4, 4), seconds: float = 1.0,
                sr: int = 16000, seed: int = 0) -> Path:
    """A Clotho v2.x folder: ``clotho_captions_{development,validation,evaluation}.csv`` (file_name,
    caption_1..caption_5) and audio in ``{development,validation,evaluation}/``.

    Args:
        root: folder to write into (created).
        clips_per_split: clips in development, validation, evaluation.
    Returns:
        ``root`` as a Path (what ``load_split(root, "test")`` reads).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return _clotho_like(root, lambda split: root / split, clips_per_split, seconds, sr, seed, root)


def make_aac_clotho(root: str | Path, clips_per_split: Sequence[int] = (6, 4, 4), seconds: float = 1.0,
                    sr: int = 16000, seed: int = 0) -> Path:
    """The aac-datasets Clotho layout under ``root``: ``CLOTHO_v2.1/clotho_csv_files/
    clotho_captions_<split>.csv`` and ``CLOTHO_v2.1/clotho_audio_files/<split>/``. Returns ``root``."""
    root = Path(root)
    base = root / "CLOTHO_v2.1"
    _clotho_like(base / "clotho_csv_files", lambda split: base / "clotho_audio_files" / split,
                 clips_per_split, seconds, sr, seed, root)
    return root


def _youtube_id(rng: np.random.Generator) -> str:
    alphabet = string.ascii_letters + string.digits + "-_"
    return "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), size=11))


def _audiocaps_like(csv_dir: Path, audio_dir_for, suffix: str, clips_per_split, seconds, sr, seed,
                    root: Path, shared_youtube_id: bool) -> Path:
    rng = np.random.default_rng(seed)
    truth: dict[str, dict[str, list[str]]] = {}
    next_id = 1
    for split, count in zip(AUDIOCAPS_SPLITS, clips_per_split):
        per_clip = 1 if split == "train" else 5
        clips = generate_clips(count, captions_per_clip=per_clip, seconds=seconds, sr=sr, rng=rng,
                               singles_first=split == "train")
        rows = []
        truth[split] = {}
        previous = None
        for i, clip in enumerate(clips):
            ytid, start = _youtube_id(rng), 10 * int(rng.integers(0, 30))
            if shared_youtube_id and i == 1 and previous is not None:
                # Two clips cut from one video at different times: must stay two records.
                ytid, start = previous[0], previous[1] + 10
            previous = (ytid, start)
            write_wav(audio_dir_for(split) / f"{ytid}_{start}{suffix}", clip)
            for caption in clip.captions:
                rows.append([next_id, ytid, start, caption])
                next_id += 1
            truth[split][f"{ytid}_{start}"] = list(clip.words)
        # The official files are not grouped by clip: interleave a clip's rows with others'.
        rows = [rows[j] for j in rng.permutation(len(rows))]
        _write_csv(csv_dir / f"{split}.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], rows)
    _write_truth(root, truth)
    return root


def make_audiocaps(root: str | Path, clips_per_split: Sequence[int] = (6, 4, 4), seconds: float = 1.0,
                   sr: int = 16000, seed: int = 0, shared_youtube_id: bool = True) -> Path:
    """Official AudioCaps CSVs (``train.csv``, ``val.csv``, ``test.csv``: audiocap_id, youtube_id,
    start_time, caption; one row per caption, rows shuffled) and audio in
    ``audio/<split>/<youtube_id>_<start_time>.wav``. Train has 1 caption per clip, val/test 5.

    Args:
        shared_youtube_id: the second clip of each split reuses the first clip's youtube id
            with a different start time (a real AudioCaps situation).
    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return _audiocaps_like(root, lambda split: root / "audio" / split, ".wav", clips_per_split,
                           seconds, sr, seed, root, shared_youtube_id)


def make_aac_audiocaps(root: str | Path, clips_per_split: Sequence[int] = (6, 4, 4), seconds: float = 1.0,
                       sr: int = 16000, seed: int = 0, shared_youtube_id: bool = True) -> Path:
    """The aac-datasets AudioCaps layout under ``root``: ``AUDIOCAPS/csv_files_v1/<split>.csv`` and
    ``AUDIOCAPS/audio_32000Hz/<split>/<ytid>_<start>.flac`` (written at ``sr``, whatever the folder
    name says). Returns ``root``."""
    root = Path(root)
    base = root / "AUDIOCAPS"
    return _audiocaps_like(base / "csv_files_v1", lambda split: base / "audio_32000Hz" / split, ".flac",
                           clips_per_split, seconds, sr, seed, root, shared_youtube_id)


def make_manifest(root: str | Path, n: int = 8, seconds: float = 1.0, sr: int = 16000, seed: int = 0,
                  captions_per_clip: int = 5, split_sizes: Sequence[int] | None = None,
                  splits: Sequence[str] = ("train", "val", "test")) -> Path:
    """A generic CSV manifest ``root/manifest.csv`` (columns path, clip_id, split,
    caption_1..caption_<captions_per_clip>) with audio in ``root/audio/``.

    Args:
        n: total clips; by default dealt to ``splits`` as n - 2*(n//4), n//4, n//4 (8: 4/2/2).
        split_sizes: explicit clips per split (must sum to n).
    Returns:
        the CSV's path.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if split_sizes is None:
        split_sizes = (n - 2 * (n // 4), n // 4, n // 4)
    if len(split_sizes) != len(splits) or sum(split_sizes) != n:
        raise ValueError(f"split_sizes {tuple(split_sizes)} must give one size per split and sum to n={n}")
    rng = np.random.default_rng(seed)
    rows = []
    truth: dict[str, dict[str, list[str]]] = {}
    for split, count in zip(splits, split_sizes):
        clips = generate_clips(count, captions_per_clip=captions_per_clip, seconds=seconds, sr=sr, rng=rng,
                               singles_first=split == splits[0])
        truth[split] = {}
        for clip in clips:
            clip_id = f"clip{len(rows):03d}"
            write_wav(root / "audio" / f"{clip_id}.wav", clip)
            rows.append([f"audio/{clip_id}.wav", clip_id, split, *clip.captions])
            truth[split][clip_id] = list(clip.words)
    path = root / "manifest.csv"
    _write_csv(path, ["path", "clip_id", "split", *(f"caption_{k}" for k in range(1, captions_per_clip + 1))], rows)
    _write_truth(root, truth)
    return path


def read_truth(root: str | Path) -> dict[str, dict[str, list[str]]]:
    """``datagen_truth.json`` written by a maker: split -> clip id -> sound words."""
    return json.loads((Path(root) / "datagen_truth.json").read_text())
