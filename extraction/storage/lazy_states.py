"""Stored states read on demand: only the rows asked for leave the disk.

:func:`open_states` opens a store without reading its rows and returns :class:`LazyStates`;
:meth:`LazyStates.rows` reads the rows at some indices, and counts them (:attr:`LazyStates.rows_read`),
so an audit of a sample holds the sample, not the file:

- ``.safetensors``: ``safetensors.safe_open(...).get_slice(name)`` reads one contiguous run of rows
  at a time from the memory-mapped file;
- ``.npy``: ``numpy.load(mmap_mode="r")``, rows taken by fancy indexing;
- ``.pt``/``.pth`` (a tensor or a dict of tensors saved with ``torch.save``): ``torch.load(mmap=True,
  weights_only=True)``, the storages memory-mapped;
- a folder of shards (``extract --out DIR``): ``index.json`` gives each shard's run of texts; the
  shards that hold wanted rows are opened one at a time, their ``text_index`` checked to be that run.

The formats engines write are opened from here too, lazily: files whose tensors carry ``input_ids`` /
``token_ids`` and vLLM ``extract_hidden_states`` folders (:mod:`.engine_formats`), Parquet files and
``datasets`` folders (:mod:`.columnar`); their ids and texts ride on :attr:`LazyStates.token_ids` and
:attr:`LazyStates.texts`. An upload (bytes) of Parquet, or of a ``.safetensors``/``.pt`` with ids,
goes through a temporary file.

Anything else (``.npz``, a ``.zip`` of shards, other uploads) is read whole by
:func:`~extraction.storage.stored_states.read_states` and wrapped (:meth:`LazyStates.from_stored`);
so is a file when asked (``whole=True``). The rules of :func:`read_states` hold: the tensor named
``key`` or the only one, an integer ``offsets`` tensor read as a tokens file's row offsets, floating
point values only; ``ValueError`` naming the file and what is wrong otherwise.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .states_record import StoredStates
from .stored_ids import StoredTokenIds
from .stored_states import OFFSETS_NAME, _pick, check_offsets, read_safetensors_header, read_states

#: ``fetch(start, stop)``: rows ``start:stop`` as stored (any float dtype), shape ``(stop - start, ...)``.
RowFetch = Callable[[int, int], torch.Tensor]

_FLOAT_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_INT_DTYPES = {f"{kind}{bits}": f"{'u' if kind == 'U' else ''}int{bits}" for kind in "IU" for bits in (8, 16, 32, 64)}


@dataclass
class LazyStates:
    """A store of hidden states whose rows are read when asked for.

    Attributes:
        source: the file or folder it came from.
        key: the tensor's name inside the file (None where the format has none).
        stored_dtype: the dtype in the file, e.g. ``"bfloat16"`` (rows are returned as float32).
        shape: the stored tensor's shape, ``(N, d)``, ``(N, L, d)`` or ``(R, L, d)`` with ``offsets``.
        metadata: string metadata (safetensors ``__metadata__``, a folder's ``index.json`` metadata).
        offsets: ``(N + 1,)`` int64 row offsets of a tokens file, else None.
        whole: the whole tensor (float32) when the store was read whole, else None.
        rows_read: rows read from the store so far (a whole store counts its rows once, when read).
        bytes_read: bytes of those rows as stored (the store's own dtype).
        token_ids: the texts' token ids where the store keeps them (:mod:`.stored_ids`), else None.
        texts: the texts where the store keeps them (a Parquet or ``datasets`` text column), else None.
    """

    source: str
    key: str | None
    stored_dtype: str
    shape: tuple[int, ...]
    fetch: RowFetch
    metadata: dict[str, str] = field(default_factory=dict)
    offsets: torch.Tensor | None = None
    whole: torch.Tensor | None = None
    rows_read: int = 0
    bytes_read: int = 0
    token_ids: StoredTokenIds | None = None
    texts: Sequence[str] | None = None

    stored_layers = StoredStates.stored_layers
    stored_pooling = StoredStates.stored_pooling
    num_texts = StoredStates.num_texts

    @classmethod
    def from_stored(cls, stored: StoredStates) -> LazyStates:
        """A store already in memory (the rows are read: ``rows_read`` is their count)."""
        tensor = stored.tensor
        return cls(
            source=stored.source,
            key=stored.key,
            stored_dtype=stored.stored_dtype,
            shape=tuple(tensor.shape),
            fetch=lambda start, stop: tensor[start:stop],
            metadata=dict(stored.metadata),
            offsets=stored.offsets,
            whole=tensor,
            rows_read=tensor.shape[0] if tensor.dim() else 0,
        )

    @property
    def row_bytes(self) -> int:
        """Bytes of one stored row as float32 (the size a row takes once read)."""
        return 4 * int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else 4

    def rows(self, indices: Sequence[int]) -> torch.Tensor:
        """Rows at ``indices`` (any order, repeats allowed) as float32, ``(len(indices), ...)``;
        each run of consecutive indices is one read."""
        indices = [int(i) for i in indices]
        n = self.shape[0]
        if any(not 0 <= i < n for i in indices):
            raise IndexError(f"{self.source}: row index outside 0..{n - 1}")
        if self.whole is not None:
            return self.whole[torch.tensor(indices, dtype=torch.long)] if indices else self.whole[:0]
        wanted = sorted(set(indices))
        parts, starts = [], []
        run_start = 0
        for k in range(1, len(wanted) + 1):
            if k == len(wanted) or wanted[k] != wanted[k - 1] + 1:
                part = self.fetch(wanted[run_start], wanted[k - 1] + 1)
                self.bytes_read += part.numel() * part.element_size()
                parts.append(part.to(torch.float32))
                starts.append(wanted[run_start])
                run_start = k
        self.rows_read += len(wanted)
        if not parts:
            return torch.empty(0, *self.shape[1:], dtype=torch.float32)
        read = torch.cat(parts)  # (len(wanted), ...) in ascending index order
        position = {index: k for k, index in enumerate(wanted)}
        return read[torch.tensor([position[i] for i in indices], dtype=torch.long)]

    def text_rows(self, texts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rows of ``texts`` (text indices) and, for a tokens file, their ``(K + 1,)`` offsets
        (text k owns rows ``offsets[k]:offsets[k + 1]`` of the result); None offsets otherwise."""
        if self.offsets is None:
            return self.rows(texts), None
        spans = [range(int(self.offsets[t]), int(self.offsets[t + 1])) for t in texts]
        counts = torch.tensor([len(span) for span in spans], dtype=torch.long)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        return self.rows([i for span in spans for i in span]), offsets

    def load(self) -> StoredStates:
        """The whole store in memory (the way :func:`~extraction.storage.stored_states.read_states` reads it)."""
        if self.whole is None:
            self.whole = self.fetch(0, self.shape[0]).to(torch.float32).contiguous()
            self.rows_read += self.shape[0]
        return StoredStates(self.whole, self.source, self.key, self.stored_dtype, self.metadata, self.offsets)


def open_states(
    source: str | Path | bytes, name: str | None = None, key: str | None = None, text_column: str | None = None
) -> LazyStates:
    """Open stored states without reading their rows where the format allows (see the module
    docstring); ``bytes`` (an upload, ``name`` giving its type) are written to a temporary file
    when they are Parquet or carry token ids (read lazily from there), else read whole. ``key`` names
    the states tensor (or column), ``text_column`` a Parquet / ``datasets`` text or ids column."""
    if isinstance(source, bytes):
        return _open_bytes(source, name, key, text_column)
    path = Path(source)
    if path.is_dir():
        from .shards import INDEX_NAME

        if (path / INDEX_NAME).is_file():
            return _open_shards(path, key)
        from .columnar import is_datasets_folder, open_datasets_folder
        from .engine_formats import is_vllm_folder, open_vllm_folder

        if is_datasets_folder(path):
            return open_datasets_folder(path, key, text_column)
        if is_vllm_folder(path):
            return open_vllm_folder(path, key)
        return LazyStates.from_stored(read_states(path, key=key))
    suffix = path.suffix.lower()
    if path.is_file() and path.stat().st_size > 0:
        if suffix == ".parquet":
            from .columnar import open_parquet

            return open_parquet(path, key, text_column)
        if suffix == ".safetensors":
            return _open_safetensors(path, key)
        if suffix == ".npy":
            return _open_npy(path, key)
        if suffix in (".pt", ".pth"):
            opened = _open_torch(path, key)
            if opened is not None:
                return opened
    return LazyStates.from_stored(read_states(path, key=key))


def _open_bytes(data: bytes, name: str | None, key: str | None, text_column: str | None) -> LazyStates:
    """An upload: Parquet and files with token ids through a temporary file (deleted when the store
    is), the rest read whole."""
    import tempfile

    suffix = Path(name or "").suffix.lower()
    if suffix not in (".parquet", ".safetensors", ".pt", ".pth"):
        return LazyStates.from_stored(read_states(data, name, key))
    handle = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)  # noqa: SIM115 - kept for the lazy reads
    with handle:
        handle.write(data)
    try:
        opened = open_states(handle.name, key=key, text_column=text_column)
    except ValueError as error:
        Path(handle.name).unlink(missing_ok=True)
        raise ValueError(str(error).replace(handle.name, name or "the upload")) from None
    if opened.token_ids is None and opened.texts is None and suffix != ".parquet":
        Path(handle.name).unlink(missing_ok=True)
        return LazyStates.from_stored(read_states(data, name, key))
    opened.source = name or opened.source
    weakref.finalize(opened, Path(handle.name).unlink, missing_ok=True)  # the file goes with the store
    return opened


def _float_dtype_name(dtype: str, what: str) -> str:
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(
            f"{what}: holds {_INT_DTYPES.get(dtype, {'BOOL': 'bool'}.get(dtype, dtype))} values; "
            "hidden states must be floating point "
            "(float32, float16, bfloat16 or float64)"
        )
    return _FLOAT_DTYPES[dtype]


def _open_safetensors(path: Path, key: str | None) -> LazyStates:
    from safetensors import SafetensorError, safe_open

    label = str(path)
    try:
        header = read_safetensors_header(path)
        with safe_open(path, "pt"):
            pass  # the library's own checks of the header and the data's extent
    except (SafetensorError, ValueError, OSError) as error:
        raise ValueError(f"{label}: cannot read it as safetensors ({error}); is it truncated or corrupt?") from None
    metadata = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
    from .engine_formats import has_ids, open_ids_file, safetensors_entries

    tensors = safetensors_entries(path, header)
    if has_ids(tensors, key):
        return open_ids_file(label, tensors, key, metadata)
    entries = {name: _Shape(entry.get("shape", [])) for name, entry in header.items()}
    offsets_entry = header.get(OFFSETS_NAME)
    offsets = None
    if key != OFFSETS_NAME and offsets_entry is not None and offsets_entry.get("dtype") in _INT_DTYPES:
        del entries[OFFSETS_NAME]
        with safe_open(path, "pt") as handle:
            offsets = handle.get_tensor(OFFSETS_NAME)
    picked, _ = _pick(entries, key, label)
    stored_dtype = _float_dtype_name(header[picked]["dtype"], f"{label} [{picked}]")
    shape = tuple(int(v) for v in header[picked]["shape"])

    def fetch(start: int, stop: int) -> torch.Tensor:
        with safe_open(path, "pt") as handle:
            return handle.get_slice(picked)[start:stop]

    if offsets is not None:
        offsets = check_offsets(offsets, shape[0] if shape else 0, label)
    return LazyStates(label, picked, stored_dtype, shape, fetch if shape else _scalar(label), metadata, offsets)


def _scalar(label: str) -> RowFetch:
    def fetch(start: int, stop: int) -> torch.Tensor:
        raise ValueError(f"{label}: holds a single number, not rows of hidden states")

    return fetch


@dataclass
class _Shape:
    """A tensor's shape where :func:`_pick`'s messages want one (``getattr(value, 'shape')``)."""

    shape: list[int]


def _open_npy(path: Path, key: str | None) -> LazyStates:
    label = str(path)
    with path.open("rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise ValueError(f"{label}: is not a .npy file (its first bytes are not the .npy signature)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower() or "object" in str(error).lower():
            message = "holds pickled Python objects, which are not loaded (allow_pickle=False)"
            raise ValueError(f"{label}: {message}") from None
        raise ValueError(f"{label}: cannot read it as .npy ({error}); is it truncated or corrupt?") from None
    except (OSError, EOFError, SyntaxError) as error:
        raise ValueError(f"{label}: cannot read it as .npy ({error}); is it truncated or corrupt?") from None
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"{label}: holds {array.dtype} values; hidden states must be floating point "
            "(float32, float16, bfloat16 or float64)"
        )

    def fetch(start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(np.array(array[start:stop], dtype=np.float32))

    return LazyStates(label, None, str(array.dtype), tuple(array.shape), fetch if array.ndim else _scalar(label))


def _open_torch(path: Path, key: str | None) -> LazyStates | None:
    """A ``torch.save`` zip file memory-mapped; None for what :func:`read_states` must read (a list, old formats)."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - read_states gives the error in words
        return None
    label = str(path)
    if isinstance(loaded, torch.Tensor):
        tensors, offsets = {"": loaded}, None
        picked = ""
    elif isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        tensors = {str(k): v for k, v in loaded.items()}
        from .engine_formats import has_ids, open_ids_file, torch_entries

        if has_ids(torch_entries(tensors), key):
            return open_ids_file(label, torch_entries(tensors), key, {})
        offsets = tensors.get(OFFSETS_NAME)
        if key != OFFSETS_NAME and offsets is not None and not offsets.is_floating_point():
            del tensors[OFFSETS_NAME]
        else:
            offsets = None
        picked, _ = _pick(tensors, key, label)
    else:
        return None
    value = tensors[picked]
    if not value.is_floating_point():
        raise ValueError(
            f"{label}" + (f" [{picked}]" if picked else "") + f": holds {str(value.dtype).removeprefix('torch.')} "
            "values; hidden states must be floating point (float32, float16, bfloat16 or float64)"
        )
    if offsets is not None:
        offsets = check_offsets(offsets, len(value) if value.dim() else 0, label)
    fetch = (lambda start, stop: value[start:stop]) if value.dim() else _scalar(label)
    dtype_name = str(value.dtype).removeprefix("torch.")
    return LazyStates(label, picked or None, dtype_name, tuple(value.shape), fetch, {}, offsets)


def _open_shards(folder: Path, key: str | None) -> LazyStates:
    from safetensors import SafetensorError, safe_open

    from .shards import TENSOR_NAME, TEXT_INDEX, _require_complete, read_index

    label = str(folder)
    if key not in (None, TENSOR_NAME):
        raise ValueError(f"{label}: a folder of shards holds {TENSOR_NAME!r} only, not {key!r}")
    index = read_index(folder)
    _require_complete(index, label)
    try:
        shape = tuple(int(v) for v in index["shape"])
        entries = sorted((int(e["first_text"]), int(e["rows"]), str(e["file"])) for e in index["shards"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{label}: its {folder.name}/index.json lacks the shape or the shards ({error})") from None
    expected = 0
    for first, rows, file in entries:
        if first != expected:
            raise ValueError(f"{label}: {file} starts at text {first}; the shards must run on from text {expected}")
        expected += rows
    if expected != shape[0]:
        raise ValueError(f"{label}: the shards hold {expected} texts, the index says {shape[0]}")
    metadata = {str(k): str(v) for k, v in index.get("metadata", {}).items()}

    def fetch(start: int, stop: int) -> torch.Tensor:
        parts = []
        for first, rows, file in entries:
            low, high = max(start, first), min(stop, first + rows)
            if low >= high:
                continue
            path = folder / file
            if not path.is_file():
                raise ValueError(f"{label}: {file} is missing")
            try:
                with safe_open(path, "pt") as handle:  # one shard open at a time
                    text_index = handle.get_tensor(TEXT_INDEX)
                    if not torch.equal(text_index, torch.arange(first, first + rows, dtype=torch.int64)):
                        raise ValueError(f"{label}: {file} is not the run of texts {first}..{first + rows - 1}")
                    hidden = handle.get_slice(TENSOR_NAME)
                    if tuple(hidden.get_shape()) != (rows, *shape[1:]):
                        raise ValueError(f"{label}: {file} holds {tuple(hidden.get_shape())} for {rows} texts")
                    parts.append(hidden[low - first : high - first])
            except (SafetensorError, OSError) as error:
                raise ValueError(f"{path}: cannot read it as safetensors ({error})") from None
        return torch.cat(parts)

    return LazyStates(label, TENSOR_NAME, metadata.get("stored_dtype", "float32"), shape, fetch, metadata)


def shard_bounds(states: LazyStates) -> list[int] | None:
    """``[0, end_0, end_1, ..., N]``: where each shard of a folder of shards ends (for a sample
    stratified by shard), read from its ``index.json``; None for a single file."""
    path = Path(states.source)
    if not path.is_dir():
        return None
    from .shards import INDEX_NAME

    try:
        index = json.loads((path / INDEX_NAME).read_text("utf-8"))
        rows = [int(e["rows"]) for e in sorted(index["shards"], key=lambda e: int(e["first_text"]))]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [0, *np.cumsum(rows).tolist()]


__all__ = ["LazyStates", "open_states", "shard_bounds"]
