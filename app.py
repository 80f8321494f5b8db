"""Entry point of the padding-audit dashboard, and its Home page.

Run with ``streamlit run app.py`` (or ``make run``). Home: choose a model and texts, run,
read one verdict per strategy. The results of a run are kept in the session and read by
the other pages, which are the files ``pages/<number>_<Name>.py`` (found automatically,
in number order, so a new page is a new file there).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import ui
from extraction.pooling import DEFAULT_POOLING, POOLING_SUMMARY, POOLINGS
from extraction.samples import SAMPLE_TEXTS
from extraction.strategies import REFERENCE, STRATEGIES
from extraction.texts import TEXT_SUFFIXES
from extraction.views import layouts as layout_views
from extraction.views.predictions import LM_HEAD_ONLY_LAST
from extraction.views.report_html import comparison_report_html

PAGES_DIR = Path(__file__).resolve().parent / "pages"

KEY_STRATEGIES = "home.strategies"
KEY_BATCH_SIZE = "home.batch_size"
KEY_TEXTS = "home.texts"
KEY_UPLOAD = "home.upload"
KEY_CHAT = "home.chat"
KEY_GENERATION_PROMPT = "home.generation_prompt"
KEY_POOLING = "home.pooling"
KEY_RUN_REQUESTED = "home.run_requested"

STRATEGY_CHOICES = [name for name in STRATEGIES if name != REFERENCE]
DEFAULT_BATCH_SIZE = 4

#: The "Show me the bug" preset: the classic bugs next to their fixes, on a model where
#: all three naive strategies break (GPT-2 has absolute positions) and that runs in seconds.
BUG_PRESET = {
    ui.KEY_MODEL_CHOICE: "tiny-random-gpt2",
    ui.KEY_DTYPE: "float32",
    ui.KEY_ATTN: "sdpa",
    KEY_STRATEGIES: ["right-naive", "right", "left-naive", "left", "packed-naive", "packed"],
    KEY_BATCH_SIZE: 4,
    KEY_TEXTS: "\n".join(SAMPLE_TEXTS),
    KEY_CHAT: False,
    KEY_GENERATION_PROMPT: False,
    KEY_POOLING: "last",  # the classic read-position mistakes
    KEY_RUN_REQUESTED: True,  # and run it
}


def home() -> None:
    """The home page: inputs, the run, then one verdict card per strategy."""
    st.set_page_config(page_title="padding-audit", page_icon="🧪", layout="wide")
    settings = ui.sidebar_model_picker()

    st.title("Are your extracted hidden states the ones the model computes?")
    st.markdown(
        "Hidden states extracted in padded batches can differ from what the model computes on each text "
        "alone: a pad token's state read instead of the last word, positions shifted, packed texts "
        "attending to each other. A probe trained on them learns the corruption. This page extracts the "
        "state of every layer (the last token's, the mean over the text's tokens, or every token's: the "
        "**pooling**) with each **padding strategy** and compares it with **single-sample extraction** (one "
        "text per forward pass, the ground truth)."
    )

    preset_column, preset_note = st.columns([1, 3], vertical_alignment="center")
    preset_column.button(
        "Show me the bug",
        on_click=ui.apply_preset,
        args=(BUG_PRESET,),
        type="primary",
        key="home.preset",
        help="Runs the three classic mistakes next to their fixes on a tiny GPT-2 (a few seconds).",
        icon=":material/bug_report:",
    )
    preset_note.caption(
        "One click: right padding read at position -1, left padding without position ids, and packing "
        "without a mask, each next to its fix, on a tiny GPT-2 with random weights (seconds). "
        "Pick `smollm2-135m` in the sidebar to see the same on a real model."
    )

    st.subheader("Run a comparison")
    ui.set_defaults(
        {
            KEY_STRATEGIES: STRATEGY_CHOICES,
            KEY_BATCH_SIZE: DEFAULT_BATCH_SIZE,
            KEY_TEXTS: "\n".join(SAMPLE_TEXTS),
            KEY_POOLING: DEFAULT_POOLING,
        }
    )
    options_column, texts_column = st.columns([1, 2])
    with options_column:
        strategies = st.multiselect(
            "Strategies (each is compared with `single`)",
            STRATEGY_CHOICES,
            key=KEY_STRATEGIES,
            persist_state="session",
            help=ui.strategies_help(STRATEGY_CHOICES),
        )
        batch_size = ui.whole_number_input(
            st,
            "Batch size",
            KEY_BATCH_SIZE,
            1,
            64,
            "Texts per forward pass. Padding bugs need texts of different lengths in one batch.",
        )
        pooling = st.radio(
            "Pooling",
            POOLINGS,
            key=KEY_POOLING,
            horizontal=True,
            persist_state="session",
            help="What each text's state is: "
            + "; ".join(f"**{name}**: {about}" for name, about in POOLING_SUMMARY.items())
            + ". Under mean and tokens, lm_head agreement (top-1, KL) is n/a: it is defined for the last token only.",
        )
    with texts_column:
        text_box = st.text_area(
            f"Texts, one per line (at most {ui.MAX_INTERACTIVE_TEXTS})",
            key=KEY_TEXTS,
            height=220,
            persist_state="session",
        )
        upload = st.file_uploader(
            "…or upload a texts file (replaces the box above)",
            type=[suffix.lstrip(".") for suffix in TEXT_SUFFIXES],
            key=KEY_UPLOAD,
            help=".txt: one text a line; .jsonl: a 'text' field, or chat 'messages' (a list of {role, content}, "
            "formatted with the model's chat template), per line; .csv: a 'text' column.",
        )
        chat_column, prompt_column = st.columns(2)
        as_chat = chat_column.toggle(
            "Format as chat",
            key=KEY_CHAT,
            help="Format each plain text as one user turn with the model's chat template, as instruct data is "
            "(SmolLM2's adds a system turn and ends each turn in <|im_end|>).",
        )
        generation_prompt = (
            prompt_column.toggle(
                "Add the generation prompt",
                key=KEY_GENERATION_PROMPT,
                disabled=not as_chat,
                help="End each chat-formatted text in the assistant's header (add_generation_prompt=True), as texts "
                "made for generation are. Needs Format as chat.",
            )
            and as_chat
        )  # off, and greyed out, without chat formatting

    run_clicked = st.button("Run", type="primary", key="home.run", icon=":material/play_arrow:")
    if run_clicked or st.session_state.pop(KEY_RUN_REQUESTED, False):
        inputs = ui.run_guarded(lambda: ui.comparison_inputs(text_box, upload, strategies))
        texts, source = inputs if inputs is not None else ([], "")
        if len(texts) > ui.MAX_INTERACTIVE_TEXTS:
            st.warning(
                f"{len(texts)} texts given: the dashboard runs the first {ui.MAX_INTERACTIVE_TEXTS}. "
                + ui.MORE_TEXTS_HINT
            )
        loaded = ui.load_model_or_error(settings) if inputs is not None else None
        if loaded is not None:
            run = ui.run_guarded(
                lambda: ui.run_comparison(
                    loaded, texts, strategies, int(batch_size), settings, source, as_chat, pooling, generation_prompt
                ),
                prefix="The run failed",
            )
            if run is not None:
                ui.store_run(run)

    run = ui.get_run()
    if run is None:
        st.info("Choose a model in the sidebar, then click **Run** (or **Show me the bug**).")
        return

    report = run.report
    ui.sidebar_run_summary(run)
    st.divider()
    st.header("Verdicts")
    st.markdown(
        f"**Model:** {run.model_description}. **{len(report.tokenized)} texts** from the {run.source}, "
        f"batch size {report.batch_size}; computed in {run.seconds:.1f} s."
    )
    st.markdown(ui.pooling_line(report))
    if report.pooling != pooling:
        st.info(f"These results use pooling `{report.pooling}`; click **Run** to see `{pooling}`.", icon="ℹ️")
    for note in report.notes:
        st.warning(note, icon="⚠️")
    if run.texts_dropped:
        st.warning(
            f"{run.texts_dropped} texts beyond the first {ui.MAX_INTERACTIVE_TEXTS} were not run. "
            + ui.MORE_TEXTS_HINT,
            icon="⚠️",
        )
    st.caption(ui.verdict_rule(report.pooling))
    if report.pooling != "last":
        st.caption(f"**top-1 agreement, KL: n/a.** {LM_HEAD_ONLY_LAST}")

    compared = [name for name in report.strategies if name != REFERENCE]
    columns_per_row = 3
    for start in range(0, len(compared), columns_per_row):
        row = st.columns(columns_per_row)
        for column, name in zip(row, compared[start : start + columns_per_row], strict=False):
            comparison = report.strategies[name]
            with column.container(border=True, key=f"home.card.{name}"):
                st.markdown(
                    f"{ui.strategy_chip(name)} &nbsp; {ui.verdict_badge(comparison.verdict)}",
                    unsafe_allow_html=True,
                )
                st.caption(layout_views.strategy_summary(name, report.pooling))
                st.markdown(
                    ui.card_numbers(comparison.min_cosine, comparison.top1_agreement, comparison.max_relative_l2),
                    unsafe_allow_html=True,
                )
                st.markdown(comparison.cause)

    st.subheader("Summary")
    summary, summary_columns = ui.summary_table(report)
    st.dataframe(summary, hide_index=True, column_config=summary_columns, key="home.summary")
    st.caption(
        "Per-layer details: **Layers**; next-token predictions: **Predictions**; batch pictures: **How it works**."
    )

    st.subheader("Downloads")
    ui.download_button(
        st,
        "Download the report (HTML)",
        lambda: comparison_report_html(
            report,
            run.token_strings,
            run.pad_token_id,
            settings={"texts from": run.source, "computed in": f"{run.seconds:.1f} s"},
        ),
        "padding-audit-report.html",
        "home.download.report",
    )
    st.caption(
        "One self-contained file (about 5 MB, mostly plotly.js) with the settings, the verdicts and their causes, "
        "the per-layer and predictions figures, the layout of the worst strategy, the notes and the versions: "
        "its charts work offline, for teammates who will not run anything."
    )
    download_columns = st.columns(3)
    ui.download_button(
        download_columns[0],
        "Summary (CSV)",
        lambda: report.summary_frame().to_csv(index=False),
        "padding-audit-summary.csv",
        "home.download.summary",
    )
    ui.download_button(
        download_columns[1],
        "Per text and layer (CSV)",
        lambda: report.layers_frame().to_csv(index=False),
        "padding-audit-layers.csv",
        "home.download.layers",
    )
    ui.download_button(
        download_columns[2],
        "Full report (JSON)",
        lambda: ui.report_json(report),
        "padding-audit-report.json",
        "home.download.json",
    )


home_page = st.Page(home, title="Home", icon=":material/home:", default=True)
ui.register_home_page(home_page)
st.navigation([home_page, *(st.Page(str(path)) for path in ui.page_files(PAGES_DIR))]).run()
