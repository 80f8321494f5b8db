"""The work behind the Probe page's button: the probe sweep with a progress bar, the model held
and the states kept in the session."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import streamlit as st

from extraction.models import LoadedModel
from extraction.pooling import DEFAULT_POOLING, Pooling
from extraction.probing.features import extraction_estimate
from extraction.probing.inputs import data_digest
from extraction.probing.probe import LabelledTexts
from extraction.probing.sweep import ProbeSweep, run_probe_sweep
from extraction.storage.export import parse_layers
from extraction.strategies import DEFAULT_MAX_BATCH_TOKENS, REFERENCE
from extraction.texts import tokenize_texts
from ui.model import ModelSettings
from ui.work import progress_callback, run_guarded, session_cache


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
    """:func:`~extraction.probing.sweep.run_probe_sweep` with a progress bar, the model held, and
    the states kept in the session under ``cache_key`` for this model and data set (adding a
    strategy later extracts only the new one; other layers or seeds extract nothing); None after
    an ``st.error`` when it fails. ``pooling``: ``last`` or ``mean``. The progress bar says each
    strategy's estimated extraction time (:func:`~extraction.probing.features.extraction_estimate`:
    the cost model of these texts' token counts, each pass running the blocks up to the deepest layer
    probed, at a rate measured on a few passes first)."""
    feature_cache = session_cache(cache_key, (settings, data_digest(data)))
    bar = st.progress(0.0, text="Starting: measuring this machine's rate for the time estimate…")

    def run() -> ProbeSweep:
        tokenized = tokenize_texts(loaded.tokenizer, data.texts, max_tokens=loaded.context_length)
        names = [REFERENCE, *(name for name in strategies if name != REFERENCE)]
        # The sweep's passes stop after the deepest layer probed (lm_head runs only when the last is probed).
        probed = parse_layers(layers, loaded.num_hidden_layers + 1)
        estimates = extraction_estimate(loaded, tokenized, names, batch_size, DEFAULT_MAX_BATCH_TOKENS, probed)
        return run_probe_sweep(
            loaded,
            data,
            strategies,
            layers=layers,
            seeds=seeds,
            batch_size=batch_size,
            progress=progress_callback(bar, estimates),
            feature_cache=feature_cache,
            pooling=pooling,
        )

    try:
        sweep = run_guarded(run, prefix="The probe run failed", hold_model=True)
    finally:
        bar.empty()
    if sweep is None:
        return None
    return ProbeRun(sweep=sweep, settings=settings, model_description=loaded.description)
