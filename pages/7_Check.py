"""Check: your own pipeline.py, batched against itself one text at a time. It runs uploaded code,
so only when the app was started with ``-- --allow-running-code``; otherwise it shows the command."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import streamlit as st

from extraction.check_extractor import check_extractor
from extraction.samples import SAMPLE_TEXTS
from extraction.views.check_page import ALLOW_ENV, ALLOW_FLAG, check_command, code_allowed, load_tokenizer

st.set_page_config(page_title="Check · padding-audit", page_icon="🩺", layout="wide")
st.title("Check your pipeline")
st.markdown(
    "Your extraction function `FUNCTION(texts)` on all texts in one call, against the same function on each "
    "text alone: the function's own noise floor, the verdict and the cause from its behaviour "
    "(`docs/check.md` in the repository: recipes for nnsight, TransformerLens, sentence-transformers, pyvene, "
    "steering-vectors and repe). It runs in a child process with the interpreter you name (default: the "
    "app's own), so a pipeline pinned to transformers 4 can be checked from its own venv."
)

upload = st.file_uploader("pipeline.py", type=["py"])
function = st.text_input("function", value="extract")
python = st.text_input("python of the pipeline's environment (empty: the app's own)", value="")
tokenizer_folder = st.text_input(
    "tokenizer folder (optional: orders the texts by tokens and names a pad read exactly)", value=""
)
texts_text = st.text_area("texts, one a line (at least 2)", value="\n".join(SAMPLE_TEXTS[:6]), height=160)
texts = [line for line in texts_text.splitlines() if line.strip()]
file_name = upload.name if upload is not None else "pipeline.py"

if not code_allowed(sys.argv, os.environ):
    st.info(
        f"This page runs uploaded code only when the app was started with `streamlit run app.py -- {ALLOW_FLAG}` "
        f"(or `{ALLOW_ENV}=1`). From a shell, the same check:"
    )
    st.code(check_command(file_name, function, python=python, tokenizer=tokenizer_folder), language="bash")
    st.stop()
if upload is None or not function or len(texts) < 2:
    st.info("Upload a pipeline.py, name its function and give at least 2 texts.")
    st.stop()
if not st.button("Run the check (runs the uploaded code)", type="primary"):
    st.stop()

with tempfile.TemporaryDirectory(prefix="padding-audit-page-") as folder:
    path = Path(folder) / Path(upload.name).name
    path.write_bytes(upload.getvalue())
    try:
        tokenizer = load_tokenizer(tokenizer_folder) if tokenizer_folder else None
        with st.spinner("calling your function in a child process..."):
            report = check_extractor(
                f"{path}:{function}", texts=texts, tokenizer=tokenizer, python=python or sys.executable, timeout=600
            )
    except ValueError as error:
        st.error(str(error))
        st.stop()

st.metric("verdict", report.verdict)
st.markdown(f"**likely cause:** `{report.likely_cause}` ({report.cause_kind})  \n{report.cause}")
st.dataframe(
    {
        "text": [i + 1 for i in report.checked],
        "min cosine": report.per_row_min_cosine,
        "max relative L2": report.per_row_max_relative_l2,
    }
)
st.caption(" ".join(report.notes))
