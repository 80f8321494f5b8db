"""Write hidden states to safetensors files atomically.

:func:`write_safetensors_atomic` for tensors already in memory, and
:class:`SafetensorsRowWriter`, which streams the rows of one ``(N, ...)`` tensor to disk
in order, so that extraction never holds the whole dataset in memory. Both write to a
temporary file in the target folder (:mod:`extraction.storage.atomic`) and rename it into place
at the end: an interrupted or failed write leaves no partial file. Metadata is
safetensors string metadata (``dict[str, str]``).

Two options serve ``extract --pooling tokens``: ``grow=True`` appends rows without a row
count known in advance (the header's row count is written at :meth:`SafetensorsRowWriter.commit`),
and ``index=(name, length)`` reserves an int64 tensor of ``length`` entries stored *before*
the rows (the text offsets), its values given to :meth:`~SafetensorsRowWriter.commit`.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import torch

from .atomic import temp_file_beside, write_bytes_atomic

#: safetensors dtype codes for the float dtypes we write.
_SAFETENSORS_CODES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
#: The dtypes ``extract`` may store states in.
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_HEADER_RESERVE = 16384  # spare header bytes so final metadata can be written in place


def _header_bytes(header: dict, size: int | None = None) -> bytes:
    """JSON header padded with spaces to ``size`` (or to a multiple of 8)."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    target = size if size is not None else -(-len(raw) // 8) * 8
    if len(raw) > target:
        raise ValueError("header larger than the space reserved for it")
    return raw + b" " * (target - len(raw))


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --force (overwrite=True) to replace it")
    if path.exists() and path.is_dir():
        raise IsADirectoryError(f"{path} is a folder")


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().tobytes()
    return tensor.numpy().tobytes()


def write_safetensors_atomic(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, overwrite: bool = False
) -> Path:
    """Write ``tensors`` with string ``metadata`` to ``path`` via a temporary file and a rename."""
    from safetensors.torch import save

    path = Path(path)
    _check_target(path, overwrite)
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    return write_bytes_atomic(path, data)


class SafetensorsRowWriter:
    """Stream the rows of one tensor of shape ``(N, *row_shape)`` into a safetensors file.

    The header (shape known in advance) is written first with spare room, rows are
    appended in order with :meth:`write`, and :meth:`commit` writes the final metadata
    and renames the temporary file into place. Used as a context manager, any exception
    (``KeyboardInterrupt`` included) before :meth:`commit` removes the temporary file::

        with SafetensorsRowWriter(path, "hidden_states", (n, L, d), torch.float32, meta) as writer:
            for chunk in chunks:
                writer.write(chunk)  # (k, L, d)
            writer.commit(more_metadata)
    """

    def __init__(
        self,
        path: str | Path,
        name: str,
        shape: tuple[int, ...],
        dtype: torch.dtype = torch.float32,
        metadata: dict[str, str] | None = None,
        overwrite: bool = False,
        grow: bool = False,
        index: tuple[str, int] | None = None,
    ):
        if dtype not in _SAFETENSORS_CODES:
            raise ValueError(f"unsupported dtype {dtype}: choose one of {', '.join(map(str, _SAFETENSORS_CODES))}")
        if not shape or (shape[0] < 1 and not grow):
            raise ValueError(f"shape {shape} needs at least one row")
        self.path = Path(path)
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.metadata = dict(metadata or {})
        self.overwrite = overwrite
        self.grow = grow  # shape[0] is set to the rows written at commit
        self.index = index  # (name, length) of an int64 tensor stored before the rows, or None
        self._index_bytes = 8 * index[1] if index is not None else 0
        self._index_values: torch.Tensor | None = None
        self.rows_written = 0
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        self._tmp: Path | None = None
        self._handle = None
        self._header_size = 0

    def _header(self, metadata: dict[str, str]) -> dict:
        start = self._index_bytes
        header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
        if self.index is not None:
            header[self.index[0]] = {"dtype": "I64", "shape": [self.index[1]], "data_offsets": [0, start]}
        header[self.name] = {
            "dtype": _SAFETENSORS_CODES[self.dtype],
            "shape": list(self.shape),
            "data_offsets": [start, start + self._row_bytes * self.shape[0]],
        }
        return header

    def __enter__(self) -> SafetensorsRowWriter:
        _check_target(self.path, self.overwrite)
        self._tmp = temp_file_beside(self.path)
        self._handle = self._tmp.open("w+b")
        first = _header_bytes(self._header(self.metadata))
        self._header_size = -(-(len(first) + _HEADER_RESERVE) // 8) * 8
        self._handle.write(struct.pack("<Q", self._header_size))
        self._handle.write(_header_bytes(self._header(self.metadata), self._header_size))
        self._handle.write(b"\0" * self._index_bytes)  # the index, filled at commit
        return self

    def write(self, rows: torch.Tensor) -> None:
        """Append rows ``(k, *row_shape)``, converted to the writer's dtype."""
        if self._handle is None:
            raise RuntimeError("the writer is not open")
        if tuple(rows.shape[1:]) != self.shape[1:]:
            raise ValueError(f"rows of shape {tuple(rows.shape[1:])} do not fit a tensor of shape {self.shape}")
        if not self.grow and self.rows_written + rows.shape[0] > self.shape[0]:
            raise ValueError(f"more than {self.shape[0]} rows written")
        self._handle.write(_tensor_bytes(rows.to(self.dtype)))
        self.rows_written += rows.shape[0]

    def read_rows(self, indices: list[int]) -> torch.Tensor:
        """Rows already written, read back from the temporary file (for verification): float32."""
        if self._handle is None:
            raise RuntimeError("the writer is not open")
        self._handle.flush()
        out = torch.empty((len(indices), *self.shape[1:]), dtype=torch.float32)
        start = 8 + self._header_size + self._index_bytes
        with self._tmp.open("rb") as reader:
            for k, index in enumerate(indices):
                if not 0 <= index < self.rows_written:
                    raise ValueError(f"row {index} has not been written")
                reader.seek(start + index * self._row_bytes)
                raw = bytearray(reader.read(self._row_bytes))
                if self.dtype == torch.bfloat16:
                    row = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
                else:
                    row = torch.frombuffer(raw, dtype=self.dtype)
                out[k] = row.reshape(self.shape[1:]).float()
        return out

    def commit(self, metadata: dict[str, str] | None = None, index_values: torch.Tensor | None = None) -> Path:
        """Write the final metadata (merged into the initial one) and, with ``index``, its
        ``index_values`` (int64), then move the file into place."""
        if self._handle is None:
            raise RuntimeError("the writer is not open")
        if self.grow:
            self.shape = (self.rows_written, *self.shape[1:])
        if self.rows_written != self.shape[0]:
            raise ValueError(f"only {self.rows_written} of {self.shape[0]} rows were written")
        if (self.index is None) != (index_values is None):
            raise ValueError("index values are given exactly when the writer reserved an index")
        if self.index is not None:
            values = index_values.detach().cpu().to(torch.int64).contiguous()
            if tuple(values.shape) != (self.index[1],):
                raise ValueError(f"index {self.index[0]} has {self.index[1]} entries, got shape {tuple(values.shape)}")
            self._handle.seek(8 + self._header_size)
            self._handle.write(values.numpy().tobytes())
        self.metadata.update(metadata or {})
        final = _header_bytes(self._header(self.metadata))
        handle = self._handle
        if len(final) <= self._header_size:
            handle.seek(8)
            handle.write(_header_bytes(self._header(self.metadata), self._header_size))
        else:  # metadata outgrew the reserve: copy the data behind a larger header
            handle = self._rewrite_with_header(final)
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        self._handle = None
        _check_target(self.path, self.overwrite)
        os.replace(self._tmp, self.path)
        self._tmp = None
        return self.path

    def _rewrite_with_header(self, header: bytes):
        new_tmp = temp_file_beside(self.path)
        source = self._handle
        target = new_tmp.open("w+b")
        try:
            target.write(struct.pack("<Q", len(header)))
            target.write(header)
            source.seek(8 + self._header_size)
            while chunk := source.read(1 << 24):
                target.write(chunk)
        except BaseException:
            target.close()
            new_tmp.unlink(missing_ok=True)
            raise
        source.close()
        self._tmp.unlink(missing_ok=True)
        self._tmp = new_tmp
        return target

    def abort(self) -> None:
        """Close and remove the temporary file (nothing is written at ``path``)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._tmp is not None:
            self.abort()
