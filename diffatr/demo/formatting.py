"""Text for the page built from handler responses: result tables and cards, status lines,
the skipped-files table, notices as objects, Markdown escaping of the user's text.

Pure functions of the JSON-able responses; no Gradio (``diffatr.webapp`` puts them on the page).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from diffatr.demo.messages import Notice


def hits_table(response: Mapping[str, Any]) -> list[list[Any]]:
    """Rows for a results table: rank (1-based), caption, clip (with its hidden variants),
    fused, cosine, diffusion, moved."""
    rows = []
    for hit in response.get("results", []):
        diffusion = hit.get("diffusion")
        clip = hit["clip_id"] + (f" {variants_note(hit)}" if hit.get("variants") else "")
        rows.append([hit["rank"], hit.get("caption") or "", clip, round(hit["fused"], 3),
                     round(hit["cosine"], 3), None if diffusion is None else round(diffusion, 3),
                     _moved_text(hit.get("moved", 0))])
    return rows


def variants_note(hit: Mapping[str, Any]) -> str:
    """"(+4 variants)": the clips of the hit's recording that one result per sound hides."""
    n = int(hit.get("variants") or 0)
    return f"(+{n} variant{'s' if n != 1 else ''})" if n else ""


def _moved_text(moved: int) -> str:
    if moved > 0:
        return f"▲ {moved}"
    if moved < 0:
        return f"▼ {-moved}"
    return "0"


def hit_markdown(hit: Mapping[str, Any]) -> str:
    """A short Markdown card for one text->audio result."""
    caption = hit.get("caption") or "(no caption)"
    diffusion = hit.get("diffusion")
    return _card(hit, caption, f"fused **{hit['fused']:.3f}** = cosine {hit['cosine']:.3f}"
                 + (f" + α·diffusion {diffusion:.3f}" if diffusion is not None else " (not re-ranked)")
                 + f" · places moved by the diffusion: {_moved_text(int(hit.get('moved', 0)))}")


def similar_markdown(hit: Mapping[str, Any]) -> str:
    """A short Markdown card for one audio -> audio result (its similarity to the query)."""
    return _card(hit, hit.get("caption") or "(no caption)", f"similarity **{hit['cosine']:.3f}**")


def _card(hit: Mapping[str, Any], caption: str, scores: str) -> str:
    others = [c for c in hit.get("captions", []) if c != caption]
    variants = variants_note(hit)
    lines = [f"**#{hit['rank']} · {md_escape(hit['clip_id'])}**{' ' + variants if variants else ''}: "
             f"{md_escape(caption)}", scores]
    if others:
        lines.append("also: " + "; ".join(md_escape(c) for c in others[:3]))
    source, licence = hit.get("source"), hit.get("license")
    if source or licence:
        lines.append(f"<small>source: {md_escape(str(source or 'unknown'))} · licence: "
                     f"{md_escape(str(licence or 'unknown'))}</small>")
    return "  \n".join(lines)



def md_escape(text: str) -> str:
    """The user's text (a caption, a file name) as Markdown that shows it as written: every
    ASCII punctuation mark backslash-escaped (CommonMark allows it for each), so that no tag,
    emphasis, link, LaTeX ``$`` or GFM autolink ("https://...", "www.", "a@b.org") comes of it."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def notices_of(response: Mapping[str, Any]) -> list[Notice]:
    """The notices of a handler's response, as ``Notice`` objects."""
    return [Notice(n["level"], n["text"]) for n in response.get("notices", [])]



def skipped_table(report: Mapping[str, Any]) -> list[list[str]]:
    """Rows (file, reason) of the files an upload could not use."""
    return [[s["file"], s["reason"]] for s in report.get("skipped", [])]


def status_line(response: Mapping[str, Any]) -> str:
    """A one-line summary of a search for the status text."""
    s = response["settings"]
    n = len(response["results"])
    query = _shown_query(response)
    if response.get("direction") == "audio_to_audio":
        return similar_status(response)
    per_sound = " · one result per sound" if s.get("one_per_sound") else ""
    return (f"{n} result{'s' if n != 1 else ''} for “{query}” from {response['corpus']} · K = {s['top_k_used']} re-ranked "
            f"in {s['num_inference_steps']} DDIM steps · α = {s['alpha']:g} · T = {s.get('temperature', 1.0):g} "
            f"· seed {s['seed']}{per_sound}")


def similar_status(response: Mapping[str, Any], key: str = "results") -> str:
    """A one-line summary of the sounds like a query (``key``: "similar" beside ranked captions)."""
    s = response["settings"]
    n = len(response.get(key, []))
    per_sound = ", one per sound" if s.get("one_per_sound") else ""
    return (f"{n} sound{'s' if n != 1 else ''} like “{_shown_query(response)}” ({s['similar_space']} space"
            f"{per_sound})")


def _shown_query(response: Mapping[str, Any]) -> str:
    query = str(response.get("query", ""))
    return md_escape(query if len(query) <= 60 else query[:59] + "…")  # the user's text, shown as text


def upload_status(report: Mapping[str, Any]) -> str:
    """A one-line summary of an upload."""
    skipped = len(report.get("skipped", []))
    text = f"Indexed {report['indexed']} file{'s' if report['indexed'] != 1 else ''}"
    if skipped:
        text += f", skipped {skipped}"
    return text + f". Searching now: {report['corpus']}."

