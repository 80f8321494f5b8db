"""How it works: each strategy's batch layout, drawn from the real tokenization of the run's texts."""

from __future__ import annotations

import streamlit as st

import ui
from extraction import plotting
from extraction.strategies import STRATEGIES
from extraction.views import layouts as layout_views

st.set_page_config(page_title="How it works · padding-audit", page_icon="🧪", layout="wide")
run = ui.require_run()
ui.sidebar_run_summary(run)
report = run.report

#: Pictures stay readable up to this many texts laid out together.
MAX_PICTURE_TEXTS = 6
#: Passes drawn per strategy (single and bucketed make one pass per text or length).
MAX_PASSES_DRAWN = 4

st.title("How it works")
st.markdown(
    "A model given a batch sees a rectangle of tokens: shorter texts are filled with **padding**, "
    "an **attention mask** says which positions each token may look at, and **position ids** say "
    "where each token sits. Each strategy fills that rectangle differently and pools each text's "
    "state from some of its positions. The pictures below lay out the texts you ran, with their real tokens."
)
st.markdown(ui.pooling_line(report))
st.markdown(
    "- **Layout**: one row per batch row; colour = which text; white `pad` = padding; the small "
    f"number under each token is its position id; {layout_views.POOLED_MARKS[report.pooling]}.\n"
    "- **Attention**: for one batch row, which positions (down) can attend to which (across). "
    "**Red** means a text attends to another text (a leak); grey means it attends to padding; an arrow "
    "marks the positions pooled."
)

texts = report.texts
lengths = report.tokenized.lengths
chosen = st.multiselect(
    f"Texts to lay out (up to {MAX_PICTURE_TEXTS})",
    list(range(len(texts))),
    default=layout_views.default_layout_texts(lengths),
    max_selections=MAX_PICTURE_TEXTS,
    format_func=lambda i: f"{plotting.text_label(i, texts[i])} ({lengths[i]} tokens)",
    key="how.texts",
)
if not chosen:
    st.info("Pick at least one text to lay out.")
    st.stop()
chosen = sorted(chosen)
st.caption(
    f"Laid out as one batch of {len(chosen)} (the run itself used batch size {report.batch_size}). "
    f"Padding uses the pad token {run.pad_token!r} (id {run.pad_token_id})."
)

token_ids = [report.tokenized.token_ids[i] for i in chosen]
names = list(report.strategies)
# Open on the worst strategy of the run: the picture that explains a corrupted verdict.
tabs = st.tabs(names, default=layout_views.worst_strategy(report), key="how.tabs")
for tab, name in zip(tabs, names, strict=True):
    strategy = STRATEGIES[name]
    comparison = report.strategies[name]
    with tab:
        st.markdown(
            f"{ui.strategy_chip(name)} &nbsp; {ui.verdict_badge(comparison.verdict)} &nbsp; in your run",
            unsafe_allow_html=True,
        )
        summary = layout_views.strategy_summary(name, report.pooling)
        st.markdown(f"**What it does.** {summary} **When it breaks.** {strategy.breaks_when}")
        passes = layout_views.plan_layouts(name, token_ids, run.pad_token_id, batch_size=len(chosen))
        if len(passes) > 1:
            st.caption(
                f"{len(passes)} forward passes for these {len(chosen)} texts"
                + (f"; the first {MAX_PASSES_DRAWN} are drawn." if len(passes) > MAX_PASSES_DRAWN else ".")
            )
        for number, (group, layout) in enumerate(passes[:MAX_PASSES_DRAWN], start=1):
            group_texts = [chosen[k] for k in group]
            st.plotly_chart(
                plotting.batch_layout_figure(
                    layout,
                    run.token_strings,
                    group_texts,
                    title=f"{name}: forward pass {number} of {len(passes)}, {layout.shape[0]} x {layout.shape[1]}",
                    pooling=report.pooling,
                ),
                key=f"how.layout.{name}.{number}",
            )
            row = layout_views.most_padded_row(layout)
            attention_column, words_column = st.columns([3, 2], vertical_alignment="center")
            attention_column.plotly_chart(
                plotting.attention_figure(
                    layout,
                    row,
                    run.token_strings,
                    group_texts,
                    title=f"{name}: who sees whom in row {row}",
                    pooling=report.pooling,
                ),
                key=f"how.attention.{name}.{number}",
            )
            words_column.markdown(
                "\n".join(
                    f"- {sentence}"
                    for sentence in layout_views.read_descriptions(
                        layout, run.token_strings, group_texts, report.pooling
                    )
                )
            )
        st.caption(ui.strategy_cause_line(report, name))
