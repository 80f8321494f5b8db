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
#: The same for :func:`~extraction.views.audit.per_text_frame`.
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


#: Roles of the tokens in :func:`defect_figure`'s strip, and their colours (Okabe-Ito).
TOKEN_ROLE_COLORS = {
    "text": "#BBBBBB",  # the text's own tokens, as single-sample extraction reads them
    "added": "#E69F00",  # a token the pipeline added (a BOS, <|im_start|>)
    "dropped": "#56B4E9",  # a token of the text the pipeline dropped
    "cut": "#CC79A7",  # tokens truncation cut off
    "pad": "#D55E00",  # pads the pipeline read (or attended)
    "read": "#009E73",  # the position the pipeline read instead of the last (read-position)
}
MAX_STRIP_TOKENS = 40  # tokens drawn before the middle of a long strip is elided


def defect_tokens(hypothesis, tokens: list[str]) -> list[tuple[str, str]] | None:
    """What the pipeline fed the model for one text, as ``[(token, role), ...]`` (roles of
    :data:`TOKEN_ROLE_COLORS`), from a reproduced hypothesis' evidence and the text's own
    ``tokens``; None for a cause this picture does not show (pure)."""
    evidence = hypothesis.evidence
    strip = [(t, "text") for t in tokens]
    edits = [evidence.get("edit")] if hypothesis.name == "special-tokens" else []
    edits += [also["edit"] for also in evidence.get("also", []) if also.get("name") == "special-tokens"]
    for edit in [e for e in edits if e]:
        if edit["change"] == "added":
            added = [(t, "added") for t in (edit.get("tokens") or [edit.get("token") or edit.get("string")])]
            strip = [*added, *strip] if edit["where"] == "start" else [*strip, *added]
        else:
            k = 0 if edit["where"] == "start" else len(strip) - 1
            strip[k] = (strip[k][0], "dropped")
    if hypothesis.name == "truncated":
        cut = evidence.get("max_length")
        cut = min(cut) if isinstance(cut, list) else cut
        if cut is None:
            return None
        kept = range(cut) if evidence.get("side") == "right" else range(len(strip) - cut, len(strip))
        strip = [(t, role if k in kept else "cut") for k, (t, role) in enumerate(strip)]
    elif hypothesis.name == "right-naive":
        padded = evidence.get("padded_length_by_row", {}).get(str(hypothesis.rows_reproduced[0]))
        padded = max(padded) if isinstance(padded, list) else padded
        if padded is None:
            return None
        strip += [("<pad>", "pad")] * max(0, padded - len(strip))
    elif hypothesis.name == "read-position":
        position = evidence.get("position")
        if position is None or not -len(strip) <= position < len(strip):
            return None
        k = position % len(strip)
        strip = [(t, "read" if j == k else role) for j, (t, role) in enumerate(strip)]
    elif not edits:
        return None
    return strip


def defect_figure(report: AuditReport, tokens_of) -> go.Figure | None:
    """A picture of what happened, for the likely cause: for a token added or dropped, a cut
    or pads read, the tokens the pipeline fed the model for the first reproduced text
    (``tokens_of(row)`` gives a text's own tokens), each coloured by its role; for ``order``,
    the stored row of each checked text against its own. None for other causes."""
    best = report.best_hypothesis
    if best is None or best.status != "reproduced" or not best.rows_reproduced:
        return None
    if best.name == "order":
        return _order_figure(report, best)
    row = best.rows_reproduced[0]
    strip = defect_tokens(best, tokens_of(row))
    if strip is None:
        return None
    shown = list(enumerate(strip))
    if len(shown) > MAX_STRIP_TOKENS:
        half = MAX_STRIP_TOKENS // 2
        shown = shown[:half] + [(-1, ("…", "text"))] + shown[-half:]
    figure = go.Figure()
    for role, color in TOKEN_ROLE_COLORS.items():
        xs = [x for x, (_, (_, r)) in enumerate(shown) if r == role]
        if not xs:
            continue
        figure.add_trace(
            go.Bar(
                x=xs,
                y=[1] * len(xs),
                name=role,
                marker={"color": color, "line": {"color": "#FFFFFF", "width": 2}},
                text=[shown[x][1][0] for x in xs],
                textposition="inside",
                textangle=-90,
                insidetextanchor="middle",
                customdata=[shown[x][0] + 1 for x in xs],
                hovertemplate="position %{customdata}: %{text}<extra>" + role + "</extra>",
            )
        )
    fed = [x for x, (_, (_, role)) in enumerate(shown) if role not in ("cut", "dropped")]
    if report.pooling == "last" and fed:
        figure.add_annotation(x=fed[-1], y=1, text="read here", showarrow=True, arrowhead=2, ay=-40)
    figure.update_xaxes(showticklabels=False, title_text="tokens the pipeline fed the model, in order")
    figure.update_yaxes(visible=False, range=[0, 1.4])
    figure.update_layout(bargap=0, legend={"title": {"text": "token"}})
    title = f"What happened to text {row + 1}: {best.name}"
    finish_figure(figure, title, height=300, subtitle=best.title)
    figure.update_layout(legend={"title": {"text": "token"}})
    return figure


def _order_figure(report: AuditReport, best) -> go.Figure:
    """Each checked text's row in the file against its own row: off the diagonal, moved."""
    moved = {int(t): r for t, r in best.evidence.get("row_of_text", {}).items()}
    texts = list(report.checked)
    rows = [moved.get(t, t) for t in texts]
    colors = ["#D55E00" if t in moved else "#0072B2" for t in texts]
    figure = go.Figure(
        go.Scatter(
            x=[t + 1 for t in texts],
            y=[r + 1 for r in rows],
            mode="markers",
            marker={"color": colors, "size": 9},
            hovertemplate="text %{x} is stored in row %{y}<extra></extra>",
            showlegend=False,
        )
    )
    n = report.n_texts
    diagonal = go.Scatter(x=[1, n], y=[1, n], mode="lines", line={"dash": "dot", "color": "#888888"}, showlegend=False)
    figure.add_trace(diagonal)
    figure.update_xaxes(title_text="text (its own row)")
    figure.update_yaxes(title_text="row holding its state")
    order = best.evidence.get("sorted_by_length")
    subtitle = f"{best.evidence.get('rows_moved')} texts moved" + (f"; sorted by {order} length" if order else "")
    return finish_figure(figure, "Where each text's state is stored", height=420, subtitle=subtitle)
