"""Plotly figures of a :class:`~extraction.compare.ComparisonReport` (no UI code here).

Every builder takes results and returns a ``plotly.graph_objects.Figure`` with a title,
axis labels and units, so the dashboard only renders what the package draws, and the
same figures can be saved from scripts (:func:`figure_html`).

Colours: one colour per strategy (:func:`strategy_color`), the same on every figure;
the naive (buggy) strategies are drawn in warm colours with dashed lines, the correct
ones in cool colours with solid lines, so the line style alone also tells them apart.
Verdict colours (:data:`VERDICT_COLORS`) are Paul Tol's high-contrast scheme (blue,
yellow, red), distinguishable with the common colour-vision deficiencies and in grey
scale; the UI also writes the verdict word and an icon, never colour alone.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .compare import DRIFT_COSINE, EXACT_COSINE, VERDICTS
from .strategies import REFERENCE, BatchLayout

if TYPE_CHECKING:
    from .compare import ComparisonReport, StrategyComparison

logger = logging.getLogger(__name__)

#: Okabe-Ito colours (colour-blind safe) plus two of Paul Tol's for the ninth strategy.
STRATEGY_COLORS: dict[str, str] = {
    "single": "#000000",
    "right-naive": "#D55E00",  # vermillion
    "right": "#0072B2",  # blue
    "left-naive": "#E69F00",  # orange
    "left": "#56B4E9",  # sky blue
    "bucketed": "#332288",  # indigo
    "sorted": "#44AA99",  # teal
    "packed": "#009E73",  # bluish green
    "packed-naive": "#CC79A7",  # reddish purple
}
#: Colours for strategies registered later, handed out in a fixed order by name.
_FALLBACK_COLORS = ("#882255", "#999933", "#AA4499", "#117733", "#661100", "#6699CC", "#888888")

#: exact / drift / corrupted: Paul Tol's high-contrast scheme.
VERDICT_COLORS: dict[str, str] = {"exact": "#004488", "drift": "#DDAA33", "corrupted": "#BB5566"}
#: Text colour readable on each verdict colour.
VERDICT_TEXT_COLORS: dict[str, str] = {"exact": "#FFFFFF", "drift": "#000000", "corrupted": "#FFFFFF"}
VERDICT_ICONS: dict[str, str] = {"exact": "✔", "drift": "≈", "corrupted": "✘"}

#: Floor of ``1 - cosine`` on log scales. Cosines are stored in float32, whose spacing
#: just below 1 is 6e-8: ``1 - cosine`` is either 0 (identical to that precision, drawn
#: here) or at least 6e-8. (fp32 noise of relative size 1e-6 gives 1 - cosine of about
#: 5e-13, below that resolution: the relative L2 figure shows it.)
COSINE_LOG_FLOOR = 1e-9
#: Floor of other log-scaled values (relative L2 error, KL), which are exactly 0 when identical.
LOG_FLOOR = 1e-15


def strategy_color(name: str) -> str:
    """The colour of strategy ``name``, the same in every figure and page."""
    if name in STRATEGY_COLORS:
        return STRATEGY_COLORS[name]
    return _FALLBACK_COLORS[sum(name.encode()) % len(_FALLBACK_COLORS)]


def strategy_dash(name: str) -> str:
    """Line dash of strategy ``name``: dashed for naive (buggy) variants, dotted for the reference."""
    if name == REFERENCE:
        return "dot"
    return "dash" if name.endswith("-naive") else "solid"


def verdict_color(verdict: str) -> str:
    """Colour of ``verdict`` (one of :data:`~extraction.compare.VERDICTS`)."""
    if verdict not in VERDICT_COLORS:
        raise ValueError(f"unknown verdict {verdict!r}; valid: {', '.join(VERDICTS)}")
    return VERDICT_COLORS[verdict]


# --- tables behind the figures -----------------------------------------------------------


def top_k_frame(report: ComparisonReport, decode: Callable[[int], str], k: int = 5) -> pd.DataFrame:
    """Top ``k`` next tokens per text, for the reference and every strategy.

    The distribution is ``softmax(logits)`` at the position each strategy read, which is
    what ``lm_head`` gives on the strategy's extracted final state. One row per
    (strategy, text, rank) with columns ``strategy, text, rank, token_id, token,
    probability``; ``decode`` maps a token id to its text.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rows = []
    for name, comparison in report.strategies.items():
        logits = comparison.extraction.logits
        if logits is None:
            continue
        probabilities = torch.softmax(logits.double(), dim=-1)  # (N, V)
        top = probabilities.topk(min(k, probabilities.shape[-1]), dim=-1)
        for text in range(probabilities.shape[0]):
            for rank, (token, probability) in enumerate(
                zip(top.indices[text].tolist(), top.values[text].tolist(), strict=True), start=1
            ):
                rows.append(
                    {
                        "strategy": name,
                        "text": text,
                        "rank": rank,
                        "token_id": token,
                        "token": decode(token),
                        "probability": probability,
                    }
                )
    return pd.DataFrame(rows, columns=["strategy", "text", "rank", "token_id", "token", "probability"])


# --- helpers ---------------------------------------------------------------------------------


def _rgba(hex_color: str, alpha: float) -> str:
    """``#RRGGBB`` -> ``rgba(r,g,b,alpha)``."""
    red, green, blue = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def _chosen(report: ComparisonReport, strategies: Sequence[str] | None, include_reference: bool) -> list[str]:
    """Strategy names of ``report`` to draw, in report order; unknown names raise ``ValueError``."""
    available = list(report.strategies)
    if strategies is None:
        names = available
    else:
        unknown = [name for name in strategies if name not in report.strategies]
        if unknown:
            raise ValueError(f"strategies not in this report: {', '.join(unknown)}; available: {', '.join(available)}")
        names = [name for name in available if name in strategies]
    return [name for name in names if include_reference or name != REFERENCE]


def text_label(index: int, text: str, width: int = 36) -> str:
    """``"3: Once upon a time…"``: a 1-based text number and the start of the text."""
    flat = " ".join(text.split())
    return f"{index + 1}: {flat if len(flat) <= width else flat[: width - 1] + '…'}"


def _layer_axis(figure: go.Figure, num_layers: int, row: int | None = None, col: int | None = None) -> None:
    figure.update_xaxes(
        title_text="layer (hidden_states index; 0 = embeddings)",
        range=[-0.5, num_layers - 0.5],
        dtick=1 if num_layers <= 16 else 2,
        row=row,
        col=col,
    )


def _finish(figure: go.Figure, title: str, height: int = 460, subtitle: str | None = None) -> go.Figure:
    heading: dict = {"text": title, "x": 0, "xanchor": "left"}
    if subtitle:
        heading["subtitle"] = {"text": subtitle, "font": {"size": 12, "color": "#555555"}}
    figure.update_layout(
        title=heading,
        template="plotly_white",
        height=height,
        legend={"title": {"text": "strategy"}},
        margin={"l": 70, "r": 30, "t": 100 if subtitle else 70, "b": 60},
        hovermode="closest",
    )
    return figure


def figure_html(figure: go.Figure) -> str:
    """A standalone HTML page of ``figure`` (plotly.js embedded: it opens offline)."""
    return figure.to_html(include_plotlyjs=True, full_html=True)


# --- layers ----------------------------------------------------------------------------------


def cosine_by_layer_figure(
    report: ComparisonReport, strategies: Sequence[str] | None = None, include_reference: bool = False
) -> go.Figure:
    """Cosine similarity to single-sample extraction per layer: one line per strategy (mean
    over texts) with a shaded band down to the minimum over texts.

    ``cos(h, h_single) = h . h_single / (|h| |h_single|)`` for each text's last-token state.
    """
    figure = go.Figure()
    layers = list(range(report.num_layers))
    for name in _chosen(report, strategies, include_reference):
        comparison = report.strategies[name]
        color = strategy_color(name)
        minimum = comparison.per_layer_min_cosine
        mean = comparison.per_layer_mean_cosine
        figure.add_trace(
            go.Scatter(
                x=layers,
                y=minimum,
                mode="lines",
                line={"width": 0.5, "color": color},
                legendgroup=name,
                showlegend=False,
                name=f"{name} (min)",
                hovertemplate=f"{name}<br>layer %{{x}}<br>min cosine %{{y:.6f}}<extra></extra>",
            )
        )
        figure.add_trace(
            go.Scatter(
                x=layers,
                y=mean,
                mode="lines+markers",
                line={"color": color, "dash": strategy_dash(name), "width": 2.5},
                marker={"size": 5},
                fill="tonexty",
                fillcolor=_rgba(color, 0.15),
                legendgroup=name,
                name=name,
                hovertemplate=f"{name}<br>layer %{{x}}<br>mean cosine %{{y:.6f}}<extra></extra>",
            )
        )
    figure.update_yaxes(title_text="cosine similarity to single (1 = identical)")
    _layer_axis(figure, report.num_layers)
    return _finish(
        figure,
        "Cosine similarity to single-sample extraction, per layer",
        subtitle="Line: mean over texts; shaded band: down to the minimum over texts. 1 = identical.",
    )


def one_minus_cosine_figure(
    report: ComparisonReport, strategies: Sequence[str] | None = None, include_reference: bool = False
) -> go.Figure:
    """``1 - min cosine`` over texts per layer, on a log scale, with the verdict thresholds.

    Drift of 1e-6 and corruption of 0.5 are both readable. Values below
    :data:`COSINE_LOG_FLOOR` (exact agreement gives 0, or a rounding-level negative) are drawn
    at the floor.
    """
    figure = go.Figure()
    layers = list(range(report.num_layers))
    for name in _chosen(report, strategies, include_reference):
        worst = 1.0 - report.strategies[name].cosine.nan_to_num(-1.0).min(0).values.double()  # (L,)
        figure.add_trace(
            go.Scatter(
                x=layers,
                y=worst.clamp(min=COSINE_LOG_FLOOR).tolist(),
                customdata=worst.tolist(),
                mode="lines+markers",
                line={"color": strategy_color(name), "dash": strategy_dash(name), "width": 2.5},
                marker={"size": 5},
                name=name,
                hovertemplate=f"{name}<br>layer %{{x}}<br>1 - min cosine %{{customdata:.3e}}<extra></extra>",
            )
        )
    thresholds = (
        (1 - EXACT_COSINE, f"exact below this line (cosine ≥ {EXACT_COSINE})"),
        (1 - DRIFT_COSINE, f"corrupted above this line (cosine < {DRIFT_COSINE})"),
    )
    for threshold, label in thresholds:
        figure.add_hline(y=threshold, line={"color": "#555555", "dash": "dot", "width": 1})
        # On a log axis, an annotation's y is the log10 of the value.
        figure.add_annotation(
            x=0,
            xref="paper",
            xanchor="left",
            y=np.log10(threshold),
            yanchor="bottom",
            text=label,
            showarrow=False,
            font={"size": 11, "color": "#555555"},
        )
    figure.update_yaxes(
        type="log",
        title_text="1 - min cosine over texts (log scale)",
        exponentformat="power",
        range=[np.log10(COSINE_LOG_FLOOR) - 0.5, 0.5],
    )
    _layer_axis(figure, report.num_layers)
    return _finish(
        figure,
        "Distance from single-sample extraction: 1 - cosine of the worst text, per layer (log scale)",
        subtitle=(
            f"Identical states (to float32 precision) give 0, drawn at {COSINE_LOG_FLOOR:.0e}: "
            "the lines of exact strategies overlap there."
        ),
    )


def cosine_heatmap_figure(comparison: StrategyComparison, texts: Sequence[str], log_scale: bool = False) -> go.Figure:
    """Text-by-layer heatmap of one strategy's cosine similarity to single.

    With ``log_scale`` the colour is ``log10(max(1 - cosine, COSINE_LOG_FLOOR))`` instead.
    """
    cosine = comparison.cosine.double()  # (N, L)
    n, num_layers = cosine.shape
    if len(texts) != n:
        raise ValueError(f"{len(texts)} texts given for a comparison of {n} texts")
    labels = [text_label(i, text) for i, text in enumerate(texts)]
    if log_scale:
        z = torch.log10((1.0 - cosine).clamp(min=COSINE_LOG_FLOOR)).tolist()
        colorbar = {"title": {"text": "log10(1 - cos)"}}
        zmin, zmax = np.log10(COSINE_LOG_FLOOR), 0.0
        colorscale = "Cividis"
    else:
        z = cosine.tolist()
        colorbar = {"title": {"text": "cosine"}}
        finite = cosine[torch.isfinite(cosine)]
        zmin = min(float(finite.min()) if finite.numel() else 0.0, 0.99)
        zmax = 1.0
        colorscale = "Cividis"
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(num_layers)),
            y=list(range(n)),
            customdata=cosine.tolist(),
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            colorbar=colorbar,
            xgap=1,
            ygap=1,
            hovertemplate="text %{y}<br>layer %{x}<br>cosine %{customdata:.6f}<extra></extra>",
        )
    )
    figure.update_yaxes(
        title_text="text", tickvals=list(range(n)), ticktext=labels, autorange="reversed", tickfont={"size": 11}
    )
    _layer_axis(figure, num_layers)
    scale = "log10(1 - cosine)" if log_scale else "cosine similarity"
    return _finish(figure, f"{comparison.name}: {scale} to single, per text and layer", height=max(320, 120 + 26 * n))


def relative_l2_figure(
    report: ComparisonReport, strategies: Sequence[str] | None = None, include_reference: bool = False
) -> go.Figure:
    """Relative L2 error ``|h - h_single| / |h_single|`` per layer: the worst text, log scale."""
    figure = go.Figure()
    layers = list(range(report.num_layers))
    for name in _chosen(report, strategies, include_reference):
        worst = report.strategies[name].relative_l2.double().nan_to_num(float("inf")).max(0).values  # (L,)
        figure.add_trace(
            go.Scatter(
                x=layers,
                y=worst.clamp(min=LOG_FLOOR).tolist(),
                customdata=worst.tolist(),
                mode="lines+markers",
                line={"color": strategy_color(name), "dash": strategy_dash(name), "width": 2.5},
                marker={"size": 5},
                name=name,
                hovertemplate=f"{name}<br>layer %{{x}}<br>max relative L2 %{{customdata:.3e}}<extra></extra>",
            )
        )
    figure.update_yaxes(type="log", title_text="max relative L2 error over texts (log scale)", exponentformat="power")
    _layer_axis(figure, report.num_layers)
    return _finish(figure, "Relative L2 error |h - h_single| / |h_single| of the worst text, per layer")


# --- predictions -----------------------------------------------------------------------------


def top1_kl_figure(
    report: ComparisonReport, strategies: Sequence[str] | None = None, include_reference: bool = False
) -> go.Figure:
    """Two bar charts per strategy: top-1 agreement of ``lm_head`` on the extracted final
    state with the single-sample model (percent of texts), and the mean
    ``KL(p_single || p_strategy)`` of the next-token distributions (nats, log scale)."""
    names = _chosen(report, strategies, include_reference)
    figure = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("lm_head top-1 = model's top-1 (% of texts)", "mean KL(single || strategy), nats"),
        horizontal_spacing=0.12,
    )
    colors = [strategy_color(name) for name in names]
    agreement = [100 * report.strategies[name].top1_agreement for name in names]
    kl = [float(report.strategies[name].kl.double().mean()) for name in names]
    figure.add_trace(
        go.Bar(
            x=names,
            y=agreement,
            marker_color=colors,
            text=[f"{value:.0f}%" for value in agreement],
            textposition="outside",
            showlegend=False,
            hovertemplate="%{x}<br>top-1 agreement %{y:.1f}%<extra></extra>",
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Bar(
            x=names,
            y=[max(value, LOG_FLOOR) if value == value else None for value in kl],
            customdata=kl,
            marker_color=colors,
            text=[f"{value:.1e}" for value in kl],
            textposition="outside",
            showlegend=False,
            hovertemplate="%{x}<br>mean KL %{customdata:.3e} nats<extra></extra>",
        ),
        row=1,
        col=2,
    )
    figure.update_yaxes(title_text="agreement (%)", range=[0, 115], row=1, col=1)
    figure.update_yaxes(
        title_text="KL (nats, log scale)",
        type="log",
        exponentformat="power",
        range=[np.log10(LOG_FLOOR) - 0.5, max(0.5, np.log10(max([v for v in kl if v == v] + [1.0])) + 1)],
        row=1,
        col=2,
    )
    figure.update_xaxes(title_text="strategy", tickangle=-30)
    return _finish(figure, "Next-token predictions from the extracted states vs the single-sample model")


def logit_lens_figure(
    report: ComparisonReport, strategies: Sequence[str] | None = None, include_reference: bool = False
) -> go.Figure:
    """Logit-lens agreement per layer: the share of texts whose top-1 token of
    ``lm_head(final_norm(h))`` (the last layer without the extra norm) equals single's."""
    figure = go.Figure()
    layers = list(range(report.num_layers))
    for name in _chosen(report, strategies, include_reference):
        agreement = (100 * report.strategies[name].logit_lens_agreement.double()).tolist()
        figure.add_trace(
            go.Scatter(
                x=layers,
                y=agreement,
                mode="lines+markers",
                line={"color": strategy_color(name), "dash": strategy_dash(name), "width": 2.5},
                marker={"size": 5},
                name=name,
                hovertemplate=f"{name}<br>layer %{{x}}<br>agreement %{{y:.0f}}%<extra></extra>",
            )
        )
    figure.update_yaxes(title_text="texts whose logit-lens top-1 = single's (%)", range=[-5, 105])
    _layer_axis(figure, report.num_layers)
    return _finish(figure, "Logit lens: does each layer's state predict the same token as single's? (per layer)")


# --- batch layouts ---------------------------------------------------------------------------

#: Background colours of the texts in a layout picture (light, so the token text stays readable).
_SEGMENT_COLORS = ("#A6CEE3", "#FDBF6F", "#B2DF8A", "#CAB2D6", "#FFFF99", "#FB9A99", "#8DD3C7", "#D9D9D9")
_PAD_COLOR = "#FFFFFF"
#: Attention picture categories: (label, colour).
ATTENTION_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("hidden (masked or in the future)", "#FFFFFF"),
    ("sees its own text", "#0072B2"),
    ("sees ANOTHER text", "#D55E00"),
    ("sees padding", "#999999"),
)
#: Above this many columns the tokens are not written inside the cells (only hover shows them).
MAX_LABELLED_COLUMNS = 24


def plan_layouts(
    strategy: str, token_ids: Sequence[Sequence[int]], pad_id: int, batch_size: int
) -> list[tuple[list[int], BatchLayout]]:
    """The forward passes ``strategy`` makes on these texts: ``(text indices, layout)`` per pass."""
    from .strategies import get_strategy

    chosen = get_strategy(strategy)
    lengths = [len(ids) for ids in token_ids]
    groups = chosen.plan(lengths, batch_size)
    return [(group, chosen.layout([token_ids[i] for i in group], pad_id)) for group in groups]


def _display_token(token: str) -> str:
    """A token as a short, safe cell label: spaces made visible, HTML escaped."""
    shown = token.replace("\n", "⏎").replace(" ", "·") or "∅"
    return html.escape(shown if len(shown) <= 10 else shown[:9] + "…")


def batch_layout_figure(
    layout: BatchLayout, token_strings: Sequence[Sequence[str]], text_indices: Sequence[int], title: str
) -> go.Figure:
    """One forward pass as a grid: rows are batch rows, columns positions; each text has its
    own colour, padding is white with ``pad``; the small number under each token is the
    position id the model uses; a black frame marks the position read for each text.

    ``token_strings[i]`` are the decoded tokens of text ``text_indices[k]`` for segment k.
    """
    rows, cols = layout.shape
    segments = layout.segment_ids  # (B, T)
    positions = layout.effective_position_ids()  # (B, T)
    offsets = torch.zeros(len(text_indices), dtype=torch.long)
    labels, hover = [], []
    for row in range(rows):
        row_labels, row_hover = [], []
        for col in range(cols):
            segment = int(segments[row, col])
            position = int(positions[row, col])
            if segment < 0:
                token, who = "pad", "padding"
            else:
                strings = token_strings[text_indices[segment]]
                token = strings[int(offsets[segment])] if int(offsets[segment]) < len(strings) else "?"
                offsets[segment] += 1
                who = f"text {text_indices[segment] + 1}"
            # The token over its position id, smaller and grey.
            row_labels.append(f"{_display_token(token)}<br><span style='font-size:10px;color:#333'>{position}</span>")
            row_hover.append(f"{who}<br>token {html.escape(repr(token))}<br>position id {position}")
        labels.append(row_labels)
        hover.append(row_hover)
    count = len(text_indices) + 1  # padding + one category per text
    palette = [_PAD_COLOR] + [_SEGMENT_COLORS[k % len(_SEGMENT_COLORS)] for k in range(len(text_indices))]
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
    for k, text_index in enumerate(text_indices):
        figure.add_trace(
            go.Scatter(
                x=[int(layout.read_cols[k])],
                y=[int(layout.read_rows[k])],
                mode="markers",
                marker={"symbol": "square-open", "size": 30, "color": "#000000", "line": {"width": 3}},
                name="position read" if k == 0 else None,
                showlegend=k == 0,
                hovertemplate=f"text {text_index + 1} is read here<extra></extra>",
            )
        )
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
    figure = _finish(figure, title, height=max(220, 140 + 48 * rows))
    figure.update_layout(legend={"title": {"text": ""}})
    return figure


def attention_categories(layout: BatchLayout, row: int) -> torch.Tensor:
    """(T, T) long: for batch ``row``, what query position i sees at key j (index into
    :data:`ATTENTION_CATEGORIES`): 0 hidden, 1 its own text, 2 another text, 3 padding.
    A padding query counts the real tokens of its row as its own text."""
    rows, _ = layout.shape
    if not 0 <= row < rows:
        raise ValueError(f"row {row} out of range: this layout has rows 0..{rows - 1}")
    visible = layout.visibility()[row]  # (T, T)
    segments = layout.segment_ids[row]  # (T,)
    query, key = segments[:, None], segments[None, :]  # (T, 1), (1, T)
    # A pad query (segment -1) belongs to no text: the real tokens it sees are its row's own.
    category = torch.where(key < 0, 3, torch.where((key == query) | (query < 0), 1, 2))  # (T, T)
    return torch.where(visible, category, torch.zeros_like(category))


def attention_figure(
    layout: BatchLayout, row: int, token_strings: Sequence[Sequence[str]], text_indices: Sequence[int], title: str
) -> go.Figure:
    """Which positions of batch ``row`` can attend to which: query positions down, key
    positions across; red cells are a text attending to another text (a leak), grey ones
    to padding. Rows marked with an arrow are the positions read."""
    categories = attention_categories(layout, row)  # (T, T)
    cols = categories.shape[0]
    segments = layout.segment_ids[row]
    offsets: dict[int, int] = {}
    ticks = []
    for col in range(cols):
        segment = int(segments[col])
        if segment < 0:
            ticks.append("pad")
            continue
        strings = token_strings[text_indices[segment]]
        offset = offsets.get(segment, 0)
        offsets[segment] = offset + 1
        ticks.append(_display_token(strings[offset]) if offset < len(strings) else "?")
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
    read_here = [int(c) for r, c in zip(layout.read_rows.tolist(), layout.read_cols.tolist(), strict=True) if r == row]
    if read_here:
        figure.add_trace(
            go.Scatter(
                x=[-1.2] * len(read_here),
                y=read_here,
                mode="markers",
                marker={"symbol": "triangle-right", "size": 12, "color": "#000000"},
                name="position read",
                hovertemplate="read position %{y}<extra></extra>",
            )
        )
    show_ticks = cols <= MAX_LABELLED_COLUMNS
    axis = {"tickvals": list(range(cols)) if show_ticks else None, "ticktext": ticks if show_ticks else None}
    figure.update_xaxes(title_text="key position (attended to)", tickangle=-60, range=[-1.8, cols - 0.5], **axis)
    figure.update_yaxes(title_text="query position (attending)", range=[cols - 0.5, -0.5], **axis)
    figure = _finish(figure, title, height=max(380, min(760, 200 + 20 * cols)))
    figure.update_layout(legend={"title": {"text": ""}})
    return figure


def read_descriptions(
    layout: BatchLayout, token_strings: Sequence[Sequence[str]], text_indices: Sequence[int]
) -> list[str]:
    """One sentence per text of the pass: where it is read and what that position could see."""
    facts = layout.read_facts()
    segments = layout.segment_ids
    sentences = []
    for k, text_index in enumerate(text_indices):
        row, col = int(layout.read_rows[k]), int(layout.read_cols[k])
        own = segments[row] == k  # (T,)
        last_real = int(own.nonzero().max()) if own.any() else -1
        if int(segments[row, col]) < 0:
            token = "a pad token"
        else:
            offset = int(own[: col + 1].sum()) - 1
            strings = token_strings[text_index]
            token = f"'{strings[offset]}'" if 0 <= offset < len(strings) else "a token"
        position = int(facts["position_ids"][k])
        where = f"Text {text_index + 1} is read in row {row}, column {col} ({token}, position id {position})"
        alone = len(token_strings[text_index]) - 1  # the position id of its last token when run alone
        if int(segments[row, col]) != k:
            what = f"that is not its last real token (column {last_real}): the wrong state is read"
        elif bool(facts["saw_other_text"][k]):
            what = "that position attends to another text's tokens: a contaminated state"
        elif bool(facts["saw_padding"][k]):
            what = "that position attends to padding"
        elif position != alone:
            what = (
                f"its position id is {position} where it would be {alone} alone, which changes the state on "
                "models with absolute position embeddings"
            )
        else:
            what = "it sees only its own tokens, at their own positions"
        sentences.append(f"{where}: {what}.")
    return sentences


# --- probe impact ------------------------------------------------------------------------------

if TYPE_CHECKING:
    from .probe import ProbeReport

#: The two bars of each strategy on the probe figure: blue (solid) and orange (hatched), a
#: colour-blind-safe pair that the hatching also tells apart in grey scale.
PROBE_SAME_COLOR = "#4477AA"
PROBE_SINGLE_COLOR = "#EE7733"
PROBE_LM_HEAD_COLOR = "#000000"


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
    figure = _finish(figure, "Probe accuracy: validation vs inference", height=480, subtitle=subtitle)
    figure.update_layout(legend={"title": {"text": ""}, "orientation": "h", "y": -0.25, "x": 0})
    return figure


# --- audit of a stored dataset ------------------------------------------------------------------

if TYPE_CHECKING:
    from .audit import AuditReport

#: Bin edges of the audit histogram: wide where states are plainly wrong, fine near 1,
#: where drift (0.99 <= cos < 0.9999) and rounding-level differences live.
AUDIT_COSINE_EDGES = (-1.0, 0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0)
#: The audit's clean / drift / corrupted in the verdict colours (clean is compare's exact).
AUDIT_VERDICT_COLORS = {
    "clean": VERDICT_COLORS["exact"],
    "drift": VERDICT_COLORS["drift"],
    "corrupted": VERDICT_COLORS["corrupted"],
}


def audit_cosine_histogram(report: AuditReport) -> go.Figure:
    """Histogram of the stored rows' cosine similarity to fresh single-sample states (the
    worst stored layer of each checked text), over bins of :data:`AUDIT_COSINE_EDGES`,
    each bar coloured by the verdict its range implies, with the texts listed on hover."""
    values = np.asarray(report.per_row_min_cosine, dtype=float)  # (n_checked,)
    edges = AUDIT_COSINE_EDGES
    labels, counts, colors, hovers = [], [], [], []
    for number, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = number == len(edges) - 2
        inside = (values >= low) & ((values <= high) if last else (values < high))
        if number == 0:
            inside |= values < low  # rounding below -1
        if last:
            inside |= values > high  # rounding above 1
        rows = [report.checked[k] + 1 for k in np.flatnonzero(inside)]
        labels.append(f"[{low:g}, {high:g}]" if last else f"[{low:g}, {high:g})")
        counts.append(len(rows))
        verdict = "clean" if low >= EXACT_COSINE else "drift" if low >= DRIFT_COSINE else "corrupted"
        colors.append(AUDIT_VERDICT_COLORS[verdict])
        listed = ", ".join(map(str, rows[:20])) + (" …" if len(rows) > 20 else "")
        hovers.append(f"{verdict} range<br>texts: {listed}" if rows else f"{verdict} range<br>no text")
    figure = go.Figure(
        go.Bar(
            x=labels,
            y=counts,
            marker={"color": colors},
            text=[str(c) if c else "" for c in counts],
            textposition="outside",
            customdata=hovers,
            hovertemplate="cosine %{x}: %{y} texts<br>%{customdata}<extra></extra>",
            showlegend=False,
        )
    )
    figure.update_xaxes(title_text="cosine similarity to single-sample extraction (worst stored layer per text)")
    figure.update_yaxes(title_text="texts", rangemode="tozero")
    subtitle = (
        f"{report.n_checked} of {report.n_texts} texts re-extracted; colours: corrupted < {DRIFT_COSINE} "
        f"<= drift < {EXACT_COSINE} <= clean"
    )
    return _finish(figure, f"Stored states vs fresh: {report.verdict}", height=420, subtitle=subtitle)
