"""Ranks from the launcher's environment, without starting any process group."""

import pytest

from extraction.storage.distributed import RankInfo, all_reduce_sum, broadcast_json, rank_from_environment


def test_plain_process_is_rank_zero_of_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    info = rank_from_environment()
    assert (info.rank, info.world_size, info.local_rank, info.is_main, info.is_distributed) == (0, 1, 0, True, False)
    assert info.device("auto") == "auto"  # one process keeps what was asked
    assert broadcast_json({"a": [1, 2]}, info) == {"a": [1, 2]}


def test_launcher_variables(monkeypatch):
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    info = rank_from_environment()
    assert info == RankInfo(rank=5, world_size=8, local_rank=1, local_world_size=4)
    assert not info.is_main and info.is_distributed
    assert info.device("cpu") == "cpu" and info.backend("cpu") == "gloo" and info.backend("cuda:1") == "nccl"
    monkeypatch.setenv("RANK", "8")
    with pytest.raises(ValueError):
        rank_from_environment()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError):
        rank_from_environment()


def test_collectives_are_identities_for_one_rank():
    import torch

    info = RankInfo(0, 1, 0, 1)
    values = torch.tensor([1, 2, 3])
    assert torch.equal(all_reduce_sum(values, info), values)
