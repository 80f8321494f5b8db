"""Predictions: does lm_head on the extracted states predict what the model predicts?"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui
from extraction import figures
from extraction.strategies import REFERENCE

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

bars = figures.top1_kl_figure(report, compared)
st.plotly_chart(bars, key="predictions.bars_chart")

st.subheader("Top next tokens, per text")
texts = report.texts
per_text_disagreement = [
    sum(not bool(report.strategies[name].top1_same[i]) for name in compared) for i in range(len(texts))
]
default_text = max(range(len(texts)), key=lambda i: (per_text_disagreement[i], -i))
text_index = st.selectbox(
    "Text",
    list(range(len(texts))),
    index=default_text,
    format_func=lambda i: (
        figures.text_label(i, texts[i], width=80)
        + (f"  ({per_text_disagreement[i]} strategies disagree)" if per_text_disagreement[i] else "")
    ),
    key="predictions.text",
)
st.markdown(f"> {texts[text_index]}")
columns_shown = st.multiselect(
    "Strategies in the table", compared, default=compared, key="predictions.table_strategies"
)

top_k = run.top_k[run.top_k["text"] == text_index]
table = pd.DataFrame({"rank": sorted(top_k["rank"].unique())})
for name in [REFERENCE, *columns_shown]:
    rows = top_k[top_k["strategy"] == name].sort_values("rank")
    table[name] = [
        f"{token!r}  {probability:.1%}" for token, probability in zip(rows["token"], rows["probability"], strict=True)
    ]
st.dataframe(table, hide_index=True, key="predictions.topk_table")

known_tokens = dict(zip(report.tokenized.token_ids[text_index], run.token_strings[text_index], strict=True))
known_tokens.setdefault(run.pad_token_id, run.pad_token)
read_rows = []
for name in [REFERENCE, *columns_shown]:
    extraction = report.strategies[name].extraction
    token_id = int(extraction.read_token_ids[text_index])
    read_rows.append(
        {
            "strategy": name,
            "token read": known_tokens.get(token_id, f"id {token_id}"),
            "position id there": int(extraction.read_position_ids[text_index]),
            "saw padding": bool(extraction.saw_padding[text_index]),
            "saw another text": bool(extraction.saw_other_text[text_index]),
            "top-1 = single's": bool(report.strategies[name].top1_same[text_index]),
            "KL (nats)": float(report.strategies[name].kl[text_index]),
        }
    )
st.caption("Where each strategy read this text's state, and what that position could see:")
st.dataframe(
    pd.DataFrame(read_rows),
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
lens = figures.logit_lens_figure(report, compared)
st.plotly_chart(lens, key="predictions.lens_chart")

st.subheader("Download")
download_columns = st.columns(3)
ui.download_button(
    download_columns[0],
    "Top next tokens (CSV)",
    lambda: run.top_k.to_csv(index=False),
    "padding-audit-top-tokens.csv",
    "predictions.download.topk",
)
ui.download_button(
    download_columns[1],
    "Top-1 / KL figure (HTML)",
    lambda: figures.figure_html(bars),
    "padding-audit-top1-kl.html",
    "predictions.download.bars",
)
ui.download_button(
    download_columns[2],
    "Logit lens figure (HTML)",
    lambda: figures.figure_html(lens),
    "padding-audit-logit-lens.html",
    "predictions.download.lens",
)
