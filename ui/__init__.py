"""Thin Streamlit helpers shared by the dashboard's pages, one module per concern.

Pages are flat scripts: inputs, a guard, one call into :mod:`extraction` or here, rendering.
They ``import ui`` and use the names re-exported below; each lives in the module of its concern:

- :mod:`ui.model`: the sidebar's model picker (``sidebar_model_picker() -> ModelSettings``), the
  cached model (``load_model_or_error``, ``get_loaded_model``: ``st.cache_resource(max_entries=1)``,
  never mutate it) and the lock around its forward passes (``with model_in_use():``, :data:`MODEL_LOCK`).
- :mod:`ui.run_state`: the home page's run (:class:`RunResult`), kept in the session
  (``get_run``, ``store_run``, ``require_run``, ``sidebar_run_summary``).
- :mod:`ui.navigation`: the pages (``page_files``) and Home (``register_home_page``).
- :mod:`ui.messages`: errors, verdict badges, colours, card numbers and the lines that explain them.
- :mod:`ui.widgets`: download buttons, table column configs, number inputs, defaults and presets.
- :mod:`ui.inputs`: the texts and files a page's inputs give.
- :mod:`ui.work`: work behind a button, guarded (``run_guarded``), with progress and a session cache.
- :mod:`ui.conformance`: the committed conformance matrix and its texts' tokens (the Conformance page).
- :mod:`ui.compare`, :mod:`ui.audit`, :mod:`ui.probe`: the work behind Home's, the Audit page's
  and the Probe page's buttons (``run_comparison``, ``run_audit``, ``train_probes``).
"""

from __future__ import annotations

from extraction.plotting.style import strategy_color
from extraction.verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE, EXACT_COSINE
from ui.audit import AuditRun, run_audit
from ui.compare import MAX_INTERACTIVE_TEXTS, MORE_TEXTS_HINT, report_json, run_comparison
from ui.conformance import MATRIX_JSON, conformance_matrix, matrix_tokens
from ui.inputs import audit_inputs, audit_path_inputs, comparison_inputs, texts_from_inputs
from ui.messages import (
    card_numbers,
    cause_message,
    lm_head_unavailable,
    metric_row,
    pooling_line,
    show_error,
    strategy_cause_line,
    strategy_chip,
    summary_table,
    verdict_badge,
    verdict_rule,
)
from ui.model import (
    KEY_ATTN,
    KEY_DTYPE,
    KEY_MODEL_CHOICE,
    KEY_MODEL_CUSTOM,
    MODEL_LOCK,
    OTHER_MODEL,
    ModelSettings,
    get_loaded_model,
    load_model_or_error,
    model_in_use,
    sidebar_model_picker,
)
from ui.navigation import leave_pages_folder_mode, page_files, register_home_page
from ui.probe import ProbeRun, train_probes
from ui.run_state import KEY_RUN, RunResult, get_run, require_run, sidebar_run_summary, store_run
from ui.widgets import (
    apply_preset,
    column_config,
    download_button,
    download_buttons,
    set_defaults,
    strategies_help,
    whole_number_input,
)
from ui.work import progress_callback, run_guarded, session_cache

__all__ = [
    "CORRUPTED_RELATIVE_L2",
    "DRIFT_COSINE",
    "EXACT_COSINE",
    "KEY_ATTN",
    "KEY_DTYPE",
    "KEY_MODEL_CHOICE",
    "KEY_MODEL_CUSTOM",
    "KEY_RUN",
    "MATRIX_JSON",
    "MAX_INTERACTIVE_TEXTS",
    "MODEL_LOCK",
    "MORE_TEXTS_HINT",
    "OTHER_MODEL",
    "AuditRun",
    "ModelSettings",
    "ProbeRun",
    "RunResult",
    "apply_preset",
    "audit_inputs",
    "audit_path_inputs",
    "card_numbers",
    "cause_message",
    "column_config",
    "conformance_matrix",
    "comparison_inputs",
    "download_button",
    "download_buttons",
    "get_loaded_model",
    "get_run",
    "lm_head_unavailable",
    "load_model_or_error",
    "matrix_tokens",
    "metric_row",
    "model_in_use",
    "page_files",
    "pooling_line",
    "progress_callback",
    "register_home_page",
    "report_json",
    "require_run",
    "run_audit",
    "run_comparison",
    "run_guarded",
    "session_cache",
    "set_defaults",
    "show_error",
    "sidebar_model_picker",
    "sidebar_run_summary",
    "store_run",
    "strategies_help",
    "strategy_cause_line",
    "strategy_chip",
    "strategy_color",
    "summary_table",
    "texts_from_inputs",
    "train_probes",
    "verdict_badge",
    "verdict_rule",
    "whole_number_input",
]

leave_pages_folder_mode()  # once a process, on the import by its first script run
