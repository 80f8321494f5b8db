"""What the dashboard's Audit page shows of an :class:`~extraction.audit.AuditReport`,
computed (no drawing here): the headline numbers, what the sample proves about the whole store,
the rows checked, the per-text table with each text's start, numbered from 1, and the progress
text of a running audit. Also whether the page may read files by their path on the app's machine
(only with an explicit opt-in, :data:`ALLOW_PATHS_FLAG`) and the command it shows otherwise.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from ..audit import AuditReport

from ..audit.inputs import READING_TEXTS
from ..audit.report import SAMPLING_ROUND
from ..verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE
from .opt_in import opted_in

#: Characters of each text shown in the per-text table.
PREVIEW_CHARS = 80
#: Row numbers listed in :func:`rows_checked_text` before "and N more".
ROWS_LISTED = 40
#: ``streamlit run app.py -- --allow-server-paths`` lets the Audit page read a store and a texts file by
#: their path on the machine that runs the app (they are read lazily, as the command line reads them).
ALLOW_PATHS_FLAG = "--allow-server-paths"
#: The same as an environment variable (``PADDING_AUDIT_ALLOW_SERVER_PATHS=1``).
ALLOW_PATHS_ENV = "PADDING_AUDIT_ALLOW_SERVER_PATHS"


def server_paths_allowed(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """True only with :data:`ALLOW_PATHS_FLAG` among the app's arguments or :data:`ALLOW_PATHS_ENV` ``=1``."""
    return opted_in(argv, environ, ALLOW_PATHS_FLAG, ALLOW_PATHS_ENV)


def audit_command(
    model: str,
    states: str = "states.safetensors",
    texts: str = "texts.txt",
    sample: int | None = None,
    max_corrupted: float | None = None,
) -> str:
    """The ``python -m extraction audit`` command that audits ``states`` against ``texts`` from a shell
    (any size: only the sampled rows are read)."""
    parts = ["python", "-m", "extraction", "audit", "--model", model, "--texts", texts, "--states", states]
    if sample:
        parts += ["--sample", str(sample)]
    if max_corrupted is not None:
        parts += ["--max-corrupted", f"{max_corrupted:g}"]
    return shlex.join([*parts, "--json", "audit.json"])


def _percent_text(fraction: float) -> str:
    """``0.0037`` -> ``"0.37%"`` (three significant digits)."""
    return f"{100 * fraction:.3g}%"


def sample_proof(report: AuditReport) -> str:
    """What the rows checked prove about the whole store, in words (Markdown): how many of the
    store's rows were checked and, for a sample, the 95% Clopper-Pearson interval of the corrupted
    fraction, e.g. "at most 0.37% of the store's 1,000,000 rows are corrupted (95%, Clopper-Pearson)"
    or "between 1.2% and 3.1% ..."; with every row checked, the fraction itself."""
    n_rows, n_checked, n_corrupted = report.n_rows, report.n_checked, report.n_corrupted
    low, high = report.fraction_corrupted_interval
    if n_checked >= n_rows:
        return (
            f"Every row of the store was checked: **{n_corrupted:,} of {n_rows:,} rows are corrupted** "
            f"({_percent_text(low)}); no sampling, no interval needed."
        )
    seen = f"{n_corrupted:,} of the {n_checked:,} rows checked (a uniform sample, seed {report.sample.seed}"
    seen += ", stratified by shard)" if report.sample.stratified else ")"
    store = f"of the store's {n_rows:,} rows are corrupted (95%, Clopper-Pearson)"
    if n_corrupted == 0:
        claim = f"**at most {_percent_text(high)} {store}**"
    else:
        claim = f"**between {_percent_text(low)} and {_percent_text(high)} {store}**"
    text = f"{seen} are corrupted: {claim}."
    asked = report.sample.max_corrupted
    if asked is not None:
        shown = "shown" if report.bound_shown else "not shown"
        text += (
            f" Asked: at most {_percent_text(asked)} corrupted: **{shown}** after {report.sample.rounds} "
            f"round(s) of sampling."
        )
    return text


def rows_checked_text(report: AuditReport, limit: int = ROWS_LISTED) -> str:
    """The rows checked, numbered from 1: the first ``limit`` and how many more."""
    rows = [str(row + 1) for row in report.checked]
    more = f" and {len(rows) - limit:,} more (all in the JSON report's checked_rows)" if len(rows) > limit else ""
    return f"Rows checked ({len(rows):,}, numbered from 1): {', '.join(rows[:limit])}{more}."


def progress_text(stage: str, done: int, total: int) -> tuple[float, str]:
    """``(fraction of the stage done, what is running)`` for the page's progress bar, from an audit's
    ``progress(stage, done, total)`` (:data:`~extraction.audit.report.AuditProgress`)."""
    fraction = min(done / total, 1.0) if total else 1.0
    if stage == READING_TEXTS:
        return fraction, f"Reading the texts file: {done / 1e6:,.1f} of {total / 1e6:,.1f} MB"
    if stage == SAMPLING_ROUND:
        return fraction, f"Sampling round {done} of at most {total}"
    if stage == "re-extracting":
        return fraction, f"Re-extracting the sampled texts: {done:,}/{total:,}"
    if stage == "forensics":
        return fraction, f"Forensics: hypothesis {min(done + 1, total)} of {total}"
    return fraction, f"{stage}: {done:,}/{total:,}"


def per_text_frame(
    report: AuditReport, texts: Sequence[str] | Mapping[int, str], preview_chars: int = PREVIEW_CHARS
) -> pd.DataFrame:
    """``report.to_frame()`` with a ``text_preview`` column (the first ``preview_chars`` characters
    of each checked text; ``texts`` holds every text, or at least the checked ones by index) second,
    and ``text`` numbered from 1 as people count rows."""
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
