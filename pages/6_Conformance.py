"""Conformance: every padding strategy on every causal-LM architecture transformers ships, measured."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui
from extraction import plotting
from extraction.strategies import STRATEGIES
from extraction.views import layouts as layout_views

st.set_page_config(page_title="Conformance · padding-audit", page_icon="🧪", layout="wide")

KEY_POOLING = "conformance.pooling"
KEY_ROWS = "conformance.rows"
KEY_ARCHITECTURE = "conformance.architecture"
KEY_STRATEGY = "conformance.strategy"
#: Passes drawn for one cell (bucketed makes one pass per length).
MAX_PASSES_DRAWN = 3

st.title("Conformance")
st.markdown(
    "Which layout gives the states a model computes depends on the architecture: absolute positions break "
    "left padding, sliding windows and recurrent layers ignore a 4-D mask, a recurrent state runs through "
    "whatever comes first in the row. Here every strategy was measured against one text at a time on a tiny "
    "random model (`tiny-random:<model_type>`) of every causal-LM architecture transformers registers. "
    "The verdicts and causes come from the measurements and the layout, never from the architecture's name."
)
matrix = ui.conformance_matrix()
if matrix is None:
    st.info(f"No conformance matrix yet: run `make matrix` (minutes of CPU); it writes `{ui.MATRIX_JSON.name}`.")
    st.stop()

versions, settings = matrix["versions"], matrix["settings"]
measured = plotting.measured_architectures(matrix)
st.caption(
    f"transformers {versions['transformers']}, torch {versions['torch']}, {settings['dtype']}, CPU; "
    f"{len(measured)} of {len(matrix['architectures'])} registered types measured, "
    f"{len(matrix['texts'])} texts of {', '.join(map(str, settings['token_lengths']))} tokens in one batch; "
    f"the run took {matrix['seconds']:.0f} s. Regenerate with `make matrix`."
)

pooling = st.radio(
    "Pooling",
    settings["poolings"],
    horizontal=True,
    key=KEY_POOLING,
    help="last: the last real token's state; mean: the mean over the text's tokens",
)
rows = st.multiselect("Architectures in the grid (all when empty)", measured, key=KEY_ROWS)
st.plotly_chart(plotting.conformance_grid_figure(matrix, pooling, rows or None), key="conformance.grid")

st.subheader("One cell: its cause and its layout")
architecture_column, strategy_column = st.columns(2)
architecture = architecture_column.selectbox("Architecture", rows or measured, key=KEY_ARCHITECTURE)
strategy = strategy_column.selectbox("Strategy", settings["strategies"], key=KEY_STRATEGY)
entry = matrix["architectures"][architecture]
cell = entry["pooling"][pooling][strategy]
st.markdown(
    f"{ui.strategy_chip(strategy)} on **tiny-random:{architecture}** ({entry['class']}, attention "
    f"{entry['attn_implementation']}), {pooling} pooling: {ui.verdict_badge(cell['verdict'])}",
    unsafe_allow_html=True,
)
st.markdown(f"**Cause ({cell['cause_kind'] or 'could not run'}).** {cell['cause']}")
ui.metric_row(
    [
        ("max relative L2", "n/a" if cell["max_relative_l2"] is None else f"{cell['max_relative_l2']:.2g}", None),
        ("reads position ids", {True: "yes", False: "no", None: "n/a"}[entry["reads_position_ids"]], None),
        ("reads the 2-D mask", {True: "yes", False: "no", None: "n/a"}[entry["reads_attention_mask"]], None),
    ]
)
st.markdown(
    f"**What it does.** {layout_views.strategy_summary(strategy, pooling)} "
    f"**When it breaks.** {STRATEGIES[strategy].breaks_when}"
)
token_ids, token_strings, pad_id = ui.matrix_tokens(tuple(matrix["texts"]))
passes = layout_views.plan_layouts(strategy, token_ids, pad_id, batch_size=len(token_ids))
for number, (group, layout) in enumerate(passes[:MAX_PASSES_DRAWN], start=1):
    st.plotly_chart(
        plotting.batch_layout_figure(
            layout,
            token_strings,
            group,
            title=f"{strategy}: forward pass {number} of {len(passes)}, {layout.shape[0]} x {layout.shape[1]}",
            pooling=pooling,
        ),
        key=f"conformance.layout.{number}",
    )
if len(passes) > MAX_PASSES_DRAWN:
    st.caption(f"{len(passes)} forward passes; the first {MAX_PASSES_DRAWN} are drawn.")

with st.expander(f"Not measured ({len(matrix['architectures']) - len(measured)} types), and why"):
    st.dataframe(
        pd.DataFrame(
            [
                {"model type": name, "reason": row["error"]}
                for name, row in matrix["architectures"].items()
                if row["error"] is not None
            ]
        ),
        hide_index=True,
    )
