"""Correct extraction to a file: the auto choice, the metadata, verification, atomicity, and
that the output passes its own audit."""

import json

import pytest
import torch
from safetensors import safe_open

from extraction.audit import audit_states
from extraction.cli import main
from extraction.comparison.choose import AUTO_EXCLUDED
from extraction.extract import extract_states
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.export import VerificationError, extract_to_file, parse_layers
from extraction.storage.stored_states import read_states
from extraction.texts import texts_sha256, tokenize_texts

TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:4]]


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return tiny_model


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2):
    return tiny_gpt2


@pytest.fixture(autouse=True)
def choice_cache(tmp_path, monkeypatch):
    """auto's remembered decisions go to a fresh file per test, never the user's cache."""
    path = tmp_path / "cache" / "strategy-choices.json"
    monkeypatch.setenv("PADDING_AUDIT_CHOICES", str(path))
    return path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_auto_output_is_exact_documented_and_passes_its_own_audit(loaded, tmp_path):
    path = tmp_path / "states.safetensors"
    result = extract_to_file(loaded, TEXTS, path, batch_size=4, verify=4)
    num_states = loaded.num_hidden_layers + 1
    assert result.shape == (len(TEXTS), num_states, loaded.hidden_size)
    # auto: the cheapest candidate by the cost model that is exact, never a known-buggy layout.
    candidates = result.choice.candidates
    names = [c["name"] for c in candidates]
    assert set(names).isdisjoint(AUTO_EXCLUDED) and "single" in names
    costs = [c["estimated_seconds"] for c in candidates]
    assert costs == sorted(costs)
    chosen = names.index(result.strategy)
    assert candidates[chosen]["verdict"] == "exact"
    assert all(c["verdict"] != "exact" for c in candidates[:chosen])  # every cheaper one was checked and failed
    assert result.choice.probe_rows and not result.choice.from_cache
    assert result.verification.passed and len(result.verification.rows) == 4
    with safe_open(path, "pt") as handle:
        assert handle.keys() == ["hidden_states"]
        meta = handle.metadata()
        stored = handle.get_tensor("hidden_states")
    assert stored.dtype == torch.float32 and stored.shape == result.shape
    assert meta["model"] == loaded.name and meta["strategy"] == result.strategy and meta["dtype"] == "float32"
    assert json.loads(meta["layers"]) == list(range(num_states))
    assert meta["texts_sha256"] == texts_sha256(TEXTS)
    assert set(json.loads(meta["versions"])) >= {"torch", "transformers", "safetensors"}
    assert json.loads(meta["verification"])["passed"] is True
    report = audit_states(loaded, TEXTS, read_states(path))
    assert report.verdict == "exact", report.cause
    assert not any("texts differ" in note for note in report.notes)
    shuffled = audit_states(loaded, TEXTS[::-1], read_states(path), sample=2, forensics=False)
    assert any("texts differ" in note for note in shuffled.notes)


def test_chosen_layers_and_chunks_give_the_single_sample_rows(gpt2, tmp_path):
    path = tmp_path / "two.safetensors"
    result = extract_to_file(gpt2, TEXTS, path, layers="1,-1", strategy="sorted", chunk_texts=3, verify=0)
    assert result.layers == [1, 4]
    stored = read_states(path)
    assert stored.tensor.shape == (len(TEXTS), 2, gpt2.hidden_size)
    tokenized = tokenize_texts(gpt2.tokenizer, TEXTS)
    single = extract_states(gpt2, tokenized, "single", layers=[1, 4], keep_logits=False).hidden
    assert torch.allclose(stored.tensor, single, atol=1e-5)
    assert json.loads(stored.metadata["verification"]) == {"skipped": True}
    report = audit_states(gpt2, TEXTS, stored)  # layers come from the file's metadata
    assert report.layers == [1, 4] and report.verdict == "exact"
    assert json.loads(stored.metadata["forward_pass"])["blocks_run"] == 4  # -1 is after the final norm: every block


def test_a_middle_layer_is_extracted_by_a_shortened_pass_and_verified(gpt2, tmp_path):
    full = extract_to_file(gpt2, TEXTS, tmp_path / "all.safetensors", strategy="sorted", verify=0)
    short = extract_to_file(gpt2, TEXTS, tmp_path / "two.safetensors", layers="2", strategy="sorted", verify=3)
    assert short.forward_pass.blocks_run == 2 and not short.forward_pass.lm_head_run
    assert short.to_dict()["forward_pass"] == short.forward_pass.to_dict()
    assert json.loads(short.metadata["forward_pass"]) == {
        "blocks_run": 2, "num_blocks": 4, "lm_head_run": False, "note": short.forward_pass.note,
    }  # fmt: skip
    assert "lm_head was not run" in short.forward_pass.note
    assert short.verification.passed and full.forward_pass.lm_head_run
    assert torch.equal(read_states(tmp_path / "two.safetensors").tensor[:, 0], read_states(full.path).tensor[:, 2])
    auto = extract_to_file(gpt2, TEXTS, tmp_path / "auto.safetensors", layers="2", verify=0)
    assert auto.choice.blocks_run == 2 and auto.forward_pass.blocks_run == 2  # priced for the pass it runs


def test_a_defective_strategy_fails_verification_and_leaves_no_file(gpt2, tmp_path):
    path = tmp_path / "bad.safetensors"
    with pytest.raises(VerificationError, match="verification failed.*right-naive"):
        extract_to_file(gpt2, TEXTS, path, strategy="right-naive", batch_size=4, verify=len(TEXTS))
    assert not path.exists() and _leftovers(tmp_path) == []
    # Without verification it is written, and the audit finds the defect from the vectors.
    extract_to_file(gpt2, TEXTS, path, strategy="right-naive", batch_size=4, verify=0)
    report = audit_states(gpt2, TEXTS, read_states(path))
    assert report.verdict == "corrupted" and report.likely_cause == "right-naive"


def test_interrupted_run_leaves_nothing_and_existing_files_are_kept(gpt2, tmp_path):
    path = tmp_path / "states.safetensors"

    def interrupt(stage, done, total):
        if stage == "extracting" and done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_to_file(gpt2, TEXTS, path, strategy="single", chunk_texts=2, verify=0, progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists"):
        extract_to_file(gpt2, TEXTS, path, strategy="single", verify=0)
    assert path.read_bytes() == b"precious"
    extract_to_file(gpt2, TEXTS, path, strategy="single", verify=0, overwrite=True)
    assert read_states(path).tensor.shape[0] == len(TEXTS)
    assert _leftovers(tmp_path) == []


def test_reduced_storage_dtype(gpt2, tmp_path):
    path = tmp_path / "bf16.safetensors"
    extract_to_file(gpt2, TEXTS, path, strategy="single", store_dtype="bfloat16", verify=0)
    stored = read_states(path)
    assert stored.stored_dtype == "bfloat16"
    tokenized = tokenize_texts(gpt2.tokenizer, TEXTS)
    single = extract_states(gpt2, tokenized, "single", keep_logits=False).hidden
    assert torch.equal(stored.tensor, single.to(torch.bfloat16).float())


def test_parse_layers_and_hash():
    assert parse_layers("all", 5) == [0, 1, 2, 3, 4]
    assert parse_layers("4, 0,-1", 5) == [4, 0]
    for bad, message in (("5", "out of range"), ("a,b", "comma-separated integers"), (",", "no layer")):
        with pytest.raises(ValueError, match=message):
            parse_layers(bad, 5)
    assert texts_sha256(["a", "b"]) == texts_sha256(["a", "b"]) != texts_sha256(["b", "a"])
    assert texts_sha256(["a\nb"]) != texts_sha256(["a", "b"])


def test_extract_command(tmp_path, capsys):
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out.safetensors"
    args = ["extract", "--model", "tiny-random-gpt2", "--texts", str(texts_file), "--out", str(out)]
    assert main(args + ["--strategy", "sorted", "--layers", "2,4", "--verify", "3"]) == 0
    printed = capsys.readouterr().out
    assert "strategy: sorted" in printed and "verified 3 texts" in printed and "exact" in printed
    assert read_states(out).tensor.shape == (len(TEXTS), 2, 64)
    assert main(args) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(args[:-1] + [str(tmp_path / "out.npy")]) == 2
    assert ".safetensors" in capsys.readouterr().err
    assert main(args + ["--force", "--strategy", "right-naive", "--batch-size", "4", "--verify", "14"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: verification failed") and "\n" not in err
    assert read_states(out).tensor.shape == (len(TEXTS), 2, 64)  # the earlier file is untouched
    assert _leftovers(tmp_path) == []
