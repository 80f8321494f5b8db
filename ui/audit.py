"""The work behind the Audit page's buttons: audit the uploaded states (or the worked example)
with a progress bar and the model held, and the picture of the defect it names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from extraction.views.audit import progress_text
from extraction.views.examples import example_states
from ui.inputs import KeptTextSource
from ui.work import run_guarded


class AuditRun(TypedDict):
    """One run of the Audit page, kept in ``st.session_state``."""

    report: AuditReport
    model_description: str
    #: every text of the file in row order (chat-formatted as asked), or, for a file streamed from a
    #: path, the checked texts by row
    texts: Sequence[str] | Mapping[int, str]
    defect_figure: go.Figure | None  # what happened to one text (plotting.defect_figure), where a picture helps


def run_audit(
    loaded: LoadedModel,
    inputs: tuple[StoredStates | LazyStates, list[TextItem] | KeptTextSource | None] | None,
    layer: int,
    layers_text: str,
    sample: int,
    forensics: bool,
    pooling: str | None = None,
    as_chat: bool = False,
    generation_prompt: bool = False,
    max_corrupted: float | None = None,
) -> AuditRun | None:
    """:func:`~extraction.audit.audit_states` of ``inputs`` (None: the worked example of
    :mod:`extraction.views.examples`, built on ``loaded``) with a progress bar and the model held;
    ``layer`` applies to an (N, d) file, ``layers_text`` to an (N, L, d) one, ``sample`` 0 means
    every text, ``pooling`` None the pooling the file records; ``as_chat`` formats every plain text as
    one user turn with the chat template, ending in the generation prompt with ``generation_prompt``
    (:func:`~extraction.chat.format_texts`); ``max_corrupted`` samples in rounds until the store's
    corrupted fraction is shown below it (``sample`` is then the first round). Inputs from paths
    (:func:`~ui.inputs.audit_path_inputs`) are read lazily: a streamed texts file is scanned, not held.
    The progress bar shows each stage (the texts scan, the rounds, the re-extraction, the forensics).
    None after an ``st.error`` when it fails."""

    def audit() -> AuditRun:
        states, items = inputs if inputs is not None else example_states(loaded)
        streamed = isinstance(items, KeptTextSource)
        if items is None or streamed:
            texts = items
        else:
            texts = format_texts(items, loaded.tokenizer, as_chat, loaded.name, generation_prompt)
        shape = states.shape if isinstance(states, LazyStates) else tuple(states.tensor.shape)
        is_one_layer = len(shape) == 2
        num_states = loaded.num_hidden_layers + 1
        layers = parse_layers(layers_text, num_states) if layers_text.strip() and not is_one_layer else None
        bar = st.progress(0.0, text="Starting…")

        def progress(stage: str, done: int, total: int) -> None:
            fraction, text = progress_text(stage, done, total)
            bar.progress(fraction, text=text)

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
                max_corrupted=max_corrupted,
            )
        finally:
            bar.empty()
        stored_ids = getattr(states, "token_ids", None)
        source_texts = getattr(states, "texts", None)  # the store's own texts, where it keeps them
        shown = dict(texts.kept) if streamed else texts

        def tokens_of(row: int) -> list[str]:
            if stored_ids is not None:
                ids = stored_ids.of([row])[0]
            else:
                if shown is None:
                    text = source_texts[row]
                else:
                    text = shown[row] if not streamed or row in shown else texts.texts_at([row])[0]
                ids = tokenize_texts(loaded.tokenizer, [text], max_tokens=loaded.context_length).token_ids[0]
            return [loaded.tokenizer.decode([token]) for token in ids]

        figure = plotting.defect_figure(report, tokens_of)
        if shown is None:  # the store's own texts, or its ids decoded, for the checked rows
            shown = {
                row: source_texts[row] if source_texts is not None else "".join(tokens_of(row))
                for row in report.checked
            }
        return AuditRun(report=report, model_description=loaded.description, texts=shown, defect_figure=figure)

    return run_guarded(audit, prefix="The audit failed", hold_model=True)
