"""Plotly figures of a diffusion re-rank trajectory, for the demo.

Input is the plain, JSON-able trajectory view that ``diffatr.demo`` builds (lists, no tensors);
output is plotly JSON or a ``plotly.graph_objects.Figure``. One figure per DDIM step (horizontal
bars: the distribution over the query's K candidates at that step, the final top results
highlighted) and one static heatmap of the whole path (steps x candidates). Figures hold Python
lists only (no numpy arrays), so they serialise to plain JSON that any plotly.js renders. No
I/O, no Gradio.

View keys used here: ``labels`` (K), ``x_t`` (S+1 lists of K, x_T first), ``pred_x0`` (S lists of
K), ``timesteps`` (S), ``final_rank`` (K, 0-based), ``highlight`` (how many top results),
``cosine``, ``diffusion``, ``fused`` (K each), ``query``, ``direction``; ``distribution`` (S+1 lists of
K: softmax(x_T), then softmax(x̂0 x CE scale) per step), ``gen_rank`` (K), ``ce_scale``.
"""

from __future__ import annotations

import html
from typing import Any, Mapping

import plotly.graph_objects as go

__all__ = ["empty_figure", "step_title", "trajectory_heatmap", "trajectory_step_figure", "trajectory_step_spec"]

# Colours: the final top results stand out; the rest stay quiet.
TOP_COLOUR = "#f97316"  # orange
OTHER_COLOUR = "#94a3b8"  # slate
PRED_COLOUR = "#1d4ed8"  # blue markers: the model's current x0 estimate
LABEL_CHARS = 22  # axis labels are cut here (hover shows the full text)
HEIGHT = 400
ROW_PX = 19  # one horizontal bar per candidate


def empty_figure(message: str = "Search to see the diffusion re-rank the candidates") -> go.Figure:
    """A blank figure with a centred message (shown before the first search)."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": 14, "color": "#64748b"})
    fig.update_layout(height=HEIGHT, xaxis={"visible": False}, yaxis={"visible": False},
                      margin={"l": 20, "r": 20, "t": 40, "b": 20}, template="plotly_white")
    return fig


def num_steps(view: Mapping[str, Any]) -> int:
    """S: the number of DDIM steps in the view (x_t has S + 1 rows)."""
    return len(view["x_t"]) - 1


def step_title(view: Mapping[str, Any], step: int) -> str:
    """``"step 3 / 50 (t = 46)"``-style caption; step 0 is the noise x_T, step S is x_0."""
    s = num_steps(view)
    if step <= 0:
        return f"step 0 / {s}: x_T, pure noise"
    if step >= s:
        return f"step {s} / {s}: x_0, the generated distribution"
    return f"step {step} / {s} (t = {int(view['timesteps'][step])})"


def plot_text(text: Any) -> str:
    """Text (a query, a caption, a file name) as Plotly must show it: as it is. Plotly reads a
    subset of HTML in every title, axis label and hover text (``<b>`` bold, ``<a href>`` a
    link); its entities are drawn as their characters."""
    return html.escape(str(text), quote=False)


def _short(label: str, chars: int = LABEL_CHARS) -> str:
    return label if len(label) <= chars else label[: chars - 1] + "…"


def _axis_labels(view: Mapping[str, Any]) -> list[str]:
    # The cosine position makes every label unique, even when two captions are equal.
    return [f"{i + 1}. {plot_text(_short(str(label)))}" for i, label in enumerate(view["labels"])]


def _x_range(view: Mapping[str, Any]) -> list[float]:
    """One x range for every step, fitted to the largest probability the trajectory reaches."""
    top = max((v for row in view["distribution"] for v in row), default=1.0)
    return [0.0, min(1.0, 1.08 * top) if top > 0 else 1.0]


def trajectory_step_spec(view: Mapping[str, Any], step: int) -> dict[str, Any]:
    """The figure of one DDIM step as plain plotly JSON (dicts and lists): cheap to build and
    to send for every step of an animation (no figure objects, no validation).

    Horizontal bars, one per candidate (top to bottom in cosine order, the order the denoiser
    saw them, so that the K = 32 labels stay readable): the distribution over the candidates at
    this step, ``view["distribution"][step]``: at step 0 the start noise x_T read as one
    (softmax(x_T)), from step 1 on softmax(x̂0 x CE scale), the distribution the model was
    trained to generate. The final top results are orange and carry their final (fused) rank
    and the diffusion's own (Gen) rank. The x range is fixed over the trajectory.

    Args:
        view: the trajectory view (see the module docstring).
        step: 0 (x_T) .. S (x_0); clamped.

    Returns:
        {"data": [...], "layout": {...}}.
    """
    s = num_steps(view)
    step = max(0, min(int(step), s))
    labels = _axis_labels(view)
    k_top = int(view.get("highlight", 0))
    final_rank = list(view["final_rank"])
    gen_rank = list(view.get("gen_rank") or final_rank)
    is_top = [r < k_top for r in final_rank]
    probs = [round(float(v), 5) for v in view["distribution"][step]]
    x_t = view["x_t"][step]
    hover = [
        f"<b>{plot_text(label)}</b><br>p = {p:.3f} (x_t = {float(x):.3f})<br>cosine rank {i + 1} · cosine {c:.3f}"
        f"<br>Gen rank {g + 1} · final rank {r + 1} (moved {i - r:+d})"
        for i, (label, p, x, c, g, r) in enumerate(zip(view["labels"], probs, x_t, view["cosine"], gen_rank,
                                                       final_rank, strict=True))
    ]
    ce = view.get("ce_scale", 1.0)
    what = "start noise x_T as a distribution, softmax(x_T)" if step == 0 else \
        f"the distribution the model generates, softmax(x̂0 × {ce:g})"
    query = str(view.get("query", ""))
    return {
        "data": [{
            "type": "bar", "orientation": "h", "x": probs, "y": labels, "name": "p",
            "marker": {"color": [TOP_COLOUR if t else OTHER_COLOUR for t in is_top]},
            "text": [f"#{r + 1} (Gen #{g + 1})" if t else "" for r, g, t in zip(final_rank, gen_rank, is_top)],
            "textposition": "outside", "cliponaxis": False, "hovertext": hover, "hoverinfo": "text",
        }],
        "layout": {
            "title": {"text": f"{step_title(view, step)}<br><sup>query: {plot_text(_short(query, 60))}"
                              f"<br>{what} · orange: final top, #fused rank (Gen rank)</sup>", "x": 0.01},
            "xaxis": {"title": {"text": "probability"}, "range": _x_range(view), "zeroline": True},
            # A fixed left margin for the (cut) labels: automargin would re-layout every frame.
            "yaxis": {"categoryorder": "array", "categoryarray": labels, "autorange": "reversed",
                      "tickfont": {"size": 11}},
            "height": max(HEIGHT, ROW_PX * len(labels) + 140), "template": "plotly_white",
            "margin": {"l": 8 + 7 * max((len(label) for label in labels), default=4), "r": 90, "t": 95, "b": 50}, "bargap": 0.2, "showlegend": False,
            "uirevision": "trajectory",
        },
    }


def trajectory_step_figure(view: Mapping[str, Any], step: int) -> go.Figure:
    """``trajectory_step_spec`` as a plotly Figure (for notebooks and image export; the app
    streams the spec itself)."""
    return go.Figure(trajectory_step_spec(view, step))


def trajectory_heatmap(view: Mapping[str, Any], step: int | None = None) -> go.Figure:
    """The whole DDIM path at once: rows are steps (x_T at the top, x_0 at the bottom), columns
    the K candidates in cosine order, colour = x_t. Final top results are marked on the axis.

    Args:
        view: the trajectory view.
        step: if given, a line marks that step.

    Returns:
        The figure.
    """
    s = num_steps(view)
    labels = _axis_labels(view)
    k_top = int(view.get("highlight", 0))
    ticks = [f"<b>{label}</b>" if r < k_top else label for label, r in zip(labels, view["final_rank"], strict=True)]
    z = [[round(float(v), 4) for v in row] for row in view["x_t"]]
    rows = list(range(s + 1))
    fig = go.Figure(go.Heatmap(
        z=z, x=ticks, y=rows, colorscale="RdBu", reversescale=True, zmid=0.0,
        colorbar={"title": {"text": "x_t"}},
        hovertemplate="%{x}<br>step %{y}<br>x_t = %{z:.3f}<extra></extra>",
    ))
    if step is not None:
        fig.add_hline(y=max(0, min(int(step), s)), line={"color": "black", "width": 2, "dash": "dot"})
    fig.update_layout(
        title={"text": f"Whole trajectory: {s} DDIM steps x {len(labels)} candidates"
                       "<br><sup>bold = final top results</sup>", "x": 0.01},
        yaxis={"title": {"text": "step (0 = x_T noise)"}, "autorange": "reversed"},
        xaxis={"tickangle": -35},
        height=HEIGHT, margin={"l": 60, "r": 10, "t": 70, "b": 110}, template="plotly_white",
    )
    return fig
