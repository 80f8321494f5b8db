"""``extract`` under ``torchrun --standalone --nproc-per-node 2`` (gloo, CPU) on the embedded model:
the rows equal one-process runs, the folder audits exact, a rank killed part-way is resumed to
the uninterrupted output without rewriting a shard, and other texts are refused on resume."""

import json
import os
import subprocess
import sys

import pytest
import torch

from extraction.audit import audit_states
from extraction.cli import main
from extraction.metrics import cosine_similarity
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.export import extract_to_file
from extraction.storage.sharded_export import EXIT_AFTER_SHARDS_VARIABLE, EXIT_RANK_VARIABLE
from extraction.storage.shards import read_index
from extraction.storage.stored_states import read_states

pytestmark = pytest.mark.integration

TEXTS = [text + " and more" * (i % 6) for i, text in enumerate(SAMPLE_TEXTS * 2)] + SAMPLE_TEXTS[:4]  # 24 texts
OPTIONS = ["--strategy", "sorted", "--batch-size", "4", "--shard-size", "4", "--verify", "4"]  # 6 shards


def _failure(run: subprocess.CompletedProcess) -> str:
    """The ranks' own error lines (torchrun's report after them fills the tail of stderr), then the tail."""
    errors = [line for line in run.stderr.splitlines() if "error: " in line]
    return "\n".join(errors) + "\n...\n" + run.stderr[-1500:]


def _extract(texts_file, folder, ranks: int, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run`` (what ``torchrun`` runs) with ``ranks`` processes."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    command = [*launcher, "-m", "extraction", "extract", "--model", "smollm2-135m", "--texts", str(texts_file)]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [*command, "--out", str(folder), *OPTIONS, *extra],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _stats(folder):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("shard-*.safetensors")}


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("texts") / "texts.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def two_ranks(texts_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("two") / "states"
    done = _extract(texts_file, folder, 2)
    assert done.returncode == 0, _failure(done)
    return folder


def test_two_ranks_equal_one_process_and_audit_exact(two_ranks, texts_file, tmp_path, embedded_model):
    index = read_index(two_ranks)
    assert index["complete"] and index["num_shards"] == 6 and index["shape"][0] == len(TEXTS)
    assert json.loads(index["metadata"]["verification"])["passed"]
    stored = read_states(two_ranks).tensor  # (N, L, d)
    # One process, the same shards (the same batches): bit-equal.
    one_rank = tmp_path / "one"
    done = _extract(texts_file, one_rank, 1)
    assert done.returncode == 0, _failure(done)
    assert torch.equal(read_states(one_rank).tensor, stored)
    # One process, one file (batches sorted over all texts, other threads): cosine >= 0.99999.
    one_file = tmp_path / "one.safetensors"
    extract_to_file(embedded_model, TEXTS, one_file, strategy="sorted", batch_size=4, verify=0)
    reference = read_states(one_file).tensor
    assert float(cosine_similarity(stored, reference).min()) >= 0.99999
    report = audit_states(embedded_model, TEXTS, read_states(two_ranks), forensics=False)
    assert report.verdict == "exact" and report.n_checked == len(TEXTS)


def test_killed_rank_resumes_to_the_uninterrupted_output(two_ranks, texts_file, tmp_path, capsys):
    folder = tmp_path / "states"
    killed = _extract(texts_file, folder, 2, env={EXIT_AFTER_SHARDS_VARIABLE: "1", EXIT_RANK_VARIABLE: "1"})
    assert killed.returncode != 0
    assert not read_index(folder)["complete"]
    before = _stats(folder)
    assert 1 <= len(before) < 6
    # Other texts: refused, and nothing in the folder changes.
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS[::-1]) + "\n", encoding="utf-8")
    argv = ["extract", "--model", "smollm2-135m", "--texts", str(other), "--out", str(folder), *OPTIONS, "--resume"]
    assert main(argv) == 2
    assert "texts_sha256" in capsys.readouterr().err
    assert _stats(folder) == before
    resumed = _extract(texts_file, folder, 2, "--resume")
    assert resumed.returncode == 0, _failure(resumed)
    after = _stats(folder)
    assert len(after) == 6 and {name: after[name] for name in before} == before  # none written twice
    assert torch.equal(read_states(folder).tensor, read_states(two_ranks).tensor)
    assert not list(folder.glob(".*.tmp"))
