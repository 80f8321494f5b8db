"""Figures of a :class:`~extraction.comparison.compare.ComparisonReport`: cosine and relative L2 error
per layer, the per-text heatmap, next-token top-1/KL bars and the logit lens.

Every builder takes results and returns a ``plotly.graph_objects.Figure`` with a title,
axis labels and units, so the dashboard only renders what the package draws. The layer
figures draw any pooling (a text's pooled state; under ``tokens`` its worst token); the
prediction figures exist under ``last`` pooling only and raise ``ValueError`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..verdicts import DRIFT_COSINE, EXACT_COSINE
from .style import (
    COSINE_LOG_FLOOR,
    LOG_FLOOR,
    chosen_strategies,
    finish_figure,
    layer_axis,
    rgba,
    strategy_color,
    strategy_dash,
    text_label,
)

if TYPE_CHECKING:
    from ..comparison.compare import ComparisonReport, StrategyComparison


def _with_pooling(title: str, pooling: str) -> str:
    """``title``, naming the pooling when it is not the default ``last``."""
    return title if pooling == "last" else f"{title} ({pooling} pooling)"


def _require_lm_head(report: ComparisonReport, figure: str) -> None:
    """``ValueError`` unless ``report`` has lm_head measures (``last`` pooling)."""
    if report.pooling != "last":
        raise ValueError(f"the {figure} is defined for pooling 'last' only; this report uses {report.pooling!r}")


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
    for name in chosen_strategies(report, strategies, include_reference):
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
                fillcolor=rgba(color, 0.15),
                legendgroup=name,
                name=name,
                hovertemplate=f"{name}<br>layer %{{x}}<br>mean cosine %{{y:.6f}}<extra></extra>",
            )
        )
    figure.update_yaxes(title_text="cosine similarity to single (1 = identical)")
    layer_axis(figure, report.num_layers)
    return finish_figure(
        figure,
        _with_pooling("Cosine similarity to single-sample extraction, per layer", report.pooling),
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
    for name in chosen_strategies(report, strategies, include_reference):
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
    layer_axis(figure, report.num_layers)
    return finish_figure(
        figure,
        _with_pooling(
            "Distance from single-sample extraction: 1 - cosine of the worst text, per layer (log scale)",
            report.pooling,
        ),
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
    layer_axis(figure, num_layers)
    scale = "log10(1 - cosine)" if log_scale else "cosine similarity"
    return finish_figure(
        figure,
        _with_pooling(f"{comparison.name}: {scale} to single, per text and layer", comparison.pooling),
        height=max(320, 120 + 26 * n),
    )


def relative_l2_figure(
    report: ComparisonReport, strategies: Sequence[str] | None = None, include_reference: bool = False
) -> go.Figure:
    """Relative L2 error ``|h - h_single| / |h_single|`` per layer: the worst text, log scale."""
    figure = go.Figure()
    layers = list(range(report.num_layers))
    for name in chosen_strategies(report, strategies, include_reference):
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
    layer_axis(figure, report.num_layers)
    return finish_figure(
        figure,
        _with_pooling("Relative L2 error |h - h_single| / |h_single| of the worst text, per layer", report.pooling),
    )


# --- predictions -----------------------------------------------------------------------------


def top1_kl_figure(
    report: ComparisonReport, strategies: Sequence[str] | None = None, include_reference: bool = False
) -> go.Figure:
    """Two bar charts per strategy: top-1 agreement of ``lm_head`` on the extracted final
    state with the single-sample model (percent of texts), and the mean
    ``KL(p_single || p_strategy)`` of the next-token distributions (nats, log scale).
    ``last`` pooling only."""
    _require_lm_head(report, "top-1 / KL figure")
    names = chosen_strategies(report, strategies, include_reference)
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
    return finish_figure(figure, "Next-token predictions from the extracted states vs the single-sample model")


def logit_lens_figure(
    report: ComparisonReport, strategies: Sequence[str] | None = None, include_reference: bool = False
) -> go.Figure:
    """Logit-lens agreement per layer: the share of texts whose top-1 token of
    ``lm_head(final_norm(h))`` (the last layer without the extra norm) equals single's.
    ``last`` pooling only."""
    _require_lm_head(report, "logit-lens figure")
    figure = go.Figure()
    layers = list(range(report.num_layers))
    for name in chosen_strategies(report, strategies, include_reference):
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
    layer_axis(figure, report.num_layers)
    return finish_figure(figure, "Logit lens: does each layer's state predict the same token as single's? (per layer)")
