"""The steps of a sharded extraction that a rank takes on its own, with no collective call:
rank 0 prepares the folder, begins the index (the strategy chosen) or checks the one it resumes,
and at the end verifies the written rows and marks the index complete; every rank extracts its
shards. :class:`ShardJob` is what the steps read: the run's inputs, options and plan.
:mod:`extraction.storage.sharded_export` runs them in its fixed order of collective calls (see its
docstring)."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..audit.check import check_rows, subset
from ..comparison.choose import choose_strategy
from ..extract import extract_states, forward_pass
from ..pooling import DEFAULT_POOLING, Pooling
from ..strategies import get_strategy
from ..texts import tokenize_texts
from .distributed import RankInfo
from .export import AUTO, CHUNK_TEXTS, ExportProgress, Verification, VerificationError, base_metadata
from .shards import (
    INDEX_NAME,
    TENSOR_NAME,
    ResumeRefused,
    ShardSpec,
    differences,
    finished_shard,
    new_index,
    read_index,
    remove_partials,
    run_id,
    write_index,
)
from .text_stream import TextSource

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)


@dataclass
class ShardPlan:
    """Every rank's plan of the run (sharded_export's planning pass, summed over the ranks)."""

    num_texts: int
    lengths: torch.Tensor  # (N,) int64 tokens per text, after truncation to the model's context
    truncated: list[int]  # texts cut to the context
    shard_offsets: list[int]  # where each shard's first text starts in the file
    texts_sha256: str  # rank 0's; the others have ""


@dataclass(frozen=True)
class ShardJob:
    """What every step of a sharded run reads: the inputs, the options and the plan, the same on every rank."""

    loaded: LoadedModel
    source: TextSource
    folder: Path
    info: RankInfo
    strategy: str
    batch_size: int
    store_dtype: str
    verify: int
    shard_texts: int
    seed: int
    auto_sample: int
    progress: ExportProgress | None
    pooling: Pooling
    plan: ShardPlan
    layers: list[int]
    shards: list[ShardSpec]  # every shard of the run (shards.plan_shards)
    shape: tuple[int, int, int]  # (N, L, d) over every shard
    run: dict  # what a resumed run must match (index.json's "run")
    verify_lm_head: bool | None = None  # the verification's lm_head check (None: only when the last layer is stored)

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)


#: Texts rank 0 reads to rank the layouts by cost (the shard plan knows every length, not every text).
AUTO_COST_SAMPLE = 512


def prepare_folder(folder: Path, resume: bool, overwrite: bool) -> dict:
    """Rank 0: refuse or clear what is there before a new run; ``{"resuming": bool}``.
    ``resume`` on a folder with no index yet starts afresh (a requeued job may always pass it)."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; --out for shards must be a folder")
    ours = [*folder.glob("shard-*.safetensors"), folder / INDEX_NAME] if folder.is_dir() else []
    ours = [path for path in ours if path.exists()]
    if resume:
        if (folder / INDEX_NAME).is_file():
            return {"resuming": True}
        if ours:
            raise ValueError(f"{folder}: holds shards but no {INDEX_NAME}; they cannot be trusted, use --force")
        logger.info("%s: nothing to resume yet; starting", folder)
    if ours and not overwrite:
        raise FileExistsError(f"{folder} already holds shards; pass --resume to finish them or --force to replace them")
    for path in ours:
        path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return {"resuming": False}


def choose_for_shards(
    loaded: LoadedModel,
    source: TextSource,
    lengths: Sequence[int],
    strategy: str,
    batch_size: int,
    auto_sample: int,
    seed: int,
    progress: ExportProgress | None,
    pooling: Pooling = DEFAULT_POOLING,
    blocks_run: int | None = None,
):
    """Rank 0: the strategy, as a one-file run chooses it (:func:`extraction.comparison.choose.choose_strategy`),
    on a sample of :data:`AUTO_COST_SAMPLE` texts with the shortest and the longest
    (``lengths``: every text's token count, from the plan), priced for passes of ``blocks_run``
    blocks (default all; :func:`extraction.extract.forward_pass` of the layers stored)."""
    if strategy != AUTO:
        return get_strategy(strategy).name, None
    rows = auto_sample_rows(list(lengths), AUTO_COST_SAMPLE, seed)
    sample = tokenize_texts(loaded.tokenizer, source.texts_at(rows), max_tokens=loaded.context_length)
    choice = choose_strategy(
        loaded, sample, batch_size, probe_texts=auto_sample, pooling=pooling, blocks_run=blocks_run
    )
    return choice.chosen, {**choice.to_dict(), "sample_rows": rows}


def auto_sample_rows(lengths: Sequence[int], size: int, seed: int = 0) -> list[int]:
    """All rows if there are at most ``size``; otherwise ``size`` random rows that include
    the shortest and the longest text (the texts the cost model and the probe see; the other
    ranks' texts are not all read on rank 0)."""
    n = len(lengths)
    if n <= size:
        return list(range(n))
    shortest = min(range(n), key=lambda i: lengths[i])
    longest = max(range(n), key=lambda i: lengths[i])
    rest = [i for i in range(n) if i not in (shortest, longest)]
    picked = random.Random(seed).sample(rest, max(size - 2, 0))
    return sorted({shortest, longest, *picked})


def extract_shard(
    loaded: LoadedModel,
    source: TextSource,
    shard: ShardSpec,
    strategy: str,
    batch_size: int,
    layers: list[int],
    pooling: Pooling = DEFAULT_POOLING,
) -> torch.Tensor:
    """The shard's rows ``(n_i, L, d)``, extracted in steps of CHUNK_TEXTS texts as a one-file run does."""
    texts = source.read(shard.offset, shard.rows)
    tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
    parts = []
    for start in range(0, shard.rows, CHUNK_TEXTS):
        rows = list(range(start, min(start + CHUNK_TEXTS, shard.rows)))
        chunk = subset(tokenized, rows)
        hidden = extract_states(
            loaded, chunk, strategy, batch_size, layers=layers, keep_logits=False, pooling=pooling
        ).hidden
        bad = ~torch.isfinite(hidden)
        if bad.any():
            texts_bad = [shard.first_text + rows[k] + 1 for k in bad.flatten(1).any(1).nonzero().flatten().tolist()]
            raise ValueError(f"NaN/inf in the extracted states of text(s) {texts_bad[:8]} (dtype overflow?)")
        parts.append(hidden)  # (k, L, d)
    return torch.cat(parts)  # (n_i, L, d)


def verify_shards(
    loaded: LoadedModel,
    source: TextSource,
    folder: Path,
    index: dict,
    shard_texts: int,
    layers: list[int],
    count: int,
    seed: int,
    pooling: Pooling = DEFAULT_POOLING,
    lm_head: bool | None = None,
) -> Verification:
    """Rank 0: ``count`` random rows read back from the shards, re-extracted one at a time
    (the rows a one-file run with the same seed verifies) on the layers stored, the lm_head check
    as ``lm_head`` says (:func:`~extraction.audit.check.check_rows`)."""
    from safetensors import safe_open

    n = index["num_texts"]
    rows = sorted(random.Random(seed + 1).sample(range(n), min(count, n)))
    written = torch.empty(len(rows), *index["shape"][1:], dtype=torch.float32)  # (K, L, d)
    for k, row in enumerate(rows):
        entry = index["shards"][row // shard_texts]
        with safe_open(folder / entry["file"], "pt") as handle:
            written[k] = handle.get_slice(TENSOR_NAME)[row - entry["first_text"]].float()
    tokenized = tokenize_texts(loaded.tokenizer, source.texts_at(rows), max_tokens=loaded.context_length)
    check = check_rows(loaded, tokenized, written, layers, pooling, lm_head=lm_head)
    return Verification.of(rows, check, pooling, layers, loaded.num_hidden_layers + 1)


def begin_or_resume(job: ShardJob, resuming: bool) -> dict:
    """Rank 0: the index (the interrupted run's, checked, or a new one with the strategy chosen), the
    shards already finished and the partial files removed."""
    removed = remove_partials(job.folder)
    if resuming:
        index = read_index(job.folder)
        changed = differences(index.get("run", {}), job.run)
        if changed:
            raise ResumeRefused(
                f"{job.folder}: cannot resume: this run differs from the interrupted one ({'; '.join(changed)})",
                [item.split(":", 1)[0] for item in changed],
            )
        finished = [s.number for s in job.shards if finished_shard(job.folder, s, index)]
        if index.get("complete"):
            raise ValueError(f"{job.folder}: nothing to resume, the extraction is complete")
    else:
        index = _new_index(job)
        write_index(job.folder, index)
        finished = []
    return {"index": index, "finished": finished, "removed": removed}


def _new_index(job: ShardJob) -> dict:
    """A new run's index.json: the strategy chosen (or named) and the metadata of the whole input."""
    loaded, plan = job.loaded, job.plan
    planned = forward_pass(loaded, job.layers, keep_logits=False)  # the blocks up to the deepest layer stored
    name, choice = choose_for_shards(
        loaded,
        job.source,
        plan.lengths.tolist(),
        job.strategy,
        job.batch_size,
        job.auto_sample,
        job.seed,
        job.progress,
        job.pooling,
        planned.blocks_run,
    )
    sample = tokenize_texts(loaded.tokenizer, job.source.read(job.shards[0].offset, 1), loaded.context_length)
    metadata = base_metadata(loaded, sample, name, None, job.layers, job.store_dtype, job.batch_size, job.pooling)
    # The metadata of the whole input, not of the one text tokenized above.
    metadata |= {
        "strategy_choice": json.dumps(choice or {"chosen": name, "named": True}),
        "num_texts": str(plan.num_texts),
        "texts_sha256": plan.texts_sha256,
        "truncated_texts": json.dumps(plan.truncated),
        "run_id": run_id(job.run),
        "shard_texts": str(job.shard_texts),
        "forward_pass": json.dumps(planned.to_dict()),
    }
    return new_index(job.run, job.shards, job.shape, metadata)


def verify_and_complete(job: ShardJob, index: dict, name: str) -> dict:
    """Rank 0, after the barrier: every shard present, ``verify`` rows re-extracted one at a time, and
    index.json marked complete (or left incomplete with a ``VerificationError``)."""
    folder = job.folder
    missing = [s.file for s in job.shards if not finished_shard(folder, s, index)]
    if missing:
        raise ValueError(f"{folder}: {len(missing)} shard(s) missing after every rank finished: {missing[:3]}")
    verification = None
    if job.verify:
        job.report("verifying", 0, job.verify)
        verification = verify_shards(
            job.loaded,
            job.source,
            folder,
            index,
            job.shard_texts,
            job.layers,
            job.verify,
            job.seed,
            job.pooling,
            job.verify_lm_head,
        )
        index["metadata"]["verification"] = json.dumps(verification.to_dict())
        if not verification.passed:
            write_index(folder, index)
            raise VerificationError(
                f"verification failed: {len(verification.rows)} texts re-extracted one at a time differ from "
                f"the rows written with {name} under {job.pooling} pooling: {verification.describe()}; "
                "the folder is marked incomplete"
            )
    else:
        index["metadata"]["verification"] = json.dumps({"skipped": True})
    index["complete"] = True
    for entry in index["shards"]:
        entry["bytes"] = (folder / entry["file"]).stat().st_size
    write_index(folder, index)
    return {"verification": verification.to_dict() if verification else None}
