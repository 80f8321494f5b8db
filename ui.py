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

Messages and colours:
    ``show_error(message_or_exception)``, ``verdict_badge(verdict)`` (HTML),
    ``strategy_color(name)`` (the same colour as in every figure).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from extraction.compare import DRIFT_COSINE, EXACT_COSINE, ComparisonReport, compare_strategies
from extraction.figures import (
    VERDICT_COLORS,
    VERDICT_ICONS,
    VERDICT_TEXT_COLORS,
    strategy_color,
    top_k_frame,
)
from extraction.models import ATTN_IMPLEMENTATIONS, DEFAULT_MODEL, DTYPES, MODEL_PRESETS, LoadedModel, load_model
from extraction.texts import TextsError, decode_bytes, parse_texts, split_lines, tokenize_texts

logger = logging.getLogger(__name__)

__all__ = [
    "DRIFT_COSINE",
    "EXACT_COSINE",
    "MAX_INTERACTIVE_TEXTS",
    "MORE_TEXTS_HINT",
    "ModelSettings",
    "RunResult",
    "card_numbers",
    "download_button",
    "get_loaded_model",
    "get_run",
    "load_model_or_error",
    "model_in_use",
    "register_home_page",
    "require_run",
    "report_json",
    "run_comparison",
    "show_error",
    "sidebar_model_picker",
    "sidebar_run_summary",
    "store_run",
    "texts_from_inputs",
    "strategy_cause_line",
    "strategy_chip",
    "strategy_color",
    "verdict_badge",
]

#: More texts than this are refused interactively: the command line handles any number.
MAX_INTERACTIVE_TEXTS = 64
#: Where to go for more texts than the dashboard runs.
MORE_TEXTS_HINT = (
    "For more, use the command line: `python -m extraction compare --texts FILE` checks the strategies, "
    "`python -m extraction extract --texts FILE --out states.safetensors` extracts the states correctly."
)
#: Top next tokens kept per text and strategy for the Predictions page.
TOP_K = 5

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
        top_k: the top next tokens per text and strategy (see ``figures.top_k_frame``).
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


def card_numbers(min_cosine: float, top1_agreement: float) -> str:
    """HTML: the two headline numbers of a verdict card, side by side, sized to fit a narrow card."""

    def cell(label: str, value: str, help_text: str) -> str:
        return (
            f'<div title="{help_text}"><div style="font-size:0.85rem;color:#555">{label}</div>'
            f'<div style="font-size:1.45rem;font-variant-numeric:tabular-nums;line-height:1.3">{value}</div></div>'
        )

    cosine_text = "NaN" if min_cosine != min_cosine else f"{min_cosine:.6f}"
    return (
        '<div style="display:flex;gap:1.5rem;flex-wrap:wrap;margin:0.2rem 0 0.6rem 0">'
        + cell("min cosine", cosine_text, "lowest cosine similarity to single over all texts and layers")
        + cell("top-1 agreement", f"{top1_agreement:.0%}", "texts whose lm_head top-1 token equals single's")
        + "</div>"
    )


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
            f"batch size {report.batch_size}; {len(report.tokenized)} texts ({run.source}); "
            f"{report.num_layers} hidden states (embeddings + {report.num_layers - 1} layers)."
        )
        if report.is_random:
            st.caption("⚠️ Random weights: only agreement between strategies means something.")


def texts_from_inputs(text_box: str, upload=None) -> tuple[list[str], str]:
    """(texts, source): from an uploaded file (``.name``, ``.getvalue()``) when there is one,
    else the text box, one text a line. Raises :class:`TextsError` when there is none."""
    if upload is not None:
        name = str(upload.name)
        suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
        return parse_texts(decode_bytes(upload.getvalue(), name), suffix, name), name
    # Lines break where a texts file's do (\n, \r\n, \r), not at U+2028 or form feeds.
    texts = [line.strip() for line in split_lines(text_box) if line.strip()]
    if not texts:
        raise TextsError("no texts: type at least one text (one per line) or upload a file")
    return texts, "text box"


def run_comparison(
    loaded: LoadedModel,
    texts: Sequence[str],
    strategies: Sequence[str],
    batch_size: int,
    settings: ModelSettings,
    source: str = "text box",
) -> RunResult:
    """Compare ``strategies`` on ``texts`` with a progress bar naming the strategy being extracted.

    Raises what :func:`~extraction.compare.compare_strategies` raises (``TextsError`` for
    unusable texts, ``ValueError`` for bad options).
    """
    texts = list(texts)
    dropped = max(0, len(texts) - MAX_INTERACTIVE_TEXTS)
    texts = texts[:MAX_INTERACTIVE_TEXTS]
    tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
    bar = st.progress(0.0, text="Starting…")

    def progress(name: str, number: int, count: int, done: int, total: int) -> None:
        fraction = ((number - 1) + (done / total if total else 1.0)) / count
        bar.progress(
            min(fraction, 1.0),
            text=f"Extracting with **{name}** (strategy {number} of {count}): {done}/{total} texts",
        )

    start = time.perf_counter()
    with model_in_use():
        report = compare_strategies(loaded, tokenized, strategies, batch_size=batch_size, progress=progress)
    bar.progress(1.0, text="Comparing with single-sample extraction…")
    tokenizer = loaded.tokenizer
    token_strings = [[tokenizer.decode([token]) for token in ids] for ids in tokenized.token_ids]
    top_k = top_k_frame(report, lambda token: tokenizer.decode([token]), k=TOP_K)
    seconds = time.perf_counter() - start
    bar.empty()
    return RunResult(
        report=report,
        settings=settings,
        model_description=loaded.description,
        pad_token=str(tokenizer.pad_token),
        pad_token_id=loaded.pad_token_id,
        token_strings=token_strings,
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
