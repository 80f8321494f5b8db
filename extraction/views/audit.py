"""What the dashboard's Audit page shows of an :class:`~extraction.audit.AuditReport`,
computed (no drawing here): the headline numbers, and the per-text table with each text's
start, numbered from 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from ..audit import AuditReport

from ..verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE

#: Characters of each text shown in the per-text table.
PREVIEW_CHARS = 80


def per_text_frame(report: AuditReport, texts: Sequence[str], preview_chars: int = PREVIEW_CHARS) -> pd.DataFrame:
    """``report.to_frame()`` with a ``text_preview`` column (the first ``preview_chars`` characters
    of each checked text) second, and ``text`` numbered from 1 as people count rows."""
    frame = report.to_frame()
    frame.insert(1, "text_preview", [texts[i][:preview_chars] for i in report.checked])
    frame["text"] = frame["text"] + 1
    return frame


def headline_metrics(report: AuditReport) -> list[tuple[str, str, str | None]]:
    """The audit's headline numbers as ``(label, formatted value, help)``: min and mean cosine
    to fresh states, the largest relative L2 error, the share of corrupted texts, and
    ``lm_head`` top-1 agreement with the model on the stored and on the fresh states."""
    lm_head_help = f"Agreement with the model's own next-token prediction; {report.lm_head_note}."
    not_run = report.pooling == "last"  # a value missing under last: lm_head not run (middle layers stored)
    return [
        ("min cosine", f"{report.min_cosine:.6f}", "Over checked texts and stored layers."),
        ("mean cosine", f"{report.mean_cosine:.6f}", None),
        (
            "max relative L2",
            f"{report.max_relative_l2:.3g}",
            f"|stored - fresh| / |fresh|; above {CORRUPTED_RELATIVE_L2} states are corrupted whatever their cosine.",
        ),
        (
            "texts corrupted",
            f"{report.fraction_corrupted:.0%}",
            f"Cosine below {DRIFT_COSINE} or relative L2 above {CORRUPTED_RELATIVE_L2} at the worst stored layer.",
        ),
        ("lm_head top-1, stored", _percent(report.lm_head_accuracy_stored, not_run), lm_head_help),
        ("lm_head top-1, fresh", _percent(report.lm_head_accuracy_fresh, not_run), lm_head_help),
    ]


def _percent(value: float | None, not_run: bool = False) -> str:
    """``"83%"``, or where there is no value ``"not run"`` (lm_head was not run: middle layers stored)
    or ``"-"`` (no lm_head check outside last pooling)."""
    if value is None:
        return "not run" if not_run else "-"
    return f"{value:.0%}"


def found_source(report: AuditReport) -> str | None:
    """Where the search found the first reproduced row's state, in one line: the text, the
    position and layer read, the tokens added or the row it sits in; None when no source was
    found (an exact file, or ``unknown``)."""
    best = report.best_hypothesis
    if best is None or best.status != "reproduced" or not best.rows_reproduced:
        return None
    row, evidence = best.rows_reproduced[0], best.evidence
    where = f"row {row + 1}"
    if best.name == "read-position" and evidence.get("position") is not None:
        return f"{where}: text {row + 1}, position {evidence['position']} (token {evidence['tokens']}), same layers"
    if best.name == "order" and str(row) in evidence.get("text_of_row", {}):
        return f"{where}: text {evidence['text_of_row'][str(row)] + 1}'s correct state, last token, same layers"
    if best.name == "wrong-layer":
        return f"{where}: text {row + 1}, last token, hidden states {evidence.get('matching_layers')}"
    edit = evidence.get("edit")
    if best.name == "special-tokens" and edit:
        tokens = edit.get("tokens") or [edit.get("token")]
        return f"{where}: text {row + 1} with {tokens} {edit['change']} at the {edit['where']}, last token"
    padded = evidence.get("padded_length_by_row", {}).get(str(row))
    if padded is not None:
        return f"{where}: text {row + 1} padded to {padded} tokens ({best.name})"
    return f"{where}: text {row + 1} ({best.name})"
