"""Predictions: does lm_head on the extracted states predict what the model predicts?"""

from __future__ import annotations

import streamlit as st

import ui
from extraction import plotting
from extraction.strategies import REFERENCE
from extraction.views import predictions

st.set_page_config(page_title="Predictions · padding-audit", page_icon="🧪", layout="wide")
run = ui.require_run()
ui.sidebar_run_summary(run)
report = run.report

st.title("Predictions")
st.markdown(
    "If the extracted final-layer state is right, `lm_head` on it gives the model's own next-token "
    "prediction for the text. The left chart counts the texts where its top-1 token equals the "
    "single-sample model's; the right one is the KL divergence between the two next-token "
    "distributions (0 when identical)."
)
st.markdown(ui.pooling_line(report))
if report.is_random:
    st.warning(
        f"{report.model} has random weights: the predicted tokens are noise, but whether a strategy "
        "predicts the same noise as `single` still tells whether its states are right.",
        icon="⚠️",
    )

compared = [name for name in report.strategies if name != REFERENCE]
if not compared:
    st.info("This run compared no strategy with `single`: choose some on the Home page.")
    st.stop()
if ui.lm_head_unavailable(report, "The top-1 / KL chart, the top next tokens table and the logit lens"):
    st.caption(
        "Run with pooling `last` on Home to see them; **Layers** and **How it works** show this pooling's results."
    )
    st.stop()

bars = plotting.top1_kl_figure(report, compared)
st.plotly_chart(bars, key="predictions.bars_chart")

st.subheader("Top next tokens, per text")
texts = report.texts
per_text_disagreement = predictions.disagreements(report, compared)
default_text = predictions.most_disputed_text(per_text_disagreement)
text_index = st.selectbox(
    "Text",
    list(range(len(texts))),
    index=default_text,
    format_func=lambda i: (
        plotting.text_label(i, texts[i], width=80)
        + (f"  ({per_text_disagreement[i]} strategies disagree)" if per_text_disagreement[i] else "")
    ),
    key="predictions.text",
)
st.markdown(f"> {texts[text_index]}")
columns_shown = st.multiselect(
    "Strategies in the table", compared, default=compared, key="predictions.table_strategies"
)

shown = [REFERENCE, *columns_shown]
st.dataframe(predictions.top_k_table(run.top_k, text_index, shown), hide_index=True, key="predictions.topk_table")

st.caption("Where each strategy read this text's state, and what that position could see:")
st.dataframe(
    predictions.read_positions_frame(report, text_index, shown, run.token_strings, run.pad_token_id, run.pad_token),
    hide_index=True,
    column_config={"KL (nats)": st.column_config.NumberColumn(format="%.2e")},
    key="predictions.read_table",
)

st.subheader("Logit lens")
st.markdown(
    "Each layer's state, put through the final norm and `lm_head`, gives a next-token guess. The "
    "chart shows for how many texts a strategy's guess at each layer equals `single`'s at the same "
    "layer: 100 % everywhere when the states are right."
)
lens = plotting.logit_lens_figure(report, compared)
st.plotly_chart(lens, key="predictions.lens_chart")

st.subheader("Download")
ui.download_buttons(
    [
        (
            "Top next tokens (CSV)",
            lambda: run.top_k.to_csv(index=False),
            "padding-audit-top-tokens.csv",
            "predictions.download.topk",
        ),
        (
            "Top-1 / KL figure (HTML)",
            lambda: plotting.figure_html(bars),
            "padding-audit-top1-kl.html",
            "predictions.download.bars",
        ),
        (
            "Logit lens figure (HTML)",
            lambda: plotting.figure_html(lens),
            "padding-audit-logit-lens.html",
            "predictions.download.lens",
        ),
    ]
)
