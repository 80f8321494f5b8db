"""Stores for the audit's sampled-store tests (tiny and app tiers): a texts file and a last-layer
store of which only some rows are right."""

from __future__ import annotations

from pathlib import Path

import torch

from extraction.extract import extract_states
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.safetensors_writer import write_safetensors_atomic
from extraction.texts import tokenize_texts


def partly_right_store(loaded, folder: Path, n: int, rows_made: list[int]) -> tuple[Path, Path]:
    """(texts file, states file) of ``n`` distinct texts and their last-layer store on ``loaded``,
    whose ``rows_made`` rows are the single-sample states and the rest zeros."""
    texts = [f"{SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]} (number {i})" for i in range(n)]
    texts_file = folder / "texts.txt"
    texts_file.write_text("\n".join(texts) + "\n")
    stored = torch.zeros(n, loaded.hidden_size)
    made = tokenize_texts(loaded.tokenizer, [texts[i] for i in rows_made])
    stored[rows_made] = extract_states(loaded, made, "single", keep_logits=False).hidden[:, -1]
    return texts_file, write_safetensors_atomic(folder / "states.safetensors", {"hidden_states": stored})
