"""Layers: how far each strategy's hidden states are from single-sample extraction, layer by layer."""

from __future__ import annotations

import streamlit as st

import ui
from extraction import plotting
from extraction.strategies import REFERENCE

st.set_page_config(page_title="Layers · padding-audit", page_icon="🧪", layout="wide")
run = ui.require_run()
ui.sidebar_run_summary(run)
report = run.report

st.title("Layers")
st.markdown(
    "For every text, its hidden state at each layer (pooled as below) is compared with the state "
    "single-sample extraction gives (`single`: one text per forward pass). **Cosine 1** means the "
    "same direction; a corrupted strategy falls far below. Layer 0 is the embeddings: a difference "
    "there means the wrong token or position was read; a difference that appears only later comes "
    "from attention (padding or another text seen)."
)
st.markdown(ui.pooling_line(report))

compared = [name for name in report.strategies if name != REFERENCE]
if not compared:
    st.info("This run compared no strategy with `single`: choose some on the Home page.")
    st.stop()
shown = st.multiselect("Strategies shown", compared, default=compared, key="layers.strategies")
if not shown:
    st.info("Pick at least one strategy to draw.")
    st.stop()

view = st.segmented_control(
    "View",
    ["1 - cosine, log scale", "cosine"],
    default="1 - cosine, log scale",
    key="layers.view",
    help="The log scale makes drift of 1e-6 and corruption of 0.5 both readable.",
)
if view == "cosine":
    main_figure = plotting.cosine_by_layer_figure(report, shown)
else:
    main_figure = plotting.one_minus_cosine_figure(report, shown)
st.plotly_chart(main_figure, key="layers.main_chart")

st.subheader("Per text")
worst_first = sorted(compared, key=lambda name: report.strategies[name].min_cosine)
heat_column, scale_column = st.columns([2, 1], vertical_alignment="bottom")
heat_strategy = heat_column.selectbox(
    "Strategy", worst_first, key="layers.heatmap_strategy", help="Listed from the worst min cosine to the best."
)
heat_log = scale_column.toggle("Colour by log10(1 - cosine)", value=False, key="layers.heatmap_log")
heatmap = plotting.cosine_heatmap_figure(report.strategies[heat_strategy], report.texts, log_scale=heat_log)
st.plotly_chart(heatmap, key="layers.heatmap_chart")
st.caption(ui.strategy_cause_line(report, heat_strategy))

st.subheader("Relative L2 error")
l2_figure = plotting.relative_l2_figure(report, shown)
st.plotly_chart(l2_figure, key="layers.l2_chart")

st.subheader("Download the figures")
download_columns = st.columns(3)
for column, (label, figure, file_name) in zip(
    download_columns,
    [
        ("Per-layer figure (HTML)", main_figure, "padding-audit-layers.html"),
        ("Heatmap (HTML)", heatmap, f"padding-audit-heatmap-{heat_strategy}.html"),
        ("Relative L2 (HTML)", l2_figure, "padding-audit-relative-l2.html"),
    ],
    strict=True,
):
    ui.download_button(
        column, label, lambda figure=figure: plotting.figure_html(figure), file_name, f"layers.download.{file_name}"
    )
