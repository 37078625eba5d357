"""Plotly figures of a diffusion re-rank trajectory, for the demo.

Input is the plain, JSON-able trajectory view that ``diffatr.demo`` builds (lists, no tensors);
output is a ``plotly.graph_objects.Figure``. One figure per DDIM step (a bar chart of x_t over
the query's K candidates, the final top results highlighted) and one static heatmap of the
whole path (steps x candidates). Figures hold Python lists only (no numpy arrays), so they
serialise to plain JSON that any plotly.js renders. No I/O, no Gradio.

View keys used here: ``labels`` (K), ``x_t`` (S+1 lists of K, x_T first), ``pred_x0`` (S lists of
K), ``timesteps`` (S), ``final_rank`` (K, 0-based), ``highlight`` (how many top results),
``cosine``, ``diffusion``, ``fused`` (K each), ``query``, ``direction``.
"""

from __future__ import annotations

from typing import Any, Mapping

import plotly.graph_objects as go

__all__ = ["step_title", "trajectory_heatmap", "trajectory_step_figure", "empty_figure"]

# Colours: the final top results stand out; the rest stay quiet.
TOP_COLOUR = "#f97316"  # orange
OTHER_COLOUR = "#94a3b8"  # slate
PRED_COLOUR = "#1d4ed8"  # blue markers: the model's current x0 estimate
LABEL_CHARS = 22  # axis labels are cut here (hover shows the full text)
HEIGHT = 400


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


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _axis_labels(view: Mapping[str, Any]) -> list[str]:
    # The cosine position makes every label unique, even when two captions are equal.
    return [f"{i + 1}. {_short(str(label))}" for i, label in enumerate(view["labels"])]


def _y_range(view: Mapping[str, Any]) -> list[float]:
    values = [v for row in view["x_t"] for v in row] + [v for row in view.get("pred_x0", []) for v in row]
    low, high = min(values + [-1.0]), max(values + [1.0])
    pad = 0.08 * (high - low)
    return [low - pad, high + pad]


def trajectory_step_figure(view: Mapping[str, Any], step: int) -> go.Figure:
    """Bars of x_t over the K candidates at one DDIM step.

    Candidates are in cosine order (the order the denoiser saw them); the final top results are
    orange and labelled with their final rank. From step 1 on, blue diamonds show the x0
    estimate the model made on the way to this step. The y range is fixed over the whole
    trajectory so that consecutive steps compare.

    Args:
        view: the trajectory view (see the module docstring).
        step: 0 (x_T) .. S (x_0); clamped.

    Returns:
        The figure.
    """
    s = num_steps(view)
    step = max(0, min(int(step), s))
    labels = _axis_labels(view)
    k_top = int(view.get("highlight", 0))
    final_rank = list(view["final_rank"])
    is_top = [r < k_top for r in final_rank]
    x_t = [round(float(v), 5) for v in view["x_t"][step]]
    hover = [
        f"<b>{label}</b><br>x_t = {x:.3f}<br>cosine = {c:.3f}<br>final rank {r + 1} "
        f"(cosine rank {i + 1}, moved {i - r:+d})"
        for i, (label, x, c, r) in enumerate(zip(view["labels"], x_t, view["cosine"], final_rank, strict=True))
    ]
    fig = go.Figure()
    fig.add_bar(
        x=labels, y=x_t, name="x_t",
        marker={"color": [TOP_COLOUR if t else OTHER_COLOUR for t in is_top]},
        text=[f"#{r + 1}" if t else "" for r, t in zip(final_rank, is_top, strict=True)], textposition="outside",
        hovertext=hover, hoverinfo="text",
    )
    if step >= 1 and view.get("pred_x0"):
        pred = [round(float(v), 5) for v in view["pred_x0"][step - 1]]
        fig.add_scatter(x=labels, y=pred, mode="markers", name="x̂0 estimate",
                        marker={"symbol": "diamond", "size": 8, "color": PRED_COLOUR},
                        hovertemplate="x̂0 = %{y:.3f}<extra></extra>")
    query = str(view.get("query", ""))
    fig.update_layout(
        title={"text": f"{step_title(view, step)}<br><sup>query: {_short(query) if len(query) > 60 else query}"
                       "  ·  orange = final top results</sup>", "x": 0.01},
        yaxis={"title": {"text": "x_t"}, "range": _y_range(view), "zeroline": True},
        xaxis={"tickangle": -35, "categoryorder": "array", "categoryarray": labels},
        height=HEIGHT, margin={"l": 50, "r": 10, "t": 70, "b": 110}, template="plotly_white",
        showlegend=True, legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
        bargap=0.25, uirevision="trajectory",
    )
    return fig


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
