"""An audit of a store much larger than its sample: only the sampled rows are read and only the
sampled texts tokenized; the report says what the sample proves (Clopper-Pearson), and
--max-corrupted samples in rounds until the bound is shown or a defect is found."""

from __future__ import annotations

import json

import torch

from extraction.audit import audit_states
from extraction.audit.sampling import RowSample
from extraction.cli import main
from extraction.extract import extract_states
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.lazy_states import open_states
from extraction.storage.safetensors_writer import write_safetensors_atomic
from extraction.storage.text_stream import TextSource
from extraction.texts import tokenize_texts

N = 2000  # texts in the store
SAMPLE = 12


def _store(loaded, tmp_path, rows_made):
    """A texts file of N texts and a last-layer store whose ``rows_made`` rows are correct (the rest zeros)."""
    texts = [f"{SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]} (number {i})" for i in range(N)]
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(texts) + "\n")
    stored = torch.zeros(N, loaded.hidden_size)
    if rows_made:
        made = tokenize_texts(loaded.tokenizer, [texts[i] for i in rows_made])
        stored[rows_made] = extract_states(loaded, made, "single", keep_logits=False).hidden[:, -1]
    states_file = write_safetensors_atomic(tmp_path / "states.safetensors", {"hidden_states": stored})
    return texts_file, states_file


def test_only_the_sampled_rows_are_read_and_the_interval_is_reported(tiny_llama, tmp_path):
    checked = RowSample(SAMPLE, 0).draw(N)
    texts_file, states_file = _store(tiny_llama, tmp_path, checked)
    states = open_states(states_file)
    report = audit_states(tiny_llama, TextSource(texts_file), states, sample=SAMPLE, layer=-1)
    assert report.verdict == "exact" and report.checked == checked
    assert states.rows_read == SAMPLE and report.sample.rows_read == SAMPLE  # of 2,000 rows
    assert report.n_rows == N and report.n_corrupted == 0
    low, high = report.fraction_corrupted_interval
    assert low == 0.0 and high == 1 - 0.025 ** (1 / SAMPLE)
    assert "at most" in report.describe_interval()


def test_max_corrupted_samples_in_rounds_until_the_bound_is_shown(tiny_llama, tmp_path):
    # rows_to_show(0.2) = 17 rows: rounds of 4, 8, 16 and 17 rows.
    rows = RowSample(17, 0).draw(N)
    texts_file, states_file = _store(tiny_llama, tmp_path, rows)
    out = tmp_path / "audit.json"
    args = ["audit", "--model", "tiny-random-llama", "--texts", str(texts_file), "--states", str(states_file)]
    assert main([*args, "--sample", "4", "--max-corrupted", "0.2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["n_checked"] == 17 and data["checked_rows"] == rows and data["sample"]["rounds"] == 4
    assert data["max_corrupted_shown"] is True and data["fraction_corrupted_interval"][1] < 0.2
    assert data["sample"]["rows_read"] == 4 + 8 + 16 + 17 and data["n_rows"] == N


def test_max_corrupted_stops_at_the_first_defect(tiny_llama, tmp_path):
    texts_file, states_file = _store(tiny_llama, tmp_path, [])  # every row zeros: corrupted
    report = audit_states(
        tiny_llama, TextSource(texts_file), open_states(states_file), sample=4, max_corrupted=0.01, forensics=False
    )
    assert report.sample.rounds == 1 and report.n_checked == 4 and report.n_corrupted == 4
    assert report.bound_shown is False and report.fraction_corrupted_interval[0] > 0.3
