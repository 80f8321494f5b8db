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

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd
import torch

from .compare import VERDICTS
from .strategies import REFERENCE

if TYPE_CHECKING:
    from .compare import ComparisonReport

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

#: 1 - cosine values below this are drawn at this floor on log scales (exact fp32 gives 0).
LOG_FLOOR = 1e-12


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
