"""Probe: what a probe trained on batched states scores when inference extracts one text at a time."""

from __future__ import annotations

import hashlib
import json
import time

import streamlit as st

import ui
from extraction import figures
from extraction.probe import (
    BUILTIN_DESCRIPTION,
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    GAP_EXPLANATION,
    MIN_ROWS_PER_CLASS,
    LabelledTexts,
    builtin_dataset,
    check_labelled,
    parse_labelled_csv,
    run_probe,
)
from extraction.strategies import REFERENCE, STRATEGIES
from extraction.texts import decode_bytes

KEY_SOURCE = "probe.source"
KEY_UPLOAD = "probe.upload"
KEY_STRATEGIES = "probe.strategies"
KEY_LAYER = "probe.layer"
KEY_BATCH_SIZE = "probe.batch_size"
KEY_SEED = "probe.seed"
KEY_RESULT = "probe.result"  # {"report", "settings", "model_description", "seconds"} of the last run
KEY_FEATURE_CACHE = "probe.feature_cache"  # (cache key, FeatureCache): states of one model and data set

BUILTIN = "Built-in sentiment reviews"
UPLOAD = "Upload a CSV"
STRATEGY_CHOICES = [name for name in STRATEGIES if name != REFERENCE]
#: The classic bug, its fix, and packing without a mask: the two naive ones are the strategies
#: that corrupt SmolLM2 in float32, and every extra strategy costs one more pass over the data.
DEFAULT_STRATEGIES = ["right-naive", "right", "packed-naive"]
DEFAULT_BATCH_SIZE = 8
#: More rows than this are refused here: the command line handles any number.
MAX_PROBE_TEXTS = 2000


def data_from_inputs(source: str, upload) -> LabelledTexts:
    """The built-in set, or the uploaded CSV; ``ValueError`` saying what is wrong otherwise."""
    if source == BUILTIN:
        return builtin_dataset()
    if upload is None:
        raise ValueError("no file uploaded: upload a .csv with text and label columns, or use the built-in set")
    name = str(upload.name)
    return parse_labelled_csv(decode_bytes(upload.getvalue(), name), name)


def data_digest(data: LabelledTexts) -> str:
    """Identifies a data set's content (the feature cache is valid for one data set only)."""
    digest = hashlib.sha256()
    for text, label in zip(data.texts, data.labels, strict=True):
        digest.update(text.encode() + b"\x1f" + label.encode() + b"\x1e")
    return digest.hexdigest()


st.set_page_config(page_title="Probe · padding-audit", page_icon="🧪", layout="wide")
settings = ui.sidebar_model_picker()

st.title("Probe impact")
st.markdown(
    "A probe trained on hidden states extracted in padded batches is validated on a test split extracted "
    "**the same way**, and then used at inference, where states come **one text at a time**. If the batched "
    "states were corrupted, the probe learned the corruption. For each strategy this page trains a "
    "standardized logistic-regression probe on the strategy's train-split states and scores it twice on the "
    "same test texts: on the strategy's own states (what validation shows) and on single-sample states "
    "(what inference sees)."
)

st.subheader("Train the probes")
st.session_state.setdefault(KEY_SOURCE, BUILTIN)
st.session_state.setdefault(KEY_STRATEGIES, DEFAULT_STRATEGIES)
st.session_state.setdefault(KEY_LAYER, -1)
st.session_state.setdefault(KEY_BATCH_SIZE, DEFAULT_BATCH_SIZE)
st.session_state.setdefault(KEY_SEED, DEFAULT_SEED)
data_column, options_column = st.columns([3, 2])
with data_column:
    source = st.radio("Labelled texts", [BUILTIN, UPLOAD], key=KEY_SOURCE, horizontal=True, persist_state="session")
    if source == BUILTIN:
        st.caption(f"{BUILTIN_DESCRIPTION}.")
        upload = None
    else:
        upload = st.file_uploader(
            "CSV with `text` and `label` columns",
            type=["csv"],
            key=KEY_UPLOAD,
            help=(
                f"At least two labels, each on at least {MIN_ROWS_PER_CLASS} rows; at most {MAX_PROBE_TEXTS} rows. "
                "Labels are used as written: ' positive' with a leading space is the single token a model "
                "predicts after 'Sentiment:', so the zero-shot lm_head accuracy can be computed."
            ),
        )
with options_column:
    strategies = st.multiselect(
        "Strategies (`single` is always run: it gives the inference-time states)",
        STRATEGY_CHOICES,
        key=KEY_STRATEGIES,
        persist_state="session",
        help="\n\n".join(f"**{name}**: {STRATEGIES[name].summary}" for name in STRATEGY_CHOICES),
    )
    layer_column, batch_column, seed_column = st.columns(3)
    layer = layer_column.number_input(
        "Layer",
        min_value=-1,
        max_value=1000,
        step=1,
        key=KEY_LAYER,
        persist_state="session",
        help="hidden_states index probed: 0 = embeddings, -1 = the last layer (after the final norm).",
    )
    batch_size = batch_column.number_input(
        "Batch size",
        min_value=1,
        max_value=64,
        step=1,
        key=KEY_BATCH_SIZE,
        persist_state="session",
        help="Texts per forward pass.",
    )
    seed = seed_column.number_input(
        "Split seed",
        min_value=0,
        max_value=2**31 - 1,
        step=1,
        key=KEY_SEED,
        persist_state="session",
        help=f"Seed of the stratified split ({DEFAULT_TEST_FRACTION:.0%} of each class held out for testing).",
    )
st.caption(
    "Extraction takes time on a CPU: on SmolLM2-135M, one pass over the 200 built-in reviews takes about a "
    "minute per batched strategy and longer for `single`. The states are kept: adding a strategy later, or "
    "changing the seed, extracts only what is new."
)

if st.button("Train the probes", type="primary", key="probe.run", icon=":material/play_arrow:"):
    try:
        if not strategies:
            raise ValueError("no strategy chosen: pick at least one strategy to compare with single")
        data = data_from_inputs(source, upload)
        check_labelled(data)
        if len(data) > MAX_PROBE_TEXTS:
            raise ValueError(
                f"{len(data)} rows: the dashboard takes at most {MAX_PROBE_TEXTS}; for more, use "
                "`python -m extraction probe --data FILE.csv --json out.json`"
            )
    except ValueError as error:  # TextsError (decoding) included
        ui.show_error(error)
    else:
        loaded = ui.load_model_or_error(settings)
        if loaded is not None:
            cache_key = (settings, data_digest(data))
            held_key, feature_cache = st.session_state.get(KEY_FEATURE_CACHE, (None, {}))
            if held_key != cache_key:  # one model and data set at a time: older states are dropped
                feature_cache = {}
                st.session_state[KEY_FEATURE_CACHE] = (cache_key, feature_cache)
            bar = st.progress(0.0, text="Starting…")

            def progress(name: str, number: int, count: int, done: int, total: int) -> None:
                fraction = ((number - 1) + (done / total if total else 1.0)) / count
                bar.progress(
                    min(fraction, 1.0),
                    text=f"Extracting with **{name}** (strategy {number} of {count}): {done}/{total} texts",
                )

            start = time.perf_counter()
            try:
                with ui.model_in_use():  # sessions share the model: extraction hooks into it, so they take turns
                    report = run_probe(
                        loaded,
                        data,
                        strategies,
                        layer=int(layer),
                        seed=int(seed),
                        batch_size=int(batch_size),
                        progress=progress,
                        feature_cache=feature_cache,
                    )
            except ValueError as error:
                ui.show_error(error, prefix="The probe run failed")
            except Exception as error:  # noqa: BLE001 - the page stays usable after any failure
                ui.logger.exception("probe run failed")
                ui.show_error(error, prefix="The probe run failed")
            else:
                st.session_state[KEY_RESULT] = {
                    "report": report,
                    "settings": settings,
                    "model_description": loaded.description,
                    "seconds": time.perf_counter() - start,
                }
            finally:
                bar.empty()

result = st.session_state.get(KEY_RESULT)
if result is None:
    st.info("Choose the labelled texts and the strategies, then click **Train the probes**.")
    st.stop()

report = result["report"]
st.divider()
st.header("Validation versus inference")
st.markdown(
    f"**Model:** {result['model_description']}. **Data:** {report.data_source}, {report.num_texts} texts, "
    f"classes {', '.join(repr(c) for c in report.classes)}. **Layer** {report.layer} of 0..{report.num_layers}; "
    f"{len(report.train_indices)} train / {len(report.test_indices)} test texts (stratified, seed {report.seed}); "
    f"batch size {report.batch_size}; computed in {result['seconds']:.1f} s."
)
for note in report.notes:
    st.warning(note, icon="⚠️")
if report.lm_head_note:
    st.info(f"No zero-shot lm_head accuracy: {report.lm_head_note}.")

figure = figures.probe_accuracy_figure(report)
st.plotly_chart(figure, key="probe.chart")
st.markdown(f"**What the gap means.** {GAP_EXPLANATION}")

frame = report.to_frame()
st.dataframe(
    frame,
    hide_index=True,
    column_config={
        "accuracy_same": st.column_config.NumberColumn(
            "accuracy, same strategy", format="percent", help="On the strategy's own test states (validation)."
        ),
        "accuracy_single": st.column_config.NumberColumn(
            "accuracy, single-sample", format="percent", help="On single-sample test states (inference)."
        ),
        "gap": st.column_config.NumberColumn("gap", format="percent", help="accuracy_same - accuracy_single"),
        "lm_head_accuracy": st.column_config.NumberColumn(
            "zero-shot lm_head",
            format="percent",
            help="argmax over the label tokens of lm_head on the strategy's final-layer test states",
        ),
        "prediction_flips": st.column_config.NumberColumn(
            "predictions changed", format="percent", help="Test texts whose prediction differs between the two."
        ),
        "corrupted_test_fraction": st.column_config.NumberColumn(
            "corrupted test states", format="percent", help="Test states with cosine < 0.9999 to single's."
        ),
        "extraction_seconds": st.column_config.NumberColumn("extraction (s)", format="%.1f"),
    },
    key="probe.table",
)
for name, strategy_result in report.strategies.items():
    st.markdown(f"{ui.strategy_chip(name)} {strategy_result.summary()}", unsafe_allow_html=True)
if report.is_random:
    st.caption(
        "Random weights: the accuracies themselves mean nothing; only the difference between the two test "
        "sets does. Pick `smollm2-135m` in the sidebar for a real model."
    )

st.subheader("Download")
download_columns = st.columns(3)
ui.download_button(
    download_columns[0],
    "Table (CSV)",
    lambda: frame.to_csv(index=False),
    "padding-audit-probe.csv",
    "probe.download.csv",
)
ui.download_button(
    download_columns[1],
    "Report (JSON)",
    lambda: json.dumps(report.to_dict(), indent=2, allow_nan=False),
    "padding-audit-probe.json",
    "probe.download.json",
)
ui.download_button(
    download_columns[2],
    "Figure (HTML)",
    lambda: figures.figure_html(figure),
    "padding-audit-probe.html",
    "probe.download.figure",
)
