"""Sharded hidden states: a folder of safetensors shards and an ``index.json``.

The layout, readable with ``safetensors`` and ``json`` alone::

    DIR/index.json                              the plan, the run, the metadata, complete or not
    DIR/shard-00000-of-00003.safetensors        hidden_states (n_0, L, d), text_index (n_0,) int64
    DIR/shard-00001-of-00003.safetensors        ...

Row ``i`` of a shard is text ``text_index[i]`` of the input. Shards are contiguous runs of
``shard_texts`` texts (the last one shorter), planned from the number of texts
alone (:func:`plan_shards`), so the plan does not depend on how many ranks wrote them;
:func:`assign_shards` hands them to ranks balanced by tokens. ``index.json`` holds
``metadata``, the string metadata a single ``extract`` file carries, and ``run``, the
options that must match for ``--resume``; ``complete`` turns true once every shard is
written and verified.

A shard is written to a temporary file and renamed (:mod:`extraction.storage.atomic`), so a file
under a shard's final name is whole; it is *finished* when its header also agrees with the
plan and the run (:func:`finished_shard`). Temporary files of a killed run are never read:
:func:`remove_partials` deletes them.

Reading: :func:`read_sharded` takes the folder (or a zip of it, for uploads) and returns
the rows in text order as :class:`~extraction.storage.stored_states.StoredStates`, checking that
every text has exactly one row. :func:`merge_shards` streams a folder into one
``.safetensors`` file with a single ``extract`` file's tensor and metadata.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import write_json_atomic
from .safetensors_writer import STORE_DTYPES, SafetensorsRowWriter, write_safetensors_atomic
from .states_record import StoredStates

INDEX_NAME = "index.json"
INDEX_FORMAT = "padding-audit hidden states shards v1"
TENSOR_NAME = "hidden_states"  # the same name as in a single file
TEXT_INDEX = "text_index"
_HEADER_ALLOWANCE = 1 << 20  # bytes a shard's header and text_index may add to its hidden states


@dataclass(frozen=True)
class ShardSpec:
    """One planned shard: a contiguous run of texts."""

    number: int  # 0 .. count - 1
    count: int  # shards in the plan
    first_text: int  # index of its first text in the input
    rows: int  # texts it holds
    tokens: int  # their tokens (after truncation to the model's context): the work it takes
    offset: int  # where its first text starts in the texts file (a byte offset; an index for files read whole)

    @property
    def file(self) -> str:
        return shard_name(self.number, self.count)

    @property
    def text_index(self) -> torch.Tensor:
        return torch.arange(self.first_text, self.first_text + self.rows, dtype=torch.int64)  # (n_i,)


def shard_name(number: int, count: int) -> str:
    """``shard-00000-of-00003.safetensors`` (five digits, more when there are more shards)."""
    width = max(5, len(str(count)))
    return f"shard-{number:0{width}d}-of-{count:0{width}d}.safetensors"


def is_folder_output(path: str | Path) -> bool:
    """An ``--out`` without a file suffix (or an existing folder) is a folder of shards."""
    path = Path(path)
    return path.is_dir() or not path.suffix


def plan_shards(lengths: Sequence[int], shard_offsets: Sequence[int], shard_texts: int) -> list[ShardSpec]:
    """Contiguous shards of ``shard_texts`` texts; ``lengths`` are the texts' token counts,
    ``shard_offsets[k]`` where text ``k * shard_texts`` starts in its file."""
    if shard_texts < 1:
        raise ValueError(f"shard size must be at least 1 text, got {shard_texts}")
    n = len(lengths)
    count = -(-n // shard_texts)
    return [
        ShardSpec(
            number=k,
            count=count,
            first_text=k * shard_texts,
            rows=min(shard_texts, n - k * shard_texts),
            tokens=int(sum(lengths[k * shard_texts : (k + 1) * shard_texts])),
            offset=int(shard_offsets[k]),
        )
        for k in range(count)
    ]


def assign_shards(shards: Sequence[ShardSpec], world_size: int) -> list[list[ShardSpec]]:
    """Each rank's shards, balanced by tokens: the largest shard first to the least loaded
    rank (longest processing time first, within 4/3 of the best balance); each rank's list in
    file order. Deterministic, so every rank computes the same assignment."""
    loads = [0] * world_size
    shares: list[list[ShardSpec]] = [[] for _ in range(world_size)]
    for shard in sorted(shards, key=lambda s: (-s.tokens, s.number)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        loads[rank] += shard.tokens
        shares[rank].append(shard)
    return [sorted(share, key=lambda s: s.number) for share in shares]


class ResumeRefused(ValueError):
    """``--resume`` on a folder written with other texts, model or options; ``changed`` names them."""

    def __init__(self, message: str, changed: list[str]):
        super().__init__(message)
        self.changed = changed


def run_id(run: dict) -> str:
    """A short fingerprint of the options a resumed run must share (stored in every shard)."""
    return hashlib.sha256(json.dumps(run, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def differences(recorded: dict, current: dict) -> list[str]:
    """The keys of ``run`` whose values differ, each as ``key: recorded -> current``."""
    keys = sorted(set(recorded) | set(current))
    return [
        f"{key}: {recorded.get(key)!r} -> {current.get(key)!r}" for key in keys if recorded.get(key) != current.get(key)
    ]


# --- writing -----------------------------------------------------------------------------


def new_index(run: dict, shards: Sequence[ShardSpec], shape: tuple[int, int, int], metadata: dict[str, str]) -> dict:
    """The ``index.json`` of a run that has started: every shard planned, none trusted yet."""
    return {
        "format": INDEX_FORMAT,
        "complete": False,
        "tensor": TENSOR_NAME,
        "text_index": TEXT_INDEX,
        "shape": list(shape),
        "num_texts": shape[0],
        "num_shards": len(shards),
        "shard_texts": shards[0].rows if shards else 0,
        "run": run,
        "run_id": run_id(run),
        "shards": [{"file": s.file, "first_text": s.first_text, "rows": s.rows, "tokens": s.tokens} for s in shards],
        "metadata": metadata,
    }


def write_index(folder: Path, index: dict) -> Path:
    return write_json_atomic(folder / INDEX_NAME, index)


def write_shard(
    folder: Path, shard: ShardSpec, hidden: torch.Tensor, store_dtype: str, metadata: dict[str, str]
) -> Path:
    """Write one shard atomically; an existing shard is never overwritten (``FileExistsError``)."""
    if hidden.shape[0] != shard.rows:
        raise ValueError(f"{shard.file}: {hidden.shape[0]} rows for {shard.rows} texts")
    tensors = {TENSOR_NAME: hidden.to(STORE_DTYPES[store_dtype]), TEXT_INDEX: shard.text_index}  # (n_i, L, d), (n_i,)
    meta = {**metadata, "shard": str(shard.number), "first_text": str(shard.first_text), "rows": str(shard.rows)}
    return write_safetensors_atomic(folder / shard.file, tensors, meta)


def finished_shard(folder: Path, shard: ShardSpec, index: dict) -> bool:
    """Whether ``shard`` is on disk whole and belongs to the run of ``index``: its file
    exists (only a rename gives it that name), its header has the planned rows, width and
    ``run_id``, and its ``text_index`` is the planned run of texts."""
    from safetensors import SafetensorError, safe_open

    path = folder / shard.file
    if not path.is_file():
        return False
    try:
        with safe_open(path, "pt") as handle:
            meta = handle.metadata() or {}
            shape = tuple(handle.get_slice(TENSOR_NAME).get_shape())
            text_index = handle.get_tensor(TEXT_INDEX)
    except (SafetensorError, OSError, KeyError, ValueError):
        return False
    return (
        meta.get("run_id") == index["run_id"]
        and shape == (shard.rows, *index["shape"][1:])
        and torch.equal(text_index, shard.text_index)
    )


def remove_partials(folder: Path) -> list[str]:
    """Delete the temporary files a killed writer left (``.shard-*.tmp``, ``.index.json*.tmp``)."""
    removed = []
    for path in sorted(folder.glob(".*.tmp")):
        if path.name.startswith((".shard-", f".{INDEX_NAME}")):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


# --- reading -----------------------------------------------------------------------------


def read_index(folder: str | Path) -> dict:
    """``index.json`` of a folder of shards; ``ValueError`` when it is missing or not one."""
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        raise ValueError(f"{folder}: a folder of states needs {INDEX_NAME}; this one has none")
    return _parse_index(path.read_bytes(), str(path))


def _parse_index(data: bytes, source: str) -> dict:
    try:
        index = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{source}: is not valid JSON ({error})") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise ValueError(f"{source}: not an index of hidden-state shards (format {INDEX_FORMAT!r})")
    return index


def _require_complete(index: dict, source: str) -> None:
    if not index.get("complete"):
        done = "resume it with extract --resume"
        raise ValueError(f"{source}: the extraction that wrote it did not finish (index not complete); {done}")


def _assemble(index: dict, source: str, load: Callable[[str, int], dict[str, torch.Tensor]]) -> StoredStates:
    """Rows of every shard placed at their ``text_index``; every text exactly once."""
    _require_complete(index, source)
    n, num_layers, width = (int(v) for v in index["shape"])
    states = torch.empty(n, num_layers, width, dtype=torch.float32)  # (N, L, d)
    seen = torch.zeros(n, dtype=torch.int64)
    for entry in index["shards"]:
        tensors = load(entry["file"], int(entry["rows"]))
        hidden, rows = tensors[TENSOR_NAME], tensors[TEXT_INDEX]  # (n_i, L, d), (n_i,)
        if tuple(hidden.shape) != (len(rows), num_layers, width) or rows.dtype != torch.int64:
            raise ValueError(f"{source}: {entry['file']} holds {tuple(hidden.shape)} rows for {len(rows)} text indices")
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n):
            raise ValueError(f"{source}: {entry['file']} names texts outside 0..{n - 1}")
        states[rows] = hidden.float()
        seen.index_add_(0, rows, torch.ones_like(rows))
    if not torch.all(seen == 1):
        missing, twice = int((seen == 0).sum()), int((seen > 1).sum())
        raise ValueError(f"{source}: {missing} texts have no row and {twice} have several")
    metadata = {str(k): str(v) for k, v in index.get("metadata", {}).items()}
    return StoredStates(
        tensor=states,
        source=source,
        key=TENSOR_NAME,
        stored_dtype=metadata.get("stored_dtype", "float32"),
        metadata=metadata,
    )


def _load_checked(data_size: int, expected_rows: int, row_bytes: int, name: str, source: str) -> None:
    if data_size > expected_rows * row_bytes + _HEADER_ALLOWANCE:
        raise ValueError(f"{source}: {name} is larger than {expected_rows} rows can be; refused")


def read_sharded(source: str | Path | bytes, name: str | None = None) -> StoredStates:
    """The states of a folder of shards (a path), or of a zip of one (``bytes`` with a
    ``.zip`` ``name``, or a ``.zip`` path), in text order."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    if not isinstance(source, bytes) and Path(source).is_dir():
        folder = Path(source)
        index = read_index(folder)

        def load(file: str, rows: int) -> dict[str, torch.Tensor]:
            path = folder / file
            if not path.is_file():
                raise ValueError(f"{folder}: {file} is missing")
            try:
                return load_bytes(path.read_bytes())
            except (SafetensorError, ValueError) as error:
                raise ValueError(f"{path}: cannot read it as safetensors ({error})") from None

        return _assemble(index, str(folder), load)
    label = name or str(source)
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ValueError(f"{label}: is not a zip file") from None
    with archive:
        indexes = sorted((n for n in archive.namelist() if n.rsplit("/", 1)[-1] == INDEX_NAME), key=len)
        if not indexes:
            raise ValueError(f"{label}: holds no {INDEX_NAME}; zip the folder that extract wrote")
        prefix = indexes[0][: -len(INDEX_NAME)]
        index = _parse_index(archive.read(indexes[0]), f"{label}:{indexes[0]}")
        row_bytes = int(index["shape"][1]) * int(index["shape"][2]) * 4

        def load_member(file: str, rows: int) -> dict[str, torch.Tensor]:
            try:
                info = archive.getinfo(prefix + file)
            except KeyError:
                raise ValueError(f"{label}: {file} is missing") from None
            _load_checked(info.file_size, rows, row_bytes, file, label)
            try:
                return load_bytes(archive.read(info))
            except (SafetensorError, ValueError, zipfile.BadZipFile) as error:
                raise ValueError(f"{label}: {file} cannot be read as safetensors ({error})") from None

        return _assemble(index, label, load_member)


def iter_shards_in_order(folder: Path, index: dict) -> Iterator[torch.Tensor]:
    """Each shard's ``hidden_states`` in text order (shards must be contiguous runs)."""
    from safetensors import safe_open

    expected = 0
    for entry in sorted(index["shards"], key=lambda e: int(e["first_text"])):
        with safe_open(folder / entry["file"], "pt") as handle:
            rows = handle.get_tensor(TEXT_INDEX)
            if not torch.equal(rows, torch.arange(expected, expected + len(rows), dtype=torch.int64)):
                raise ValueError(f"{folder}: {entry['file']} is not the contiguous run of texts from {expected}")
            expected += len(rows)
            yield handle.get_tensor(TENSOR_NAME)  # (n_i, L, d) as stored


def merge_shards(folder: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """One ``.safetensors`` file (``hidden_states`` ``(N, L, d)`` and the metadata of a single
    ``extract`` file) from a complete folder of shards, streamed shard by shard."""
    folder, out = Path(folder), Path(out)
    index = read_index(folder)
    _require_complete(index, str(folder))
    if out.suffix != ".safetensors":
        raise ValueError(f"{out}: the merged output must be a .safetensors file")
    metadata = {str(k): str(v) for k, v in index["metadata"].items()}
    dtype = STORE_DTYPES.get(metadata.get("stored_dtype", "float32"), torch.float32)
    shape = tuple(int(v) for v in index["shape"])
    with SafetensorsRowWriter(out, TENSOR_NAME, shape, dtype, metadata, overwrite) as writer:
        for hidden in iter_shards_in_order(folder, index):
            writer.write(hidden)
        writer.commit()
    return out


__all__ = [
    "INDEX_NAME",
    "TEXT_INDEX",
    "ResumeRefused",
    "ShardSpec",
    "assign_shards",
    "differences",
    "finished_shard",
    "is_folder_output",
    "merge_shards",
    "new_index",
    "plan_shards",
    "read_index",
    "read_sharded",
    "remove_partials",
    "run_id",
    "shard_name",
    "write_index",
    "write_shard",
]
