"""The audit figure of an :class:`~extraction.audit.AuditReport` (how far the stored rows are
from fresh single-sample states, binned and coloured by the verdict each range implies) and
the labels of its tables' columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from ..verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE, EXACT_COSINE, verdict_for
from .style import VERDICT_COLORS, finish_figure

if TYPE_CHECKING:
    from ..audit import AuditReport

#: Bin edges of the audit histogram: wide where states are plainly wrong, fine near 1,
#: where drift (0.99 <= cos < 0.9999) and rounding-level differences live.
AUDIT_COSINE_EDGES = (-1.0, 0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0)

#: How the columns of :meth:`~extraction.audit.AuditReport.hypotheses_frame` are shown in a
#: table: ``{column: (kind, label, number format, help)}``.
HYPOTHESES_TABLE_COLUMNS: dict[str, tuple[str, str, str | None, str | None]] = {
    "reproduction_cosine": ("number", "cosine with reproduction", "%.6f", None),
    "fresh_cosine": ("number", "cosine with fresh", "%.6f", None),
    "rows": ("text", "rows reproduced", None, None),
}
#: The same for :func:`~extraction.audit_views.per_text_frame`.
PER_TEXT_TABLE_COLUMNS: dict[str, tuple[str, str, str | None, str | None]] = {
    "text": ("number", "text #", None, None),
    "text_preview": ("text", "text", None, None),
    "min_cosine": ("number", "min cosine", "%.6f", None),
    "max_relative_l2": ("number", "max relative L2", "%.4f", None),
    "corrupted": (
        "checkbox",
        "corrupted",
        None,
        f"cosine below {DRIFT_COSINE} or relative L2 error above {CORRUPTED_RELATIVE_L2} at some stored layer",
    ),
    "lm_head_top1_stored": ("checkbox", "lm_head top-1 (stored)", None, None),
    "lm_head_top1_fresh": ("checkbox", "lm_head top-1 (fresh)", None, None),
}


def audit_cosine_histogram(report: AuditReport) -> go.Figure:
    """Histogram of the stored rows' cosine similarity to fresh single-sample states (the
    worst stored layer of each checked text), over bins of :data:`AUDIT_COSINE_EDGES`,
    each bar coloured by the verdict its range implies (the words of
    :data:`~extraction.verdicts.VERDICTS`), with the texts listed on hover."""
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
        verdict = verdict_for(low, all_top1_same=True)  # what a text in this range is called
        colors.append(VERDICT_COLORS[verdict])
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
        f"<= drift < {EXACT_COSINE} <= exact"
    )
    return finish_figure(figure, f"Stored states vs fresh: {report.verdict}", height=420, subtitle=subtitle)
