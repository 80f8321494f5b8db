"""The results of the home page's run, kept in the session and read by every page.

``run = get_run()`` -> :class:`RunResult` or None; ``run = require_run()`` shows an ``st.info``
pointing to Home and stops the page when there is none.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from extraction.comparison.compare import ComparisonReport
from ui.model import ModelSettings
from ui.navigation import home_page

#: Session-state key of the last :class:`RunResult`.
KEY_RUN = "ui.run"


@dataclass
class RunResult:
    """One run of the home page, shared by every page through ``st.session_state``.

    Attributes:
        report: the comparison of every strategy with single-sample extraction.
        settings: the model settings the run used.
        model_description: one line on the model (``LoadedModel.description``).
        pad_token: the pad token, decoded; ``pad_token_id`` its id.
        token_strings: per text, each token decoded on its own (for layout pictures).
        top_k: the top next tokens per text and strategy (see ``predictions.top_k_frame``).
        seconds: wall-clock time of the run (extraction and comparison).
        texts_dropped: texts beyond :data:`MAX_INTERACTIVE_TEXTS` that were not run.
        source: where the texts came from (``"text box"`` or a file name).
    """

    report: ComparisonReport
    settings: ModelSettings
    model_description: str
    pad_token: str
    pad_token_id: int
    token_strings: list[list[str]]
    top_k: pd.DataFrame
    seconds: float
    texts_dropped: int = 0
    source: str = "text box"

    @property
    def strategy_names(self) -> list[str]:
        return list(self.report.strategies)


def get_run() -> RunResult | None:
    """The last run's results, or None."""
    return st.session_state.get(KEY_RUN)


def store_run(run: RunResult) -> None:
    st.session_state[KEY_RUN] = run


def require_run() -> RunResult:
    """The last run's results; without one, an ``st.info`` pointing to Home and ``st.stop()``."""
    run = get_run()
    if run is None:
        st.info("No results yet: run a comparison on the **Home** page first (or click *Show me the bug* there).")
        if home_page() is not None:
            st.page_link(home_page(), label="Go to Home", icon=":material/home:")
        st.stop()
    return run


def sidebar_run_summary(run: RunResult | None = None) -> None:
    """A short description of the results the page shows, in the sidebar."""
    run = run if run is not None else get_run()
    if run is None:
        return
    report = run.report
    with st.sidebar:
        st.header("Results shown")
        st.caption(
            f"**{run.settings.name}**, {report.dtype}, attention {report.attn_implementation}, "
            f"batch size {report.batch_size}, pooling {report.pooling}; {len(report.tokenized)} texts ({run.source}); "
            f"{report.num_layers} hidden states (embeddings + {report.num_layers - 1} layers)."
        )
        if report.is_random:
            st.caption("⚠️ Random weights: only agreement between strategies means something.")
