"""The work behind Home's Run button: compare the strategies on the texts, with a progress bar
and the model held; and the report as strict JSON for the download."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

import streamlit as st

from extraction.chat import TextItem, format_texts
from extraction.comparison.compare import ComparisonReport, compare_strategies
from extraction.models import LoadedModel
from extraction.pooling import DEFAULT_POOLING, Pooling
from extraction.texts import tokenize_texts
from extraction.views.predictions import TOP_K, token_strings, top_k_frame
from ui.model import ModelSettings, model_in_use
from ui.run_state import RunResult
from ui.work import progress_callback

#: More texts than this are refused interactively: the command line handles any number.
MAX_INTERACTIVE_TEXTS = 64
#: Where to go for more texts than the dashboard runs.
MORE_TEXTS_HINT = (
    "For more, use the command line: `python -m extraction compare --texts FILE` checks the strategies, "
    "`python -m extraction extract --texts FILE --out states.safetensors` extracts the states correctly."
)


def run_comparison(
    loaded: LoadedModel,
    texts: Sequence[TextItem],
    strategies: Sequence[str],
    batch_size: int,
    settings: ModelSettings,
    source: str = "text box",
    as_chat: bool = False,
    pooling: Pooling = DEFAULT_POOLING,
    generation_prompt: bool = False,
) -> RunResult:
    """Compare ``strategies`` on ``texts``, pooled by ``pooling``, with a progress bar naming
    the strategy being extracted. Chat conversations, and with ``as_chat`` every plain text
    (one user turn), are rendered with the model's chat template first, ending in the generation
    prompt with ``generation_prompt`` (:func:`~extraction.chat.format_texts`). The run is kept in the session
    (:func:`store_run`): a new pooling is a new run, never a stale one.

    Raises what :func:`~extraction.comparison.compare.compare_strategies` raises (``TextsError`` for
    unusable texts or a model without a chat template, ``ValueError`` for bad options).
    """
    texts = list(texts)
    dropped = max(0, len(texts) - MAX_INTERACTIVE_TEXTS)
    texts = format_texts(texts[:MAX_INTERACTIVE_TEXTS], loaded.tokenizer, as_chat, loaded.name, generation_prompt)
    tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
    bar = st.progress(0.0, text="Starting…")
    start = time.perf_counter()
    with model_in_use():  # the whole pass: the page shows every layer and the lm_head agreement
        report = compare_strategies(
            loaded, tokenized, strategies, batch_size=batch_size, progress=progress_callback(bar), pooling=pooling
        )
    bar.progress(1.0, text="Comparing with single-sample extraction…")
    tokenizer = loaded.tokenizer
    # The report's texts: under tokens pooling the comparison may cap them (a note says so).
    strings = token_strings(tokenizer.decode, report.tokenized.token_ids)
    top_k = top_k_frame(report, lambda token: tokenizer.decode([token]), k=TOP_K)
    seconds = time.perf_counter() - start
    bar.empty()
    return RunResult(
        report=report,
        settings=settings,
        model_description=loaded.description,
        pad_token=str(tokenizer.pad_token),
        pad_token_id=loaded.pad_token_id,
        token_strings=strings,
        top_k=top_k,
        seconds=seconds,
        texts_dropped=dropped,
        source=source,
    )


def _json_safe(value):
    """NaN and inf become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def report_json(report: ComparisonReport) -> str:
    """The report as strict JSON text (``report.to_json_dict()`` plus the texts)."""
    payload = report.to_json_dict()
    payload["texts"] = list(report.texts)
    return json.dumps(_json_safe(payload), indent=2, allow_nan=False)
