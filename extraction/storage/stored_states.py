"""Read stored hidden states from a file and check them against the texts and a model.

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

Token-level files (``extract --pooling tokens``) hold ``hidden_states`` ``(R, L, d)`` and an
integer ``offsets`` ``(N + 1,)`` (text i owns rows ``offsets[i]:offsets[i + 1]``): a tensor
named :data:`OFFSETS_NAME` with integer values is read as those offsets, never as the states,
checked (starts at 0, never decreases, ends at the row count) and returned in
:attr:`StoredStates.offsets`; the pooling the file records is :attr:`StoredStates.stored_pooling`.

A folder of shards written by ``extract --out DIR`` (or a ``.zip`` of it, as uploaded) is
read like a file: :func:`read_states` hands it to :func:`extraction.storage.shards.read_sharded`,
which returns every text's row in text order.

Writing is :mod:`extraction.storage.safetensors_writer`.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .states_record import StoredStates

logger = logging.getLogger(__name__)

STATE_SUFFIXES = (".safetensors", ".npy", ".npz", ".pt", ".pth", ".zip")  # .zip: a zipped folder of shards
OFFSETS_NAME = "offsets"  # the row offsets of a token-level file (extract --pooling tokens)


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


def _split_offsets(tensors: dict[str, object], key: str | None) -> tuple[dict[str, object], object | None]:
    """The tensors without an integer :data:`OFFSETS_NAME` entry, and that entry (or None),
    unless ``key`` names it."""
    value = tensors.get(OFFSETS_NAME)
    if key == OFFSETS_NAME or value is None:
        return tensors, None
    dtype = getattr(value, "dtype", None)
    is_integer = (isinstance(value, torch.Tensor) and not value.is_floating_point() and dtype != torch.bool) or (
        isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.integer)
    )
    if not is_integer:
        return tensors, None
    return {name: tensor for name, tensor in tensors.items() if name != OFFSETS_NAME}, value


def check_offsets(value: object, rows: int, source: str) -> torch.Tensor:
    """``(N + 1,)`` int64 offsets of ``rows`` token rows, or ``ValueError`` saying what is wrong."""
    offsets = torch.as_tensor(np.asarray(value) if isinstance(value, np.ndarray) else value).long().flatten()
    if len(offsets) < 2:
        raise ValueError(f"{source}: {OFFSETS_NAME} needs at least 2 entries (N + 1 for N texts), got {len(offsets)}")
    if int(offsets[0]) != 0 or bool((offsets.diff() < 0).any()) or int(offsets[-1]) != rows:
        raise ValueError(
            f"{source}: {OFFSETS_NAME} must start at 0, never decrease and end at the row count {rows} "
            f"(it runs {int(offsets[0])}..{int(offsets[-1])})"
        )
    return offsets


def validate_offsets(offsets: torch.Tensor | None, num_texts: int, num_rows: int) -> torch.Tensor:
    """The row offsets of a ``tokens`` file for ``num_texts`` texts and ``num_rows`` rows (text i
    owns rows ``offsets[i]:offsets[i + 1]``), as int64; ``ValueError`` when missing or wrong."""
    if offsets is None:
        raise ValueError(
            f"tokens pooling needs an {OFFSETS_NAME!r} tensor (N + 1 row offsets) beside the states; the file has none"
        )
    if len(offsets) != num_texts + 1:
        raise ValueError(f"{OFFSETS_NAME!r} has {len(offsets)} entries for {num_texts} texts: expected N + 1")
    return check_offsets(offsets, num_rows, "the states")


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


def _read_safetensors(data: bytes, source: str, key: str | None) -> tuple[str, object, dict[str, str], object]:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    try:
        header = read_safetensors_header(data)
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, struct.error) as error:
        raise ValueError(f"{source}: cannot read it as safetensors ({error}); is it truncated or corrupt?") from None
    metadata = header.get("__metadata__") or {}
    tensors, offsets = _split_offsets(tensors, key)
    name, value = _pick(tensors, key, source)
    return name, value, {str(k): str(v) for k, v in metadata.items()}, offsets


def _read_numpy(data: bytes, source: str, key: str | None, suffix: str) -> tuple[str | None, object, object]:
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
    # A damaged header reaches numpy's header parser (tokenize/SyntaxError on garbage text).
    # A damaged zip directory can claim a zip version the module does not implement.
    except (
        OSError,
        EOFError,
        MemoryError,
        zipfile.BadZipFile,
        NotImplementedError,
        SyntaxError,
        tokenize.TokenError,
    ) as error:
        raise ValueError(f"{source}: cannot read it as {suffix} ({error}); is it truncated or corrupt?") from None
    if isinstance(loaded, np.ndarray):
        if suffix != ".npy":
            raise ValueError(f"{source}: is a .npy array, not an .npz archive: rename it to .npy")
        if key is not None:
            logger.info("%s: a .npy file holds one array; --key %s ignored", source, key)
        return None, loaded, None
    try:
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    # Damage shows up on access; a header claiming a huge shape shows up as MemoryError.
    except (ValueError, OSError, EOFError, MemoryError, zipfile.BadZipFile, NotImplementedError, zlib.error) as error:
        raise ValueError(f"{source}: cannot read it as .npz ({error}); is it truncated or corrupt?") from None
    arrays, offsets = _split_offsets(arrays, key)
    return (*_pick(arrays, key, source), offsets)


def _read_torch(data: bytes, source: str, key: str | None) -> tuple[str | None, object, object]:
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
        return None, loaded, None
    if isinstance(loaded, dict):
        tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        if key is not None and key in loaded and not isinstance(loaded[key], torch.Tensor):
            raise ValueError(f"{source}: entry {key!r} is a {type(loaded[key]).__name__}, not a tensor")
        tensors, offsets = _split_offsets(tensors, key)
        return (*_pick(tensors, key, source), offsets)
    if isinstance(loaded, list | tuple) and loaded and all(isinstance(t, torch.Tensor) for t in loaded):
        shapes = {tuple(t.shape) for t in loaded}
        if len(shapes) != 1:
            raise ValueError(
                f"{source}: a list of tensors of different shapes ({sorted(shapes)[:3]}...) cannot be rows"
            )
        return None, torch.stack(list(loaded)), None  # one tensor per text -> (N, ...)
    raise ValueError(f"{source}: holds a {type(loaded).__name__}; expected a tensor or a dict of tensors")


def read_states(source: str | Path | bytes, name: str | None = None, key: str | None = None) -> StoredStates:
    """Read one tensor of hidden states from a file path, or from ``bytes`` (an upload)
    whose file ``name`` gives the format. ``key`` picks a tensor in a file that holds
    several (safetensors, npz, or a dict saved with ``torch.save``). A folder of shards, or a
    ``.zip`` of one, is read as one tensor (:mod:`extraction.storage.shards`)."""
    is_path = not isinstance(source, bytes)
    if (is_path and (Path(source).is_dir() or Path(source).suffix.lower() == ".zip")) or (
        not is_path and (name or "").lower().endswith(".zip")
    ):
        from .shards import TENSOR_NAME, read_sharded

        if key not in (None, TENSOR_NAME):
            raise ValueError(f"{name or source}: a folder of shards holds {TENSOR_NAME!r} only, not {key!r}")
        if is_path and not Path(source).exists():
            raise ValueError(f"{source}: no such file or folder")
        return read_sharded(source, name)
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
        picked, value, metadata, offsets = _read_safetensors(data, label, key)
    elif suffix in (".npy", ".npz"):
        picked, value, offsets = _read_numpy(data, label, key, suffix)
    else:
        picked, value, offsets = _read_torch(data, label, key)
    tensor, dtype_name = _to_float_tensor(value, label, picked)
    if offsets is not None:
        offsets = check_offsets(offsets, len(tensor) if tensor.dim() else 0, label)
    return StoredStates(
        tensor=tensor, source=label, key=picked, stored_dtype=dtype_name, metadata=metadata, offsets=offsets
    )


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
    which needs ``L == num_states``). The shape is :func:`check_states_shape`, the values
    :func:`check_finite`.
    """
    resolved = check_states_shape(tuple(tensor.shape), num_texts, hidden_size, num_states, layer, layers)
    if tensor.dim() == 2:
        tensor = tensor[:, None, :]  # (N, 1, d)
    check_finite(tensor)
    return tensor, resolved


def check_states_shape(
    shape: tuple[int, ...],
    num_texts: int,
    hidden_size: int,
    num_states: int,
    layer: int | None = None,
    layers: list[int] | None = None,
) -> list[int]:
    """:func:`validate_states` on the shape alone (a store not read yet): the ``hidden_states``
    index of each stored layer, or ``ValueError`` saying what does not fit."""
    rank = len(shape)
    if rank not in (2, 3):
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
    if rank == 2:
        if layers is not None and len(layers) != 1:
            raise ValueError(f"stored states hold one layer (shape {shape}) but {len(layers)} layers were named")
        chosen = layers[0] if layers is not None else (num_states - 1 if layer is None else layer)
        if not -num_states <= chosen < num_states:
            raise ValueError(f"layer {chosen} out of range: this model has hidden_states 0..{num_states - 1}")
        return [chosen % num_states]
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
    return [index % num_states for index in layers]


def check_finite(tensor: torch.Tensor, row_names: list[int] | None = None) -> None:
    """``ValueError`` naming the rows (``row_names[k]`` for row k, default k) that hold NaN or inf."""
    bad = ~torch.isfinite(tensor)
    if bad.any():
        rows = bad.flatten(1).any(1).nonzero().flatten().tolist()
        if row_names is not None:
            rows = [row_names[k] for k in rows]
        listed = ", ".join(str(r) for r in rows[:8]) + (" ..." if len(rows) > 8 else "")
        raise ValueError(
            f"stored states contain {int(bad.sum())} NaN/inf values in {len(rows)} rows (rows {listed}): "
            "those states are corrupted beyond any comparison"
        )
