"""The Conformance page's data: the committed matrix (``docs/conformance.json``, written by
``make matrix``) and the tokens of its texts, for the layout pictures."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from extraction.models.embedded import embedded_tokenizer
from extraction.models.loaded import ensure_pad_token

#: Where ``make matrix`` writes the matrix's JSON.
MATRIX_JSON = Path(__file__).resolve().parents[1] / "docs" / "conformance.json"


@st.cache_data(max_entries=2, show_spinner=False)
def _read_matrix(path: str, modified: float) -> dict:
    # ``modified`` is in the cache key: a regenerated file is read again.
    return json.loads(Path(path).read_text())


def conformance_matrix(path: Path | None = None) -> dict | None:
    """The matrix's JSON (default :data:`MATRIX_JSON`), or None when it has not been generated."""
    path = path if path is not None else MATRIX_JSON
    if not path.is_file():
        return None
    return _read_matrix(str(path), path.stat().st_mtime)


@st.cache_resource(max_entries=1, show_spinner="Reading the tokenizer…")
def matrix_tokens(texts: tuple[str, ...]) -> tuple[list[list[int]], list[list[str]], int]:
    """Token ids and token strings of the matrix's ``texts`` with the tokenizer every tiny random
    model shares, and its pad id (its eos when it has none), as the matrix laid them out."""
    tokenizer = embedded_tokenizer()
    ensure_pad_token(tokenizer, "tiny-random")
    token_ids = [tokenizer(text)["input_ids"] for text in texts]
    token_strings = [[tokenizer.decode([token]) for token in ids] for ids in token_ids]
    return token_ids, token_strings, int(tokenizer.pad_token_id)
