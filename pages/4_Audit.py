"""Audit: are the hidden states you already stored the ones the model computes, and if not, why?"""

from __future__ import annotations

import json

import streamlit as st

import ui
from extraction import figures
from extraction.audit import CAUSES, REPRODUCE_COSINE, audit_states
from extraction.compare import DRIFT_COSINE, EXACT_COSINE
from extraction.export import describe_layers, parse_layers
from extraction.extract import extract_states
from extraction.samples import SAMPLE_TEXTS
from extraction.storage import STATE_SUFFIXES, StoredStates, read_states
from extraction.texts import TEXT_SUFFIXES, tokenize_texts

KEY_STATES = "audit.states"
KEY_TEXTS = "audit.texts"
KEY_KEY = "audit.key"
KEY_LAYER = "audit.layer"
KEY_LAYERS = "audit.layers"
KEY_SAMPLE = "audit.sample"
KEY_FORENSICS = "audit.forensics"
KEY_RESULT = "audit.result"  # {"report", "model_description", "states_name", "texts_name", "texts"}

#: Texts re-extracted one at a time by default: the command line checks any number.
DEFAULT_SAMPLE = 64
EXAMPLE_BATCH = 4
#: The example: the sample texts and longer variants, so that batches of 4 pad most texts.
EXAMPLE_TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:6]]
AUDIT_ICONS = {"clean": "✔", "drift": "≈", "corrupted": "✘"}
TEXT_COLORS = {"clean": "#FFFFFF", "drift": "#000000", "corrupted": "#FFFFFF"}


def audit_badge(verdict: str) -> str:
    """HTML badge of an audit verdict: icon, word and colour (the word is never left out)."""
    background = figures.AUDIT_VERDICT_COLORS.get(verdict, "#777777")
    return (
        f'<span style="background:{background};color:{TEXT_COLORS.get(verdict, "#FFFFFF")};padding:0.15em 0.6em;'
        f'border-radius:0.4em;font-weight:600">{AUDIT_ICONS.get(verdict, "?")} {verdict}</span>'
    )


def example_states(loaded) -> tuple[StoredStates, list[str]]:
    """A stored file as a buggy pipeline writes it: right padding, batches of 4, position -1, last layer."""
    tokenized = tokenize_texts(loaded.tokenizer, EXAMPLE_TEXTS, max_tokens=loaded.context_length)
    last = loaded.num_hidden_layers
    hidden = extract_states(
        loaded, tokenized, "right-naive", batch_size=EXAMPLE_BATCH, layers=[last], keep_logits=False
    ).hidden[:, 0]  # (N, d)
    source = f"example: right padding read at position -1, batches of {EXAMPLE_BATCH}, layer {last}"
    return StoredStates(hidden, source, None, "float32"), list(EXAMPLE_TEXTS)


def run_audit(loaded, states: StoredStates, texts: list[str], layer, layers, sample, forensics: bool) -> None:
    bar = st.progress(0.0, text="Starting…")

    def progress(stage: str, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        if stage == "re-extracting":
            bar.progress(0.8 * fraction, text=f"Re-extracting one text at a time: {done}/{total}")
        else:
            bar.progress(0.8 + 0.2 * fraction, text=f"Forensics: hypothesis {min(done + 1, total)} of {total}")

    try:
        report = audit_states(
            loaded, texts, states, layer=layer, layers=layers, sample=sample, forensics=forensics, progress=progress
        )
    finally:
        bar.empty()
    st.session_state[KEY_RESULT] = {"report": report, "model_description": loaded.description, "texts": texts}


st.set_page_config(page_title="Audit · padding-audit", page_icon="🔎", layout="wide")
settings = ui.sidebar_model_picker()

st.title("Audit a stored dataset")
st.markdown(
    "Already extracted hidden states, perhaps in padded batches, and trained probes on them? Upload the "
    "states and the texts they came from (row *i* is text *i*). The audit re-extracts the texts one at a time "
    "(the ground truth), measures how close each stored row is, checks `lm_head` on the stored states against "
    "the model's own prediction, and, if they differ, **reproduces** the stored vectors under each known "
    "defect to name the one that made them."
)

st.session_state.setdefault(KEY_LAYER, -1)
st.session_state.setdefault(KEY_SAMPLE, DEFAULT_SAMPLE)
st.session_state.setdefault(KEY_FORENSICS, True)
files_column, options_column = st.columns([3, 2])
with files_column:
    states_upload = st.file_uploader(
        "Stored states",
        type=[suffix.lstrip(".") for suffix in STATE_SUFFIXES],
        key=KEY_STATES,
        help="(N, d) for one layer or (N, L, d) for several. .pt files are read with torch.load(weights_only=True).",
    )
    texts_upload = st.file_uploader(
        "Texts, in row order",
        type=[suffix.lstrip(".") for suffix in TEXT_SUFFIXES],
        key=KEY_TEXTS,
        help=".txt (one text a line), .jsonl (a text field) or .csv (a text column).",
    )
with options_column:
    tensor_key = st.text_input("Tensor name (files holding several)", key=KEY_KEY, placeholder="e.g. hidden_states")
    layer_column, sample_column = st.columns(2)
    layer = layer_column.number_input(
        "Layer of an (N, d) file",
        min_value=-1000,
        max_value=1000,
        step=1,
        key=KEY_LAYER,
        help="hidden_states index: 0 = embeddings, -1 = the last layer (after the final norm).",
    )
    sample = sample_column.number_input(
        "Texts re-extracted (0 = all)",
        min_value=0,
        max_value=100_000,
        step=16,
        key=KEY_SAMPLE,
        help="A random sample, one forward pass per text. The command line `audit` checks all by default.",
    )
    layers_text = st.text_input(
        "Layers of an (N, L, d) file",
        key=KEY_LAYERS,
        placeholder="all (or the layers in the file's metadata)",
        help="Comma-separated hidden_states indices, when the file holds some layers only.",
    )
    forensics = st.checkbox("Search for the cause (forensics)", key=KEY_FORENSICS)
st.caption(
    f"Uploads are limited to {st.get_option('server.maxUploadSize')} MB per file here; for larger files run "
    "`python -m extraction audit --model NAME --texts FILE --states FILE` (any size, any number of texts)."
)

audit_column, example_column = st.columns([1, 3], vertical_alignment="center")
audit_clicked = audit_column.button("Audit", type="primary", key="audit.run", icon=":material/search:")
example_clicked = example_column.button(
    "Try an example",
    key="audit.example",
    help=f"Builds a corrupted file on the chosen model (right padding read at -1, batches of {EXAMPLE_BATCH}) "
    "and audits it.",
    icon=":material/science:",
)

if audit_clicked or example_clicked:
    loaded = None
    try:
        if audit_clicked:
            if states_upload is None or texts_upload is None:
                raise ValueError("upload both the stored states and the texts they were extracted from")
            states = read_states(states_upload.getvalue(), name=str(states_upload.name), key=tensor_key.strip() or None)
            texts, _ = ui.texts_from_inputs("", texts_upload)
    except ValueError as error:  # TextsError included
        ui.show_error(error)
    else:
        loaded = ui.load_model_or_error(settings)
    if loaded is not None:
        try:
            with ui.model_in_use():  # sessions share the cached model: extraction hooks into it
                if example_clicked:
                    states, texts = example_states(loaded)
                num_states = loaded.num_hidden_layers + 1
                is_one_layer = states.tensor.dim() == 2
                layers = parse_layers(layers_text, num_states) if layers_text.strip() and not is_one_layer else None
                run_audit(
                    loaded,
                    states,
                    texts,
                    layer=int(layer) if is_one_layer else None,
                    layers=layers,
                    sample=int(sample) or None,
                    forensics=forensics,
                )
        except ValueError as error:
            ui.show_error(error, prefix="The audit failed")
        except Exception as error:  # noqa: BLE001 - the page stays usable after any failure
            ui.logger.exception("audit failed")
            ui.show_error(error, prefix="The audit failed")

result = st.session_state.get(KEY_RESULT)
if result is None:
    st.info("Upload the stored states and their texts, then click **Audit** (or **Try an example**).")
    st.stop()

report = result["report"]
st.divider()
st.markdown(f"## Verdict: {audit_badge(report.verdict)}", unsafe_allow_html=True)
st.caption(
    f"**Model:** {result['model_description']}. **States:** {report.states_source}, shape "
    f"{tuple(report.states_shape)} {report.states_dtype}, {describe_layers(report.layers)}. "
    f"{report.n_checked} of {report.n_texts} texts re-extracted in {report.seconds:.1f} s. "
    f"Clean: min cosine ≥ {EXACT_COSINE} and the same top-1; drift: ≥ {DRIFT_COSINE}; otherwise corrupted."
)
for note in report.notes:
    st.warning(note, icon="⚠️")

metric_columns = st.columns(5)
metric_columns[0].metric("min cosine", f"{report.min_cosine:.6f}", help="Over checked texts and stored layers.")
metric_columns[1].metric("mean cosine", f"{report.mean_cosine:.6f}")
metric_columns[2].metric(
    f"texts below {DRIFT_COSINE}", f"{report.fraction_corrupted:.0%}", help="Worst stored layer per text."
)
lm_head_help = f"Agreement with the model's own next-token prediction; {report.lm_head_note}."
metric_columns[3].metric("lm_head top-1, stored", f"{report.lm_head_accuracy_stored:.0%}", help=lm_head_help)
metric_columns[4].metric("lm_head top-1, fresh", f"{report.lm_head_accuracy_fresh:.0%}", help=lm_head_help)

st.subheader("Likely cause")
if report.likely_cause is None:
    st.success(report.cause, icon="✅")
elif report.likely_cause == "unknown":
    st.warning(f"**unknown**: {report.cause}", icon="❓")
else:
    st.error(f"**{report.likely_cause}**: {report.cause}", icon="🔎")
if report.likely_cause is not None:
    st.markdown(
        "To extract correct states: `python -m extraction extract --model NAME --texts FILE "
        "--out states.safetensors` (the `auto` strategy is the fastest one that is exact on this model, and "
        "`--verify` re-checks texts one at a time)."
    )

figure = figures.audit_cosine_histogram(report)
st.plotly_chart(figure, key="audit.histogram")

if report.hypotheses:
    st.subheader("Evidence")
    st.caption(
        f"Each known defect ({', '.join(c for c in CAUSES if c != 'unknown')}) is reproduced on the worst texts; "
        f"it explains the file when the reproduction reaches cosine ≥ {REPRODUCE_COSINE} with every stored row "
        "tested and is clearly closer than the fresh state."
    )
    st.dataframe(
        report.hypotheses_frame(),
        hide_index=True,
        column_config={
            "reproduction_cosine": st.column_config.NumberColumn("cosine with reproduction", format="%.6f"),
            "fresh_cosine": st.column_config.NumberColumn("cosine with fresh", format="%.6f"),
            "rows": st.column_config.TextColumn("rows reproduced"),
        },
        key="audit.hypotheses",
    )

st.subheader("Per text")
frame = report.to_frame()
frame.insert(1, "text_preview", [result["texts"][i][:80] for i in report.checked])
frame["text"] = frame["text"] + 1
st.dataframe(
    frame,
    hide_index=True,
    column_config={
        "text": st.column_config.NumberColumn("text #"),
        "text_preview": st.column_config.TextColumn("text"),
        "min_cosine": st.column_config.NumberColumn("min cosine", format="%.6f"),
        "corrupted": st.column_config.CheckboxColumn(f"below {DRIFT_COSINE}"),
        "lm_head_top1_stored": st.column_config.CheckboxColumn("lm_head top-1 (stored)"),
        "lm_head_top1_fresh": st.column_config.CheckboxColumn("lm_head top-1 (fresh)"),
    },
    key="audit.table",
)

ui.download_button(
    st,
    "Audit report (JSON)",
    lambda: json.dumps(report.to_dict(), indent=2, allow_nan=False),
    "padding-audit-audit.json",
    "audit.download.json",
)
