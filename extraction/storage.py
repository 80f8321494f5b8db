"""Read stored hidden states, check them against a model, and write new ones atomically.

Reading (:func:`read_states`): ``.safetensors`` (a single tensor, or the one named by
``key``), ``.npy``, ``.npz`` (a single array, or ``key``) and ``.pt``/``.pth``, the latter
only through ``torch.load(weights_only=True)``, which refuses pickled code. A file that
is truncated, corrupt or of another type raises ``ValueError`` naming the file and what
is wrong; so does a file holding integer values or several tensors without a ``key``
(the message names the tensors it holds).

Checking (:func:`validate_states`): a stored tensor is ``(N, d)`` for one layer or
``(N, L, d)`` for several; row ``i`` belongs to text ``i``. Wrong rank, a row count
different from the number of texts, a width different from the model's hidden size, a
layer count the model cannot have and NaN/inf values each raise ``ValueError``.

Writing: :func:`write_safetensors_atomic` for tensors already in memory, and
:class:`SafetensorsRowWriter`, which streams the rows of one ``(N, ...)`` tensor to disk
in order, so that extraction never holds the whole dataset in memory. Both write to a
temporary file in the target folder and rename it into place at the end: an
interrupted or failed write leaves no partial file. Metadata is safetensors string
metadata (``dict[str, str]``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

STATE_SUFFIXES = (".safetensors", ".npy", ".npz", ".pt", ".pth")

#: safetensors dtype codes for the float dtypes we write, and the torch dtypes we read.
_SAFETENSORS_CODES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_HEADER_RESERVE = 16384  # spare header bytes so final metadata can be written in place


@dataclass
class StoredStates:
    """One tensor read from a file, before any check against a model.

    Attributes:
        tensor: the stored values as float32 on cpu, shape as stored (``(N, d)`` or
            ``(N, L, d)`` for a valid file; other ranks are refused by :func:`validate_states`).
        source: the file name or path it came from.
        key: the tensor's name inside the file (None for ``.npy`` and bare ``.pt`` tensors).
        stored_dtype: the dtype in the file, e.g. ``"bfloat16"`` (the tensor is converted).
        metadata: safetensors string metadata (empty for other formats).
    """

    tensor: torch.Tensor
    source: str
    key: str | None
    stored_dtype: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def stored_layers(self) -> list[int] | None:
        """The ``hidden_states`` indices recorded by ``extract`` in the metadata, if any."""
        raw = self.metadata.get("layers")
        if not raw:
            return None
        try:
            layers = json.loads(raw)
        except json.JSONDecodeError:
            return None
        return [int(x) for x in layers] if isinstance(layers, list) else None


# --- reading ---------------------------------------------------------------------------


def _describe(tensors: dict[str, object]) -> str:
    return ", ".join(f"{name} {tuple(getattr(tensors[name], 'shape', ()))}" for name in sorted(tensors))


def _pick(tensors: dict[str, object], key: str | None, source: str) -> tuple[str, object]:
    """The tensor named ``key``, or the only one; ``ValueError`` naming them otherwise."""
    if not tensors:
        raise ValueError(f"{source}: holds no tensor")
    if key is not None:
        if key not in tensors:
            raise ValueError(f"{source}: no tensor named {key!r}; it holds: {_describe(tensors)}")
        return key, tensors[key]
    if len(tensors) > 1:
        raise ValueError(f"{source}: holds several tensors ({_describe(tensors)}); choose one with --key NAME")
    return next(iter(tensors.items()))


def _to_float_tensor(value: object, source: str, key: str | None) -> tuple[torch.Tensor, str]:
    """A float32 torch tensor and the stored dtype name; integer and other types are refused."""
    what = f"{source}" + (f" [{key}]" if key else "")
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ValueError(f"{what}: holds Python objects, not numbers")
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(
                f"{what}: holds {value.dtype} values; hidden states must be floating point "
                "(float32, float16, bfloat16 or float64)"
            )
        dtype_name = str(value.dtype)
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    elif isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise ValueError(
                f"{what}: holds {str(value.dtype).removeprefix('torch.')} values; hidden states must be floating "
                "point (float32, float16, bfloat16 or float64)"
            )
        dtype_name = str(value.dtype).removeprefix("torch.")
        tensor = value.detach().cpu()
    else:
        raise ValueError(f"{what}: holds a {type(value).__name__}, not a tensor or array")
    return tensor.to(torch.float32).contiguous(), dtype_name


def read_safetensors_header(data: bytes | Path) -> dict:
    """The JSON header of a safetensors file (tensor entries and ``__metadata__``)."""
    if isinstance(data, Path):
        with data.open("rb") as handle:
            head = handle.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            body = handle.read(size) if size is not None and size < 100_000_000 else b""
    else:
        head = data[:8]
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        body = data[8 : 8 + size] if size is not None else b""
    if size is None or len(body) != size:
        raise ValueError("truncated safetensors header")
    try:
        header = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ValueError("the safetensors header is not a JSON object")
    return header


def _read_safetensors(data: bytes, source: str, key: str | None) -> tuple[str, object, dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    try:
        header = read_safetensors_header(data)
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, struct.error) as error:
        raise ValueError(f"{source}: cannot read it as safetensors ({error}); is it truncated or corrupt?") from None
    metadata = header.get("__metadata__") or {}
    name, value = _pick(tensors, key, source)
    return name, value, {str(k): str(v) for k, v in metadata.items()}


def _read_numpy(data: bytes, source: str, key: str | None, suffix: str) -> tuple[str | None, object]:
    magic = b"\x93NUMPY" if suffix == ".npy" else b"PK"
    if not data.startswith(magic):
        raise ValueError(f"{source}: is not a {suffix} file (its first bytes are not the {suffix} signature)")
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise ValueError(
                f"{source}: holds pickled Python objects, which are not loaded (allow_pickle=False)"
            ) from None
        raise ValueError(f"{source}: cannot read it as {suffix} ({error}); is it truncated or corrupt?") from None
    except (OSError, EOFError, MemoryError, zipfile.BadZipFile) as error:
        raise ValueError(f"{source}: cannot read it as {suffix} ({error}); is it truncated or corrupt?") from None
    if isinstance(loaded, np.ndarray):
        if suffix != ".npy":
            raise ValueError(f"{source}: is a .npy array, not an .npz archive: rename it to .npy")
        if key is not None:
            logger.info("%s: a .npy file holds one array; --key %s ignored", source, key)
        return None, loaded
    try:
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    # Damage shows up on access; a header claiming a huge shape shows up as MemoryError.
    except (ValueError, OSError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{source}: cannot read it as .npz ({error}); is it truncated or corrupt?") from None
    return _pick(arrays, key, source)


def _read_torch(data: bytes, source: str, key: str | None) -> tuple[str | None, object]:
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
        message = (str(error).splitlines()[0] if str(error) else type(error).__name__).split(". ")[0]
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            raise ValueError(
                f"{source}: holds objects that torch.load(weights_only=True) refuses to unpickle "
                "(only tensors and plain containers are loaded; save with torch.save(tensor) or use .safetensors)"
            ) from None
        raise ValueError(f"{source}: cannot read it as a torch file ({message}); is it truncated or corrupt?") from None
    if isinstance(loaded, torch.Tensor):
        return None, loaded
    if isinstance(loaded, dict):
        tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        if key is not None and key in loaded and not isinstance(loaded[key], torch.Tensor):
            raise ValueError(f"{source}: entry {key!r} is a {type(loaded[key]).__name__}, not a tensor")
        return _pick(tensors, key, source)
    if isinstance(loaded, list | tuple) and loaded and all(isinstance(t, torch.Tensor) for t in loaded):
        shapes = {tuple(t.shape) for t in loaded}
        if len(shapes) != 1:
            raise ValueError(
                f"{source}: a list of tensors of different shapes ({sorted(shapes)[:3]}...) cannot be rows"
            )
        return None, torch.stack(list(loaded))  # one tensor per text -> (N, ...)
    raise ValueError(f"{source}: holds a {type(loaded).__name__}; expected a tensor or a dict of tensors")


def read_states(source: str | Path | bytes, name: str | None = None, key: str | None = None) -> StoredStates:
    """Read one tensor of hidden states from a file path, or from ``bytes`` (an upload)
    whose file ``name`` gives the format. ``key`` picks a tensor in a file that holds
    several (safetensors, npz, or a dict saved with ``torch.save``)."""
    if isinstance(source, bytes):
        if not name:
            raise ValueError("reading states from bytes needs the file name, for its type")
        data, label = source, name
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        data, label, name = path.read_bytes(), str(path), path.name
    suffix = Path(name).suffix.lower()
    if suffix not in STATE_SUFFIXES:
        raise ValueError(f"{label}: unsupported file type '{suffix}' (use one of {', '.join(STATE_SUFFIXES)})")
    if not data:
        raise ValueError(f"{label}: the file is empty")
    metadata: dict[str, str] = {}
    if suffix == ".safetensors":
        picked, value, metadata = _read_safetensors(data, label, key)
    elif suffix in (".npy", ".npz"):
        picked, value = _read_numpy(data, label, key, suffix)
    else:
        picked, value = _read_torch(data, label, key)
    tensor, dtype_name = _to_float_tensor(value, label, picked)
    return StoredStates(tensor=tensor, source=label, key=picked, stored_dtype=dtype_name, metadata=metadata)


# --- checking --------------------------------------------------------------------------


def validate_states(
    tensor: torch.Tensor,
    num_texts: int,
    hidden_size: int,
    num_states: int,
    layer: int | None = None,
    layers: list[int] | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Check stored states against the texts and the model; return ``(N, L, d)`` and the
    ``hidden_states`` index of each of the L layers.

    ``num_states`` is the model's number of hidden states (embeddings + blocks). A
    ``(N, d)`` tensor is one layer: ``layer`` (default the last, ``num_states - 1``;
    negative counts from the end). A ``(N, L, d)`` tensor holds ``layers`` (default all,
    which needs ``L == num_states``).
    """
    shape = tuple(tensor.shape)
    if tensor.dim() not in (2, 3):
        raise ValueError(
            f"stored states have shape {shape}: expected (N, d) for one layer or (N, L, d) for several "
            "(row i is text i)"
        )
    if shape[0] == 0:
        raise ValueError("stored states have no rows")
    if shape[0] != num_texts:
        raise ValueError(
            f"stored states have {shape[0]} rows but {num_texts} texts were given: row i must be the state of text i"
        )
    if shape[-1] != hidden_size:
        raise ValueError(
            f"stored states have width {shape[-1]} but the model's hidden size is {hidden_size}: "
            "were they extracted with another model?"
        )
    if tensor.dim() == 2:
        if layers is not None and len(layers) != 1:
            raise ValueError(f"stored states hold one layer (shape {shape}) but {len(layers)} layers were named")
        chosen = layers[0] if layers is not None else (num_states - 1 if layer is None else layer)
        if not -num_states <= chosen < num_states:
            raise ValueError(f"layer {chosen} out of range: this model has hidden_states 0..{num_states - 1}")
        resolved = [chosen % num_states]
        tensor = tensor[:, None, :]  # (N, 1, d)
    else:
        if layers is None:
            if layer is not None:
                raise ValueError(
                    f"stored states hold {shape[1]} layers (shape {shape}); --layer is for (N, d) files, "
                    "use --layers i,j,... to name the layers stored"
                )
            if shape[1] != num_states:
                raise ValueError(
                    f"stored states hold {shape[1]} layers but the model has {num_states} hidden states "
                    f"(embeddings + {num_states - 1} blocks): name the layers stored with --layers i,j,..."
                )
            layers = list(range(num_states))
        if len(layers) != shape[1]:
            raise ValueError(f"stored states hold {shape[1]} layers but {len(layers)} layer indices were named")
        for index in layers:
            if not -num_states <= index < num_states:
                raise ValueError(f"layer {index} out of range: this model has hidden_states 0..{num_states - 1}")
        resolved = [index % num_states for index in layers]
    bad = ~torch.isfinite(tensor)
    if bad.any():
        rows = bad.flatten(1).any(1).nonzero().flatten().tolist()
        listed = ", ".join(str(r) for r in rows[:8]) + (" ..." if len(rows) > 8 else "")
        raise ValueError(
            f"stored states contain {int(bad.sum())} NaN/inf values in {len(rows)} rows (rows {listed}): "
            "those states are corrupted beyond any comparison"
        )
    return tensor, resolved


# --- writing ---------------------------------------------------------------------------


def _header_bytes(header: dict, size: int | None = None) -> bytes:
    """JSON header padded with spaces to ``size`` (or to a multiple of 8)."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    target = size if size is not None else -(-len(raw) // 8) * 8
    if len(raw) > target:
        raise ValueError("header larger than the space reserved for it")
    return raw + b" " * (target - len(raw))


def _temp_path(path: Path) -> Path:
    """A new empty temporary file beside ``path``, with the permissions a plain ``open`` would give
    (``mkstemp`` makes it owner-only, which the renamed file would keep)."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    tmp = _temp_path(path)
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
    ):
        if dtype not in _SAFETENSORS_CODES:
            raise ValueError(f"unsupported dtype {dtype}: choose one of {', '.join(map(str, _SAFETENSORS_CODES))}")
        if not shape or shape[0] < 1:
            raise ValueError(f"shape {shape} needs at least one row")
        self.path = Path(path)
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.metadata = dict(metadata or {})
        self.overwrite = overwrite
        self.rows_written = 0
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        self._tmp: Path | None = None
        self._handle = None
        self._header_size = 0

    def _header(self, metadata: dict[str, str]) -> dict:
        total = self._row_bytes * self.shape[0]
        return {
            "__metadata__": {str(k): str(v) for k, v in metadata.items()},
            self.name: {"dtype": _SAFETENSORS_CODES[self.dtype], "shape": list(self.shape), "data_offsets": [0, total]},
        }

    def __enter__(self) -> SafetensorsRowWriter:
        _check_target(self.path, self.overwrite)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _temp_path(self.path)
        self._handle = self._tmp.open("w+b")
        first = _header_bytes(self._header(self.metadata))
        self._header_size = -(-(len(first) + _HEADER_RESERVE) // 8) * 8
        self._handle.write(struct.pack("<Q", self._header_size))
        self._handle.write(_header_bytes(self._header(self.metadata), self._header_size))
        return self

    def write(self, rows: torch.Tensor) -> None:
        """Append rows ``(k, *row_shape)``, converted to the writer's dtype."""
        if self._handle is None:
            raise RuntimeError("the writer is not open")
        if tuple(rows.shape[1:]) != self.shape[1:]:
            raise ValueError(f"rows of shape {tuple(rows.shape[1:])} do not fit a tensor of shape {self.shape}")
        if self.rows_written + rows.shape[0] > self.shape[0]:
            raise ValueError(f"more than {self.shape[0]} rows written")
        self._handle.write(_tensor_bytes(rows.to(self.dtype)))
        self.rows_written += rows.shape[0]

    def read_rows(self, indices: list[int]) -> torch.Tensor:
        """Rows already written, read back from the temporary file (for verification): float32."""
        if self._handle is None:
            raise RuntimeError("the writer is not open")
        self._handle.flush()
        out = torch.empty((len(indices), *self.shape[1:]), dtype=torch.float32)
        start = 8 + self._header_size
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

    def commit(self, metadata: dict[str, str] | None = None) -> Path:
        """Write the final metadata (merged into the initial one) and move the file into place."""
        if self._handle is None:
            raise RuntimeError("the writer is not open")
        if self.rows_written != self.shape[0]:
            raise ValueError(f"only {self.rows_written} of {self.shape[0]} rows were written")
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
        new_tmp = _temp_path(self.path)
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
