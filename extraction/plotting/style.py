"""Shared look of every figure: strategy colours and dashes, verdict colours, log-scale
floors, text labels, and the title/axis/layout finish every builder applies.

Colours: one colour per strategy (:func:`strategy_color`), the same on every figure;
the naive (buggy) strategies are drawn in warm colours with dashed lines, the correct
ones in cool colours with solid lines, so the line style alone also tells them apart.
Verdict colours (:data:`VERDICT_COLORS`, keyed by :data:`~extraction.verdicts.VERDICTS`)
are Paul Tol's high-contrast scheme (blue, yellow, red), distinguishable with the common
colour-vision deficiencies and in grey scale; the UI also writes the verdict word and an
icon, never colour alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from ..strategies import REFERENCE, STRATEGIES
from ..verdicts import VERDICTS, Verdict

if TYPE_CHECKING:
    from ..comparison.compare import ComparisonReport

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
#: exact / drift / corrupted: Paul Tol's high-contrast scheme, one entry per verdict word.
VERDICT_COLORS: dict[Verdict, str] = dict(zip(VERDICTS, ("#004488", "#DDAA33", "#BB5566"), strict=True))
#: Text colour readable on each verdict colour.
VERDICT_TEXT_COLORS: dict[Verdict, str] = dict(zip(VERDICTS, ("#FFFFFF", "#000000", "#FFFFFF"), strict=True))
VERDICT_ICONS: dict[Verdict, str] = dict(zip(VERDICTS, ("✔", "≈", "✘"), strict=True))

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
    """Line dash of strategy ``name``: dashed for naive (buggy) variants, dotted for the reference.

    A name no strategy is registered under is drawn solid.
    """
    if name == REFERENCE:
        return "dot"
    return "dash" if name in STRATEGIES and STRATEGIES[name].naive else "solid"


def verdict_color(verdict: str) -> str:
    """Colour of ``verdict`` (one of :data:`~extraction.verdicts.VERDICTS`)."""
    if verdict not in VERDICT_COLORS:
        raise ValueError(f"unknown verdict {verdict!r}; valid: {', '.join(VERDICTS)}")
    return VERDICT_COLORS[verdict]


def rgba(hex_color: str, alpha: float) -> str:
    """``#RRGGBB`` -> ``rgba(r,g,b,alpha)``."""
    red, green, blue = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def chosen_strategies(report: ComparisonReport, strategies: Sequence[str] | None, include_reference: bool) -> list[str]:
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


def layer_axis(figure: go.Figure, num_layers: int, row: int | None = None, col: int | None = None) -> None:
    """The x axis of a per-layer figure: every hidden_states index, 0 = embeddings."""
    figure.update_xaxes(
        title_text="layer (hidden_states index; 0 = embeddings)",
        range=[-0.5, num_layers - 0.5],
        dtick=1 if num_layers <= 16 else 2,
        row=row,
        col=col,
    )


def finish_figure(figure: go.Figure, title: str, height: int = 460, subtitle: str | None = None) -> go.Figure:
    """Title (and subtitle), template, height, legend title and margins shared by every figure."""
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
