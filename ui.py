"""Thin Streamlit helpers shared by the dashboard's pages (the only UI module outside pages/).

Pages are flat scripts: inputs, a guard, one call into :mod:`extraction`, rendering.
What they share lives here, so that every page behaves the same:

Model (the sidebar picker is shared by every page that needs a model):
    ``settings = sidebar_model_picker()`` -> :class:`ModelSettings` (model name, dtype,
    attention implementation, device); the choice survives page switches.
    ``loaded = load_model_or_error(settings)`` -> the cached :class:`LoadedModel`, or
    None after showing an ``st.error`` (the page keeps working; a later good model loads
    without a restart). ``get_loaded_model(settings)`` is the same but raises
    ``ValueError``/:class:`ModelLoadError`. The model is cached once per process with
    ``st.cache_resource(max_entries=1)``, every argument that changes it in the cache
    key; the cached model is shared, so **never mutate it** (no ``.to()``, no ``.train()``,
    no hooks left behind). Wrap every forward pass in ``with model_in_use():``: sessions
    run in threads and share the cached model, and extraction registers forward hooks on
    it for the duration of a pass, so two sessions must not run it at the same time.

Results of the home page's run (computed once, read by every page):
    ``run = get_run()`` -> :class:`RunResult` or None; ``run = require_run()`` shows an
    ``st.info`` pointing to Home and stops the page when there is none.

Work behind a button (the page stays usable whatever fails):
    ``run_guarded(work, prefix, hold_model)`` -> ``work()``, or None after an ``st.error``;
    ``progress_callback(bar)`` reports a strategy-by-strategy extraction on an ``st.progress``
    bar; ``session_cache(key, identity)`` is a dict kept while ``identity`` stays the same.
    ``train_probes(...)`` (Probe page) and ``run_audit(...)`` (Audit page) return a typed
    result (:class:`ProbeRun`, :class:`AuditRun`) or None, like ``run_comparison`` for Home.

Messages and colours:
    ``show_error(message_or_exception)``, ``verdict_badge(verdict)`` (HTML),
    ``strategy_color(name)`` (the same colour as in every figure).

Over 400 lines on purpose: this is the dashboard's one helper module (pages import the
package and this module only), and its sections above are independent of each other.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import pandas as pd
import streamlit as st

from extraction.audit import AuditReport, audit_states
from extraction.chat import TextItem, format_texts
from extraction.compare import ComparisonReport, compare_strategies
from extraction.examples import example_states
from extraction.export import parse_layers
from extraction.models import ATTN_IMPLEMENTATIONS, DEFAULT_MODEL, DTYPES, MODEL_PRESETS, LoadedModel, load_model
from extraction.plotting.style import VERDICT_COLORS, VERDICT_ICONS, VERDICT_TEXT_COLORS, strategy_color
from extraction.pooling import DEFAULT_POOLING, POOLING_SUMMARY, Pooling
from extraction.predictions import LM_HEAD_ONLY_LAST, NOT_APPLICABLE, TOP_K, has_lm_head, token_strings, top_k_frame
from extraction.probe import LabelledTexts
from extraction.probe_inputs import data_digest
from extraction.probe_sweep import ProbeSweep, run_probe_sweep
from extraction.stored_states import StoredStates, read_states
from extraction.strategies import STRATEGIES
from extraction.texts import TextsError, decode_bytes, parse_text_items, split_lines, tokenize_texts
from extraction.verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE, EXACT_COSINE

logger = logging.getLogger(__name__)

__all__ = [
    "CORRUPTED_RELATIVE_L2",
    "DRIFT_COSINE",
    "EXACT_COSINE",
    "MAX_INTERACTIVE_TEXTS",
    "MORE_TEXTS_HINT",
    "AuditRun",
    "ModelSettings",
    "ProbeRun",
    "RunResult",
    "apply_preset",
    "audit_inputs",
    "card_numbers",
    "comparison_inputs",
    "column_config",
    "cause_message",
    "download_button",
    "download_buttons",
    "get_loaded_model",
    "get_run",
    "load_model_or_error",
    "metric_row",
    "model_in_use",
    "pooling_line",
    "lm_head_unavailable",
    "page_files",
    "progress_callback",
    "register_home_page",
    "require_run",
    "report_json",
    "run_audit",
    "run_comparison",
    "run_guarded",
    "session_cache",
    "set_defaults",
    "show_error",
    "sidebar_model_picker",
    "sidebar_run_summary",
    "store_run",
    "summary_table",
    "texts_from_inputs",
    "verdict_rule",
    "whole_number_input",
    "strategy_cause_line",
    "strategy_chip",
    "strategies_help",
    "strategy_color",
    "train_probes",
    "verdict_badge",
]

#: More texts than this are refused interactively: the command line handles any number.
MAX_INTERACTIVE_TEXTS = 64
#: Where to go for more texts than the dashboard runs.
MORE_TEXTS_HINT = (
    "For more, use the command line: `python -m extraction compare --texts FILE` checks the strategies, "
    "`python -m extraction extract --texts FILE --out states.safetensors` extracts the states correctly."
)
OTHER_MODEL = "other…"
#: Session-state keys of the shared sidebar model picker (widgets persist across pages).
KEY_MODEL_CHOICE = "ui.model_choice"
KEY_MODEL_CUSTOM = "ui.model_custom"
KEY_DTYPE = "ui.dtype"
KEY_ATTN = "ui.attn"
#: Session-state key of the last :class:`RunResult`.
KEY_RUN = "ui.run"


@dataclass(frozen=True)
class ModelSettings:
    """Everything that changes the loaded model: the cache key of :func:`get_loaded_model`."""

    name: str
    dtype: str = "float32"
    attn_implementation: str = "sdpa"
    device: str = "auto"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.dtype}, {self.attn_implementation})"


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


# --- the model ------------------------------------------------------------------------


def _init_default(key: str, value) -> None:
    if key not in st.session_state:
        st.session_state[key] = value


def sidebar_model_picker() -> ModelSettings:
    """The model controls in the sidebar; returns what is chosen (not loaded yet).

    Presets first (the embedded ``smollm2-135m`` preselected), then "other…" with a
    text box for a Hugging Face id (read from the local cache), a local folder or a
    ``.gguf`` file. The choice is kept across pages.
    """
    _init_default(KEY_MODEL_CHOICE, DEFAULT_MODEL)
    _init_default(KEY_MODEL_CUSTOM, "")
    _init_default(KEY_DTYPE, "float32")
    _init_default(KEY_ATTN, "sdpa")
    with st.sidebar:
        st.header("Model")
        choice = st.selectbox(
            "Model",
            [*MODEL_PRESETS, OTHER_MODEL],
            key=KEY_MODEL_CHOICE,
            persist_state="session",
            help="\n\n".join(f"**{name}**: {about}" for name, about in MODEL_PRESETS.items())
            + f"\n\n**{OTHER_MODEL}**: a Hugging Face id (from the local cache), a local folder or a .gguf file",
        )
        if choice in MODEL_PRESETS:
            st.caption(MODEL_PRESETS[choice])
        custom = st.text_input(
            "Model id, folder or .gguf path",
            key=KEY_MODEL_CUSTOM,
            persist_state="session",
            disabled=choice != OTHER_MODEL,
            placeholder="e.g. /data/models/my-model or HuggingFaceTB/SmolLM2-360M",
        )
        dtype = st.selectbox(
            "dtype",
            DTYPES,
            key=KEY_DTYPE,
            persist_state="session",
            help="float32 is the reference precision; bfloat16/float16 show reduced-precision drift.",
        )
        attn = st.selectbox(
            "Attention implementation",
            ATTN_IMPLEMENTATIONS,
            key=KEY_ATTN,
            persist_state="session",
            help="How the attention mask is read can depend on it: one more factor worth checking.",
        )
    name = custom.strip() if choice == OTHER_MODEL else choice
    return ModelSettings(name=name, dtype=dtype, attn_implementation=attn)


@st.cache_resource(max_entries=1, show_spinner="Loading the model…")
def _load_cached(name: str, dtype: str, attn_implementation: str, device: str) -> LoadedModel:
    # Every argument that changes the model is a plain, hashed argument (none is
    # underscore-prefixed), so a new dtype or attention implementation is a new entry.
    # Exceptions are not cached: a failed load is retried on the next call.
    return load_model(name, dtype=dtype, device=device, attn_implementation=attn_implementation)


def get_loaded_model(settings: ModelSettings) -> LoadedModel:
    """The model for ``settings``, loaded once and cached (one model at a time).

    Raises ``ValueError`` (including :class:`~extraction.models.ModelLoadError`) when it
    cannot be loaded. The returned model is shared: do not mutate it.
    """
    if not settings.name.strip():
        raise ValueError("no model named: choose a preset or type a model id, folder or .gguf path")
    return _load_cached(settings.name, settings.dtype, settings.attn_implementation, settings.device)


def load_model_or_error(settings: ModelSettings) -> LoadedModel | None:
    """:func:`get_loaded_model`, or None after an ``st.error`` saying why it failed."""
    try:
        return get_loaded_model(settings)
    except ValueError as error:
        show_error(error, prefix=f"Could not load the model {settings.name!r}")
    except Exception as error:  # noqa: BLE001 - a page must survive any loader failure
        logger.exception("loading %s failed", settings.label)
        show_error(error, prefix=f"Could not load the model {settings.name!r}")
    return None


#: One forward user of the shared cached model at a time (see :func:`model_in_use`).
_MODEL_LOCK = threading.Lock()


@contextmanager
def model_in_use() -> Iterator[None]:
    """Hold the cached model for this session's forward passes; other sessions wait.

    Extraction registers forward hooks on the model for the duration of a pass, and the
    model is shared by every session of the process, so concurrent runs would capture
    each other's rows. On a CPU, running one at a time costs no throughput either.
    """
    if not _MODEL_LOCK.acquire(blocking=False):
        with st.spinner("Another session is running the model: waiting for it to finish…"):
            _MODEL_LOCK.acquire()
    try:
        yield
    finally:
        _MODEL_LOCK.release()


# --- downloads --------------------------------------------------------------------------

_MIME_TYPES = {".csv": "text/csv", ".json": "application/json", ".html": "text/html"}


def download_button(container, label: str, data, file_name: str, key: str) -> None:
    """A download button in ``container`` (``st`` or a column) for ``file_name``.

    ``data`` is a callable building the content only when the user clicks; the MIME type
    follows the file's suffix (.csv, .json, .html); clicking does not rerun the page.
    """
    suffix = file_name[file_name.rfind(".") :]
    container.download_button(
        label, data=data, file_name=file_name, mime=_MIME_TYPES[suffix], on_click="ignore", key=key
    )


def download_buttons(items: Sequence[tuple[str, Any, str, str]]) -> None:
    """One row of download buttons (:func:`download_button`), one column each: ``(label, data, file_name, key)``."""
    for column, (label, data, file_name, key) in zip(st.columns(len(items)), items, strict=True):
        download_button(column, label, data, file_name, key)


# --- tables ---------------------------------------------------------------------------------


#: ``st.column_config`` builders by the kind named in a column spec.
_COLUMN_KINDS = {
    "number": st.column_config.NumberColumn,
    "text": st.column_config.TextColumn,
    "checkbox": st.column_config.CheckboxColumn,
}


def column_config(specs: dict[str, tuple[str, str, str | None, str | None]]) -> dict[str, Any]:
    """``st.dataframe`` column_config from the package's column specs:
    ``{column: (kind, label, number format, help)}``, kind ``number``, ``text`` or ``checkbox``."""
    config = {}
    for column, (kind, label, number_format, help_text) in specs.items():
        options = {"format": number_format} if number_format else {}
        config[column] = _COLUMN_KINDS[kind](label, help=help_text, **options)
    return config


def whole_number_input(container, label: str, key: str, min_value: int, max_value: int, help: str) -> int:
    """An integer ``number_input`` in ``container`` (``st`` or a column), step 1, its value
    kept for the session across page switches."""
    return container.number_input(
        label, min_value=min_value, max_value=max_value, step=1, key=key, persist_state="session", help=help
    )


def strategies_help(names: Sequence[str]) -> str:
    """Markdown help of a strategy picker: each strategy's name and summary."""
    return "\n\n".join(f"**{name}**: {STRATEGIES[name].summary}" for name in names)


def set_defaults(values: dict[str, Any]) -> None:
    """Give each session-state key of ``values`` its default value, unless it has one already."""
    for key, value in values.items():
        st.session_state.setdefault(key, value)


# --- messages ---------------------------------------------------------------------------


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


def metric_row(items: Sequence[tuple[str, str, str | None]]) -> None:
    """One row of metrics (``st.metric``), one column each: ``(label, value, help)``."""
    for column, (label, value, help_text) in zip(st.columns(len(items)), items, strict=True):
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


# --- navigation ---


_home_page = None


def page_files(pages_dir: Path) -> list[Path]:
    """The other pages: ``<number>_<Name>.py`` files of ``pages_dir`` in number order; a new
    file there is a new page."""
    numbered = []
    for path in pages_dir.glob("*.py"):
        match = re.fullmatch(r"(\d+)_\w+\.py", path.name)
        if match:
            numbered.append((int(match.group(1)), path.name, path))
    return [path for _, _, path in sorted(numbered)]


def register_home_page(page) -> None:
    """Called by app.py with its ``st.Page`` for Home, so pages can link back to it."""
    global _home_page
    _home_page = page


# --- runs ---------------------------------------------------------------------------------


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
        if _home_page is not None:
            st.page_link(_home_page, label="Go to Home", icon=":material/home:")
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


def texts_from_inputs(text_box: str, upload=None) -> tuple[list[TextItem], str]:
    """(texts, source): from an uploaded file (``.name``, ``.getvalue()``) when there is one,
    else the text box, one text a line. A ``.jsonl`` upload may hold chat ``messages``
    (:class:`~extraction.chat.Chat` items, rendered with the model's template by
    :func:`~extraction.chat.format_texts` once it is loaded). Raises :class:`TextsError`
    when there is none."""
    if upload is not None:
        name = str(upload.name)
        suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
        return parse_text_items(decode_bytes(upload.getvalue(), name), suffix, name), name
    # Lines break where a texts file's do (\n, \r\n, \r), not at U+2028 or form feeds.
    texts = [line.strip() for line in split_lines(text_box) if line.strip()]
    if not texts:
        raise TextsError("no texts: type at least one text (one per line) or upload a file")
    return texts, "text box"


def comparison_inputs(text_box: str, upload, strategies: Sequence[str]) -> tuple[list[TextItem], str]:
    """(texts, source) of a Home run (:func:`texts_from_inputs`), and at least one strategy
    chosen; :class:`TextsError` saying what is missing otherwise."""
    texts, source = texts_from_inputs(text_box, upload)
    if not strategies:
        raise TextsError("no strategy chosen: pick at least one strategy to compare with single")
    return texts, source


def run_comparison(
    loaded: LoadedModel,
    texts: Sequence[TextItem],
    strategies: Sequence[str],
    batch_size: int,
    settings: ModelSettings,
    source: str = "text box",
    as_chat: bool = False,
    pooling: Pooling = DEFAULT_POOLING,
) -> RunResult:
    """Compare ``strategies`` on ``texts``, pooled by ``pooling``, with a progress bar naming
    the strategy being extracted. Chat conversations, and with ``as_chat`` every plain text
    (one user turn), are rendered with the model's chat template first
    (:func:`~extraction.chat.format_texts`). The run is kept in the session
    (:func:`store_run`): a new pooling is a new run, never a stale one.

    Raises what :func:`~extraction.compare.compare_strategies` raises (``TextsError`` for
    unusable texts or a model without a chat template, ``ValueError`` for bad options).
    """
    texts = list(texts)
    dropped = max(0, len(texts) - MAX_INTERACTIVE_TEXTS)
    texts = format_texts(texts[:MAX_INTERACTIVE_TEXTS], loaded.tokenizer, as_chat, loaded.name)
    tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
    bar = st.progress(0.0, text="Starting…")
    start = time.perf_counter()
    with model_in_use():
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


# --- work behind a button -------------------------------------------------------------------

T = TypeVar("T")


def run_guarded(work: Callable[[], T], prefix: str | None = None, hold_model: bool = False) -> T | None:
    """``work()``, or None after one ``st.error`` (``prefix: message``, never a traceback).

    A ``ValueError`` (``TextsError`` included) is the user's to fix and is shown as it is;
    anything else is logged with its traceback and shown by type, and the page keeps working.
    With ``hold_model`` the work runs inside :func:`model_in_use`.
    """
    try:
        if hold_model:
            with model_in_use():
                return work()
        return work()
    except ValueError as error:
        show_error(error, prefix=prefix)
    except Exception as error:  # noqa: BLE001 - a page must survive any failure
        logger.exception("%s", prefix or "work behind a button failed")
        show_error(error, prefix=prefix)
    return None


def progress_callback(bar) -> Callable[[str, int, int, int, int], None]:
    """A ``progress(name, number, count, done, total)`` callback of a strategy-by-strategy
    extraction (``compare_strategies``, ``run_probe_sweep``) that fills the ``st.progress`` ``bar``."""

    def progress(name: str, number: int, count: int, done: int, total: int) -> None:
        fraction = ((number - 1) + (done / total if total else 1.0)) / count
        bar.progress(
            min(fraction, 1.0),
            text=f"Extracting with **{name}** (strategy {number} of {count}): {done}/{total} texts",
        )

    return progress


def session_cache(key: str, identity: Any) -> dict:
    """A dict kept in the session under ``key`` while ``identity`` stays the same; a new
    ``identity`` drops the old dict (one model and data set at a time) and starts an empty one."""
    held_identity, cache = st.session_state.get(key, (None, {}))
    if held_identity != identity:
        cache = {}
        st.session_state[key] = (identity, cache)
    return cache


def apply_preset(values: dict[str, Any]) -> None:
    """Button callback: set every session-state key of ``values`` (widget values, flags)."""
    for key, value in values.items():
        st.session_state[key] = value


class ProbeRun(TypedDict):
    """One run of the Probe page, kept in ``st.session_state``."""

    sweep: ProbeSweep
    settings: ModelSettings
    model_description: str


def train_probes(
    loaded: LoadedModel,
    settings: ModelSettings,
    data: LabelledTexts,
    strategies: Sequence[str],
    layers: str,
    seeds: int,
    batch_size: int,
    cache_key: str,
    pooling: Pooling = DEFAULT_POOLING,
) -> ProbeRun | None:
    """:func:`~extraction.probe_sweep.run_probe_sweep` with a progress bar, the model held, and
    the states kept in the session under ``cache_key`` for this model and data set (adding a
    strategy later extracts only the new one; other layers or seeds extract nothing); None after
    an ``st.error`` when it fails. ``pooling``: ``last`` or ``mean``."""
    feature_cache = session_cache(cache_key, (settings, data_digest(data)))
    bar = st.progress(0.0, text="Starting…")
    try:
        sweep = run_guarded(
            lambda: run_probe_sweep(
                loaded,
                data,
                strategies,
                layers=layers,
                seeds=seeds,
                batch_size=batch_size,
                progress=progress_callback(bar),
                feature_cache=feature_cache,
                pooling=pooling,
            ),
            prefix="The probe run failed",
            hold_model=True,
        )
    finally:
        bar.empty()
    if sweep is None:
        return None
    return ProbeRun(sweep=sweep, settings=settings, model_description=loaded.description)


class AuditRun(TypedDict):
    """One run of the Audit page, kept in ``st.session_state``."""

    report: AuditReport
    model_description: str
    texts: list[str]  # every text of the file, in row order


def audit_inputs(states_upload, texts_upload, tensor_key: str) -> tuple[StoredStates, list[TextItem]]:
    """(stored states, texts) from the two uploads; ``ValueError`` saying what is missing or unreadable."""
    if states_upload is None or texts_upload is None:
        raise ValueError("upload both the stored states and the texts they were extracted from")
    states = read_states(states_upload.getvalue(), name=str(states_upload.name), key=tensor_key.strip() or None)
    texts, _ = texts_from_inputs("", texts_upload)
    return states, texts


def run_audit(
    loaded: LoadedModel,
    inputs: tuple[StoredStates, list[TextItem]] | None,
    layer: int,
    layers_text: str,
    sample: int,
    forensics: bool,
    pooling: str | None = None,
) -> AuditRun | None:
    """:func:`~extraction.audit.audit_states` of ``inputs`` (None: the worked example of
    :mod:`extraction.examples`, built on ``loaded``) with a progress bar and the model held;
    ``layer`` applies to an (N, d) file, ``layers_text`` to an (N, L, d) one, ``sample`` 0 means
    every text, ``pooling`` None the pooling the file records. None after an ``st.error`` when it fails."""

    def audit() -> AuditRun:
        states, items = inputs if inputs is not None else example_states(loaded)
        texts = format_texts(items, loaded.tokenizer, False, loaded.name)  # chat 'messages' lines rendered
        is_one_layer = states.tensor.dim() == 2
        num_states = loaded.num_hidden_layers + 1
        layers = parse_layers(layers_text, num_states) if layers_text.strip() and not is_one_layer else None
        bar = st.progress(0.0, text="Starting…")

        def progress(stage: str, done: int, total: int) -> None:
            fraction = done / total if total else 1.0
            if stage == "re-extracting":
                bar.progress(0.8 * fraction, text=f"Re-extracting one text at a time: {done}/{total}")
            else:
                bar.progress(0.8 + 0.2 * fraction, text=f"Forensics: hypothesis {min(done + 1, total)} of {total}")

        try:
            report = audit_states(
                loaded,
                texts,
                states,
                layer=layer if is_one_layer else None,
                layers=layers,
                sample=sample or None,
                forensics=forensics,
                progress=progress,
                pooling=pooling,
            )
        finally:
            bar.empty()
        return AuditRun(report=report, model_description=loaded.description, texts=texts)

    return run_guarded(audit, prefix="The audit failed", hold_model=True)


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
