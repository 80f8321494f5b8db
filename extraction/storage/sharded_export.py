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
exactly; the steps a rank takes on its own (the folder, the choice, a shard, the verification)
live in :mod:`extraction.storage.shard_steps`.

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
from ..texts import TextsError, tokenize_texts
from .distributed import RankInfo, all_reduce_sum, barrier, broadcast_json
from .export import (
    AUTO,
    AUTO_SAMPLE,
    CHUNK_TEXTS,
    DEFAULT_VERIFY,
    ExportProgress,
    Verification,
    VerificationError,
    base_metadata,
    parse_layers,
)
from .safetensors_writer import STORE_DTYPES
from .shard_steps import choose_for_shards, extract_shard, prepare_folder, verify_shards
from .shards import (
    ResumeRefused,
    assign_shards,
    differences,
    finished_shard,
    new_index,
    plan_shards,
    read_index,
    remove_partials,
    run_id,
    write_index,
    write_shard,
)
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


@dataclass
class _Plan:
    num_texts: int
    lengths: torch.Tensor  # (N,) int64 tokens per text, after truncation to the model's context
    truncated: list[int]  # texts cut to the context
    shard_offsets: list[int]  # where each shard's first text starts in the file
    texts_sha256: str  # rank 0's; the others have ""


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


def _plan(loaded: LoadedModel, source: TextSource, info: RankInfo, shard_texts: int) -> _Plan:
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
    return _Plan(
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
) -> ShardedResult:
    """Extract the states of the texts of ``texts`` (a file), pooled by ``pooling`` (``last`` or
    ``mean``), into the folder ``out`` as shards, on this rank's share; see the module
    docstring. Every rank calls it."""
    folder = Path(out)
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
    source = texts if isinstance(texts, TextSource) else TextSource(texts)
    resuming = _agree(info, lambda: prepare_folder(folder, resume, overwrite))["resuming"]
    started = time.perf_counter()
    plan = _plan(loaded, source, info, shard_texts)
    layer_list = parse_layers(layers, loaded.num_hidden_layers + 1)
    shards = plan_shards(plan.lengths.tolist(), plan.shard_offsets, shard_texts)
    shape = (plan.num_texts, len(layer_list), loaded.hidden_size)
    plan_seconds = time.perf_counter() - started
    run = {
        "texts_sha256": plan.texts_sha256,
        "num_texts": plan.num_texts,
        "model": loaded.name,
        "model_source": loaded.source,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "attn_implementation": loaded.attn_implementation,
        "layers": layer_list,
        "store_dtype": store_dtype,
        "batch_size": batch_size,
        "shard_texts": shard_texts,
        "strategy_option": strategy,
    }
    if pooling != DEFAULT_POOLING:  # absent under last, so that folders begun before pooling still resume
        run["pooling"] = pooling

    def decide() -> dict:
        removed = remove_partials(folder)
        if resuming:
            index = read_index(folder)
            changed = differences(index.get("run", {}), run)
            if changed:
                raise ResumeRefused(
                    f"{folder}: cannot resume: this run differs from the interrupted one ({'; '.join(changed)})",
                    [item.split(":", 1)[0] for item in changed],
                )
            finished = [s.number for s in shards if finished_shard(folder, s, index)]
            if index.get("complete"):
                raise ValueError(f"{folder}: nothing to resume, the extraction is complete")
        else:
            name, choice = choose_for_shards(
                loaded, source, plan.lengths.tolist(), strategy, batch_size, auto_sample, seed, progress, pooling
            )
            sample = tokenize_texts(loaded.tokenizer, source.read(shards[0].offset, 1), loaded.context_length)
            metadata = base_metadata(loaded, sample, name, None, layer_list, store_dtype, batch_size, pooling)
            # The metadata of the whole input, not of the one text tokenized above.
            metadata |= {
                "strategy_choice": json.dumps(choice or {"chosen": name, "named": True}),
                "num_texts": str(plan.num_texts),
                "texts_sha256": plan.texts_sha256,
                "truncated_texts": json.dumps(plan.truncated),
                "run_id": run_id(run),
                "shard_texts": str(shard_texts),
            }
            index = new_index(run, shards, shape, metadata)
            write_index(folder, index)
            finished = []
        return {"index": index, "finished": finished, "removed": removed}

    decided = _agree(info, decide)
    index, finished = decided["index"], set(decided["finished"])
    if index["num_texts"] != plan.num_texts:
        raise TextsError(
            f"{source.path}: rank {info.rank} reads {plan.num_texts} texts where rank 0 reads {index['num_texts']}: "
            "every rank must see the same texts file"
        )
    name = index["metadata"]["strategy"]
    choice = json.loads(index["metadata"]["strategy_choice"])
    pending = [s for s in shards if s.number not in finished]
    mine = assign_shards(pending, info.world_size)[info.rank]
    meta = {key: index["metadata"][key] for key in ("model", "strategy", "layers", "texts_sha256", "run_id")}
    extract_started = time.perf_counter()
    written_here = []
    for done, shard in enumerate(mine, start=1):
        hidden = extract_shard(loaded, source, shard, name, batch_size, layer_list, pooling)
        write_shard(folder, shard, hidden, store_dtype, meta)
        written_here.append(shard.file)
        if progress is not None:
            progress("extracting", done, len(mine))
        _stop_for_test(done, info)
    seconds = plan_seconds + time.perf_counter() - extract_started
    barrier(info)

    def finish() -> dict:
        missing = [s.file for s in shards if not finished_shard(folder, s, index)]
        if missing:
            raise ValueError(f"{folder}: {len(missing)} shard(s) missing after every rank finished: {missing[:3]}")
        verification = None
        if verify:
            if progress is not None:
                progress("verifying", 0, verify)
            verification = verify_shards(loaded, source, folder, index, shard_texts, layer_list, verify, seed, pooling)
            index["metadata"]["verification"] = json.dumps(verification.to_dict())
            if not verification.passed:
                write_index(folder, index)
                raise VerificationError(
                    f"verification failed: {len(verification.rows)} texts re-extracted one at a time differ from "
                    f"the rows written with {name} under {pooling} pooling: {verification.describe()}; "
                    "the folder is marked incomplete"
                )
        else:
            index["metadata"]["verification"] = json.dumps({"skipped": True})
        index["complete"] = True
        for entry in index["shards"]:
            entry["bytes"] = (folder / entry["file"]).stat().st_size
        write_index(folder, index)
        return {"verification": verification.to_dict() if verification else None}

    final = _agree(info, finish)
    verification = None
    if final["verification"] is not None:
        v = final["verification"]
        verification = Verification(
            v["rows"],
            v["min_cosine"],
            v["top1_same"],
            v["verdict"],
            v.get("max_relative_l2"),
            v.get("pooling", pooling),
        )
    return ShardedResult(
        folder=folder,
        strategy=name,
        choice=None if choice.get("named") else choice,
        layers=layer_list,
        shape=shape,
        store_dtype=store_dtype,
        num_shards=len(shards),
        resumed=[s.file for s in shards if s.number in finished],
        written=[s.file for s in pending],
        written_here=written_here,
        world_size=info.world_size,
        verification=verification,
        seconds=seconds,
        removed_partials=decided["removed"],
    )


__all__ = ["DEFAULT_SHARD_TEXTS", "ShardedResult", "extract_to_folder"]
