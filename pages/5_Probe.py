"""Probe: what a probe trained on batched states scores when inference extracts one text at a time."""

from __future__ import annotations

import json

import streamlit as st

import ui
from extraction import plotting, probe
from extraction.probe_inputs import DEFAULT_BATCH_SIZE, DEFAULT_STRATEGIES, MAX_PROBE_TEXTS, checked_probe_inputs
from extraction.strategies import REFERENCE, STRATEGIES

KEY_SOURCE = "probe.source"
KEY_UPLOAD = "probe.upload"
KEY_STRATEGIES = "probe.strategies"
KEY_LAYER = "probe.layer"
KEY_BATCH_SIZE = "probe.batch_size"
KEY_SEED = "probe.seed"
KEY_RESULT = "probe.result"  # ui.ProbeRun of the last run
KEY_FEATURE_CACHE = "probe.feature_cache"  # (cache key, FeatureCache): states of one model and data set

BUILTIN = "Built-in sentiment reviews"
UPLOAD = "Upload a CSV"
STRATEGY_CHOICES = [name for name in STRATEGIES if name != REFERENCE]
LAYER_HELP = "hidden_states index probed: 0 = embeddings, -1 = the last layer (after the final norm)."
SEED_HELP = f"Seed of the stratified split ({probe.DEFAULT_TEST_FRACTION:.0%} of each class held out for testing)."


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
ui.set_defaults(
    {
        KEY_SOURCE: BUILTIN,
        KEY_STRATEGIES: DEFAULT_STRATEGIES,
        KEY_LAYER: -1,
        KEY_BATCH_SIZE: DEFAULT_BATCH_SIZE,
        KEY_SEED: probe.DEFAULT_SEED,
    }
)
data_column, options_column = st.columns([3, 2])
with data_column:
    source = st.radio("Labelled texts", [BUILTIN, UPLOAD], key=KEY_SOURCE, horizontal=True, persist_state="session")
    if source == BUILTIN:
        st.caption(f"{probe.BUILTIN_DESCRIPTION}.")
        upload = None
    else:
        upload = st.file_uploader(
            "CSV with `text` and `label` columns",
            type=["csv"],
            key=KEY_UPLOAD,
            help=(
                f"At least two labels, each on at least {probe.MIN_ROWS_PER_CLASS} rows; at most {MAX_PROBE_TEXTS} "
                "rows. Labels are used as written: ' positive' with a leading space is the single token a model "
                "predicts after 'Sentiment:', so the zero-shot lm_head accuracy can be computed."
            ),
        )
with options_column:
    strategies = st.multiselect(
        "Strategies (`single` is always run: it gives the inference-time states)",
        STRATEGY_CHOICES,
        key=KEY_STRATEGIES,
        persist_state="session",
        help=ui.strategies_help(STRATEGY_CHOICES),
    )
    layer_column, batch_column, seed_column = st.columns(3)
    layer = ui.whole_number_input(layer_column, "Layer", KEY_LAYER, -1, 1000, LAYER_HELP)
    batch_size = ui.whole_number_input(batch_column, "Batch size", KEY_BATCH_SIZE, 1, 64, "Texts per forward pass.")
    seed = ui.whole_number_input(seed_column, "Split seed", KEY_SEED, 0, 2**31 - 1, SEED_HELP)
st.caption(
    "Extraction takes time on a CPU: on SmolLM2-135M, one pass over the 200 built-in reviews takes about a "
    "minute per batched strategy and longer for `single`. The states are kept: adding a strategy later, or "
    "changing the seed, extracts only what is new."
)

if st.button("Train the probes", type="primary", key="probe.run", icon=":material/play_arrow:"):
    data = ui.run_guarded(lambda: checked_probe_inputs(strategies, source == BUILTIN, upload))
    loaded = ui.load_model_or_error(settings) if data is not None else None
    if loaded is not None:
        result = ui.train_probes(
            loaded, settings, data, strategies, int(layer), int(seed), int(batch_size), cache_key=KEY_FEATURE_CACHE
        )
        if result is not None:
            st.session_state[KEY_RESULT] = result

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

figure = plotting.probe_accuracy_figure(report)
st.plotly_chart(figure, key="probe.chart")
st.markdown(f"**What the gap means.** {probe.GAP_EXPLANATION}")

frame = report.to_frame()
st.dataframe(
    frame,
    hide_index=True,
    column_config=ui.column_config(plotting.PROBE_TABLE_COLUMNS),
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
ui.download_buttons(
    [
        ("Table (CSV)", lambda: frame.to_csv(index=False), "padding-audit-probe.csv", "probe.download.csv"),
        (
            "Report (JSON)",
            lambda: json.dumps(report.to_dict(), indent=2, allow_nan=False),
            "padding-audit-probe.json",
            "probe.download.json",
        ),
        ("Figure (HTML)", lambda: plotting.figure_html(figure), "padding-audit-probe.html", "probe.download.figure"),
    ]
)
