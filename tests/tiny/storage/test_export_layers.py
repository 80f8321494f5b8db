"""``--verify`` and sharded ``auto`` on the layers stored: a file of middle layers is extracted and
verified with passes that stop after the deepest stored layer (blocks counted with hooks, never
timed), the verification says lm_head was not run, and ``verify_lm_head`` (``--lm-head``) runs it."""

import json

import pytest
import torch

from extraction.cli import main
from extraction.extract import lm_head_not_run
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.distributed import RankInfo
from extraction.storage.export import extract_to_file
from extraction.storage.sharded_export import extract_to_folder
from extraction.storage.shards import read_index
from extraction.storage.stored_states import read_states
from tests.block_calls import BlockCalls

TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:4]]
ONE_RANK = RankInfo(rank=0, world_size=1, local_rank=0, local_world_size=1)
#: The keys of a verification (the file's ``verification`` metadata, ``ExportResult.to_dict()["verification"]``).
VERIFICATION_KEYS = {"rows", "min_cosine", "top1_same", "max_relative_l2", "pooling", "verdict", "passed",
                     "lm_head_note"}  # fmt: skip


@pytest.fixture(autouse=True)
def choice_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDING_AUDIT_CHOICES", str(tmp_path / "cache" / "strategy-choices.json"))


def test_verify_of_a_middle_layer_stops_after_it_and_says_lm_head_was_not_run(tiny_model, tmp_path):
    with BlockCalls(tiny_model) as counted:
        short = extract_to_file(tiny_model, TEXTS, tmp_path / "short.safetensors", layers="2", strategy="sorted",
                                verify=4)  # fmt: skip
    assert counted.calls[0] > 0 and not counted.ran_beyond(2) and counted.lm_head_calls == 0  # extraction and verify
    verification = short.verification
    assert verification.passed and verification.top1_same is None
    assert verification.lm_head_note == lm_head_not_run([2]) == "lm_head not run: layers up to 2 asked for"
    assert set(verification.to_dict()) == VERIFICATION_KEYS
    assert json.loads(short.metadata["verification"])["lm_head_note"] == verification.lm_head_note
    with BlockCalls(tiny_model) as counted:
        whole = extract_to_file(tiny_model, TEXTS, tmp_path / "whole.safetensors", layers="2", strategy="sorted",
                                verify=4, verify_lm_head=True)  # fmt: skip
    assert counted.calls[-1] > 0 and counted.lm_head_calls > 0  # the verification ran the whole pass
    assert whole.verification.top1_same is not None and "final norm then lm_head" in whole.verification.lm_head_note
    assert whole.verification.min_cosine == verification.min_cosine
    assert torch.equal(read_states(short.path).tensor, read_states(whole.path).tensor)


def test_verify_of_the_last_layer_checks_lm_head(tiny_gpt2, tmp_path):
    result = extract_to_file(tiny_gpt2, TEXTS, tmp_path / "last.safetensors", layers="-1", strategy="sorted", verify=3)
    assert result.verification.top1_same == 1.0
    assert "lm_head on the stored layer 4 (the last" in result.verification.lm_head_note


def test_extract_cli_lm_head_option(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    argv = ["extract", "--model", "tiny-random-gpt2", "--texts", str(texts), "--layers", "1", "--strategy", "sorted",
            "--verify", "2"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "off.safetensors")]) == 0
    assert main([*argv, "--out", str(tmp_path / "on.safetensors"), "--lm-head"]) == 0
    off = json.loads(read_states(tmp_path / "off.safetensors").metadata["verification"])
    on = json.loads(read_states(tmp_path / "on.safetensors").metadata["verification"])
    assert off["lm_head_note"] == "lm_head not run: layers up to 1 asked for" and off["top1_same"] is None
    assert on["top1_same"] == 1.0 and "final norm then lm_head" in on["lm_head_note"]


def test_sharded_auto_is_priced_for_the_shortened_pass(tiny_llama, tmp_path):
    texts = tmp_path / "texts.jsonl"
    texts.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS) + "\n", encoding="utf-8")
    result = extract_to_folder(tiny_llama, texts, tmp_path / "auto", ONE_RANK, layers="2", shard_texts=6, verify=3)
    metadata = read_index(tmp_path / "auto")["metadata"]
    assert json.loads(metadata["strategy_choice"])["blocks_run"] == 2 and result.choice["blocks_run"] == 2
    assert json.loads(metadata["forward_pass"])["blocks_run"] == 2
    assert result.verification.passed and result.verification.lm_head_note == lm_head_not_run([2])
    whole = extract_to_folder(tiny_llama, texts, tmp_path / "whole", ONE_RANK, layers="2", strategy="sorted",
                              shard_texts=6, verify=3, verify_lm_head=True)  # fmt: skip
    assert whole.verification.top1_same is not None
    assert json.loads(read_index(tmp_path / "whole")["metadata"]["verification"])["lm_head_note"].startswith("final")
