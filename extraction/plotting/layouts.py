"""Figures of the batch layouts a strategy makes: the layout grid of one forward pass and who
attends to whom in one of its rows, with the positions pooled into each text's state marked
(the read position under ``last``; every position averaged under ``mean`` or kept under
``tokens``). What they show is computed in :mod:`extraction.views.layouts`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go

from ..pooling import Pooling
from ..strategies import BatchLayout
from ..views.layouts import ATTENTION_LABELS, POOLED_LEGEND, attention_categories, cell_tokens, pooled_cells
from .style import finish_figure

#: Background colours of the texts in a layout picture (light, so the token text stays readable).
SEGMENT_COLORS = ("#A6CEE3", "#FDBF6F", "#B2DF8A", "#CAB2D6", "#FFFF99", "#FB9A99", "#8DD3C7", "#D9D9D9")
PAD_COLOR = "#FFFFFF"
#: Colours of the attention categories, in the order of :data:`~extraction.views.layouts.ATTENTION_LABELS`.
ATTENTION_COLORS: tuple[str, ...] = ("#FFFFFF", "#0072B2", "#D55E00", "#999999")
#: Attention picture categories: (label, colour).
ATTENTION_CATEGORIES: tuple[tuple[str, str], ...] = tuple(zip(ATTENTION_LABELS, ATTENTION_COLORS, strict=True))

#: Frame colours of the pooled cells: a text's own position, a pad position (Paul Tol's red, as "corrupted").
POOLED_COLOR = "#000000"
POOLED_PAD_COLOR = "#BB5566"

#: Half the side of a pooled cell's outline, in cells (a cell spans 1; the gap between cells stays clear).
FRAME_INSET = 0.44

#: Above this many columns the tokens are not written inside the cells (only hover shows them).
MAX_LABELLED_COLUMNS = 24


def _display_token(token: str) -> str:
    """A token as a short, safe cell label: spaces made visible, HTML escaped."""
    shown = token.replace("\n", "⏎").replace(" ", "·") or "∅"
    return html.escape(shown if len(shown) <= 10 else shown[:9] + "…")


def batch_layout_figure(
    layout: BatchLayout,
    token_strings: Sequence[Sequence[str]],
    text_indices: Sequence[int],
    title: str,
    pooling: Pooling = "last",
) -> go.Figure:
    """One forward pass as a grid: rows are batch rows, columns positions; each text has its
    own colour, padding is white with ``pad``; the small number under each token is the
    position id the model uses; a black frame marks each position pooled into a text's state
    (:func:`~extraction.views.layouts.pooled_cells`: the position read under ``last``, every
    position averaged under ``mean`` or kept under ``tokens``), a red frame a pad position
    pooled (a pad state read, counted in the mean, or kept as a row).

    ``token_strings[i]`` are the decoded tokens of text ``text_indices[k]`` for segment k.
    """
    rows, cols = layout.shape
    segments = layout.segment_ids  # (B, T)
    positions = layout.effective_position_ids()  # (B, T)
    tokens = cell_tokens(layout, token_strings, text_indices)  # (B, T)
    labels, hover = [], []
    for row in range(rows):
        row_labels, row_hover = [], []
        for col in range(cols):
            segment = int(segments[row, col])
            position = int(positions[row, col])
            token = tokens[row][col]
            if token is None:
                token, who = "pad", "padding"
            else:
                who = f"text {text_indices[segment] + 1}"
            # The token over its position id, smaller and grey.
            row_labels.append(f"{_display_token(token)}<br><span style='font-size:10px;color:#333'>{position}</span>")
            row_hover.append(f"{who}<br>token {html.escape(repr(token))}<br>position id {position}")
        labels.append(row_labels)
        hover.append(row_hover)
    count = len(text_indices) + 1  # padding + one category per text
    palette = [PAD_COLOR] + [SEGMENT_COLORS[k % len(SEGMENT_COLORS)] for k in range(len(text_indices))]
    colorscale = []
    for index, color in enumerate(palette):
        colorscale += [[index / count, color], [(index + 1) / count, color]]
    figure = go.Figure(
        go.Heatmap(
            z=(segments + 1).tolist(),
            text=labels if cols <= MAX_LABELLED_COLUMNS else None,
            texttemplate="%{text}" if cols <= MAX_LABELLED_COLUMNS else None,
            textfont={"size": 12},
            hovertext=hover,
            hovertemplate="%{hovertext}<extra></extra>",
            colorscale=colorscale,
            zmin=-0.5,
            zmax=count - 0.5,
            showscale=False,
            xgap=2,
            ygap=2,
        )
    )
    _add_pooled_frames(figure, layout, text_indices, pooling)
    figure.update_xaxes(
        title_text="column in the batch (small number in a cell: position id)", dtick=1 if cols <= 40 else None
    )
    figure.update_yaxes(
        title_text="batch row",
        tickvals=list(range(rows)),
        ticktext=[f"row {r}" for r in range(rows)],
        autorange="reversed",
    )
    figure.update_layout(legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"})
    figure = finish_figure(figure, title, height=max(220, 140 + 48 * rows))
    figure.update_layout(legend={"title": {"text": ""}})
    return figure


def _add_pooled_frames(figure: go.Figure, layout: BatchLayout, text_indices: Sequence[int], pooling: Pooling) -> None:
    """Frames on the pooled cells: black on a text's own positions, red on pad positions.

    ``last``: one bold square marker per text (the position read). ``mean``/``tokens``: an
    outline inside every pooled cell, drawn in data coordinates so that it fits the cell
    whatever its width and leaves the token and its position id readable."""
    cells = pooled_cells(layout, pooling)
    for is_pad, color, label in zip(
        (False, True), (POOLED_COLOR, POOLED_PAD_COLOR), POOLED_LEGEND[pooling], strict=True
    ):
        chosen = cells["is_pad"] == is_pad
        if not bool(chosen.any()):
            continue
        rows, cols = cells["rows"][chosen].tolist(), cells["cols"][chosen].tolist()
        if pooling == "last":
            owners = [f"text {text_indices[int(k)] + 1}" for k in cells["owner"][chosen]]
            figure.add_trace(
                go.Scatter(
                    x=cols,
                    y=rows,
                    customdata=owners,
                    mode="markers",
                    marker={"symbol": "square-open", "size": 30, "color": color, "line": {"width": 3}},
                    name=label,
                    hovertemplate=f"%{{customdata}}: {label}<extra></extra>",
                )
            )
            continue
        x: list[float | None] = []
        y: list[float | None] = []
        for row, col in zip(rows, cols, strict=True):  # a closed outline per cell, None between cells
            x += [col - FRAME_INSET, col + FRAME_INSET, col + FRAME_INSET, col - FRAME_INSET, col - FRAME_INSET, None]
            y += [row - FRAME_INSET, row - FRAME_INSET, row + FRAME_INSET, row + FRAME_INSET, row - FRAME_INSET, None]
        figure.add_trace(
            go.Scatter(x=x, y=y, mode="lines", line={"color": color, "width": 2}, name=label, hoverinfo="skip")
        )


def attention_figure(
    layout: BatchLayout,
    row: int,
    token_strings: Sequence[Sequence[str]],
    text_indices: Sequence[int],
    title: str,
    pooling: Pooling = "last",
) -> go.Figure:
    """Which positions of batch ``row`` can attend to which: query positions down, key
    positions across; red cells are a text attending to another text (a leak), grey ones
    to padding. Rows marked with an arrow are the positions pooled (read under ``last``,
    averaged under ``mean``, kept under ``tokens``)."""
    categories = attention_categories(layout, row)  # (T, T)
    cols = categories.shape[0]
    ticks = [
        "pad" if token is None else _display_token(token)
        for token in cell_tokens(layout, token_strings, text_indices)[row]
    ]
    count = len(ATTENTION_CATEGORIES)
    colorscale = []
    for index, (_, color) in enumerate(ATTENTION_CATEGORIES):
        colorscale += [[index / count, color], [(index + 1) / count, color]]
    labels = [label for label, _ in ATTENTION_CATEGORIES]
    figure = go.Figure(
        go.Heatmap(
            z=categories.tolist(),
            customdata=[[labels[c] for c in line] for line in categories.tolist()],
            colorscale=colorscale,
            zmin=-0.5,
            zmax=count - 0.5,
            showscale=False,
            xgap=1,
            ygap=1,
            hovertemplate="query position %{y}<br>key position %{x}<br>%{customdata}<extra></extra>",
        )
    )
    for index, (label, color) in enumerate(ATTENTION_CATEGORIES):
        # Legend entries for the categories (the heatmap itself has no legend).
        figure.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={"symbol": "square", "size": 12, "color": color, "line": {"width": 1, "color": "#555555"}},
                name=label,
                showlegend=index > 0,
            )
        )
    cells = pooled_cells(layout, pooling)
    pooled_here = cells["cols"][cells["rows"] == row].tolist()
    if pooled_here:
        label = POOLED_LEGEND[pooling][0]
        figure.add_trace(
            go.Scatter(
                x=[-1.2] * len(pooled_here),
                y=pooled_here,
                mode="markers",
                marker={"symbol": "triangle-right", "size": 12, "color": "#000000"},
                name=label,
                hovertemplate=f"{label}: position %{{y}}<extra></extra>",
            )
        )
    show_ticks = cols <= MAX_LABELLED_COLUMNS
    axis = {"tickvals": list(range(cols)) if show_ticks else None, "ticktext": ticks if show_ticks else None}
    figure.update_xaxes(title_text="key position (attended to)", tickangle=-60, range=[-1.8, cols - 0.5], **axis)
    figure.update_yaxes(title_text="query position (attending)", range=[cols - 0.5, -0.5], **axis)
    figure = finish_figure(figure, title, height=max(380, min(760, 200 + 20 * cols)))
    figure.update_layout(legend={"title": {"text": ""}})
    return figure
