"""The Audit page under Streamlit's AppTest, on the tiny random models."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

import ui
from extraction.extract import extract_states
from extraction.models import load_model
from extraction.samples import SAMPLE_TEXTS
from extraction.texts import tokenize_texts

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "4_Audit.py")
TIMEOUT = 300


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _page(model: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value(model)
    return at


def _assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _texts_file() -> tuple[str, bytes, str]:
    return ("texts.txt", ("\n".join(SAMPLE_TEXTS) + "\n").encode(), "text/plain")


def test_page_loads_and_asks_for_files():
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    _assert_no_exception(at)
    assert any("Upload the stored states" in info.value for info in at.info)
    assert not at.get("plotly_chart")


def test_example_is_diagnosed_with_histogram_and_evidence():
    at = _page("tiny-random-gpt2")
    at.button(key="audit.example").click()
    at.run()
    _assert_no_exception(at)
    assert "corrupted" in at.markdown[[m.value.startswith("## Verdict") for m in at.markdown].index(True)].value
    assert any("right-naive" in error.value and "batch size 4" in error.value for error in at.error)
    assert len(at.get("plotly_chart")) == 2  # the pads read (what happened to one text) and the histogram
    hypotheses_table, per_text_table = at.dataframe  # in page order
    hypotheses = hypotheses_table.value
    reproduced = hypotheses[hypotheses["status"] == "reproduced"]["hypothesis"].tolist()
    assert "right-naive" in reproduced
    assert len(per_text_table.value) == len(SAMPLE_TEXTS) + 6


def test_uploaded_clean_file_is_clean():
    loaded = load_model("tiny-random-llama")
    tokenized = tokenize_texts(loaded.tokenizer, SAMPLE_TEXTS)
    hidden = extract_states(loaded, tokenized, "sorted", batch_size=4, keep_logits=False).hidden  # (N, L, d)
    at = _page("tiny-random-llama")
    at.file_uploader(key="audit.states").set_value(
        ("states.safetensors", save({"hidden_states": hidden}), "application/octet-stream")
    )
    at.file_uploader(key="audit.texts").set_value(_texts_file())
    at.button(key="audit.run").click()
    at.run()
    _assert_no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert any("match single-sample extraction" in s.value for s in at.success)
    (per_text_table,) = at.dataframe  # no hypotheses table when clean
    assert len(per_text_table.value) == len(SAMPLE_TEXTS)


def test_an_uploaded_parquet_file_with_its_texts_needs_no_texts_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    loaded = load_model("tiny-random-llama")
    rows = extract_states(loaded, tokenize_texts(loaded.tokenizer, SAMPLE_TEXTS), "single", keep_logits=False)
    last = rows.hidden[:, -1].numpy()  # (N, d)
    table = pa.table(
        {"text": SAMPLE_TEXTS, "emb": pa.FixedSizeListArray.from_arrays(pa.array(last.reshape(-1)), last.shape[1])}
    )
    pq.write_table(table, tmp_path / "store.parquet")
    at = _page("tiny-random-llama")
    at.file_uploader(key="audit.states").set_value(
        ("store.parquet", (tmp_path / "store.parquet").read_bytes(), "application/octet-stream")
    )
    at.button(key="audit.run").click()
    at.run()
    _assert_no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert any("match single-sample extraction" in s.value for s in at.success)


def test_bad_uploads_give_one_error_and_no_traceback():
    at = _page("tiny-random-gpt2")
    at.button(key="audit.run").click()
    at.run()
    _assert_no_exception(at)
    assert any("upload the stored states" in e.value for e in at.error)
    at.file_uploader(key="audit.states").set_value(("s.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{", "x"))
    at.file_uploader(key="audit.texts").set_value(_texts_file())
    at.button(key="audit.run").click()
    at.run()
    _assert_no_exception(at)
    assert any("truncated or corrupt" in e.value for e in at.error)
    wrong_rows = save({"h": load_model("tiny-random-gpt2").model.transformer.wte.weight[:3].detach().clone()})
    at.file_uploader(key="audit.states").set_value(("s.safetensors", wrong_rows, "x"))
    at.button(key="audit.run").click()
    at.run()
    _assert_no_exception(at)
    assert any("3 rows but 10 texts" in e.value for e in at.error)


def test_uploaded_zipped_folder_of_shards_is_read_as_one_file(tmp_path):
    import io
    import zipfile

    from extraction.storage.distributed import RankInfo
    from extraction.storage.sharded_export import extract_to_folder

    texts = tmp_path / "texts.txt"
    texts.write_bytes(_texts_file()[1])
    folder = tmp_path / "states"
    loaded = load_model("tiny-random-llama")
    extract_to_folder(loaded, texts, folder, RankInfo(0, 1, 0, 1), strategy="sorted", shard_texts=4, verify=0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.iterdir():
            archive.write(path, f"states/{path.name}")
    at = _page("tiny-random-llama")
    at.file_uploader(key="audit.states").set_value(("states.zip", buffer.getvalue(), "application/zip"))
    at.file_uploader(key="audit.texts").set_value(_texts_file())
    at.button(key="audit.run").click()
    at.run()
    _assert_no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["audit.result"]["report"].verdict == "exact"
    (per_text_table,) = at.dataframe
    assert len(per_text_table.value) == len(SAMPLE_TEXTS)


def test_a_mean_file_audited_under_the_chosen_pooling():
    # A mean file with pads counted (right padding, every column averaged), as a user's plain
    # code writes it, with no metadata: the pooling is chosen on the page.
    loaded = load_model("tiny-random-llama")
    tokenized = tokenize_texts(loaded.tokenizer, SAMPLE_TEXTS)
    counted = extract_states(loaded, tokenized, "right-naive", batch_size=4, keep_logits=False, pooling="mean")
    at = _page("tiny-random-llama")
    at.file_uploader(key="audit.states").set_value(
        ("means.safetensors", save({"hidden_states": counted.hidden}), "application/octet-stream")
    )
    at.file_uploader(key="audit.texts").set_value(_texts_file())
    at.selectbox(key="audit.pooling").set_value("mean")
    at.button(key="audit.run").click()
    at.run()
    _assert_no_exception(at)
    report = at.session_state["audit.result"]["report"]
    assert (report.pooling, report.verdict, report.likely_cause) == ("mean", "corrupted", "right-naive")
    assert any("pooling `mean`" in caption.value for caption in at.caption)


def test_a_file_made_with_the_generation_prompt_is_named_then_audits_exact_with_both_toggles():
    from tests.third_party import chat_formatted_states

    loaded = load_model("tiny-random-llama")
    texts = SAMPLE_TEXTS[:4]
    stored = chat_formatted_states(loaded.model, loaded.tokenizer, texts, -1, generation_prompt=True)
    at = _page("tiny-random-llama")
    at.file_uploader(key="audit.states").set_value(
        ("states.safetensors", save({"states": stored.contiguous()}), "application/octet-stream")
    )
    at.file_uploader(key="audit.texts").set_value(("texts.txt", ("\n".join(texts) + "\n").encode(), "text/plain"))
    at.button(key="audit.run").click()
    at.run()
    _assert_no_exception(at)
    assert any("chat-template" in error.value for error in at.error)
    assert any("--chat-template --generation-prompt" in info.value for info in at.info)
    at.toggle(key="audit.chat").set_value(True).run()  # the generation-prompt toggle is enabled by chat
    at.toggle(key="audit.generation_prompt").set_value(True)
    at.button(key="audit.run").click()
    at.run()
    _assert_no_exception(at)
    assert any("match single-sample extraction" in s.value for s in at.success)
