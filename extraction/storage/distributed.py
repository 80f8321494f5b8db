"""Several processes under a launcher: who am I, on which device, and how the ranks agree.

``torchrun`` and ``accelerate launch`` both start one process per rank and set ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``) in its environment;
:func:`rank_from_environment` reads them (a plain ``python -m extraction`` is rank 0 of 1).
Multi-node rendezvous is the launcher's business, not this module's.

:func:`launched` initialises ``torch.distributed`` for more than one rank (``nccl`` when
each rank has a CUDA device, ``gloo`` on CPU) and tears it down on leaving. The ranks
exchange only small things: JSON (:func:`broadcast_json`, from rank 0, which chose the
strategy, to the others), integer vectors summed over ranks (:func:`all_reduce_sum`) and
barriers. JSON travels as UTF-8 bytes in a ``uint8`` tensor, so no object is unpickled.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

#: Environment variables a launcher sets for every rank.
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class RankInfo:
    """This process's place among the ranks a launcher started."""

    rank: int  # 0 .. world_size - 1, over every node
    world_size: int  # ranks in all
    local_rank: int  # 0 .. local_world_size - 1, on this node
    local_world_size: int  # ranks on this node

    @property
    def is_main(self) -> bool:
        """Rank 0: chooses the strategy, verifies, writes the index, prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def device(self, requested: str = "auto") -> str:
        """The device this rank extracts on: ``cuda:LOCAL_RANK`` when CUDA is there and
        ``requested`` allows it (``auto`` or ``cuda``), else ``requested`` as given.
        One process (not launched) keeps ``requested``."""
        if not self.is_distributed:
            return requested
        if requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return "cpu" if requested == "auto" else requested

    def backend(self, device: str) -> str:
        return "nccl" if device.startswith("cuda") else "gloo"


def _int_variable(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    return value


def rank_from_environment() -> RankInfo:
    """The launcher's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``LOCAL_WORLD_SIZE`` (rank 0 of 1
    when unset); ``ValueError`` for values that cannot be a rank."""
    world = _int_variable("WORLD_SIZE", 1)
    rank = _int_variable("RANK", 0)
    local_rank = _int_variable("LOCAL_RANK", rank)
    local_world = _int_variable("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(local_world, 1):
        raise ValueError(f"launcher environment out of range: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local_rank}")
    return RankInfo(rank=rank, world_size=world, local_rank=local_rank, local_world_size=local_world)


def _initialised() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@contextmanager
def launched(info: RankInfo, device: str) -> Iterator[RankInfo]:
    """Join the process group for the block (nothing to do for one rank); leave it after."""
    if not info.is_distributed or _initialised():
        yield info
        return
    backend = info.backend(device)
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
    torch.distributed.init_process_group(backend=backend)
    logger.info("rank %d of %d joined (%s, %s)", info.rank, info.world_size, backend, device)
    try:
        yield info
    finally:
        torch.distributed.destroy_process_group()


def _group_device() -> torch.device:
    """Where collective tensors must live: the rank's CUDA device under nccl, else cpu."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_json(payload: object, info: RankInfo) -> object:
    """Rank 0's ``payload`` (anything ``json.dumps`` takes) on every rank."""
    if not _initialised() or not info.is_distributed:
        return payload
    device = _group_device()
    data = json.dumps(payload, allow_nan=True).encode("utf-8") if info.is_main else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=device)
    torch.distributed.broadcast(size, src=0)
    buffer = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    if info.is_main:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    torch.distributed.broadcast(buffer, src=0)
    return json.loads(buffer.cpu().numpy().tobytes().decode("utf-8"))


def all_reduce_sum(values: torch.Tensor, info: RankInfo) -> torch.Tensor:
    """The element-wise sum of ``values`` (an int64 vector of the same length on every rank)."""
    if not _initialised() or not info.is_distributed:
        return values
    device = _group_device()
    summed = values.to(device=device, dtype=torch.int64).clone()
    torch.distributed.all_reduce(summed, op=torch.distributed.ReduceOp.SUM)
    return summed.cpu()


def barrier(info: RankInfo) -> None:
    """Wait until every rank gets here."""
    if _initialised() and info.is_distributed:
        torch.distributed.barrier()


__all__ = [
    "LAUNCHER_VARIABLES",
    "RankInfo",
    "all_reduce_sum",
    "barrier",
    "broadcast_json",
    "launched",
    "rank_from_environment",
]
