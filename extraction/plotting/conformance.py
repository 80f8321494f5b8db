"""The conformance matrix as a verdict grid: architectures down, strategies across, verdict colours.

Built from the matrix's JSON (:meth:`extraction.conformance.matrix.ConformanceMatrix.to_dict`), so the
dashboard can draw a committed ``docs/conformance.json`` without running anything. Each cell
carries its verdict word and icon (never colour alone) and, on hover, the cause kind, the
largest relative L2 error and the cause.
"""

from __future__ import annotations

import textwrap

import plotly.graph_objects as go

from .style import VERDICT_COLORS, VERDICT_ICONS, finish_figure

#: A cell whose layout could not run on the architecture.
SKIPPED_COLOR = "#BBBBBB"
GRID_VERDICTS = (*VERDICT_COLORS, "skipped")
_COLORS = {**VERDICT_COLORS, "skipped": SKIPPED_COLOR}
_ICONS = {**VERDICT_ICONS, "skipped": "–"}


def measured_architectures(matrix: dict) -> list[str]:
    """The model types of ``matrix`` (its JSON) that were built and measured, in order."""
    return [name for name, entry in matrix["architectures"].items() if entry["error"] is None]


def conformance_grid_figure(matrix: dict, pooling: str = "last", architectures: list[str] | None = None) -> go.Figure:
    """Verdict grid of ``matrix`` (its JSON) under ``pooling``: one row per measured
    architecture (or those given), one column per strategy, coloured by verdict."""
    if pooling not in matrix["settings"]["poolings"]:
        raise ValueError(f"pooling {pooling!r} not in this matrix; valid: {', '.join(matrix['settings']['poolings'])}")
    names = architectures if architectures is not None else measured_architectures(matrix)
    strategies = matrix["settings"]["strategies"]
    levels = {verdict: k for k, verdict in enumerate(GRID_VERDICTS)}
    z, text, hover = [], [], []
    for name in names:
        cells = matrix["architectures"][name]["pooling"].get(pooling, {})
        z.append([levels[cells[s]["verdict"]] + 0.5 if s in cells else None for s in strategies])  # mid-step
        text.append([f"{_ICONS[cells[s]['verdict']]} {cells[s]['verdict']}" if s in cells else "" for s in strategies])
        hover.append([_hover(name, s, cells.get(s)) for s in strategies])
    count = len(GRID_VERDICTS)
    # A stepped colour scale: level k is drawn in verdict k's colour, whatever the range shown.
    scale = []
    for k, verdict in enumerate(GRID_VERDICTS):
        scale += [[k / count, _COLORS[verdict]], [(k + 1) / count, _COLORS[verdict]]]
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=strategies,
            y=names,
            text=text,
            texttemplate="%{text}",
            hovertext=hover,
            hoverinfo="text",
            colorscale=scale,
            zmin=0,
            zmax=count,
            showscale=False,
            xgap=2,
            ygap=2,
        )
    )
    for trace in figure.data:
        trace.textfont = {"size": 11}
    figure.update_yaxes(autorange="reversed", title_text="architecture (tiny-random:<model_type>)")
    figure.update_xaxes(side="top")
    versions = matrix["versions"]
    return finish_figure(
        figure,
        f"Conformance: every strategy on every architecture, {pooling} pooling",
        height=max(300, 24 * len(names) + 160),
        subtitle=f"transformers {versions['transformers']}, torch {versions['torch']}, "
        f"{matrix['settings']['dtype']}; blue exact, yellow drift, red corrupted, grey could not run",
    )


def _hover(name: str, strategy: str, cell: dict | None) -> str:
    if cell is None:
        return f"{name} x {strategy}: not measured"
    worst = "" if cell["max_relative_l2"] is None else f", max relative L2 {cell['max_relative_l2']:.2g}"
    cause = "<br>".join(textwrap.wrap(cell["cause"], 80))
    return f"<b>{name} x {strategy}</b>: {cell['verdict']} ({cell['cause_kind'] or 'skipped'}{worst})<br>{cause}"
