"""The work behind the Audit page's buttons: audit the uploaded states (or the worked example)
with a progress bar and the model held, and the picture of the defect it names."""

from __future__ import annotations

from typing import TypedDict

import plotly.graph_objects as go
import streamlit as st

from extraction import plotting
from extraction.audit import AuditReport, audit_states
from extraction.chat import TextItem, format_texts
from extraction.models import LoadedModel
from extraction.storage.export import parse_layers
from extraction.storage.lazy_states import LazyStates
from extraction.storage.stored_states import StoredStates
from extraction.texts import tokenize_texts
from extraction.views.examples import example_states
from ui.work import run_guarded


class AuditRun(TypedDict):
    """One run of the Audit page, kept in ``st.session_state``."""

    report: AuditReport
    model_description: str
    texts: list[str]  # every text of the file, in row order (chat-formatted as asked)
    defect_figure: go.Figure | None  # what happened to one text (plotting.defect_figure), where a picture helps


def run_audit(
    loaded: LoadedModel,
    inputs: tuple[StoredStates | LazyStates, list[TextItem] | None] | None,
    layer: int,
    layers_text: str,
    sample: int,
    forensics: bool,
    pooling: str | None = None,
    as_chat: bool = False,
    generation_prompt: bool = False,
) -> AuditRun | None:
    """:func:`~extraction.audit.audit_states` of ``inputs`` (None: the worked example of
    :mod:`extraction.views.examples`, built on ``loaded``) with a progress bar and the model held;
    ``layer`` applies to an (N, d) file, ``layers_text`` to an (N, L, d) one, ``sample`` 0 means
    every text, ``pooling`` None the pooling the file records; ``as_chat`` formats every plain text as
    one user turn with the chat template, ending in the generation prompt with ``generation_prompt``
    (:func:`~extraction.chat.format_texts`). None after an ``st.error`` when it fails."""

    def audit() -> AuditRun:
        states, items = inputs if inputs is not None else example_states(loaded)
        texts = (
            None if items is None else format_texts(items, loaded.tokenizer, as_chat, loaded.name, generation_prompt)
        )
        is_one_layer = len(states.shape) == 2
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

        stored_ids = getattr(states, "token_ids", None)
        source_texts = texts if texts is not None else getattr(states, "texts", None)  # given, or the store's

        def tokens_of(row: int) -> list[str]:
            if stored_ids is not None:
                ids = stored_ids.of([row])[0]
            else:
                one = [source_texts[row]]
                ids = tokenize_texts(loaded.tokenizer, one, max_tokens=loaded.context_length).token_ids[0]
            return [loaded.tokenizer.decode([token]) for token in ids]

        figure = plotting.defect_figure(report, tokens_of)
        if texts is None:  # the store's own texts, or its ids decoded, for the checked rows
            shown = {
                row: source_texts[row] if source_texts is not None else "".join(tokens_of(row))
                for row in report.checked
            }
            texts = [shown.get(i, "") for i in range(report.n_texts)]
        return AuditRun(report=report, model_description=loaded.description, texts=texts, defect_figure=figure)

    return run_guarded(audit, prefix="The audit failed", hold_model=True)
