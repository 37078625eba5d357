"""Two-clip mixtures with compositional captions, stored as recipes and rendered on the fly.

A recipe names two clips of one split, where each starts (``offset_s``) and its gain; the
rendering is a deterministic function of the recipe and the two clips (no randomness at
render time; ``seed`` records how the recipe was drawn). Three kinds:

- ``overlay``: both clips at about the same level, overlapping: "{s1} while {s2}".
- ``background``: the second clip 6-15 dB quieter under the first:
  "{g1} with {g2} in the background".
- ``sequence``: one after the other with a short gap: "{s1}, then {s2}".

({s}: a clip's sentence caption, {g}: its gerund caption.) A mixture never combines two
clips of one label group or of one sound class, and holds at most one long ambience.
Clips are loudness-normalised, so gains in dB are relative loudness.

Shapes: S samples.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from diffatr.errors import DiffatrError

KINDS = ("overlay", "background", "sequence")
MAX_SECONDS = 10.0
BACKGROUND_GAIN_DB = (-15.0, -6.0)   # the background clip, relative to the foreground
OVERLAY_GAIN_DB = (-3.0, 0.0)
SEQUENCE_GAP_S = (0.2, 0.5)
HEADROOM = 0.99                      # a mix whose peak exceeds this is scaled down


class MixtureError(DiffatrError):
    """A recipe that breaks the mixing rules, or clips that do not match it."""


@dataclass(frozen=True)
class MixClip:
    """One clip of a recipe: where it starts in the mix and its gain."""

    clip_id: str
    offset_s: float
    gain_db: float


@dataclass(frozen=True)
class MixRecipe:
    """A two-clip mixture (see the module docstring)."""

    mix_id: str
    split: str
    kind: str
    clips: tuple[MixClip, MixClip]
    seed: int
    duration_s: float
    captions: tuple[str, ...]

    def to_json(self) -> str:
        record = asdict(self)
        record["clips"] = [asdict(c) for c in self.clips]
        record["captions"] = list(self.captions)
        return json.dumps(record, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, record: dict) -> MixRecipe:
        try:
            clips = tuple(MixClip(c["clip_id"], float(c["offset_s"]), float(c["gain_db"])) for c in record["clips"])
            if len(clips) != 2:
                raise MixtureError(f"recipe {record.get('mix_id')!r} must have exactly two clips")
            return cls(str(record["mix_id"]), str(record["split"]), str(record["kind"]), clips,  # type: ignore[arg-type]
                       int(record["seed"]), float(record["duration_s"]), tuple(record["captions"]))
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, MixtureError):
                raise
            raise MixtureError(f"malformed recipe {record!r}: {err}") from err


@dataclass(frozen=True)
class MixSource:
    """What recipe drawing needs to know about a clip."""

    clip_id: str
    group: str
    sound_class: str
    ambience: bool
    duration_s: float
    sentence: str
    gerund: str


def compositional_captions(kind: str, first: MixSource, second: MixSource) -> tuple[str, ...]:
    """The captions of a mixture of ``first`` and ``second`` (in recipe order)."""
    s1, s2, g1, g2 = first.sentence, second.sentence, first.gerund, second.gerund
    if kind == "overlay":
        return (f"{s1} while {s2}", f"{g1} and {g2} at the same time")
    if kind == "background":
        return (f"{g1} with {g2} in the background", f"{s1}, with {g2} in the background")
    if kind == "sequence":
        return (f"{s1}, then {s2}", f"{g1} followed by {g2}")
    raise MixtureError(f"unknown mixture kind {kind!r} (one of {', '.join(KINDS)})")


def compatible(a: MixSource, b: MixSource) -> bool:
    """The mixing rules: different label groups, different sound classes, at most one ambience."""
    return a.group != b.group and a.sound_class != b.sound_class and not (a.ambience and b.ambience)


def _draw_one(kind: str, pool: Sequence[MixSource], rng: np.random.Generator) -> tuple[MixSource, MixSource, list[MixClip], float] | None:
    a, b = (pool[i] for i in rng.choice(len(pool), size=2, replace=False))
    if not compatible(a, b):
        return None
    if kind == "background":
        # The background must last through the foreground: take the longer clip (or the
        # ambience) as background, and require at least a second of it.
        if b.duration_s < a.duration_s and not b.ambience or a.ambience:
            a, b = b, a
        if b.duration_s < max(1.0, 0.8 * a.duration_s) or a.ambience:
            return None
        length = min(MAX_SECONDS, b.duration_s)
        fg_offset = float(rng.uniform(0.0, max(0.0, length - a.duration_s)))
        gain = float(rng.uniform(*BACKGROUND_GAIN_DB))
        clips = [MixClip(a.clip_id, round(fg_offset, 3), 0.0), MixClip(b.clip_id, 0.0, round(gain, 2))]
        return a, b, clips, length
    if kind == "overlay":
        if a.duration_s < 0.5 or b.duration_s < 0.5:
            return None
        # The second clip starts while the first is still sounding.
        latest = max(0.0, min(a.duration_s * 0.5, MAX_SECONDS - b.duration_s))
        offset = float(rng.uniform(0.0, latest))
        gain = float(rng.uniform(*OVERLAY_GAIN_DB))
        length = min(MAX_SECONDS, max(a.duration_s, offset + b.duration_s))
        clips = [MixClip(a.clip_id, 0.0, 0.0), MixClip(b.clip_id, round(offset, 3), round(gain, 2))]
        return a, b, clips, length
    if kind == "sequence":
        gap = float(rng.uniform(*SEQUENCE_GAP_S))
        if a.duration_s + gap + b.duration_s > MAX_SECONDS or a.ambience or b.ambience:
            return None
        start = round(a.duration_s + gap, 3)
        clips = [MixClip(a.clip_id, 0.0, 0.0), MixClip(b.clip_id, start, 0.0)]
        return a, b, clips, start + b.duration_s
    raise MixtureError(f"unknown mixture kind {kind!r}")


def make_recipes(pool: Iterable[MixSource], split: str, count: int, seed: int,
                 kinds: Sequence[str] = KINDS) -> list[MixRecipe]:
    """``count`` recipes drawn from the clips of one split, kinds in rotation.

    The draw is seeded; a recipe's own ``seed`` is the draw's seed plus its index. Pairs
    are not repeated. Fewer than ``count`` come back when the pool cannot supply them.
    """
    pool = sorted(pool, key=lambda c: c.clip_id)
    if len(pool) < 2:
        return []
    rng = np.random.default_rng(seed)
    recipes: list[MixRecipe] = []
    used: set[frozenset[str]] = set()
    attempts = 0
    while len(recipes) < count and attempts < 200 * count:
        attempts += 1
        kind = kinds[len(recipes) % len(kinds)]
        drawn = _draw_one(kind, pool, rng)
        if drawn is None:
            continue
        first, second, clips, length = drawn
        pair = frozenset((first.clip_id, second.clip_id))
        if pair in used:
            continue
        used.add(pair)
        index = len(recipes)
        recipes.append(MixRecipe(f"mix-{split}-{index:04d}", split, kind, (clips[0], clips[1]), seed + index,
                                 round(float(length), 3), compositional_captions(kind, first, second)))
    return recipes


def render_recipe(recipe: MixRecipe, waveforms: dict[str, np.ndarray], rate: int) -> np.ndarray:
    """The mixture (S,) float32 at ``rate`` from the two clips' waveforms (each (S,)).

    Deterministic: the same recipe and clips give the same samples. The mix is
    ``duration_s`` long; a peak above ``HEADROOM`` scales the whole mix down.

    Raises:
        MixtureError: a clip of the recipe missing from ``waveforms``.
    """
    length = round(recipe.duration_s * rate)
    mix = np.zeros(length, dtype=np.float64)
    for clip in recipe.clips:
        if clip.clip_id not in waveforms:
            raise MixtureError(f"{recipe.mix_id}: no waveform for clip {clip.clip_id!r}")
        wave = np.asarray(waveforms[clip.clip_id], dtype=np.float64)
        start = round(clip.offset_s * rate)
        piece = wave[: max(0, length - start)] * 10.0 ** (clip.gain_db / 20.0)
        mix[start:start + len(piece)] += piece
    peak = float(np.max(np.abs(mix))) if length else 0.0
    if peak > HEADROOM:
        mix *= HEADROOM / peak
    return mix.astype(np.float32)


def render_mixture(recipe: MixRecipe, clip_paths: dict[str, str | Path], rate: int = 48_000) -> np.ndarray:
    """Load the recipe's clips (any format ``diffatr.audio.io`` reads) and render the mix."""
    from diffatr.audio.io import load_audio

    waves = {}
    for clip in recipe.clips:
        if clip.clip_id not in clip_paths:
            raise MixtureError(f"{recipe.mix_id}: clip {clip.clip_id!r} is not in the manifest")
        waves[clip.clip_id] = load_audio(clip_paths[clip.clip_id], rate)
    return render_recipe(recipe, waves, rate)


def write_recipes(path: str | Path, recipes: Iterable[MixRecipe]) -> None:
    from diffatr.fileio import atomic_write_text

    atomic_write_text(path, "".join(r.to_json() + "\n" for r in recipes))


def read_recipes(path: str | Path) -> list[MixRecipe]:
    """Recipes from a JSONL file.

    Raises:
        MixtureError: a line that is not a valid recipe.
    """
    recipes = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise MixtureError(f"{path}:{number}: not JSON ({err})") from err
        recipes.append(MixRecipe.from_dict(record))
    return recipes


def check_recipe(recipe: MixRecipe, info: Callable[[str], MixSource]) -> None:
    """Raise ``MixtureError`` when a recipe breaks the mixing rules."""
    a, b = (info(c.clip_id) for c in recipe.clips)
    if not compatible(a, b):
        raise MixtureError(f"{recipe.mix_id}: {a.clip_id} and {b.clip_id} share a group or class, or are both ambiences")
    if recipe.kind == "background" and recipe.clips[1].gain_db - recipe.clips[0].gain_db > -6.0:
        raise MixtureError(f"{recipe.mix_id}: the background must be at least 6 dB quieter")
    if recipe.kind not in KINDS:
        raise MixtureError(f"{recipe.mix_id}: unknown kind {recipe.kind!r}")
