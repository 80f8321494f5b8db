"""Folder output on one rank with the tiny models: equal to a one-file run, readable by every
reader (folder, zip, merge), resumable without rewriting a finished shard, and refused when
resumed with other texts. The two-rank runs are in tests/integration/test_distributed_embedded.py."""

import io
import json
import zipfile

import pytest
import torch
from safetensors import safe_open

from extraction.cli import main
from extraction.extract import extract_states
from extraction.models import load_model
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.distributed import RankInfo
from extraction.storage.export import extract_to_file
from extraction.storage.sharded_export import extract_to_folder
from extraction.storage.shards import INDEX_NAME, ResumeRefused, merge_shards, read_index, read_sharded
from extraction.storage.stored_states import read_states
from extraction.texts import texts_sha256, tokenize_texts

ONE_RANK = RankInfo(rank=0, world_size=1, local_rank=0, local_world_size=1)
TEXTS = [text + " again" * (i % 5) for i, text in enumerate(SAMPLE_TEXTS * 2)]  # 20 texts
SHARD = 6  # 4 shards: 6, 6, 6, 2


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS) + "\n", encoding="utf-8")
    return path


def _stats(folder):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("shard-*.safetensors")}


def test_folder_equals_one_file_run_and_every_reader_agrees(tiny_llama, texts_file, tmp_path):
    folder = tmp_path / "states"
    result = extract_to_folder(
        tiny_llama, texts_file, folder, ONE_RANK, strategy="sorted", batch_size=4, shard_texts=SHARD, verify=3
    )
    assert result.num_shards == 4 and len(result.written) == 4 and result.resumed == []
    assert result.verification.passed
    # The same batches (a one-file run in steps of the shard size): bit-equal rows.
    one_file = tmp_path / "one.safetensors"
    extract_to_file(tiny_llama, TEXTS, one_file, strategy="sorted", batch_size=4, chunk_texts=SHARD, verify=0)
    expected = read_states(one_file)
    stored = read_states(folder)
    assert torch.equal(stored.tensor, expected.tensor)
    index = read_index(folder)
    assert index["complete"] and index["num_texts"] == len(TEXTS) and index["shape"] == list(expected.shape)
    for key in ("model", "strategy", "layers", "texts_sha256", "num_texts", "stored_dtype", "batch_size"):
        assert stored.metadata[key] == expected.metadata[key], key
    assert stored.metadata["texts_sha256"] == texts_sha256(TEXTS)
    assert json.loads(stored.metadata["verification"])["passed"]
    # Each shard alone, with safetensors only: rows and the texts they belong to.
    with safe_open(folder / index["shards"][1]["file"], "pt") as handle:
        assert handle.get_tensor("text_index").tolist() == list(range(SHARD, 2 * SHARD))
        assert torch.equal(handle.get_tensor("hidden_states"), expected.tensor[SHARD : 2 * SHARD])
    # A zip of the folder (the Audit page's upload), and merge.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.iterdir():
            archive.write(path, f"states/{path.name}")
    assert torch.equal(read_states(buffer.getvalue(), name="states.zip").tensor, expected.tensor)
    merged = tmp_path / "merged.safetensors"
    assert main(["merge", str(folder), str(merged)]) == 0
    with safe_open(merged, "pt") as handle:
        assert handle.keys() == ["hidden_states"]
        assert torch.equal(handle.get_tensor("hidden_states"), expected.tensor)
        assert handle.metadata()["texts_sha256"] == expected.metadata["texts_sha256"]


def test_resume_writes_only_the_missing_shards_and_refuses_other_texts(tiny_llama, texts_file, tmp_path):
    folder = tmp_path / "states"
    options = {"strategy": "right", "batch_size": 4, "shard_texts": SHARD, "verify": 0}
    extract_to_folder(tiny_llama, texts_file, folder, ONE_RANK, **options)
    complete = read_states(folder).tensor
    # As a killed run leaves it: the index not complete, a shard missing, one half-written.
    index = read_index(folder)
    index["complete"] = False
    (folder / INDEX_NAME).write_text(json.dumps(index))
    (folder / index["shards"][2]["file"]).unlink()
    (folder / f".{index['shards'][2]['file']}.abc.tmp").write_bytes(b"partial")
    with pytest.raises(ValueError):
        read_sharded(folder)  # an incomplete folder is never read as if complete
    before = _stats(folder)
    result = extract_to_folder(tiny_llama, texts_file, folder, ONE_RANK, resume=True, **options)
    assert result.written == [index["shards"][2]["file"]]
    assert len(result.resumed) == 3 and result.removed_partials
    after = _stats(folder)
    assert {name: after[name] for name in before} == before  # no finished shard written again
    assert torch.equal(read_states(folder).tensor, complete)
    assert not list(folder.glob(".*.tmp"))
    # Other texts: refused, naming what differs.
    index = read_index(folder)
    index["complete"] = False
    (folder / INDEX_NAME).write_text(json.dumps(index))
    texts_file.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS[::-1]) + "\n", encoding="utf-8")
    with pytest.raises(ResumeRefused) as refused:
        extract_to_folder(tiny_llama, texts_file, folder, ONE_RANK, resume=True, **options)
    assert refused.value.changed == ["texts_sha256"]
    # Another batch size: refused too.
    with pytest.raises(ResumeRefused) as refused:
        extract_to_folder(tiny_llama, texts_file, folder, ONE_RANK, resume=True, **{**options, "batch_size": 2})
    assert set(refused.value.changed) == {"texts_sha256", "batch_size"}


def test_cli_folder_output_refusals(texts_file, tmp_path, capsys):
    folder = tmp_path / "out"
    base = ["extract", "--model", "tiny-random-llama", "--texts", str(texts_file), "--strategy", "right"]
    assert main([*base, "--out", str(folder), "--shard-size", "8", "--verify", "0"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == [INDEX_NAME] + [
        f"shard-0000{k}-of-00003.safetensors" for k in range(3)
    ]
    capsys.readouterr()
    assert main([*base, "--out", str(folder), "--shard-size", "8", "--verify", "0"]) == 2  # exists, no --force
    assert main([*base, "--out", str(tmp_path / "new"), "--resume", "--verify", "0"]) == 0  # nothing yet: a fresh run
    assert read_index(tmp_path / "new")["complete"]
    assert main([*base, "--out", str(tmp_path / "f.safetensors"), "--resume"]) == 2  # a file does not resume
    # Resuming a complete folder has nothing to do.
    assert main([*base, "--out", str(folder), "--shard-size", "8", "--verify", "0", "--resume"]) == 2


def test_device_map_keeps_the_read_rows_hooks(tiny_llama, tmp_path):
    """accelerate's placement on CPU: the model loads through dispatch, and with accelerate's
    own hooks forced onto every module, the extraction hooks still give the plain rows."""
    from accelerate import dispatch_model

    mapped = load_model("tiny-random-llama", device_map="auto")
    assert mapped.device == torch.device("cpu") and hasattr(mapped.model, "hf_device_map")
    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS[:6])
    plain = extract_states(tiny_llama, tokenized, "right", batch_size=3)
    hooked = load_model("tiny-random-llama")
    dispatch_model(hooked.model, device_map={"": "cpu"}, force_hooks=True)
    assert hasattr(hooked.model.model.layers[0], "_hf_hook")  # accelerate's AlignDevicesHook is there
    for loaded in (mapped, hooked):
        result = extract_states(loaded, tokenized, "right", batch_size=3, capture="hooks")
        assert result.capture == "hooks"
        assert torch.equal(result.hidden, plain.hidden) and torch.equal(result.logits, plain.logits)


def test_merge_refuses_an_incomplete_folder(tiny_llama, texts_file, tmp_path):
    folder = tmp_path / "states"
    extract_to_folder(tiny_llama, texts_file, folder, ONE_RANK, strategy="right", shard_texts=SHARD, verify=0)
    index = read_index(folder)
    index["complete"] = False
    (folder / INDEX_NAME).write_text(json.dumps(index))
    with pytest.raises(ValueError):
        merge_shards(folder, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
