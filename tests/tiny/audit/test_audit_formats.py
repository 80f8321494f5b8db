"""The formats engines and libraries write, audited on tiny models: files whose tensors carry
``input_ids`` / ``token_ids`` (no texts needed; compared with texts when given), vLLM
``extract_hidden_states`` folders (written as vLLM writes them, with ``safetensors.torch.save_file``),
Parquet files and ``datasets`` folders (written with pyarrow and datasets)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from extraction.audit import audit_states
from extraction.cli import main
from extraction.extract import extract_states
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.lazy_states import open_states
from extraction.texts import TokenizedTexts, tokenize_texts

TEXTS = [f"{SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)]} (row {i})" for i in range(12)]
VLLM_LAYERS = [1, 2]  # eagle_aux_hidden_state_layer_ids: the residual stream entering layers 1 and 2


def _token_rows(loaded, tokenized: TokenizedTexts, layers=None) -> torch.Tensor:
    """(R, L, d): every token's single-sample state, texts one after the other."""
    return extract_states(loaded, tokenized, "single", keep_logits=False, pooling="tokens", layers=layers).hidden


def _last_rows(loaded, tokenized: TokenizedTexts) -> torch.Tensor:
    """(N, d): each text's last-token single-sample state at the last layer."""
    return extract_states(loaded, tokenized, "single", keep_logits=False).hidden[:, -1].contiguous()


def _flat_ids(tokenized: TokenizedTexts) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([i for row in tokenized.token_ids for i in row], dtype=torch.int64)
    offsets = torch.tensor([0, *np.cumsum(tokenized.lengths)], dtype=torch.int64)
    return ids, offsets


def test_a_flat_token_file_with_ids_is_audited_without_texts(tiny_llama, tmp_path):
    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS)
    ids, offsets = _flat_ids(tokenized)
    rows = _token_rows(tiny_llama, tokenized)[:, -1].contiguous()  # (R, d)
    path = tmp_path / "tokens.safetensors"
    save_file({"hidden_states": rows, "token_ids": ids, "offsets": offsets}, path)
    report = audit_states(tiny_llama, None, open_states(path), sample=5, layer=-1)
    assert report.verdict == "exact" and report.pooling == "tokens" and report.n_checked == 5
    assert report.stored_ids.texts_given is False and report.stored_ids.name == "token_ids"
    data = report.to_dict()["stored_token_ids"]
    assert data == {
        "name": "token_ids",
        "layout": "token_ids (R,) with offsets (N + 1,)",
        "texts_given": False,
        "checked": 0,
        "same": 0,
        "differences": [],
    }


def test_stored_ids_with_a_bos_added_are_reextracted_and_the_difference_named(tiny_llama, tmp_path):
    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS)
    bos = tiny_llama.tokenizer.bos_token_id
    assert all(row[0] != bos for row in tokenized.token_ids)  # this tokenizer adds none
    dropped = TokenizedTexts(TEXTS, [[bos, *row] for row in tokenized.token_ids])  # TransformerLens' prepend_bos
    width = max(dropped.lengths)
    input_ids = torch.zeros(len(TEXTS), width, dtype=torch.int64)
    mask = torch.zeros(len(TEXTS), width, dtype=torch.int64)
    for k, row in enumerate(dropped.token_ids):  # left padded, as generation pipelines pad
        input_ids[k, width - len(row) :], mask[k, width - len(row) :] = torch.tensor(row), 1
    path = tmp_path / "padded.safetensors"
    save_file({"states": _last_rows(tiny_llama, dropped), "input_ids": input_ids, "attention_mask": mask}, path)
    report = audit_states(tiny_llama, TEXTS, open_states(path), sample=6, layer=-1)
    assert report.verdict == "exact"  # the rows are those of the stored ids
    check = report.stored_ids
    assert check.texts_given and check.checked == 6 and check.same == 0
    assert [d.how for d in check.differences] == ["special-tokens"]
    assert check.differences[0].detail == "<|im_start|> (the tokenizer's BOS token) added at the start"
    assert sorted(check.differences[0].texts) == report.checked
    assert "NOT the texts' tokenization in 6 of 6" in check.describe()


def test_a_cut_and_the_same_tokenization_are_told_apart(tiny_llama):
    from extraction.audit.stored_tokens import compare_token_ids

    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS[:3])
    ours = tokenized.token_ids
    stored = [ours[0], ours[1][:4], ours[2][-5:]]
    check = compare_token_ids(tiny_llama.tokenizer, "input_ids", "-", TEXTS[:3], ours, stored, [0, 1, 2])
    assert check.same == 1
    details = {d.texts: d.detail for d in check.differences}
    assert "first 4 tokens (right side cut" in details[(1,)] and "last 5 tokens (left side cut" in details[(2,)]
    other = compare_token_ids(tiny_llama.tokenizer, "input_ids", "-", TEXTS[:1], ours[:1], [[5, 6, 7]], [0])
    assert other.differences[0].how == "other"


def test_an_activault_pt_with_input_ids_beside_the_states(tiny_gpt2, tmp_path):
    tokenized = tokenize_texts(tiny_gpt2.tokenizer, TEXTS)
    width = min(tokenized.lengths)  # every sequence the same length, as Activault cuts them
    cut = TokenizedTexts(TEXTS, [row[:width] for row in tokenized.token_ids])
    states = _token_rows(tiny_gpt2, cut)[:, -1].reshape(len(TEXTS), width, -1)  # (N, T, d)
    path = tmp_path / "activault.saved.pt"
    torch.save({"states": states, "input_ids": torch.tensor(cut.token_ids)}, path)
    opened = open_states(path)
    assert opened.shape == (len(TEXTS) * width, tiny_gpt2.hidden_size) and opened.token_ids.count == len(TEXTS)
    report = audit_states(tiny_gpt2, None, opened, sample=4, layer=-1)
    assert report.verdict == "exact" and report.pooling == "tokens"
    assert opened.rows_read == 4 * width  # the sampled texts' token rows only


def _vllm_folder(loaded, folder, corrupt: int | None = None):
    """One ``<req id>.safetensors`` per text, as vLLM's ExampleHiddenStatesConnector writes them."""
    folder.mkdir()
    tokenized = tokenize_texts(loaded.tokenizer, TEXTS)
    rows = _token_rows(loaded, tokenized, layers=VLLM_LAYERS)  # (R, 2, d)
    offsets = [0, *np.cumsum(tokenized.lengths)]
    for k, ids in enumerate(tokenized.token_ids):
        hidden = rows[offsets[k] : offsets[k + 1]].clone()  # (seq, layers, hidden)
        if k == corrupt:
            hidden[-1] = hidden[0]  # the last token's state replaced
        save_file({"hidden_states": hidden, "token_ids": torch.tensor(ids)}, folder / f"{k}.safetensors")
        (folder / f"{k}.safetensors.lock").touch()
    return folder


def test_a_vllm_extract_hidden_states_folder(tiny_llama, tmp_path, capsys):
    folder = _vllm_folder(tiny_llama, tmp_path / "vllm", corrupt=3)
    opened = open_states(folder)
    assert opened.token_ids.count == len(TEXTS) and opened.shape[1:] == (2, tiny_llama.hidden_size)
    out = tmp_path / "audit.json"
    args = ["audit", "--model", "tiny-random-llama", "--states", str(folder), "--layers", "1,2", "--json", str(out)]
    assert main([*args, "--no-forensics"]) == 0
    data = json.loads(out.read_text())
    assert data["verdict"] != "exact" and data["differences"]["differing_rows"] == [3]
    assert data["n_texts"] == len(TEXTS) and data["n_corrupted"] == 1
    assert data["states"]["layers"] == VLLM_LAYERS and data["stored_token_ids"]["name"] == "token_ids"
    assert "token ids: re-extracted from the store's own token ids" in capsys.readouterr().out
    report = audit_states(tiny_llama, TEXTS, open_states(folder), layers=VLLM_LAYERS, forensics=False)
    assert report.stored_ids.same == len(TEXTS)  # the files in natural order are the texts in order


def test_a_vllm_last_layer_id_gets_a_note_on_the_final_norm(tiny_llama, tmp_path):
    folder = _vllm_folder(tiny_llama, tmp_path / "vllm")
    last = tiny_llama.num_hidden_layers
    report = audit_states(tiny_llama, None, open_states(folder), layers=[1, last], sample=2, forensics=False)
    assert any(f"vLLM records layer id {last} (num_hidden_layers) before the final norm" in n for n in report.notes)


def test_a_vllm_file_without_token_ids_is_named(tiny_llama, tmp_path):
    folder = _vllm_folder(tiny_llama, tmp_path / "vllm")
    save_file({"hidden_states": torch.zeros(3, 2, tiny_llama.hidden_size)}, folder / "5.safetensors")
    with pytest.raises(ValueError, match=r"5\.safetensors holds \['hidden_states'\]; a vLLM"):
        open_states(folder)


def test_a_parquet_file_with_a_text_column(tiny_llama, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _last_rows(tiny_llama, tokenize_texts(tiny_llama.tokenizer, TEXTS)).numpy()
    width = rows.shape[1]
    table = pa.table(
        {
            "text": TEXTS,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), width),
            "label": list(range(len(TEXTS))),
        }
    )
    path = tmp_path / "store.parquet"
    pq.write_table(table, path, row_group_size=2)
    out = tmp_path / "audit.json"
    args = ["audit", "--model", "tiny-random-llama", "--states", str(path), "--layer", "-1", "--sample", "3"]
    assert main([*args, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["verdict"] == "exact" and data["n_texts"] == len(TEXTS) and data["stored_token_ids"] is None


def test_a_datasets_folder_with_token_ids_and_layers(tiny_llama, tmp_path):
    import datasets

    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS)
    hidden = extract_states(tiny_llama, tokenized, "single", keep_logits=False).hidden  # (N, L, d)
    features = datasets.Features(
        {
            "input_ids": datasets.Sequence(datasets.Value("int64")),
            "states": datasets.Array2D(shape=tuple(hidden.shape[1:]), dtype="float32"),
        }
    )
    data = {"input_ids": tokenized.token_ids, "states": hidden.numpy()}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(tmp_path / "ds"))
    opened = open_states(tmp_path / "ds")
    report = audit_states(tiny_llama, TEXTS, opened, sample=4)
    assert report.verdict == "exact" and report.layers == list(range(tiny_llama.num_hidden_layers + 1))
    assert report.stored_ids.same == 4 and opened.rows_read == 4


def test_the_cli_asks_for_texts_when_the_store_has_no_ids(tiny_llama, tmp_path, capsys):
    path = tmp_path / "plain.safetensors"
    save_file({"hidden_states": torch.zeros(3, tiny_llama.hidden_size)}, path)
    assert main(["audit", "--model", "tiny-random-llama", "--states", str(path)]) != 0
    assert "keeps no token ids" in capsys.readouterr().err


def test_ids_of_the_chat_formatted_texts_are_named_chat_template(tiny_llama):
    from extraction.audit.stored_tokens import compare_token_ids
    from extraction.chat import render_chat

    texts = TEXTS[:3]
    ours = tokenize_texts(tiny_llama.tokenizer, texts).token_ids
    rendered = [render_chat(tiny_llama.tokenizer, [{"role": "user", "content": t}], True) for t in texts]
    stored = tokenize_texts(tiny_llama.tokenizer, rendered).token_ids
    check = compare_token_ids(tiny_llama.tokenizer, "input_ids", "-", texts, ours, stored, [0, 1, 2])
    assert check.same == 0 and len(check.differences) == 1
    found = check.differences[0]
    assert found.how == "chat-template" and found.texts == (0, 1, 2)
    assert found.detail == "the texts formatted as one user turn with the chat template and the generation prompt"


def test_an_uploaded_file_with_ids_needs_no_texts(tiny_llama, tmp_path):
    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS[:4])
    ids, offsets = _flat_ids(tokenized)
    path = tmp_path / "tokens.safetensors"
    save_file({"hidden_states": _last_rows(tiny_llama, tokenized), "token_ids": ids, "offsets": offsets}, path)
    opened = open_states(path.read_bytes(), name="upload.safetensors")
    assert opened.source == "upload.safetensors" and opened.token_ids.count == 4
    assert audit_states(tiny_llama, None, opened, layer=-1).verdict == "exact"
