"""The Audit page on a store named by its path (only with the opt-in): what the sample proves (the
Clopper-Pearson interval in words, the rows checked) and --max-corrupted as an input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import ui
from extraction.audit.sampling import RowSample, clopper_pearson
from extraction.extract import extract_states
from extraction.models import load_model
from extraction.samples import SAMPLE_TEXTS
from extraction.texts import tokenize_texts
from extraction.views.audit import ALLOW_PATHS_ENV, ALLOW_PATHS_FLAG, server_paths_allowed
from tests.stores import partly_right_store

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "4_Audit.py")
TIMEOUT = 300
N = 200  # rows in the store


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _store(tmp_path: Path, rows_made: list[int]) -> tuple[Path, Path]:
    """(states, texts) of N texts and a last-layer store of tiny-random-llama whose ``rows_made`` rows are right
    (the rest zeros)."""
    texts_file, states_file = partly_right_store(load_model("tiny-random-llama"), tmp_path, N, rows_made)
    return states_file, texts_file


def _audit_paths(states: Path, texts: Path | str, sample: int, max_corrupted: float = 0.0) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value("tiny-random-llama")
    at.text_input(key="audit.states_path").set_value(str(states))
    at.text_input(key="audit.texts_path").set_value(str(texts))
    at.number_input(key="audit.sample").set_value(sample)
    at.number_input(key="audit.max_corrupted").set_value(max_corrupted)
    at.checkbox(key="audit.forensics").uncheck()
    at.button(key="audit.run").click()
    return at.run()


def _proof(at: AppTest) -> str:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    titles = [h.value for h in at.subheader]
    assert "What the sample proves" in titles
    return next(m.value for m in at.markdown if "Clopper-Pearson" in m.value or "Every row" in m.value)


def test_the_flag_or_the_variable_opts_in_and_nothing_else():
    assert not server_paths_allowed(["streamlit", "run", "app.py"], {})
    assert not server_paths_allowed([], {ALLOW_PATHS_ENV: "true"})
    assert server_paths_allowed(["app.py", ALLOW_PATHS_FLAG], {})
    assert server_paths_allowed([], {ALLOW_PATHS_ENV: "1"})


def test_by_default_there_is_no_path_input_and_the_command_is_shown(monkeypatch):
    monkeypatch.delenv(ALLOW_PATHS_ENV, raising=False)
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "audit.states_path" not in [t.key for t in at.text_input]
    assert any("python -m extraction audit --model" in c.value and "--sample 64" in c.value for c in at.code)
    assert any(ALLOW_PATHS_FLAG in c.value and "Uploads are limited to" in c.value for c in at.caption)


def test_a_clean_sample_read_by_path_proves_an_upper_bound(monkeypatch, tmp_path):
    monkeypatch.setenv(ALLOW_PATHS_ENV, "1")
    rows = RowSample(17, 0).draw(N)
    states, texts = _store(tmp_path, rows)
    # --max-corrupted 20%: rounds of 4, 8, 16 and 17 rows (17 clean rows show < 20%).
    at = _audit_paths(states, texts, sample=4, max_corrupted=20.0)
    proof = _proof(at)
    high = clopper_pearson(0, 17)[1]
    assert "0 of the 17 rows checked" in proof
    assert f"at most {100 * high:.3g}% of the store's 200 rows are corrupted (95%, Clopper-Pearson)" in proof
    assert "Asked: at most 20% corrupted: **shown** after 4 round(s)" in proof
    assert any(c.value.startswith("Rows checked (17, numbered from 1): " + str(rows[0] + 1)) for c in at.caption)
    (per_text,) = at.dataframe
    assert sorted(per_text.value["text"] - 1) == rows


def test_a_sample_with_corrupted_rows_gives_an_interval(monkeypatch, tmp_path):
    monkeypatch.setenv(ALLOW_PATHS_ENV, "1")
    checked = RowSample(16, 0).draw(N)
    states, texts = _store(tmp_path, checked[:12])  # 4 of the 16 sampled rows are zeros: corrupted
    at = _audit_paths(states, texts, sample=16)
    proof = _proof(at)
    low, high = clopper_pearson(4, 16)
    assert "4 of the 16 rows checked" in proof
    assert f"between {100 * low:.3g}% and {100 * high:.3g}% of the store's 200 rows are corrupted" in proof


def test_a_missing_path_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(ALLOW_PATHS_ENV, "1")
    at = _audit_paths(tmp_path / "nowhere.npy", tmp_path / "texts.txt", sample=8)
    assert not at.exception, [e.value for e in at.exception]
    assert any("nowhere.npy: no such file" in e.value for e in at.error)


def test_a_path_to_a_store_keeping_its_token_ids_needs_no_texts_path(monkeypatch, tmp_path):
    """A store with ``token_ids`` and ``offsets`` beside the states, named by path with the texts path left
    empty, is re-extracted from its ids; a store without ids and no texts path is told to give one."""
    monkeypatch.setenv(ALLOW_PATHS_ENV, "1")
    from safetensors.torch import save_file

    loaded = load_model("tiny-random-llama")
    tokenized = tokenize_texts(loaded.tokenizer, list(SAMPLE_TEXTS[:6]))
    rows = extract_states(loaded, tokenized, "single", keep_logits=False).hidden[:, -1]
    ids = torch.tensor([t for text in tokenized.token_ids for t in text])
    offsets = torch.tensor([0, *torch.tensor([len(t) for t in tokenized.token_ids]).cumsum(0).tolist()])
    with_ids = tmp_path / "with_ids.safetensors"
    save_file({"hidden_states": rows.contiguous(), "token_ids": ids, "offsets": offsets}, with_ids)
    at = _audit_paths(with_ids, "", sample=0)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert "exact" in at.markdown[[i for i, m in enumerate(at.markdown) if "Verdict" in m.value][0]].value
    without = tmp_path / "without.safetensors"
    save_file({"hidden_states": rows.contiguous()}, without)
    at = _audit_paths(without, "", sample=0)
    assert any("give the texts file's path too" in e.value for e in at.error)
