"""The sidebar's model picker and the one cached model every page shares, with its lock.

``settings = sidebar_model_picker()`` -> :class:`ModelSettings` (model name, dtype, attention
implementation, device); the choice survives page switches. ``loaded = load_model_or_error(settings)``
-> the cached :class:`LoadedModel`, or None after an ``st.error`` (the page keeps working; a later
good model loads without a restart). ``get_loaded_model(settings)`` is the same but raises
``ValueError``/:class:`ModelLoadError`. The model is cached once per process with
``st.cache_resource(max_entries=1)``, every argument that changes it in the cache key; the cached
model is shared, so **never mutate it** (no ``.to()``, no ``.train()``, no hooks left behind).
Wrap every forward pass in ``with model_in_use():`` (it holds :data:`MODEL_LOCK`): sessions run in
threads and share the cached model, and extraction registers forward hooks on it for the duration
of a pass, so two sessions must not run it at the same time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

from extraction.models import ATTN_IMPLEMENTATIONS, DEFAULT_MODEL, DTYPES, MODEL_PRESETS, LoadedModel, load_model
from extraction.models.architectures import tiny_random_names
from ui.messages import show_error

logger = logging.getLogger(__name__)

OTHER_MODEL = "other…"
#: The picker's entry for a tiny random model of any architecture (a second box picks which).
TINY_RANDOM_MODEL = "tiny-random:<architecture>…"
KEY_TINY_RANDOM = "ui.tiny_random"
#: Session-state keys of the shared sidebar model picker (widgets persist across pages).
KEY_MODEL_CHOICE = "ui.model_choice"
KEY_MODEL_CUSTOM = "ui.model_custom"
KEY_DTYPE = "ui.dtype"
KEY_ATTN = "ui.attn"


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
            [*MODEL_PRESETS, TINY_RANDOM_MODEL, OTHER_MODEL],
            key=KEY_MODEL_CHOICE,
            persist_state="session",
            help="\n\n".join(f"**{name}**: {about}" for name, about in MODEL_PRESETS.items())
            + f"\n\n**{TINY_RANDOM_MODEL}**: a tiny random model of any causal-LM architecture transformers "
            "has, built from its config (the Conformance page shows how each strategy fares on each)"
            + f"\n\n**{OTHER_MODEL}**: a Hugging Face id (from the local cache), a local folder or a .gguf file",
        )
        if choice in MODEL_PRESETS:
            st.caption(MODEL_PRESETS[choice])
        tiny_random = None
        if choice == TINY_RANDOM_MODEL:
            names = tiny_random_names()
            _init_default(KEY_TINY_RANDOM, "tiny-random:gpt_neox" if "tiny-random:gpt_neox" in names else names[0])
            tiny_random = st.selectbox(
                "Architecture", names, key=KEY_TINY_RANDOM, persist_state="session", help="random weights, 2+ layers"
            )
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
    name = custom.strip() if choice == OTHER_MODEL else tiny_random if choice == TINY_RANDOM_MODEL else choice
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
MODEL_LOCK = threading.Lock()


@contextmanager
def model_in_use() -> Iterator[None]:
    """Hold the cached model for this session's forward passes; other sessions wait.

    Extraction registers forward hooks on the model for the duration of a pass, and the
    model is shared by every session of the process, so concurrent runs would capture
    each other's rows. On a CPU, running one at a time costs no throughput either.
    """
    if not MODEL_LOCK.acquire(blocking=False):
        with st.spinner("Another session is running the model: waiting for it to finish…"):
            MODEL_LOCK.acquire()
    try:
        yield
    finally:
        MODEL_LOCK.release()
