"""The stores engines write, read lazily (no model): ids beside states in safetensors and ``.pt``,
vLLM ``extract_hidden_states`` folders, Parquet and ``datasets`` folders. Each test records the rows
(and, for Parquet, the row groups and bytes) read for a sample of a store several times larger."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from extraction.storage.lazy_states import open_states

N, D = 400, 8


def test_flat_ids_with_offsets_read_only_the_sampled_texts(tmp_path):
    lengths = torch.arange(N) % 5 + 1
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    rows = int(offsets[-1])
    path = tmp_path / "flat.safetensors"
    save_file({"hidden_states": torch.randn(rows, D), "token_ids": torch.arange(rows), "offsets": offsets}, path)
    store = open_states(path)
    assert store.shape == (rows, D) and store.stored_pooling == "tokens" and store.token_ids.count == N
    states, _ = store.text_rows([7, 300])
    assert store.token_ids.of([7]) == [list(range(int(offsets[7]), int(offsets[8])))]
    assert store.rows_read == int(lengths[7] + lengths[300]) == states.shape[0]
    assert store.bytes_read == store.rows_read * D * 4  # of rows * D * 4 bytes in the file
    assert store.token_ids.ids_read == int(lengths[7])


def test_per_text_rows_with_padded_ids_and_a_mask(tmp_path):
    ids = torch.arange(N * 6).reshape(N, 6)
    mask = torch.ones(N, 6, dtype=torch.long)
    mask[:, :2] = 0  # left padded
    path = tmp_path / "padded.safetensors"
    save_file({"states": torch.randn(N, 3, D), "input_ids": ids, "attention_mask": mask}, path)
    store = open_states(path)
    assert store.shape == (N, 3, D) and store.offsets is None and store.stored_pooling is None
    assert store.token_ids.of([2]) == [ids[2, 2:].tolist()]
    store.rows([5, 6, 7])
    assert store.rows_read == 3 and store.bytes_read == 3 * 3 * D * 4


def test_an_activault_pt_is_one_row_per_token(tmp_path):
    states = torch.randn(N, 4, D)
    path = tmp_path / "activault.saved.pt"
    torch.save({"states": states, "input_ids": torch.arange(N * 4).reshape(N, 4)}, path)
    store = open_states(path)
    assert store.shape == (N * 4, D) and store.offsets.tolist()[:3] == [0, 4, 8]
    rows, offsets = store.text_rows([10])
    assert torch.equal(rows, states[10]) and offsets.tolist() == [0, 4] and store.rows_read == 4


def test_ids_that_do_not_fit_the_states_are_named(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"hidden_states": torch.randn(5, D), "token_ids": torch.arange(7)}, path)
    with pytest.raises(ValueError, match=r"token_ids \(7,\) holds 1 text\(s\) of 7 tokens, but 'hidden_states' has 5"):
        open_states(path)
    save_file({"hidden_states": torch.randn(5, D), "token_ids": torch.zeros(2, 2, 2, dtype=torch.long)}, path)
    with pytest.raises(ValueError, match=r"must be \(R,\) \(with offsets\) or \(N, T\)"):
        open_states(path)
    save_file({"hidden_states": torch.arange(5), "token_ids": torch.arange(5), "x": torch.arange(5)}, path)
    with pytest.raises(ValueError, match="several tensors"):
        open_states(path)


def _vllm(folder, lengths, layers=2):
    folder.mkdir()
    for k, n in enumerate(lengths):  # the file names vLLM gives: <request id>.safetensors
        save_file(
            {"hidden_states": torch.full((n, layers, D), float(k)), "token_ids": torch.arange(n)},
            folder / f"{k}.safetensors",
        )


def test_a_vllm_folder_opens_every_file_in_natural_order_and_reads_only_sampled_ones(tmp_path):
    lengths = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    _vllm(tmp_path / "v", lengths)
    store = open_states(tmp_path / "v")
    assert store.shape == (sum(lengths), 2, D) and store.token_ids.count == len(lengths)
    rows, _ = store.text_rows([10])  # "10.safetensors" after "9.safetensors", not after "1..."
    assert rows.shape == (5, 2, D) and float(rows[0, 0, 0]) == 10.0
    assert store.rows_read == 5 and store.token_ids.of([5]) == [list(range(9))]


def test_a_vllm_folder_that_is_not_one_run_is_named(tmp_path):
    _vllm(tmp_path / "v", [2, 3])
    save_file({"hidden_states": torch.zeros(2, 3, D), "token_ids": torch.arange(2)}, tmp_path / "v" / "2.safetensors")
    with pytest.raises(ValueError, match=r"2\.safetensors holds \(2, 3, 8\) F32, the files before it"):
        open_states(tmp_path / "v")
    (tmp_path / "w").mkdir()
    save_file({"hidden_states": torch.zeros(2, 3, D), "token_ids": torch.zeros(2)}, tmp_path / "w" / "0.safetensors")
    with pytest.raises(ValueError, match=r"expected \(seq, layers, hidden\) and \(seq,\) integers"):
        open_states(tmp_path / "w")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "0.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(ValueError, match=r"0\.safetensors cannot be read as safetensors"):
        open_states(tmp_path / "t")


def test_parquet_reads_only_the_row_groups_of_the_sampled_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = np.random.default_rng(0).standard_normal((N, D)).astype("float32")
    table = pa.table(
        {
            "text": [f"text {i}" for i in range(N)],
            "emb": pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), D),
        }
    )
    path = tmp_path / "store.parquet"
    pq.write_table(table, path, row_group_size=20)  # 20 row groups
    store = open_states(path)
    assert store.shape == (N, D) and store.key == "emb" and store.texts[123] == "text 123"
    reader = store.reader
    before = reader.row_groups_read, reader.bytes_read  # the first row (its shape) and the text read
    got = store.rows([45, 46, 310])
    assert np.allclose(got.numpy(), values[[45, 46, 310]])
    assert reader.row_groups_read - before[0] == 2  # of 20
    meta = pq.ParquetFile(path).metadata
    group_bytes = [meta.row_group(g).column(1).total_compressed_size for g in range(20)]
    assert reader.bytes_read - before[1] == group_bytes[2] + group_bytes[15]  # rows 40-59 and 300-319
    assert reader.bytes_read - before[1] < sum(group_bytes) / 5
    assert store.rows_read == 3


def test_parquet_columns_that_are_ambiguous_are_listed(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    two = pa.array([[1.0, 2.0]] * 3, type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"a": two, "b": two, "t": ["x", "y", "z"]}), tmp_path / "two.parquet")
    with pytest.raises(ValueError, match=r"several float-list columns \(a, b\).*--states-column.*t \(string\)"):
        open_states(tmp_path / "two.parquet")
    assert open_states(tmp_path / "two.parquet", key="b").key == "b"
    with pytest.raises(ValueError, match="column 't' is string, not a list of floats"):
        open_states(tmp_path / "two.parquet", key="t")
    with pytest.raises(ValueError, match="no column 'nope'; it holds: a"):
        open_states(tmp_path / "two.parquet", key="a", text_column="nope")
    pq.write_table(pa.table({"a": two, "t": ["x", "y", "z"], "u": ["1", "2", "3"]}), tmp_path / "texts.parquet")
    with pytest.raises(ValueError, match=r"several text columns \(t, u\); choose one with --text-column"):
        open_states(tmp_path / "texts.parquet")
    assert open_states(tmp_path / "texts.parquet", text_column="u").texts[2] == "3"
    (tmp_path / "not.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="cannot read it as Parquet"):
        open_states(tmp_path / "not.parquet")


def test_a_datasets_folder_reads_only_the_sampled_rows(tmp_path):
    import datasets

    values = np.random.default_rng(1).standard_normal((N, 2, D)).astype("float32")
    features = datasets.Features(
        {"token_ids": datasets.Sequence(datasets.Value("int32")), "h": datasets.Array2D((2, D), "float32")}
    )
    data = {"token_ids": [[i, i + 1] for i in range(N)], "h": values}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(tmp_path / "ds"))
    store = open_states(tmp_path / "ds")
    assert store.shape == (N, 2, D) and store.stored_dtype == "float32" and store.texts is None
    got = store.rows([399, 0, 200])
    assert np.allclose(got.numpy(), values[[399, 0, 200]])
    assert store.rows_read == 3 and store.bytes_read == 3 * 2 * D * 4
    assert store.token_ids.of([7]) == [[7, 8]] and store.token_ids.name == "token_ids"


def test_a_missing_optional_reader_is_named_with_its_install(monkeypatch, tmp_path):
    """Without pyarrow (the ``formats`` extra), opening Parquet says what to install, not a traceback."""
    import importlib.util

    from extraction.storage import columnar

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    with pytest.raises(ValueError, match=r"needs pyarrow: pip install 'padding-audit\[formats\]'"):
        columnar.open_parquet(tmp_path / "store.parquet")
