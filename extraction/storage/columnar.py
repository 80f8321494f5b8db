"""Stores in columns: Parquet files and Hugging Face ``datasets`` folders (``save_to_disk``, Arrow).

One row per text. The states column holds a fixed-size list of floats ``(d,)`` or a list of such
lists ``(L, d)`` (``datasets``' ``Sequence(Value("float32"), length=d)``, ``Array2D``, or plain nested
lists, every row the same shape); beside it a text column (strings) and/or a token-ids column
(``input_ids`` / ``token_ids``, lists of integers). Which is which:

- ``key`` (``--states-column``) names the states column; by default the only float-list column;
- ``text_column`` (``--text-column``) names a text or an ids column; by default an ids column named
  ``input_ids`` / ``token_ids``, and the only string column (or the one named ``text``);

anything ambiguous or missing raises ``ValueError`` listing the columns and their types.

Read lazily, with the library made for each: Parquet through ``pyarrow.parquet.ParquetFile``
(read, not memory-mapped, so that the pages read are freed; only the row groups that hold sampled
rows are read, one column at a time, and one decoded group per column is kept: the reader counts
``row_groups_read`` and ``bytes_read``, the column chunks' compressed bytes), a
``datasets`` folder through ``datasets.load_from_disk`` (memory-mapped Arrow: a slice reads only
its rows' pages).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .lazy_states import LazyStates
from .stored_ids import ID_NAMES, StoredTokenIds

#: Files that mark a ``datasets`` ``save_to_disk`` folder.
DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")

#: ``read(column, start, stop)``: rows ``start:stop`` of one column as a ``pyarrow.Array``.
ColumnRead = Callable[[str, int, int], object]


def _storage(array):
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    return array.storage if isinstance(array, pa.ExtensionArray) else array


def _list_depth(kind) -> tuple[int, object]:
    """``(levels of list, innermost value type)`` of an Arrow type (extension types by their storage)."""
    import pyarrow as pa

    depth = 0
    while True:
        if isinstance(kind, pa.ExtensionType):
            kind = kind.storage_type
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            kind, depth = kind.value_type, depth + 1
        else:
            return depth, kind


def to_numpy(array, what: str) -> np.ndarray:
    """K rows of (nested) lists as one ``(K, ...)`` array; ``ValueError`` when rows differ in shape or hold nulls."""
    import pyarrow as pa

    array = _storage(array)
    dims = [len(array)]
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        if array.null_count:
            raise ValueError(f"{what}: holds missing (null) values")
        lengths = np.unique(array.value_lengths().to_numpy(zero_copy_only=False)) if len(array) else np.array([0])
        if len(lengths) != 1:
            raise ValueError(f"{what}: rows of different lengths ({', '.join(map(str, lengths[:5]))}...)")
        dims.append(int(lengths[0]))
        array = _storage(array.flatten())
    if array.null_count:
        raise ValueError(f"{what}: holds missing (null) values")
    return array.to_numpy(zero_copy_only=False).reshape(dims)


def _columns_text(schema) -> str:
    return ", ".join(f"{field.name} ({field.type})" for field in schema)


def pick_columns(schema, key: str | None, text_column: str | None, label: str) -> tuple[str, str | None, str | None]:
    """``(states column, text column or None, ids column or None)`` by the rules of the module docstring."""
    import pyarrow as pa

    kinds = {field.name: _list_depth(field.type) for field in schema}
    floats = [n for n, (depth, inner) in kinds.items() if depth in (1, 2) and pa.types.is_floating(inner)]
    ints = [n for n, (depth, inner) in kinds.items() if depth == 1 and pa.types.is_integer(inner)]
    strings = [n for n, (depth, inner) in kinds.items() if depth == 0 and pa.types.is_string(inner)]
    strings += [n for n, (depth, inner) in kinds.items() if depth == 0 and pa.types.is_large_string(inner)]
    columns = _columns_text(schema)
    if key is not None:
        if key not in kinds:
            raise ValueError(f"{label}: no column {key!r}; it holds: {columns}")
        if key not in floats:
            kind = schema.field(key).type
            raise ValueError(f"{label}: column {key!r} is {kind}, not a list of floats (d,) or (L, d)")
        states = key
    elif len(floats) == 1:
        states = floats[0]
    else:
        found = "no column of float lists" if not floats else f"several float-list columns ({', '.join(floats)})"
        raise ValueError(f"{label}: {found}; name the states column with --states-column. Columns: {columns}")
    if text_column is not None:
        if text_column not in kinds:
            raise ValueError(f"{label}: no column {text_column!r}; it holds: {columns}")
        if text_column in strings:
            return states, text_column, None
        if text_column in ints:
            return states, None, text_column
        raise ValueError(
            f"{label}: column {text_column!r} is {schema.field(text_column).type}; --text-column names a column "
            "of strings (the texts) or of integer lists (token ids)"
        )
    ids = next((n for n in ID_NAMES if n in ints), None)
    text = strings[0] if len(strings) == 1 else ("text" if "text" in strings else None)
    if text is None and len(strings) > 1 and ids is None:
        raise ValueError(f"{label}: several text columns ({', '.join(strings)}); choose one with --text-column")
    return states, text, ids


class ColumnTexts(Sequence):
    """A store's text column, read one text at a time (only the sampled texts leave the disk)."""

    def __init__(self, read: ColumnRead, column: str, count: int) -> None:
        self._read, self.column, self._count = read, column, count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        value = _storage(self._read(self.column, index % self._count, index % self._count + 1)).to_pylist()[0]
        if not isinstance(value, str):
            raise ValueError(f"{self.column}: text {index + 1} is missing (null)")
        return value


def _lazy(label: str, schema, count: int, read: ColumnRead, key, text_column, fetch=None) -> LazyStates:
    states_column, text, ids = pick_columns(schema, key, text_column, label)
    if count == 0:
        raise ValueError(f"{label}: holds no rows")
    first = to_numpy(read(states_column, 0, 1), f"{label} [{states_column}]")  # (1, d) or (1, L, d)
    inner = _list_depth(schema.field(states_column).type)[1]
    dtype = {"float": "float32", "double": "float64", "halffloat": "float16"}.get(str(inner), str(inner))

    def fetch_rows(start: int, stop: int) -> torch.Tensor:
        values = to_numpy(read(states_column, start, stop), f"{label} [{states_column}]")
        if values.shape[1:] != first.shape[1:]:
            raise ValueError(f"{label} [{states_column}]: rows of shape {values.shape[1:]} and {first.shape[1:]}")
        return torch.from_numpy(np.array(values, copy=True))

    token_ids = None
    if ids is not None:

        def fetch_ids(texts: list[int]) -> list[list[int]]:
            return [_storage(read(ids, t, t + 1)).to_pylist()[0] for t in texts]

        token_ids = StoredTokenIds(ids, count, f"column {ids} (lists of token ids)", fetch_ids)
    texts = ColumnTexts(read, text, count) if text is not None else None
    metadata = {"format": "parquet" if fetch is not None else "datasets"}
    shape = (count, *first.shape[1:])
    return LazyStates(label, states_column, dtype, shape, fetch_rows, metadata, token_ids=token_ids, texts=texts)


class ParquetReader:
    """Rows of a Parquet file's columns, a row group at a time (the last one read is kept), counted."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self.file = pq.ParquetFile(path, memory_map=False)  # read, not mapped: the pages read are freed
        meta = self.file.metadata
        self.bounds = [0, *np.cumsum([meta.row_group(g).num_rows for g in range(meta.num_row_groups)]).tolist()]
        self.row_groups_read = 0
        self.bytes_read = 0  # compressed bytes of the column chunks read
        self._kept: dict[str, tuple[int, object]] = {}

    def _group(self, column: str, group: int):
        kept = self._kept.get(column)
        if kept is not None and kept[0] == group:
            return kept[1]
        table = self.file.read_row_group(group, columns=[column])
        meta = self.file.metadata.row_group(group)
        for j in range(meta.num_columns):
            path = meta.column(j).path_in_schema
            if path == column or path.startswith(column + "."):
                self.bytes_read += meta.column(j).total_compressed_size
        self.row_groups_read += 1
        self._kept[column] = (group, table.column(0))
        return table.column(0)

    def read(self, column: str, start: int, stop: int):
        import pyarrow as pa

        parts = []
        group = int(np.searchsorted(self.bounds, start, side="right")) - 1
        while group < len(self.bounds) - 1 and self.bounds[group] < stop:
            low, high = max(start, self.bounds[group]), min(stop, self.bounds[group + 1])
            parts.append(_storage(self._group(column, group).slice(low - self.bounds[group], high - low)))
            group += 1
        return pa.concat_arrays(parts) if len(parts) != 1 else parts[0]


def _require(module: str, what: str) -> None:
    """``ValueError`` naming the install when the optional ``module`` (the ``formats`` extra) is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ValueError(f"reading {what} needs {module}: pip install 'padding-audit[formats]' or pip install {module}")


def open_parquet(path: Path, key: str | None = None, text_column: str | None = None) -> LazyStates:
    """A Parquet file (module docstring); ``ValueError`` for a file that is not Parquet."""
    _require("pyarrow", "a Parquet file")
    import pyarrow as pa

    label = str(path)
    try:
        reader = ParquetReader(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"{label}: cannot read it as Parquet ({error}); is it truncated or another format?") from None
    states = _lazy(label, reader.file.schema_arrow, reader.bounds[-1], reader.read, key, text_column, reader)
    states.reader = reader  # its row groups and bytes read
    return states


def is_datasets_folder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in DATASETS_MARKERS)


def open_datasets_folder(folder: Path, key: str | None = None, text_column: str | None = None) -> LazyStates:
    """A ``datasets`` ``save_to_disk`` folder (module docstring), memory-mapped by ``datasets.load_from_disk``."""
    _require("datasets", "a datasets folder")
    import datasets

    label = str(folder)
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError) as error:
        raise ValueError(f"{label}: cannot read it as a datasets folder ({error})") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if len(splits) != 1:
            raise ValueError(
                f"{label}: holds the splits {', '.join(splits)}; give the split's folder, e.g. {folder / splits[0]}"
            )
        loaded = loaded[splits[0]]
    arrow = loaded.with_format("arrow")

    def read(column: str, start: int, stop: int):
        return arrow.select_columns([column])[start:stop].column(0)

    return _lazy(label, loaded.data.schema, len(loaded), read, key, text_column)


__all__ = ["ColumnTexts", "ParquetReader", "is_datasets_folder", "open_datasets_folder", "open_parquet", "to_numpy"]
