"""Extraction to a folder of shards, by one process or by every rank a launcher started.

:func:`extract_to_folder` is :func:`~extraction.storage.export.extract_to_file` for a folder
(:mod:`extraction.storage.shards` is the format), run the same way on every rank:

1. **Plan** (every rank): one pass over the texts file (:class:`~extraction.storage.text_stream.TextSource`)
   counts the texts and notes where each shard starts; each rank tokenizes one text in
   ``world_size`` and the token counts are summed over the ranks, so every rank holds every
   text's length (an int64 a text) without tokenizing them all. Rank 0 also hashes the texts.
2. **Choose** (rank 0): the strategy (``auto`` measures the candidates on a sample, with
   :func:`~extraction.comparison.choose.choose_strategy`), ``index.json``, and on ``resume`` the
   check that the texts, model and options are those of the interrupted run and which
   shards are finished. Broadcast to every rank (:func:`~extraction.storage.distributed.broadcast_json`),
   errors included, so that every rank stops with the same message.
3. **Extract** (every rank): the unfinished shards, balanced by tokens over the ranks
   (:func:`~extraction.storage.shards.assign_shards`); each rank reads only its shards' texts (from
   their byte offsets), extracts them like a one-file run extracts a chunk, and writes each
   shard atomically as soon as it is done.
4. **Verify** (rank 0, after a barrier): ``verify`` random rows re-extracted one at a time,
   as in a one-file run; then ``index.json`` is marked complete.

Pooling: ``last`` and ``mean`` (one row per text, as in a one-file run; verification under
the same pooling with :func:`~extraction.audit.check.check_rows`). ``tokens`` is not
supported for shards yet (a shard's row count would depend on its texts' tokens): it raises
``ValueError``; extract to one file instead.

This module holds the run and its order of collective calls, which every rank must follow
exactly, and the steps every rank takes (the options checked, the plan, its share of the shards);
the run's :class:`~extraction.storage.shard_steps.ShardJob` and the steps a rank takes on its own
(the folder, the choice and the new index or the resume check, a shard, the verification and the
completed index) live in :mod:`extraction.storage.shard_steps`.

A test hook stops a rank part-way: with :data:`EXIT_AFTER_SHARDS_VARIABLE` set to ``K``
(and :data:`EXIT_RANK_VARIABLE` to the rank, default 1), that rank exits with status
:data:`HOOK_EXIT_CODE` after writing K shards, as a killed job would.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..pooling import DEFAULT_POOLING, Pooling, parse_pooling
from ..strategies import DEFAULT_BATCH_SIZE
from ..texts import TextsError
from .distributed import RankInfo, all_reduce_sum, barrier, broadcast_json
from .export import (
    AUTO,
    AUTO_SAMPLE,
    CHUNK_TEXTS,
    DEFAULT_VERIFY,
    ExportProgress,
    Verification,
    VerificationError,
    parse_layers,
)
from .safetensors_writer import STORE_DTYPES
from .shard_steps import ShardJob, ShardPlan, begin_or_resume, extract_shard, prepare_folder, verify_and_complete
from .shards import ShardSpec, assign_shards, plan_shards, write_shard
from .text_stream import TextsHasher, TextSource

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)

#: Texts per shard by default: the texts a one-file run extracts per step, so that a shard's
#: batches are that run's batches and its rows are bit-equal to it on the same device.
DEFAULT_SHARD_TEXTS = CHUNK_TEXTS
EXIT_AFTER_SHARDS_VARIABLE = "PADDING_AUDIT_EXIT_AFTER_SHARDS"  # test hook: stop after writing this many shards
EXIT_RANK_VARIABLE = "PADDING_AUDIT_EXIT_RANK"  # the rank that stops (default 1)
HOOK_EXIT_CODE = 75


@dataclass
class ShardedResult:
    """What :func:`extract_to_folder` did; the same on every rank except ``written_here``."""

    folder: Path
    strategy: str
    choice: dict | None  # the auto choice (StrategyChoice.to_dict()); None when the strategy was named
    layers: list[int]
    shape: tuple[int, int, int]  # (N, L, d) over every shard
    store_dtype: str
    num_shards: int
    resumed: list[str]  # shards finished before this run, kept as they were
    written: list[str]  # shards written by this run, over every rank
    written_here: list[str]  # shards written by this rank
    world_size: int
    verification: Verification | None
    seconds: float  # planning, extraction and writing on this rank (choice and verification excluded)
    removed_partials: list[str] = field(default_factory=list)  # temporary files of a killed run, deleted

    def to_dict(self) -> dict:
        return {
            "folder": str(self.folder),
            "strategy": self.strategy,
            "choice": self.choice,
            "layers": self.layers,
            "shape": list(self.shape),
            "store_dtype": self.store_dtype,
            "num_shards": self.num_shards,
            "resumed": self.resumed,
            "written": self.written,
            "world_size": self.world_size,
            "verification": self.verification.to_dict() if self.verification else None,
            "seconds": self.seconds,
            "removed_partials": self.removed_partials,
        }


def _agree(info: RankInfo, decide: Callable[[], dict]) -> dict:
    """Rank 0 runs ``decide``; every rank gets its result, or raises its error."""
    outcome: dict = {}
    failure: Exception | None = None
    if info.is_main:
        try:
            outcome = {"ok": decide()}
        except (ValueError, FileExistsError) as error:
            failure, outcome = error, {"error": str(error), "type": type(error).__name__}
    outcome = broadcast_json(outcome, info)
    if failure is not None:
        raise failure
    if "error" in outcome:
        kinds = {"FileExistsError": FileExistsError, "VerificationError": VerificationError, "TextsError": TextsError}
        raise kinds.get(outcome["type"], ValueError)(outcome["error"])
    return outcome["ok"]


def _plan(loaded: LoadedModel, source: TextSource, info: RankInfo, shard_texts: int) -> ShardPlan:
    """Count the texts, note shard offsets, and every text's token count (see the module docstring)."""
    hasher = TextsHasher() if info.is_main else None
    lengths: list[int] = []
    shard_offsets: list[int] = []
    max_tokens = loaded.context_length
    for index, text, offset in source.scan():
        if index % shard_texts == 0:
            shard_offsets.append(offset)
        if hasher is not None:
            hasher.update(text)
        if index % info.world_size == info.rank:
            count = len(loaded.tokenizer(text, add_special_tokens=True)["input_ids"])
            if count == 0:
                raise TextsError(f"text {index + 1} ({text[:30]!r}) has no tokens after tokenization")
            lengths.append(count)
        else:
            lengths.append(0)
    summed = all_reduce_sum(torch.tensor(lengths, dtype=torch.int64), info)  # (N,) full lengths on every rank
    truncated = (summed > max_tokens).nonzero().flatten().tolist()
    return ShardPlan(
        num_texts=len(lengths),
        lengths=summed.clamp(max=max_tokens),
        truncated=truncated,
        shard_offsets=shard_offsets,
        texts_sha256=hasher.hexdigest() if hasher is not None else "",
    )


def _stop_for_test(written: int, info: RankInfo) -> None:
    """The test hook of the module docstring."""
    limit = os.environ.get(EXIT_AFTER_SHARDS_VARIABLE)
    if limit and info.rank == int(os.environ.get(EXIT_RANK_VARIABLE, "1")) and written >= int(limit):
        logger.warning("rank %d stops after %d shard(s) (%s)", info.rank, written, EXIT_AFTER_SHARDS_VARIABLE)
        os._exit(HOOK_EXIT_CODE)


def extract_to_folder(
    loaded: LoadedModel,
    texts: str | Path | TextSource,
    out: str | Path,
    info: RankInfo,
    layers: str | list[int] | None = None,
    strategy: str = AUTO,
    batch_size: int = DEFAULT_BATCH_SIZE,
    store_dtype: str = "float32",
    verify: int = DEFAULT_VERIFY,
    overwrite: bool = False,
    resume: bool = False,
    shard_texts: int = DEFAULT_SHARD_TEXTS,
    seed: int = 0,
    auto_sample: int = AUTO_SAMPLE,
    progress: ExportProgress | None = None,
    pooling: Pooling = DEFAULT_POOLING,
    verify_lm_head: bool | None = None,
) -> ShardedResult:
    """Extract the states of the texts of ``texts`` (a file), pooled by ``pooling`` (``last`` or
    ``mean``), into the folder ``out`` as shards, on this rank's share; see the module
    docstring. Every rank calls it, and every rank makes the same collective calls in the same
    order: agree (the folder), all-reduce (the plan), agree (the index), barrier, agree (the end).
    ``verify_lm_head`` as in :func:`~extraction.storage.export.extract_to_file`."""
    folder = Path(out)
    pooling = _check_options(info, pooling, store_dtype, batch_size, shard_texts, verify, resume, overwrite)
    source = texts if isinstance(texts, TextSource) else TextSource(texts)
    resuming = _agree(info, lambda: prepare_folder(folder, resume, overwrite))["resuming"]
    started = time.perf_counter()
    plan = _plan(loaded, source, info, shard_texts)
    layer_list = parse_layers(layers, loaded.num_hidden_layers + 1)
    shards = plan_shards(plan.lengths.tolist(), plan.shard_offsets, shard_texts)
    plan_seconds = time.perf_counter() - started
    job = ShardJob(
        loaded=loaded,
        source=source,
        folder=folder,
        info=info,
        strategy=strategy,
        batch_size=batch_size,
        store_dtype=store_dtype,
        verify=verify,
        shard_texts=shard_texts,
        seed=seed,
        auto_sample=auto_sample,
        progress=progress,
        pooling=pooling,
        plan=plan,
        layers=layer_list,
        shards=shards,
        shape=(plan.num_texts, len(layer_list), loaded.hidden_size),
        run=_run_record(loaded, plan, layer_list, strategy, store_dtype, batch_size, shard_texts, pooling),
        verify_lm_head=verify_lm_head,
    )
    decided = _agree(info, lambda: begin_or_resume(job, resuming))
    index, finished = decided["index"], set(decided["finished"])
    _check_same_texts(job, index)
    name = index["metadata"]["strategy"]
    choice = json.loads(index["metadata"]["strategy_choice"])
    pending = [s for s in shards if s.number not in finished]
    extract_started = time.perf_counter()
    written_here = _extract_my_shards(job, index, pending)
    seconds = plan_seconds + time.perf_counter() - extract_started
    barrier(info)
    final = _agree(info, lambda: verify_and_complete(job, index, name))
    return ShardedResult(
        folder=folder,
        strategy=name,
        choice=None if choice.get("named") else choice,
        layers=layer_list,
        shape=job.shape,
        store_dtype=store_dtype,
        num_shards=len(shards),
        resumed=[s.file for s in shards if s.number in finished],
        written=[s.file for s in pending],
        written_here=written_here,
        world_size=info.world_size,
        verification=_verification_from(final["verification"], pooling),
        seconds=seconds,
        removed_partials=decided["removed"],
    )


# The steps, in the order extract_to_folder takes them.


def _check_options(
    info: RankInfo,
    pooling: Pooling,
    store_dtype: str,
    batch_size: int,
    shard_texts: int,
    verify: int,
    resume: bool,
    overwrite: bool,
) -> Pooling:
    """The pooling parsed; a ``ValueError`` naming what is allowed for any option a sharded run cannot take."""
    pooling = parse_pooling(pooling)
    if pooling == "tokens":
        raise ValueError("tokens pooling is not supported for sharded runs yet: extract to one .safetensors file")
    if store_dtype not in STORE_DTYPES:
        raise ValueError(f"unknown store dtype {store_dtype!r}: choose one of {', '.join(STORE_DTYPES)}")
    if batch_size < 1 or shard_texts < 1:
        raise ValueError(f"batch size and shard size must be at least 1, got {batch_size} and {shard_texts}")
    if verify < 0:
        raise ValueError(f"verify must be 0 (off) or a number of texts, got {verify}")
    if resume and overwrite:
        raise ValueError("--resume keeps the finished shards and --force deletes them: give one")
    if info.is_distributed and not torch.distributed.is_initialized():
        raise ValueError(f"rank {info.rank} of {info.world_size}: join the ranks first (distributed.launched)")
    return pooling


def _run_record(
    loaded: LoadedModel,
    plan: ShardPlan,
    layers: list[int],
    strategy: str,
    store_dtype: str,
    batch_size: int,
    shard_texts: int,
    pooling: Pooling,
) -> dict:
    """What identifies the run: index.json's ``run``, which a resumed run must match."""
    run = {
        "texts_sha256": plan.texts_sha256,
        "num_texts": plan.num_texts,
        "model": loaded.name,
        "model_source": loaded.source,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "attn_implementation": loaded.attn_implementation,
        "layers": layers,
        "store_dtype": store_dtype,
        "batch_size": batch_size,
        "shard_texts": shard_texts,
        "strategy_option": strategy,
    }
    if pooling != DEFAULT_POOLING:  # absent under last, so that folders begun before pooling still resume
        run["pooling"] = pooling
    return run


def _check_same_texts(job: ShardJob, index: dict) -> None:
    """Every rank: a ``TextsError`` when this rank counted other texts than rank 0."""
    if index["num_texts"] != job.plan.num_texts:
        raise TextsError(
            f"{job.source.path}: rank {job.info.rank} reads {job.plan.num_texts} texts where rank 0 reads "
            f"{index['num_texts']}: every rank must see the same texts file"
        )


def _extract_my_shards(job: ShardJob, index: dict, pending: list[ShardSpec]) -> list[str]:
    """Every rank: its share of the unfinished shards, each extracted and written atomically; their files."""
    name = index["metadata"]["strategy"]
    mine = assign_shards(pending, job.info.world_size)[job.info.rank]
    meta = {key: index["metadata"][key] for key in ("model", "strategy", "layers", "texts_sha256", "run_id")}
    written_here = []
    for done, shard in enumerate(mine, start=1):
        hidden = extract_shard(job.loaded, job.source, shard, name, job.batch_size, job.layers, job.pooling)
        write_shard(job.folder, shard, hidden, job.store_dtype, meta)
        written_here.append(shard.file)
        job.report("extracting", done, len(mine))
        _stop_for_test(done, job.info)
    return written_here


def _verification_from(data: dict | None, pooling: Pooling) -> Verification | None:
    """Rank 0's verification, as every rank received it."""
    if data is None:
        return None
    return Verification(
        data["rows"],
        data["min_cosine"],
        data["top1_same"],
        data["verdict"],
        data.get("max_relative_l2"),
        data.get("pooling", pooling),
        data.get("lm_head_note", ""),
    )


__all__ = ["DEFAULT_SHARD_TEXTS", "ShardedResult", "extract_to_folder"]
