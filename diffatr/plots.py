"""Plotly figures of a diffusion re-rank trajectory, for the demo.

Input is the plain, JSON-able trajectory view that ``diffatr.demo`` builds (lists, no tensors);
output is plotly JSON or a ``plotly.graph_objects.Figure``. One figure per DDIM step (horizontal
bars: the distribution over the query's K candidates at that step, in the final ranking's order,
the final top results highlighted, and in words what the bars show) and one static heatmap of
the whole path (candidates x steps). The user's text is always escaped (``plot_text``). Figures hold Python
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

__all__ = ["empty_figure", "plot_text", "step_title", "step_verdict", "trajectory_heatmap", "trajectory_step_figure",
           "trajectory_step_spec"]

# Colours: the final top results stand out; the rest stay quiet.
TOP_COLOUR = "#f97316"  # orange
OTHER_COLOUR = "#94a3b8"  # slate
PRED_COLOUR = "#1d4ed8"  # blue markers: the model's current x0 estimate
LABEL_CHARS = 22  # axis labels are cut here (hover shows the full text)
HEIGHT = 400
ROW_PX = 12  # one horizontal bar per candidate (K = 32: 534 px); 11 px and Plotly drops every other label


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


def _final_order(view: Mapping[str, Any]) -> list[int]:
    """Candidate indices (cosine order) sorted by their final (fused) rank: the final #1 first."""
    return sorted(range(len(view["labels"])), key=lambda i: int(view["final_rank"][i]))


def _axis_labels(view: Mapping[str, Any], order: list[int]) -> list[str]:
    """One label per candidate, in ``order``: its final rank (unique, even when two captions are
    equal) and its name; the final top results in bold."""
    k_top = int(view.get("highlight", 0))
    labels = []
    for i in order:
        rank = int(view["final_rank"][i])
        text = f"#{rank + 1} {plot_text(_short(str(view['labels'][i])))}"
        labels.append(f"<b>{text}</b>" if rank < k_top else text)
    return labels


def _x_range(view: Mapping[str, Any]) -> list[float]:
    """One x range for every step, fitted to the largest probability the trajectory reaches."""
    top = max((v for row in view["distribution"] for v in row), default=1.0)
    return [0.0, min(1.0, 1.08 * top) if top > 0 else 1.0]


def step_verdict(view: Mapping[str, Any], step: int) -> str:
    """What the bars of ``step`` show, in words computed from the same numbers: how peaked the
    distribution is, which candidate it favours, and whether the final ranking keeps that one.

    "Nearly flat" only when the largest probability is under 1.5 times the uniform 1 / K;
    "peaked" when one candidate holds more than half of the mass; "leans" in between.
    """
    probs = [float(v) for v in view["distribution"][step]]
    k = len(probs)
    if step <= 0 or k == 0:
        return "random start noise: no preference yet"
    top = max(range(k), key=lambda i: (probs[i], -i))
    final_top = min(range(k), key=lambda i: int(view["final_rank"][i]))
    name, final_name = (plot_text(_short(str(view["labels"][i]), 30)) for i in (top, final_top))
    if probs[top] < 1.5 / k:
        return f"nearly flat (largest p = {probs[top]:.2f}, uniform = {1 / k:.2f}): no clear favourite"
    shape = "peaked on" if probs[top] > 0.5 else "leans to"
    where = "the final #1 too" if top == final_top else \
        f"<br>the diffusion alone would rank {name} first; the final ranking keeps {final_name} (cosine + α · diffusion)"
    return f"{shape} {name} (p = {probs[top]:.2f}): {where}"


def trajectory_step_spec(view: Mapping[str, Any], step: int) -> dict[str, Any]:
    """The figure of one DDIM step as plain plotly JSON (dicts and lists): cheap to build and
    to send for every step of an animation (no figure objects, no validation).

    Horizontal bars, one per candidate, in the final ranking's order at every step (the final
    top results first, orange, in bold, with their final and Gen rank): the distribution over
    the candidates at this step, ``view["distribution"][step]``: at step 0 the start noise x_T
    read as one (softmax(x_T)), from step 1 on softmax(x̂0 x CE scale), the distribution the
    model was trained to generate. The title says in words what the bars show
    (``step_verdict``), and when the diffusion's favourite is not the final #1. The x range is
    fixed over the trajectory. The user's text is escaped (``plot_text``).

    Args:
        view: the trajectory view (see the module docstring).
        step: 0 (x_T) .. S (x_0); clamped.

    Returns:
        {"data": [...], "layout": {...}}.
    """
    step = max(0, min(int(step), num_steps(view)))
    order = _final_order(view)
    labels = _axis_labels(view, order)
    k_top = int(view.get("highlight", 0))
    final_rank, cosine = view["final_rank"], view["cosine"]
    gen_rank = list(view.get("gen_rank") or final_rank)
    probs = [round(float(view["distribution"][step][i]), 5) for i in order]
    x_t = view["x_t"][step]
    hover = [f"<b>{plot_text(view['labels'][i])}</b><br>p = {p:.3f} (x_t = {float(x_t[i]):.3f})<br>cosine rank {i + 1} "
             f"· cosine {float(cosine[i]):.3f}<br>Gen rank {gen_rank[i] + 1} · final rank {final_rank[i] + 1} "
             f"(moved {i - final_rank[i]:+d})" for i, p in zip(order, probs)]
    ce = view.get("ce_scale", 1.0)
    what = "the start noise x_T, as a distribution" if step == 0 else f"softmax(x̂0 × {ce:g}), the generated distribution"
    query = plot_text(_short(str(view.get("query", "")), 60))
    return {
        "data": [{
            "type": "bar", "orientation": "h", "x": probs, "y": labels, "name": "p",
            "marker": {"color": [TOP_COLOUR if final_rank[i] < k_top else OTHER_COLOUR for i in order]},
            "text": [f"Gen #{gen_rank[i] + 1}" if final_rank[i] < k_top else "" for i in order],
            "textposition": "outside", "cliponaxis": False, "hovertext": hover, "hoverinfo": "text",
        }],
        "layout": {
            "title": {"text": f"{step_title(view, step)}<br><sup>“{query}” · {what} · Gen #: the diffusion's own rank"
                              f"<br>{step_verdict(view, step)}</sup>",
                      "x": 0.01, "font": {"size": 15}},
            "xaxis": {"range": _x_range(view), "zeroline": True},  # the title says what it is: no axis title
            # A fixed left margin for the (cut) labels: automargin would re-layout every frame.
            "yaxis": {"categoryorder": "array", "categoryarray": labels, "autorange": "reversed",
                      "tickfont": {"size": 10}},
            "height": max(HEIGHT, ROW_PX * len(labels) + 150), "template": "plotly_white",  # margins: 150
            "margin": {"l": 10 + 6 * (5 + max((min(len(str(t)), LABEL_CHARS) for t in view["labels"]), default=4)),
                       "r": 60, "t": 118, "b": 32},
            "bargap": 0.2, "showlegend": False, "uirevision": "trajectory",
        },
    }


def trajectory_step_figure(view: Mapping[str, Any], step: int) -> go.Figure:
    """``trajectory_step_spec`` as a plotly Figure (for notebooks and image export; the app
    streams the spec itself)."""
    return go.Figure(trajectory_step_spec(view, step))


def trajectory_heatmap(view: Mapping[str, Any], step: int | None = None) -> go.Figure:
    """The whole DDIM path at once, in the step figure's numbers and order: rows are the K
    candidates (final order, the final top results in bold, horizontal labels), columns the
    steps (x_T on the left, x_0 on the right), colour = the plotted distribution, on a scale
    from 0 to its largest value, so that the peaked end state shows.

    Args:
        view: the trajectory view.
        step: if given, a line marks that step.

    Returns:
        The figure.
    """
    s = num_steps(view)
    order = _final_order(view)
    labels = _axis_labels(view, order)
    dist = view["distribution"]
    z = [[round(float(dist[t][i]), 4) for t in range(s + 1)] for i in order]  # (K, S + 1)
    top = max((v for row in z for v in row), default=1.0) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(s + 1)), y=labels, colorscale="YlOrRd", zmin=0.0, zmax=top,
        colorbar={"title": {"text": "p"}, "thickness": 12},
        hovertemplate="%{y}<br>step %{x}<br>p = %{z:.3f}<extra></extra>",
    ))
    if step is not None:
        fig.add_vline(x=max(0, min(int(step), s)), line={"color": "black", "width": 2, "dash": "dot"})
    fig.update_layout(
        title={"text": f"Whole trajectory: {s} DDIM steps × {len(labels)} candidates"
                       "<br><sup>left: the start noise · right: the generated distribution · bold: your results</sup>",
               "x": 0.01, "font": {"size": 15}},
        xaxis={"title": {"text": "DDIM step (0 = x_T noise … last = x_0)"}, "tickangle": 0},
        yaxis={"autorange": "reversed", "tickfont": {"size": 10}, "automargin": True, "dtick": 1},
        height=max(HEIGHT, ROW_PX * len(labels) + 150), margin={"l": 10, "r": 10, "t": 70, "b": 50},
        template="plotly_white",
    )
    return fig
