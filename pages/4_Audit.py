"""Audit: are the hidden states you already stored the ones the model computes, and if not, why?"""

from __future__ import annotations

import json
import os
import sys

import streamlit as st

import ui
from extraction import plotting
from extraction.audit import CAUSES, REPRODUCE_COSINE
from extraction.pooling import POOLING_SUMMARY, POOLINGS
from extraction.storage.export import describe_layers
from extraction.storage.stored_states import STATE_SUFFIXES
from extraction.texts import TEXT_SUFFIXES
from extraction.verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE, EXACT_COSINE
from extraction.views.audit import (
    ALLOW_PATHS_ENV,
    ALLOW_PATHS_FLAG,
    audit_command,
    found_source,
    headline_metrics,
    per_text_frame,
    rows_checked_text,
    sample_proof,
    server_paths_allowed,
)
from extraction.views.examples import EXAMPLE_BATCH

KEY_LAYER = "audit.layer"
KEY_SAMPLE = "audit.sample"
KEY_MAX_CORRUPTED = "audit.max_corrupted"  # percent; 0: a fixed sample
KEY_STATES_PATH = "audit.states_path"
KEY_TEXTS_PATH = "audit.texts_path"
KEY_FORENSICS = "audit.forensics"
KEY_POOLING = "audit.pooling"
KEY_CHAT = "audit.chat"
KEY_GENERATION_PROMPT = "audit.generation_prompt"
KEY_RESULT = "audit.result"  # ui.AuditRun of the last run

#: Texts re-extracted by default: the command line checks any number.
DEFAULT_SAMPLE = 64
LAYER_HELP = "hidden_states index: 0 = embeddings, -1 = the last layer (after the final norm)."
STATE_TYPES = [suffix.lstrip(".") for suffix in STATE_SUFFIXES] + ["parquet"]
TEXT_TYPES = [suffix.lstrip(".") for suffix in TEXT_SUFFIXES]
STATES_HELP = (
    "(N, d) for one layer or (N, L, d) for several. .pt files are read with torch.load(weights_only=True). "
    "A folder of shards (extract --out DIR): upload it zipped. Parquet: a states column beside a text or "
    "token-ids column. A file keeping its token ids (input_ids / token_ids) needs no texts file."
)
TEXTS_HELP = ".txt (one text a line), .jsonl (a text field) or .csv (a text column)."
EXAMPLE_HELP = (
    f"Builds a corrupted file on the chosen model (right padding read at -1, batches of {EXAMPLE_BATCH}) and audits it."
)
CHAT_HELP = (
    "Format each plain text as one user turn with the model's chat template, as the file's pipeline did "
    "(chat 'messages' lines are always formatted)."
)
GENERATION_PROMPT_HELP = (
    "End each chat-formatted text in the assistant's header (add_generation_prompt=True), as texts made for "
    "generation are. Needs Format as chat or chat 'messages'."
)
ALL_LAYERS = "all (or the layers in the file's metadata)"
LAYERS_HELP = "Comma-separated hidden_states indices, when the file holds some layers only."
SAMPLE_HELP = "A random sample, one forward pass per text. The command line `audit` checks all by default."
MAX_CORRUPTED_HELP = (
    "Sample in rounds (the first of 'Texts re-extracted' rows, then doubling) until the 95% upper bound on the "
    "store's corrupted fraction is below this, or a corrupted row is found (`--max-corrupted`). 0: off."
)
PATHS_HELP = (
    "A file or folder on the machine that runs this app, read as the command line reads it: only the sampled "
    "rows of .safetensors, .npy, .pt and folders of shards, and a .txt/.jsonl texts file as a stream."
)
FROM_FILE = "as the file records (else last)"
POOLING_CHOICES = [FROM_FILE, *POOLINGS]
POOLING_HELP = (
    "How a text's states were made: "
    + "; ".join(f"{name}: {POOLING_SUMMARY[name]}" for name in POOLINGS)
    + ". A file written by `extract` records it; a tokens file holds an `offsets` tensor."
)


st.set_page_config(page_title="Audit · padding-audit", page_icon="🔎", layout="wide")
settings = ui.sidebar_model_picker()

st.title("Audit a stored dataset")
st.markdown(
    "Already extracted hidden states, perhaps in padded batches, and trained probes on them? Upload the "
    "states and the texts they came from (row *i* is text *i*). The audit re-extracts the texts (one at a time, "
    "the ground truth, or in a batched layout verified to give the same states on this model), measures how "
    "close each stored row is, checks `lm_head` on the stored states against "
    "the model's own prediction, and, if they differ, **reproduces** the stored vectors under each known "
    "defect to name the one that made them."
)

ui.set_defaults(
    {
        KEY_LAYER: -1,
        KEY_SAMPLE: DEFAULT_SAMPLE,
        KEY_MAX_CORRUPTED: 0.0,
        KEY_FORENSICS: True,
        KEY_POOLING: FROM_FILE,
        KEY_CHAT: False,
        KEY_GENERATION_PROMPT: False,
    }
)
files_column, options_column = st.columns([3, 2])
with files_column:
    states_upload = st.file_uploader("Stored states", type=STATE_TYPES, key="audit.states", help=STATES_HELP)
    texts_upload = st.file_uploader(
        "Texts, in row order (not needed when the states file keeps its token ids or texts)",
        type=TEXT_TYPES,
        key="audit.texts",
        help=TEXTS_HELP,
    )
    paths_allowed = server_paths_allowed(sys.argv, os.environ)
    if paths_allowed:
        states_path = st.text_input("…or the stored states' path on this machine", key=KEY_STATES_PATH, help=PATHS_HELP)
        texts_path = st.text_input("…and the texts file's path on this machine", key=KEY_TEXTS_PATH, help=PATHS_HELP)
with options_column:
    tensor_key = st.text_input("Tensor name (files holding several)", key="audit.key", placeholder="e.g. hidden_states")
    layer_column, sample_column = st.columns(2)
    layer = layer_column.number_input("Layer of an (N, d) file", -1000, 1000, step=1, key=KEY_LAYER, help=LAYER_HELP)
    sample = sample_column.number_input(
        "Texts re-extracted (0 = all)", 0, 100_000, step=16, key=KEY_SAMPLE, help=SAMPLE_HELP
    )
    max_corrupted = st.number_input(
        "Sample until at most this % is shown corrupted (0 = off)",
        0.0,
        50.0,
        step=0.1,
        format="%.2f",
        key=KEY_MAX_CORRUPTED,
        help=MAX_CORRUPTED_HELP,
    )
    layers_text = st.text_input(
        "Layers of an (N, L, d) file", key="audit.layers", placeholder=ALL_LAYERS, help=LAYERS_HELP
    )
    pooling = st.selectbox("Pooling of the stored states", POOLING_CHOICES, key=KEY_POOLING, help=POOLING_HELP)
    as_chat = st.toggle("Format as chat", key=KEY_CHAT, help=CHAT_HELP)
    generation_prompt = st.toggle(
        "Add the generation prompt", key=KEY_GENERATION_PROMPT, disabled=not as_chat, help=GENERATION_PROMPT_HELP
    )
    forensics = st.checkbox("Search for the cause (forensics)", key=KEY_FORENSICS)
upload_cap = f"Uploads are limited to {st.get_option('server.maxUploadSize')} MB per file here"
asked_fraction = max_corrupted / 100 if max_corrupted else None
if paths_allowed:
    st.caption(f"{upload_cap}; a path is read on this machine (the app was started with `{ALLOW_PATHS_FLAG}`).")
else:
    st.caption(
        f"{upload_cap}. For a larger store run the audit from a shell (any size: only the sampled rows are read), "
        f"or start the app with `streamlit run app.py -- {ALLOW_PATHS_FLAG}` (or `{ALLOW_PATHS_ENV}=1`) to name "
        "files by their path on the machine that runs it:"
    )
    st.code(audit_command(settings.name, sample=int(sample) or None, max_corrupted=asked_fraction), "bash")

audit_column, example_column = st.columns([1, 3], vertical_alignment="center")
audit_clicked = audit_column.button("Audit", type="primary", key="audit.run", icon=":material/search:")
example_clicked = example_column.button(
    "Try an example", key="audit.example", help=EXAMPLE_HELP, icon=":material/science:"
)

if audit_clicked or example_clicked:
    # The example builds its own file on the model; an audit needs both uploads, read first.
    by_path = paths_allowed and bool(states_path.strip() or texts_path.strip())
    if not audit_clicked:
        inputs = None
    elif by_path:
        inputs = ui.run_guarded(lambda: ui.audit_path_inputs(states_path, texts_path, tensor_key, as_chat))
    else:
        inputs = ui.run_guarded(lambda: ui.audit_inputs(states_upload, texts_upload, tensor_key))
    loaded = ui.load_model_or_error(settings) if example_clicked or inputs is not None else None
    if loaded is not None:
        chosen_pooling = None if pooling == FROM_FILE else pooling
        result = ui.run_audit(
            loaded,
            inputs,
            int(layer),
            layers_text,
            int(sample),
            forensics,
            chosen_pooling,
            as_chat,
            generation_prompt,
            asked_fraction,
        )
        if result is not None:
            st.session_state[KEY_RESULT] = result

result = st.session_state.get(KEY_RESULT)
if result is None:
    st.info("Upload the stored states and their texts, then click **Audit** (or **Try an example**).")
    st.stop()

report = result["report"]
st.divider()
st.markdown(f"## Verdict: {ui.verdict_badge(report.verdict)}", unsafe_allow_html=True)
st.caption(
    f"**Model:** {result['model_description']}. **States:** {report.states_source}, shape "
    f"{tuple(report.states_shape)} {report.states_dtype}, {describe_layers(report.layers)}. "
    f"{report.n_checked} of {report.n_texts} texts re-extracted with {report.reference.describe()} in "
    f"{report.seconds:.1f} s, pooling "
    f"`{report.pooling}`. Exact: min cosine ≥ {EXACT_COSINE}"
    f"{' and the same top-1' if report.pooling == 'last' else ''}; drift: ≥ {DRIFT_COSINE}; either way relative "
    f"L2 ≤ {CORRUPTED_RELATIVE_L2}; otherwise corrupted."
)
for note in report.notes:
    st.warning(note, icon="⚠️")

ui.metric_row(headline_metrics(report))

st.subheader("What the sample proves")
st.markdown(sample_proof(report))
st.caption(rows_checked_text(report))

st.subheader("Likely cause")
ui.cause_message(report.likely_cause, report.cause, report.verdict)
best = report.best_hypothesis
if report.likely_cause is not None:
    st.caption(f"Cause kind: `{report.cause_kind}` (docs/forensics.md lists each cause and its evidence).")
for second in best.evidence.get("also", []) if best is not None else []:
    if "edit" in second:
        st.warning(f"A second defect as well: **{second['name']}** ({second['cause_kind']}).", icon="➕")
    else:
        st.caption(f"Also reproduces the rows: `{second['name']}` {second.get('why_not', '(ranked lower)')}.")
if found_source(report):
    st.caption(f"Found source of {found_source(report)}.")
if best is not None and best.evidence.get("audit_with"):
    st.info(
        f"To check this file as it was made, audit again with `{best.evidence['audit_with']}` "
        "(here: **Format as chat** / **Add the generation prompt**).",
        icon="💬",
    )
if result.get("defect_figure") is not None:
    st.plotly_chart(result["defect_figure"], key="audit.defect")
if best is not None:
    with st.expander(f"Evidence of {best.name} (JSON)"):
        st.json(best.evidence)
if report.likely_cause is not None:
    st.markdown(
        "To extract correct states: `python -m extraction extract --model NAME --texts FILE "
        "--out states.safetensors` (the `auto` strategy is the fastest one that is exact on this model, and "
        "`--verify` re-checks texts one at a time)."
    )

figure = plotting.audit_cosine_histogram(report)
st.plotly_chart(figure, key="audit.histogram")

if report.hypotheses:
    st.subheader("Evidence")
    st.caption(
        f"Each known defect ({', '.join(c for c in CAUSES if c not in ('kernels', 'unknown'))}) is reproduced on "
        f"the worst texts; it explains the file when the reproduction reaches cosine ≥ {REPRODUCE_COSINE} with every "
        "stored row tested and is clearly closer than the fresh state. `kernels` (float32 rounding of another build "
        "or device) is named from the pattern of the differences when nothing reproduces them."
    )
    st.dataframe(
        report.hypotheses_frame(),
        hide_index=True,
        column_config=ui.column_config(plotting.HYPOTHESES_TABLE_COLUMNS),
        key="audit.hypotheses",
    )

st.subheader("Per text")
st.dataframe(
    per_text_frame(report, result["texts"]),
    hide_index=True,
    column_config=ui.column_config(plotting.PER_TEXT_TABLE_COLUMNS),
    key="audit.table",
)

ui.download_button(
    st,
    "Audit report (JSON)",
    lambda: json.dumps(report.to_dict(), indent=2, allow_nan=False),
    "padding-audit-audit.json",
    "audit.download.json",
)
