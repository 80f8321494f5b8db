"""Probe: what a probe trained on batched states scores when inference extracts one text at a time,
across layers and seeded splits."""

from __future__ import annotations

import json

import streamlit as st

import ui
from extraction import plotting
from extraction.pooling import DEFAULT_POOLING, PER_TEXT_POOLINGS, POOLING_SUMMARY
from extraction.probing import probe
from extraction.probing.inputs import DEFAULT_BATCH_SIZE, DEFAULT_STRATEGIES, UPLOAD_HELP, checked_probe_inputs
from extraction.probing.sweep import DEFAULT_SEEDS, LM_HEAD_SCOPE
from extraction.strategies import REFERENCE, STRATEGIES

KEY_SOURCE = "probe.source"
KEY_UPLOAD = "probe.upload"
KEY_STRATEGIES = "probe.strategies"
KEY_LAYERS = "probe.layers"
KEY_SEEDS = "probe.seeds"
KEY_BATCH_SIZE = "probe.batch_size"
KEY_POOLING = "probe.pooling"
KEY_LAYER_VIEW = "probe.layer_view"  # the layer of the single-layer view
KEY_RESULT = "probe.result"  # ui.ProbeRun of the last run
KEY_FEATURE_CACHE = "probe.feature_cache"  # (cache key, FeatureCache): states of one model and data set

UPLOAD = "Upload a CSV"
#: Radio label -> built-in set name (None: an uploaded CSV).
SOURCES = {"Sentiment reviews (built-in)": "sentiment", "Past or future tense (built-in)": "tense", UPLOAD: None}
STRATEGY_CHOICES = [name for name in STRATEGIES if name != REFERENCE]

st.set_page_config(page_title="Probe · padding-audit", page_icon="🧪", layout="wide")
settings = ui.sidebar_model_picker()

st.title("Probe impact")
st.markdown(
    "A probe trained on hidden states extracted in padded batches is validated on a test split extracted "
    "**the same way**, then used at inference, where states come **one text at a time**. For each strategy, "
    "layer and seeded split, this page trains a standardized logistic-regression probe on the strategy's "
    "train states and scores it on the same test texts twice: on the strategy's own states (validation) and "
    "on single-sample states (inference). The gap between the two is what validation hides."
)

st.subheader("Train the probes")
ui.set_defaults(
    {
        KEY_SOURCE: next(iter(SOURCES)),
        KEY_STRATEGIES: DEFAULT_STRATEGIES,
        KEY_LAYERS: "all",
        KEY_SEEDS: DEFAULT_SEEDS,
        KEY_BATCH_SIZE: DEFAULT_BATCH_SIZE,
        KEY_POOLING: DEFAULT_POOLING,
    }
)
data_column, options_column = st.columns([3, 2])
with data_column:
    source = st.radio("Labelled texts", list(SOURCES), key=KEY_SOURCE, horizontal=True, persist_state="session")
    dataset = SOURCES[source]
    upload = None
    if dataset is not None:
        st.caption(f"{probe.BUILTIN_DATASETS[dataset].description}.")
    else:
        upload = st.file_uploader("CSV with `text` and `label` columns", ["csv"], key=KEY_UPLOAD, help=UPLOAD_HELP)
with options_column:
    strategies = st.multiselect(
        "Strategies (`single` is always run: it gives the inference-time states)",
        STRATEGY_CHOICES,
        key=KEY_STRATEGIES,
        persist_state="session",
        help=ui.strategies_help(STRATEGY_CHOICES),
    )
    layers_column, seeds_column, batch_column = st.columns(3)
    layers = layers_column.text_input(
        "Layers", key=KEY_LAYERS, persist_state="session", help="`all`, or hidden_states indices such as `3,9,-1`."
    )
    seeds = ui.whole_number_input(seeds_column, "Splits", KEY_SEEDS, 1, 20, "Seeded stratified splits per layer.")
    batch_size = ui.whole_number_input(batch_column, "Batch size", KEY_BATCH_SIZE, 1, 64, "Texts per forward pass.")
    pooling = st.radio(
        "Pooling",
        list(PER_TEXT_POOLINGS),
        key=KEY_POOLING,
        horizontal=True,
        help="; ".join(f"{name}: {POOLING_SUMMARY[name]}" for name in PER_TEXT_POOLINGS),
    )
st.caption(
    "One extraction per strategy (and `single`) gives every layer; then one probe is trained per layer, split and "
    "strategy. The progress bar gives each strategy's estimated extraction time: the cost model of these texts' "
    "token counts and this layout's passes, at the rate of a few passes measured on this machine first. The "
    "states are kept: another layer choice or number of splits extracts nothing, a new strategy only itself."
)

if st.button("Train the probes", type="primary", key="probe.run", icon=":material/play_arrow:"):
    data = ui.run_guarded(
        lambda: checked_probe_inputs(strategies, dataset is not None, upload, dataset=dataset or "sentiment")
    )
    loaded = ui.load_model_or_error(settings) if data is not None else None
    if loaded is not None:
        result = ui.train_probes(
            loaded, settings, data, strategies, layers, int(seeds), int(batch_size), KEY_FEATURE_CACHE, pooling
        )
        if result is not None:
            st.session_state[KEY_RESULT] = result
            st.session_state[KEY_LAYER_VIEW] = result["sweep"].focus_layer

result = st.session_state.get(KEY_RESULT)
if result is None:
    st.info("Choose the labelled texts and the strategies, then click **Train the probes**.")
    st.stop()

sweep = result["sweep"]
st.divider()
st.header("Where validation lies: the gap across layers")
st.markdown(f"**Model:** {result['model_description']}. **Data:** {sweep.describe()}")
for note in sweep.notes:
    st.warning(note, icon="⚠️")
if sweep.lm_head_note:
    st.info(f"No zero-shot lm_head accuracy: {sweep.lm_head_note}.")

figure = plotting.probe_sweep_figure(sweep)
st.plotly_chart(figure, key="probe.sweep_chart")
st.markdown("\n".join(f"- {finding}" for finding in sweep.findings()))
st.caption(
    f"{probe.GAP_EXPLANATION} The band is a 95% t-interval over the splits: where it covers 0, the gap could be "
    f"the luck of which texts were held out. {LM_HEAD_SCOPE}."
)

st.subheader("One layer")
if st.session_state.get(KEY_LAYER_VIEW) not in sweep.layers:
    st.session_state[KEY_LAYER_VIEW] = sweep.focus_layer
layer = st.selectbox("Layer", sweep.layers, key=KEY_LAYER_VIEW, help="Opens where the gap is largest.")
layer_figure = plotting.probe_layer_figure(sweep, layer)
st.plotly_chart(layer_figure, key="probe.layer_chart")
for name, finding in zip((n for n in sweep.strategies if n != REFERENCE), sweep.layer_findings(layer), strict=True):
    st.markdown(f"{ui.strategy_chip(name)} {finding}", unsafe_allow_html=True)
st.dataframe(
    sweep.layer_frame(layer),
    hide_index=True,
    column_config=ui.column_config(plotting.PROBE_TABLE_COLUMNS),
    key="probe.table",
)
if sweep.is_random:
    st.caption(
        "Random weights: the accuracies themselves mean nothing; only the difference between the two test "
        "sets does. Pick `smollm2-135m` in the sidebar for a real model."
    )

st.subheader("Download")
ui.download_buttons(
    [
        ("Sweep (CSV)", lambda: sweep.to_frame().to_csv(index=False), "padding-audit-probe.csv", "probe.download.csv"),
        (
            "Report (JSON)",
            lambda: json.dumps(sweep.to_dict(), indent=2, allow_nan=False),
            "padding-audit-probe.json",
            "probe.download.json",
        ),
        ("Figure (HTML)", lambda: plotting.figure_html(figure), "padding-audit-probe.html", "probe.download.figure"),
    ]
)
