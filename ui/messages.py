"""Messages, badges, colours and card numbers: how the pages say a verdict, a cause or an error.

``show_error(message_or_exception)`` (one ``st.error`` line, never a traceback),
``verdict_badge(verdict)`` (HTML), ``strategy_color(name)`` (the same colour as in every figure),
``card_numbers(...)`` (the headline numbers of a verdict card).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from extraction.comparison.compare import ComparisonReport
from extraction.plotting.style import VERDICT_COLORS, VERDICT_ICONS, VERDICT_TEXT_COLORS, strategy_color
from extraction.pooling import POOLING_SUMMARY, Pooling
from extraction.verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE, EXACT_COSINE
from extraction.views.predictions import LM_HEAD_ONLY_LAST, NOT_APPLICABLE, has_lm_head


def show_error(error: BaseException | str, prefix: str | None = None) -> None:
    """One ``st.error`` line (never a traceback): ``prefix: message``."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, BaseException) and not isinstance(error, ValueError):
        message = f"{type(error).__name__}: {message}"
    st.error(f"{prefix}: {message}" if prefix else message, icon="🚫")


def verdict_badge(verdict: str) -> str:
    """An HTML badge: icon, word and a colour-blind-safe colour (for ``st.markdown(..., unsafe_allow_html=True)``)."""
    background = VERDICT_COLORS.get(verdict, "#777777")
    color = VERDICT_TEXT_COLORS.get(verdict, "#FFFFFF")
    icon = VERDICT_ICONS.get(verdict, "?")
    return (
        f'<span style="background:{background};color:{color};padding:0.15em 0.6em;'
        f'border-radius:0.4em;font-weight:600">{icon} {verdict}</span>'
    )


#: Metrics side by side at most: six in one row of a wide page cut a value such as "-0.040123".
METRICS_PER_ROW = 3


def metric_row(items: Sequence[tuple[str, str, str | None]]) -> None:
    """Metrics (``st.metric``), one column each, in rows of at most :data:`METRICS_PER_ROW`:
    ``(label, value, help)``."""
    for start in range(0, len(items), METRICS_PER_ROW):
        row = items[start : start + METRICS_PER_ROW]
        for column, (label, value, help_text) in zip(st.columns(METRICS_PER_ROW), row, strict=False):
            column.metric(label, value, help=help_text)


def cause_message(likely_cause: str | None, cause: str, verdict: str = "corrupted") -> None:
    """The cause of a verdict: success when there is none to find (``likely_cause`` None), a
    warning when it is ``"unknown"`` or the states only drift (rounding of another dtype or
    other kernels: usable, not wrong), otherwise an error naming it."""
    if likely_cause is None:
        st.success(cause, icon="✅")
    elif likely_cause == "unknown":
        st.warning(f"**unknown**: {cause}", icon="❓")
    elif verdict != "corrupted":
        st.warning(f"**{likely_cause}**: {cause}", icon="🔎")
    else:
        st.error(f"**{likely_cause}**: {cause}", icon="🔎")


def card_numbers(min_cosine: float, top1_agreement: float | None, max_relative_l2: float | None = None) -> str:
    """HTML: the headline numbers of a verdict card (min cosine, max relative L2 when given,
    top-1 agreement, "n/a" when None: outside ``last`` pooling), side by side, sized to fit a narrow card."""

    def cell(label: str, value: str, help_text: str) -> str:
        return (
            f'<div title="{help_text}"><div style="font-size:0.85rem;color:#555">{label}</div>'
            f'<div style="font-size:1.45rem;font-variant-numeric:tabular-nums;line-height:1.3">{value}</div></div>'
        )

    cosine_text = "NaN" if min_cosine != min_cosine else f"{min_cosine:.6f}"
    relative = ""
    if max_relative_l2 is not None:
        relative_text = "NaN" if max_relative_l2 != max_relative_l2 else f"{max_relative_l2:.4f}"
        relative = cell(
            "max rel. L2",
            relative_text,
            f"largest |h - h_single| / |h_single| over texts and layers; above {CORRUPTED_RELATIVE_L2}: corrupted",
        )
    return (
        '<div style="display:flex;gap:1.5rem;flex-wrap:wrap;margin:0.2rem 0 0.6rem 0">'
        + cell("min cosine", cosine_text, "lowest cosine similarity to single over all texts and layers")
        + relative
        + (
            cell("top-1 agreement", NOT_APPLICABLE, LM_HEAD_ONLY_LAST)
            if top1_agreement is None
            else cell("top-1 agreement", f"{top1_agreement:.0%}", "texts whose lm_head top-1 token equals single's")
        )
        + "</div>"
    )


def pooling_line(report: ComparisonReport) -> str:
    """Markdown: the pooling a run's results show, and what it keeps of each text."""
    pooling = report.pooling
    line = f"**Pooling:** `{pooling}` ({POOLING_SUMMARY[pooling]}"
    if pooling == "tokens":
        line += (
            ", compared token by token: a text's figures are its worst token's, and a text with another "
            "number of rows than `single` gives is corrupted"
        )
    return line + ")."


def lm_head_unavailable(report: ComparisonReport, what: str) -> bool:
    """True, after an ``st.info`` saying why, when ``report``'s pooling has no lm_head measures
    (``what``: the chart or table that is not drawn); False under ``last``."""
    if has_lm_head(report):
        return False
    st.info(f"{what}: not drawn for pooling `{report.pooling}`. {LM_HEAD_ONLY_LAST}", icon="ℹ️")
    return True


def verdict_rule(pooling: Pooling) -> str:
    """Markdown: the verdict rule as it applies under ``pooling`` (the top-1 part under ``last`` only)."""
    same_top1 = " and the same top-1 next token for every text" if pooling == "last" else ""
    rows = "; under `tokens`, a text with another number of rows than `single`'s" if pooling == "tokens" else ""
    return (
        f"**exact**: min cosine ≥ {EXACT_COSINE} over all texts and layers{same_top1}; **drift**: min cosine ≥ "
        f"{DRIFT_COSINE}; **corrupted**: anything else, any relative L2 error above {CORRUPTED_RELATIVE_L2} "
        f"(cosine misses errors along a massive-activation dimension), or NaN/inf{rows}. `single` is the reference."
    )


def summary_table(report: ComparisonReport) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(frame, column_config) of Home's summary table: :meth:`ComparisonReport.summary_frame`,
    with top-1 agreement and mean KL shown as "n/a" where the pooling has no lm_head measures."""
    frame = report.summary_frame()
    config = {
        "min_cosine": st.column_config.NumberColumn("min cosine", format="%.6f"),
        "mean_cosine": st.column_config.NumberColumn("mean cosine", format="%.6f"),
        "max_relative_l2": st.column_config.NumberColumn("max relative L2", format="%.4f"),
        "cause_kind": st.column_config.TextColumn("cause kind"),
        "top1_agreement": st.column_config.NumberColumn("top-1 agreement", format="percent"),
        "mean_kl": st.column_config.NumberColumn("mean KL (nats)", format="%.2e"),
        "pad_fraction": st.column_config.NumberColumn("padding", format="percent"),
        "tokens_per_second": st.column_config.NumberColumn("tokens/s", format="%.0f"),
        "cause": st.column_config.TextColumn("cause", width="large"),
    }
    if not has_lm_head(report):
        for column, label in (("top1_agreement", "top-1 agreement"), ("mean_kl", "mean KL (nats)")):
            frame[column] = NOT_APPLICABLE
            config[column] = st.column_config.TextColumn(label, help=LM_HEAD_ONLY_LAST)
    return frame, config


def strategy_cause_line(report: ComparisonReport, name: str) -> str:
    """``"name: verdict. cause"`` for captions."""
    comparison = report.strategies[name]
    return f"**{name}**: {comparison.verdict}. {comparison.cause}"


def strategy_chip(name: str) -> str:
    """HTML: the strategy name with its colour swatch (for ``st.markdown(..., unsafe_allow_html=True)``)."""
    return (
        f'<span style="display:inline-block;width:0.8em;height:0.8em;border-radius:0.2em;'
        f'background:{strategy_color(name)};margin-right:0.35em"></span><code>{name}</code>'
    )
