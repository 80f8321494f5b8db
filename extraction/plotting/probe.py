"""The probe-impact figure of a :class:`~extraction.probe.ProbeReport` (validation accuracy
next to inference accuracy, per strategy) and the labels of its table's columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from ..verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE
from .style import finish_figure

if TYPE_CHECKING:
    from ..probe import ProbeReport

#: The two bars of each strategy on the probe figure: blue (solid) and orange (hatched), a
#: colour-blind-safe pair that the hatching also tells apart in grey scale.
PROBE_SAME_COLOR = "#4477AA"
PROBE_SINGLE_COLOR = "#EE7733"
PROBE_LM_HEAD_COLOR = "#000000"

#: How the columns of :meth:`~extraction.probe.ProbeReport.to_frame` are shown in a table:
#: ``{column: (kind, label, number format, help)}``.
PROBE_TABLE_COLUMNS: dict[str, tuple[str, str, str | None, str | None]] = {
    "accuracy_same": (
        "number",
        "accuracy, same strategy",
        "percent",
        "On the strategy's own test states (validation).",
    ),
    "accuracy_single": ("number", "accuracy, single-sample", "percent", "On single-sample test states (inference)."),
    "gap": ("number", "gap", "percent", "accuracy_same - accuracy_single"),
    "lm_head_accuracy": (
        "number",
        "zero-shot lm_head",
        "percent",
        "argmax over the label tokens of lm_head on the strategy's final-layer test states",
    ),
    "prediction_flips": (
        "number",
        "predictions changed",
        "percent",
        "Test texts whose prediction differs between the two.",
    ),
    "corrupted_test_fraction": (
        "number",
        "corrupted test states",
        "percent",
        f"Test states with cosine < {DRIFT_COSINE} or relative L2 > {CORRUPTED_RELATIVE_L2} to single's "
        "(verdicts.corrupted_rows).",
    ),
    "extraction_seconds": ("number", "extraction (s)", "%.1f", None),
}


def probe_accuracy_figure(report: ProbeReport) -> go.Figure:
    """Grouped bars per strategy: the probe's accuracy on the strategy's own test states (what
    validation shows) next to its accuracy on single-sample test states (what inference sees),
    with the zero-shot ``lm_head`` accuracy as a diamond where the labels are single tokens and
    the majority-class rate of the test split as a dotted line."""
    frame = report.to_frame()
    names = list(frame["strategy"])
    same = frame["accuracy_same"].to_numpy()
    single = frame["accuracy_single"].to_numpy()
    gap = frame["gap"].to_numpy()
    customdata = np.stack([gap * 100, frame["corrupted_test_fraction"].to_numpy() * 100], axis=-1)  # (S, 2)
    hover = (
        "<b>%{x}</b><br>%{fullData.name}: %{y:.1%}<br>gap (same - single): %{customdata[0]:+.1f} points"
        "<br>corrupted test states: %{customdata[1]:.0f}%<extra></extra>"
    )
    figure = go.Figure()
    figure.add_trace(
        go.Bar(
            x=names,
            y=same,
            name="same strategy's test states (validation)",
            marker={"color": PROBE_SAME_COLOR},
            text=[f"{value:.0%}" for value in same],
            textposition="outside",
            customdata=customdata,
            hovertemplate=hover,
        )
    )
    figure.add_trace(
        go.Bar(
            x=names,
            y=single,
            name="single-sample test states (inference)",
            marker={"color": PROBE_SINGLE_COLOR, "pattern": {"shape": "/", "fgcolor": "#FFFFFF", "solidity": 0.3}},
            text=[f"{value:.0%}" for value in single],
            textposition="outside",
            customdata=customdata,
            hovertemplate=hover,
        )
    )
    lm_head = frame["lm_head_accuracy"].to_numpy(dtype=float)
    if np.isfinite(lm_head).any():
        figure.add_trace(
            go.Scatter(
                x=names,
                y=lm_head,
                mode="markers",
                name="zero-shot lm_head on the strategy's final states",
                marker={
                    "symbol": "diamond",
                    "size": 11,
                    "color": PROBE_LM_HEAD_COLOR,
                    "line": {"color": "#FFFFFF", "width": 1},
                },
                hovertemplate="<b>%{x}</b><br>zero-shot lm_head: %{y:.1%}<extra></extra>",
            )
        )
    counts = np.bincount(report.test_labels)
    majority = float(counts.max() / counts.sum()) if counts.sum() else 0.0
    figure.add_hline(y=majority, line={"dash": "dot", "color": "#777777"})
    # Named in the legend rather than annotated on the plot, where it would cover the bars.
    figure.add_trace(
        go.Scatter(
            x=[None],
            y=[None],
            mode="lines",
            line={"dash": "dot", "color": "#777777"},
            name=f"majority class of the test split ({majority:.0%})",
        )
    )
    figure.update_layout(barmode="group", bargap=0.25, bargroupgap=0.05)
    figure.update_xaxes(title_text="strategy the probe's training states were extracted with")
    figure.update_yaxes(title_text="test accuracy", range=[0, 1.12], tickformat=".0%")
    subtitle = (
        f"{report.model}, layer {report.layer} of {report.num_layers}; {len(report.test_indices)} test texts "
        f"of {report.num_texts} ({report.data_source})"
    )
    figure = finish_figure(figure, "Probe accuracy: validation vs inference", height=480, subtitle=subtitle)
    figure.update_layout(legend={"title": {"text": ""}, "orientation": "h", "y": -0.25, "x": 0})
    return figure
