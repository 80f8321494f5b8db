"""Stored states read on demand (extraction.storage.lazy_states): each format gives the rows
read_states gives, reads only the rows asked for (counted by a reader that records its slices),
and refuses a file that is not what it claims with a message naming what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extraction.storage.lazy_states import LazyStates, open_states, shard_bounds
from extraction.storage.safetensors_writer import write_safetensors_atomic
from extraction.storage.shards import ShardSpec, new_index, write_index, write_shard
from extraction.storage.states_record import StoredStates
from extraction.storage.stored_states import read_states

N, L, D = 600, 3, 8
WANTED = [5, 6, 7, 300, 599, 6]  # a run of three, two singles and a repeat


@pytest.fixture(scope="module")
def rows() -> torch.Tensor:
    return torch.randn(N, L, D, generator=torch.Generator().manual_seed(0))  # (N, L, d)


def _recording(states: LazyStates) -> list[tuple[int, int]]:
    """Wrap the store's reader so that every slice it reads is recorded."""
    slices, fetch = [], states.fetch

    def recorded(start: int, stop: int) -> torch.Tensor:
        slices.append((start, stop))
        return fetch(start, stop)

    states.fetch = recorded
    return slices


def _files(tmp_path, rows):
    safetensors = write_safetensors_atomic(tmp_path / "s.safetensors", {"hidden_states": rows.to(torch.bfloat16)})
    npy = tmp_path / "s.npy"
    np.save(npy, rows.numpy())
    pt = tmp_path / "s.pt"
    torch.save({"hidden_states": rows, "labels": torch.zeros(N)}, pt)
    folder = tmp_path / "shards"
    folder.mkdir()
    shards = [ShardSpec(k, 3, 200 * k, 200, 0, 0) for k in range(3)]
    index = new_index({}, shards, (N, L, D), {"stored_dtype": "float32"})
    for shard in shards:
        write_shard(folder, shard, rows[shard.first_text : shard.first_text + 200], "float32", {})
    write_index(folder, {**index, "complete": True})
    return {
        "safetensors": (safetensors, None),
        "npy": (npy, None),
        "pt": (pt, "hidden_states"),
        "shards": (folder, None),
    }


@pytest.mark.parametrize("kind", ["safetensors", "npy", "pt", "shards"])
def test_only_the_rows_asked_for_are_read(tmp_path, rows, kind):
    path, key = _files(tmp_path, rows)[kind]
    states = open_states(path, key=key)
    assert states.whole is None and states.shape == (N, L, D) and states.rows_read == 0
    slices = _recording(states)
    got = states.rows(WANTED)
    expected = read_states(path, key=key).tensor
    assert torch.equal(got, expected[WANTED])
    assert sorted(slices) == [(5, 8), (300, 301), (599, 600)]  # one read per run, nothing else
    assert states.rows_read == 5 and sum(b - a for a, b in slices) * states.row_bytes == 5 * L * D * 4
    assert states.rows_read * 100 < N  # the file is over a hundred times the rows read


def test_a_folder_gives_its_shard_bounds_and_a_file_none(tmp_path, rows):
    files = _files(tmp_path, rows)
    assert shard_bounds(open_states(files["shards"][0])) == [0, 200, 400, 600]
    assert shard_bounds(open_states(files["npy"][0])) is None


def test_token_files_read_their_texts_rows_with_offsets(tmp_path, rows):
    offsets = torch.tensor([0, 4, 4, 10, N], dtype=torch.int64)
    path = write_safetensors_atomic(tmp_path / "t.safetensors", {"hidden_states": rows, "offsets": offsets})
    states = open_states(path)
    assert torch.equal(states.offsets, offsets) and states.num_texts == 4 and states.stored_pooling == "tokens"
    got, got_offsets = states.text_rows([2, 0])
    assert torch.equal(got, torch.cat([rows[4:10], rows[0:4]])) and got_offsets.tolist() == [0, 6, 10]
    assert states.rows_read == 10


def test_a_store_in_memory_counts_its_rows_once(rows):
    states = LazyStates.from_stored(StoredStates(rows, "tensor", None, "float32"))
    assert states.whole is not None and states.rows_read == N
    assert torch.equal(states.rows([3, 1]), rows[[3, 1]]) and states.rows_read == N


def _two(path):
    return write_safetensors_atomic(path, {"a": torch.ones(4, 2), "b": torch.ones(4, 2)})


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("ints.safetensors", lambda p: write_safetensors_atomic(p, {"h": torch.ones(4, 2, dtype=torch.int32)}), "int"),
        ("two.safetensors", lambda p: _two(p), "--key"),
        ("bad.safetensors", lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}....."), "safetensors"),
        ("ints.npy", lambda p: np.save(p, np.ones((4, 2), dtype=np.int64)), "int64"),
        ("text.npy", lambda p: p.write_bytes(b"hello, not numpy"), "signature"),
        ("ints.pt", lambda p: torch.save(torch.ones(4, 2, dtype=torch.int64), p), "int64"),
    ],
)
def test_a_file_that_is_not_what_it_claims_is_refused_by_name(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(ValueError, match=message) as raised:
        open_states(path)
    assert str(path) in str(raised.value)


def test_an_unfinished_folder_is_refused(tmp_path, rows):
    folder = tmp_path / "shards"
    folder.mkdir()
    shards = [ShardSpec(0, 1, 0, N, 0, 0)]
    write_index(folder, new_index({}, shards, (N, L, D), {}))
    with pytest.raises(ValueError, match="did not finish"):
        open_states(folder)
