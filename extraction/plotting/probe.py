"""The probe-impact figures: validation accuracy next to inference accuracy per strategy (of a
:class:`~extraction.probing.probe.ProbeReport`, or of one layer of a
:class:`~extraction.probing.sweep.ProbeSweep` with error bars), the gap across layers with its
band (:func:`probe_sweep_figure`), and the labels of their tables' columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..probing.interval import Interval, mean_interval
from ..strategies import REFERENCE
from ..verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE
from .style import finish_figure, rgba, strategy_color, strategy_dash

if TYPE_CHECKING:
    from ..probing.probe import ProbeReport
    from ..probing.sweep import ProbeSweep

#: The two bars of each strategy on the probe figure: blue (solid) and orange (hatched), a
#: colour-blind-safe pair that the hatching also tells apart in grey scale.
PROBE_SAME_COLOR = "#4477AA"
PROBE_SINGLE_COLOR = "#EE7733"
PROBE_LM_HEAD_COLOR = "#000000"

#: How the columns of :meth:`~extraction.probing.probe.ProbeReport.to_frame` and
#: :meth:`~extraction.probing.sweep.ProbeSweep.to_frame` are shown in a table:
#: ``{column: (kind, label, number format, help)}``.
PROBE_TABLE_COLUMNS: dict[str, tuple[str, str, str | None, str | None]] = {
    "accuracy_same": (
        "number",
        "accuracy, same strategy",
        "percent",
        "On the strategy's own test states (validation).",
    ),
    "accuracy_single": ("number", "accuracy, single-sample", "percent", "On single-sample test states (inference)."),
    "gap": ("number", "gap", "percent", "accuracy_same - accuracy_single (mean over the splits)"),
    "gap_low": ("number", "gap, 95% low", "percent", "t-interval over the seeded splits"),
    "gap_high": ("number", "gap, 95% high", "percent", "t-interval over the seeded splits"),
    "significant": ("checkbox", "significant", None, "The gap's 95% interval excludes 0."),
    "train_accuracy": ("number", "train accuracy", "percent", "On its own training states."),
    "lm_head_accuracy": (
        "number",
        "zero-shot lm_head",
        "percent",
        "argmax over the label tokens of lm_head on the strategy's final-layer test states (last layer only)",
    ),
    "lm_head_gap": (
        "number",
        "lm_head gap",
        "percent",
        "zero-shot lm_head on the strategy's final states - on single-sample ones (last layer only)",
    ),
    "lm_head_gap_low": ("number", "lm_head gap, 95% low", "percent", None),
    "lm_head_gap_high": ("number", "lm_head gap, 95% high", "percent", None),
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
    "corrupted_fraction": (
        "number",
        "corrupted states",
        "percent",
        f"States (all texts) with cosine < {DRIFT_COSINE} or relative L2 > {CORRUPTED_RELATIVE_L2} "
        "to single's at this layer.",
    ),
    "extraction_seconds": ("number", "extraction (s)", "%.1f", None),
}


def probe_accuracy_figure(report: ProbeReport) -> go.Figure:
    """Grouped bars per strategy: the probe's accuracy on the strategy's own test states (what
    validation shows) next to its accuracy on single-sample test states (what inference sees),
    with the zero-shot ``lm_head`` accuracy as a diamond where the labels are single tokens and
    the majority-class rate of the test split as a dotted line."""
    frame = report.to_frame()
    counts = np.bincount(report.test_labels)
    majority = float(counts.max() / counts.sum()) if counts.sum() else 0.0
    subtitle = (
        f"{report.model}, layer {report.layer} of {report.num_layers}; {len(report.test_indices)} test texts "
        f"of {report.num_texts} ({report.data_source})"
    )
    frame = frame.rename(columns={"corrupted_test_fraction": "corrupted_fraction"})
    return _accuracy_bars(frame, majority, "Probe accuracy: validation vs inference", subtitle)


def probe_layer_figure(sweep: ProbeSweep, layer: int) -> go.Figure:
    """The single-layer view of a sweep: :func:`probe_accuracy_figure`'s bars at ``layer``, each the
    mean over the seeded splits with its 95% interval as an error bar; ``lm_head`` diamonds only at
    the last layer (the only one lm_head reads)."""
    frame = sweep.layer_frame(layer)
    j = {name: sweep.strategies.index(name) for name in frame["strategy"]}
    i = sweep.layers.index(layer)
    errors = {
        column: [mean_interval(array[i, j[name]]) for name in frame["strategy"]]
        for column, array in (("accuracy_same", sweep.accuracy_same), ("accuracy_single", sweep.accuracy_single))
    }
    subtitle = (
        f"{sweep.model}, layer {layer} of {sweep.num_layers}; mean of {len(sweep.seeds)} splits of "
        f"{sweep.num_test} test texts (of {sweep.num_texts}, {sweep.data_source}); bars: 95% interval"
    )
    return _accuracy_bars(frame, sweep.majority_rate, f"Probe accuracy at layer {layer}", subtitle, errors)


def _error_bars(intervals: list[Interval] | None) -> dict | None:
    if intervals is None or any(interval.low is None for interval in intervals):
        return None
    return {
        "type": "data",
        "symmetric": False,
        "array": [interval.high - interval.mean for interval in intervals],
        "arrayminus": [interval.mean - interval.low for interval in intervals],
        "color": "#333333",
        "thickness": 1.2,
    }


def _accuracy_bars(
    frame: pd.DataFrame,
    majority: float,
    title: str,
    subtitle: str,
    errors: dict[str, list[Interval]] | None = None,
) -> go.Figure:
    """Bars of ``accuracy_same`` and ``accuracy_single`` per ``strategy`` row of ``frame`` (with
    ``gap``, ``corrupted_fraction`` and ``lm_head_accuracy`` columns), optional error bars."""
    errors = errors or {}
    text_position = "inside" if errors else "outside"  # outside labels would sit on the error bars
    names = list(frame["strategy"])
    customdata = np.stack(
        [frame["gap"].to_numpy() * 100, frame["corrupted_fraction"].to_numpy() * 100], axis=-1
    )  # (S, 2)
    figure = go.Figure()
    for column, label, marker in (
        ("accuracy_same", "same strategy's test states (validation)", {"color": PROBE_SAME_COLOR}),
        (
            "accuracy_single",
            "single-sample test states (inference)",
            {"color": PROBE_SINGLE_COLOR, "pattern": {"shape": "/", "fgcolor": "#FFFFFF", "solidity": 0.3}},
        ),
    ):
        error_y = _error_bars(errors.get(column))
        figure.add_trace(
            _accuracy_bar(names, frame[column].to_numpy(), label, marker, customdata, text_position, error_y)
        )
    lm_head = frame["lm_head_accuracy"].to_numpy(dtype=float)
    if np.isfinite(lm_head).any():
        figure.add_trace(_lm_head_markers(names, lm_head))
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
    figure = finish_figure(figure, title, height=480, subtitle=subtitle)
    figure.update_layout(legend={"title": {"text": ""}, "orientation": "h", "y": -0.25, "x": 0})
    return figure


def _accuracy_bar(
    names: list[str],
    values: np.ndarray,
    label: str,
    marker: dict,
    customdata: np.ndarray,
    text_position: str,
    error_y: dict | None,
) -> go.Bar:
    """One accuracy per strategy as bars, labelled in percent; ``customdata`` (S, 2): gap and corrupted %."""
    return go.Bar(
        x=names,
        y=values,
        name=label,
        marker=marker,
        text=[f"{value:.0%}" for value in values],
        textposition=text_position,
        customdata=customdata,
        hovertemplate=(
            "<b>%{x}</b><br>%{fullData.name}: %{y:.1%}<br>gap (same - single): %{customdata[0]:+.1f} points"
            "<br>corrupted test states: %{customdata[1]:.0f}%<extra></extra>"
        ),
        error_y=error_y,
    )


def _lm_head_markers(names: list[str], lm_head: np.ndarray) -> go.Scatter:
    """The zero-shot ``lm_head`` accuracy per strategy, as diamonds over its bars."""
    return go.Scatter(
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


def probe_sweep_figure(sweep: ProbeSweep) -> go.Figure:
    """The gap (validation minus inference accuracy, in points) across layers: a line per strategy
    (``single``, the reference, is 0 by construction and left out) with its 95% interval over the
    splits as a band, a star at the layer where the gap is largest in size (none for a strategy
    without any gap), and 0 as a grey line: where a band covers it, that layer's gap is not
    significant."""
    figure = go.Figure()
    layers = sweep.layers
    for name in sweep.strategies:
        if name == REFERENCE:
            continue
        intervals = [sweep.gap(layer, name) for layer in layers]
        mean = np.array([100 * interval.mean for interval in intervals])  # (L,)
        if all(interval.low is not None for interval in intervals):
            figure.add_trace(_gap_band(name, layers, intervals))
        figure.add_trace(_gap_line(name, layers, intervals, mean))
        peak = sweep.largest_gap_layer(name)
        if mean[layers.index(peak)] != 0.0:  # no gap anywhere: no largest one to mark
            figure.add_trace(_largest_gap_star(name, peak, mean[layers.index(peak)]))
    figure.add_hline(y=0, line={"color": "#777777", "width": 1})
    figure.update_xaxes(
        title_text="layer (hidden_states index; 0 = embeddings)",
        range=[layers[0] - 0.5, layers[-1] + 0.5],
        dtick=1 if len(layers) <= 16 else 2,
    )
    figure.update_yaxes(title_text="gap: validation - inference accuracy (points)", zeroline=False)
    subtitle = (
        f"{sweep.model}; {sweep.data_source}, {sweep.num_texts} texts; mean of {len(sweep.seeds)} stratified splits "
        f"({sweep.num_test} test texts each); band: 95% interval; star: largest gap"
    )
    return finish_figure(figure, "Probe gap across layers: where validation lies", height=480, subtitle=subtitle)


def _gap_band(name: str, layers: list[int], intervals: list[Interval]) -> go.Scatter:
    """The strategy's 95% interval of the gap across layers, in points, as a filled band."""
    low = [100 * interval.low for interval in intervals]
    high = [100 * interval.high for interval in intervals]
    return go.Scatter(
        x=list(layers) + list(layers)[::-1],
        y=high + low[::-1],
        mode="lines",
        fill="toself",
        fillcolor=rgba(strategy_color(name), 0.18),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=name,
        name=f"{name} 95% interval",
    )


def _gap_line(name: str, layers: list[int], intervals: list[Interval], mean: np.ndarray) -> go.Scatter:
    """The strategy's mean gap per layer, ``mean`` (L,) in points; the hover gives its interval."""
    customdata = [
        [
            100 * (interval.low if interval.low is not None else np.nan),
            100 * (interval.high if interval.high is not None else np.nan),
            "significant" if interval.significant else "no significant gap",
        ]
        for interval in intervals
    ]
    return go.Scatter(
        x=layers,
        y=mean,
        mode="lines+markers",
        name=name,
        legendgroup=name,
        line={"color": strategy_color(name), "dash": strategy_dash(name), "width": 2},
        marker={"size": 5},
        customdata=customdata,
        hovertemplate=(
            f"<b>{name}</b>, layer %{{x}}<br>gap %{{y:+.1f}} points<br>95%% interval "
            "%{customdata[0]:+.1f} to %{customdata[1]:+.1f}<br>%{customdata[2]}<extra></extra>"
        ).replace("%%", "%"),
    )


def _largest_gap_star(name: str, peak: int, gap: float) -> go.Scatter:
    """A star at ``peak``, the layer where the strategy's gap (points) is largest in size."""
    color = strategy_color(name)
    return go.Scatter(
        x=[peak],
        y=[gap],
        mode="markers+text",
        marker={"symbol": "star", "size": 16, "color": color, "line": {"color": "#000000", "width": 1}},
        text=[f"{gap:+.1f} at {peak}"],
        textposition="top center",
        textfont={"color": color},
        name=f"{name}: largest gap (layer {peak})",
        legendgroup=name,
        showlegend=False,
        hovertemplate=f"<b>{name}</b>: largest gap, layer {peak}<extra></extra>",
    )
