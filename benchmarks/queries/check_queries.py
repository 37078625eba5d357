#!/usr/bin/env python3
"""Validate the hand-written evaluation query files against the corpus manifest.

Checks (stdlib only, no project imports):

reworded.jsonl
  * every line is a JSON object with query, clip_id, split, sound_class, avoided
  * clip_id exists in the manifest; split and sound_class match the manifest
  * split is one of val/test/ood; at most 2 queries per sound_class; no duplicate clip_id
  * no query token shares a stem with any content word of any caption of its clip,
    or with any word of its sound_class (tokens: lower-cased, split on non-letters;
    stemming: strip 'ing', 'es', 's', 'ed' when >= 3 letters remain, then a trailing
    'e' under the same condition, so race/racing or smile/smiled also collide)

everyday.jsonl
  * exactly 20 lines, each with a non-empty query and a non-empty `classes` list (the sound
    classes a user would accept), optionally `caption_words` (an accepted clip's captions must
    hold one of these words: "woman screaming" accepts a `scream` clip of a woman, not of a man)
  * every class exists in the manifest and at least one clip is accepted; no duplicates

Prints every violation and exits 1 if there are any.
"""
import csv
import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MANIFEST = ROOT / "assets" / "corpus" / "manifest.csv"
REWORDED = HERE / "reworded.jsonl"
EVERYDAY = HERE / "everyday.jsonl"

STOP = set("""
a an the of in on at to into onto from by with without through over under along
across around past out up down off away as for than then and or but
is are was were be been being am it its it's this that these those their his her
someone something somebody anything one some
""".split())

SPLITS = {"val", "test", "ood"}
MAX_PER_CLASS = 2


def tokens(text):
    return [t for t in re.split(r"[^a-z]+", text.lower()) if t]


def stem(word):
    for suf in ("ing", "es", "s", "ed"):
        if word.endswith(suf) and len(word) - len(suf) >= 3:
            word = word[: -len(suf)]
            break
    if word.endswith("e") and len(word) - 1 >= 3:
        word = word[:-1]
    return word


def content_stems(text):
    return {stem(t) for t in tokens(text) if t not in STOP}


def load_manifest():
    with open(MANIFEST, newline="", encoding="utf-8") as f:
        return {row["clip_id"]: row for row in csv.DictReader(f)}


def load_jsonl(path, errors):
    rows = []
    if not path.exists():
        errors.append(f"{path.name}: file missing")
        return rows
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            errors.append(f"{path.name}:{n}: blank line")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{path.name}:{n}: bad JSON ({e})")
            continue
        if not isinstance(obj, dict):
            errors.append(f"{path.name}:{n}: not a JSON object")
            continue
        rows.append((n, obj))
    return rows


def check_reworded(man, errors):
    rows = load_jsonl(REWORDED, errors)
    per_class = Counter()
    per_split = Counter()
    seen = Counter()
    for n, q in rows:
        where = f"reworded.jsonl:{n}"
        missing = [k for k in ("query", "clip_id", "split", "sound_class", "avoided") if k not in q]
        if missing:
            errors.append(f"{where}: missing keys {missing}")
            continue
        cid = q["clip_id"]
        seen[cid] += 1
        row = man.get(cid)
        if row is None:
            errors.append(f"{where}: unknown clip_id {cid!r}")
            continue
        if q["split"] not in SPLITS:
            errors.append(f"{where}: split {q['split']!r} not in {sorted(SPLITS)}")
        if q["split"] != row["split"]:
            errors.append(f"{where}: split {q['split']!r} != manifest {row['split']!r}")
        if q["sound_class"] != row["sound_class"]:
            errors.append(f"{where}: sound_class {q['sound_class']!r} != manifest {row['sound_class']!r}")
        if not isinstance(q["avoided"], list) or not q["avoided"]:
            errors.append(f"{where}: `avoided` must be a non-empty list")
        per_class[row["sound_class"]] += 1
        per_split[row["split"]] += 1

        forbidden = {}
        for col in ("caption_1", "caption_2", "caption_3"):
            for t in tokens(row[col]):
                if t not in STOP:
                    forbidden.setdefault(stem(t), t)
        for t in row["sound_class"].lower().split("_"):
            if t:
                forbidden.setdefault(stem(t), t)
        for t in tokens(q["query"]):
            if t in STOP:
                continue
            s = stem(t)
            if s in forbidden:
                errors.append(
                    f"{where}: query {q['query']!r} token {t!r} matches caption/class word "
                    f"{forbidden[s]!r} of {cid}")
    for cid, c in seen.items():
        if c > 1:
            errors.append(f"reworded.jsonl: clip_id {cid} used {c} times")
    for cls, c in per_class.items():
        if c > MAX_PER_CLASS:
            errors.append(f"reworded.jsonl: sound_class {cls!r} used {c} times (max {MAX_PER_CLASS})")
    if len(rows) < 66:
        errors.append(f"reworded.jsonl: {len(rows)} queries (need >= 66)")
    return rows, per_split, per_class


def accepted(query, man):
    """The clip ids an everyday query accepts: of one of its classes, and (with
    `caption_words`) with one of those words in a caption."""
    words = [w.lower() for w in query.get("caption_words", [])]
    out = []
    for cid, row in man.items():
        if row["sound_class"] not in query["classes"]:
            continue
        text = " ".join(row[c] for c in ("caption_1", "caption_2", "caption_3")).lower()
        if not words or any(w in text for w in words):
            out.append(cid)
    return out


def check_everyday(man, errors):
    rows = load_jsonl(EVERYDAY, errors)
    if len(rows) != 20:
        errors.append(f"everyday.jsonl: {len(rows)} lines (need exactly 20)")
    queries = Counter()
    for n, q in rows:
        where = f"everyday.jsonl:{n}"
        if not isinstance(q.get("query"), str) or not q["query"].strip():
            errors.append(f"{where}: missing/empty query")
            continue
        queries[q["query"].strip().lower()] += 1
        classes, words = q.get("classes"), q.get("caption_words", [])
        if not isinstance(classes, list) or not classes or len(set(classes)) != len(classes):
            errors.append(f"{where}: `classes` must be a non-empty list without repeats")
            continue
        known = {row["sound_class"] for row in man.values()}
        errors += [f"{where}: unknown sound_class {c!r}" for c in classes if c not in known]
        if not accepted(q, man):
            errors.append(f"{where}: no clip of the corpus is accepted")
    for qq, c in queries.items():
        if c > 1:
            errors.append(f"everyday.jsonl: query {qq!r} appears {c} times")
    return rows


def main():
    man = load_manifest()
    errors = []
    rw, per_split, per_class = check_reworded(man, errors)
    ev = check_everyday(man, errors)
    for e in errors:
        print("VIOLATION:", e)
    print(f"reworded.jsonl: {len(rw)} queries, per split {dict(sorted(per_split.items()))}, "
          f"{len(per_class)} distinct sound classes")
    print(f"everyday.jsonl: {len(ev)} queries")
    for _, q in ev:
        print(f"  {q.get('query')!r}: {len(accepted(q, man)) if q.get('classes') else 0} clips accepted")
    if errors:
        print(f"FAILED: {len(errors)} violation(s)")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
