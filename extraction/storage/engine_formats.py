"""Stores whose tensors carry their own token ids, as engines and activation caches write them.

Read lazily like every store (:mod:`.lazy_states`): only the sampled rows and the sampled texts'
ids leave the disk.

- **A file with ids** (``.safetensors`` or ``.pt``) holding an integer ``input_ids`` or
  ``token_ids`` tensor (:data:`~.stored_ids.ID_NAMES`) beside the states:

  - ids ``(R,)`` with ``offsets`` ``(N + 1,)`` (a flat concatenation: text i owns
    ``ids[offsets[i]:offsets[i + 1]]``), states ``(R, ...)`` (one row per token: ``tokens``
    pooling) or ``(N, ...)`` (one row per text);
  - ids ``(R,)`` without offsets: one text (a file per text), states ``(R, ...)`` or ``(1, ...)``;
  - ids ``(N, T)`` (one row per text, padded where an ``attention_mask`` ``(N, T)`` says 0):
    states ``(N, T, d)`` are one row per token (the Activault layout: ``states`` beside
    ``input_ids``, every position real, no mask), states ``(N, d)`` or ``(N, L, d)`` one row per text.

- **A vLLM ``extract_hidden_states`` folder**: one ``<request id>.safetensors`` per request, written
  by vLLM's ``ExampleHiddenStatesConnector`` with ``safetensors.torch.save_file`` and no metadata:
  ``hidden_states`` ``(seq, layers, hidden)`` (the layers of ``eagle_aux_hidden_state_layer_ids``,
  in that order) and ``token_ids`` ``(seq,)`` (the prompt's ids). Files are taken in natural name
  order (``2`` before ``10``); ``.lock`` files beside them are ignored. Only the headers are read
  at open (shapes and dtypes), each file's data when one of its rows is sampled.

A file that is not what it claims (ids that are not integers, shapes that do not fit, a vLLM file
without ``token_ids``) raises ``ValueError`` naming the file and what is wrong.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .lazy_states import _FLOAT_DTYPES, _INT_DTYPES, LazyStates, _float_dtype_name, _Shape
from .stored_ids import ID_NAMES, StoredTokenIds
from .stored_states import OFFSETS_NAME, _pick, check_offsets, read_safetensors_header

MASK_NAME = "attention_mask"
VLLM_STATES = "hidden_states"
VLLM_IDS = "token_ids"
VLLM_FORMAT = "vllm extract_hidden_states"


@dataclass
class TensorEntry:
    """One tensor of a file, not read yet: its shape, dtype (safetensors code, e.g. ``"F32"``,
    ``"I64"``) and ``read(start, stop)`` giving rows ``start:stop`` along its first axis."""

    shape: tuple[int, ...]
    dtype: str
    read: Callable[[int, int], torch.Tensor]

    @property
    def is_integer(self) -> bool:
        return self.dtype in _INT_DTYPES


def safetensors_entries(path: Path, header: dict) -> dict[str, TensorEntry]:
    """The tensors of a safetensors file, each read through ``safe_open(...).get_slice``."""
    from safetensors import safe_open

    def reader(name: str) -> Callable[[int, int], torch.Tensor]:
        def read(start: int, stop: int) -> torch.Tensor:
            with safe_open(path, "pt") as handle:
                return handle.get_slice(name)[start:stop]

        return read

    return {
        name: TensorEntry(tuple(int(v) for v in entry.get("shape", [])), str(entry.get("dtype")), reader(name))
        for name, entry in header.items()
        if name != "__metadata__"
    }


_TORCH_CODES = {value: key for key, value in {**_FLOAT_DTYPES, **_INT_DTYPES}.items()}


def torch_entries(tensors: dict[str, torch.Tensor]) -> dict[str, TensorEntry]:
    """The tensors of a ``torch.save`` dict (memory-mapped), as :class:`TensorEntry`."""

    def entry(value: torch.Tensor) -> TensorEntry:
        name = str(value.dtype).removeprefix("torch.")
        code = "BOOL" if name == "bool" else _TORCH_CODES.get(name, name)
        return TensorEntry(tuple(value.shape), code, lambda start, stop: value[start:stop])

    return {name: entry(value) for name, value in tensors.items()}


def has_ids(entries: dict[str, TensorEntry], key: str | None) -> bool:
    """Whether the file holds an integer ids tensor (and ``key`` does not name it)."""
    return any(name in entries and entries[name].is_integer and name != key for name in ID_NAMES)


def open_ids_file(label: str, entries: dict[str, TensorEntry], key: str | None, metadata: dict) -> LazyStates:
    """A file with ids (the layouts in the module docstring) as :class:`LazyStates` with ``token_ids``."""
    entries = dict(entries)
    id_name = next(n for n in ID_NAMES if n in entries and entries[n].is_integer and n != key)
    ids = entries.pop(id_name)
    for other in ID_NAMES:
        if other != key and other in entries and entries[other].is_integer:
            del entries[other]
    offsets_entry = entries.pop(OFFSETS_NAME, None) if key != OFFSETS_NAME else None
    mask = entries.pop(MASK_NAME, None) if key != MASK_NAME else None
    picked, _ = _pick({n: _Shape(list(e.shape)) for n, e in entries.items()}, key, label)
    states = entries[picked]
    stored_dtype = _float_dtype_name(states.dtype, f"{label} [{picked}]")
    shape = states.shape
    if not shape:
        raise ValueError(f"{label} [{picked}]: holds a single number, not rows of hidden states")
    where = f"{label}: {id_name} {ids.shape}"
    if len(ids.shape) == 1:
        rows = ids.shape[0]
        if offsets_entry is not None:
            if not offsets_entry.is_integer:
                kind = offsets_entry.dtype
                raise ValueError(f"{label}: its {OFFSETS_NAME!r} tensor holds {kind} values, not integers")
            offsets = check_offsets(offsets_entry.read(0, offsets_entry.shape[0]), rows, label)
            layout = f"{id_name} (R,) with {OFFSETS_NAME} (N + 1,)"
        else:
            offsets = torch.tensor([0, rows], dtype=torch.long)
            layout = f"{id_name} (R,): one text"
        n_texts = len(offsets) - 1

        def fetch_ids(texts: list[int]) -> list[list[int]]:
            return [ids.read(int(offsets[t]), int(offsets[t + 1])).tolist() for t in texts]

        token_ids = StoredTokenIds(id_name, n_texts, layout, fetch_ids)
        if shape[0] == rows:
            return LazyStates(label, picked, stored_dtype, shape, states.read, metadata, offsets, token_ids=token_ids)
        if shape[0] == n_texts:
            return LazyStates(label, picked, stored_dtype, shape, states.read, metadata, token_ids=token_ids)
        hint = "" if offsets_entry is not None else f"; add an {OFFSETS_NAME!r} tensor (N + 1,) for several texts"
        raise ValueError(
            f"{where} holds {n_texts} text(s) of {rows} tokens, but {picked!r} has {shape[0]} rows: "
            f"expected one row per token ({rows}) or per text ({n_texts}){hint}"
        )
    if len(ids.shape) != 2:
        raise ValueError(f"{where}: token ids must be (R,) (with offsets) or (N, T), one row per text")
    n_texts, width = ids.shape
    if mask is not None and (mask.shape != ids.shape or not (mask.is_integer or mask.dtype == "BOOL")):
        raise ValueError(f"{label}: {MASK_NAME} {mask.shape} {mask.dtype} does not fit {id_name} {ids.shape}")

    def fetch_padded(texts: list[int]) -> list[list[int]]:
        found = []
        for t in texts:
            row = ids.read(t, t + 1)[0]  # (T,)
            if mask is not None:
                row = row[mask.read(t, t + 1)[0].bool()]
            found.append(row.tolist())
        return found

    layout = f"{id_name} (N, T)" + (f" with {MASK_NAME}" if mask is not None else "")
    token_ids = StoredTokenIds(id_name, n_texts, layout, fetch_padded)
    if len(shape) == 3 and shape[:2] == (n_texts, width):
        if mask is not None:
            raise ValueError(
                f"{label}: per-token states {shape} with an {MASK_NAME}: padded token rows are not read "
                "(store the real tokens only, flat, with offsets)"
            )
        flat = (n_texts * width, shape[2])
        offsets = torch.arange(0, flat[0] + 1, width, dtype=torch.long)

        def fetch_flat(start: int, stop: int) -> torch.Tensor:
            first, last = start // width, (stop - 1) // width + 1
            block = states.read(first, last).reshape(-1, shape[2])  # ((last - first) * T, d)
            return block[start - first * width : stop - first * width]

        return LazyStates(label, picked, stored_dtype, flat, fetch_flat, metadata, offsets, token_ids=token_ids)
    if shape[0] == n_texts:
        return LazyStates(label, picked, stored_dtype, shape, states.read, metadata, token_ids=token_ids)
    raise ValueError(
        f"{where} holds {n_texts} texts, but {picked!r} has shape {shape}: expected ({n_texts}, {width}, d) "
        f"(one row per token) or {n_texts} rows (one per text)"
    )


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def is_vllm_folder(folder: Path) -> bool:
    """A folder of ``.safetensors`` files without a shards ``index.json``."""
    from .shards import INDEX_NAME

    return folder.is_dir() and not (folder / INDEX_NAME).exists() and any(folder.glob("*.safetensors"))


def open_vllm_folder(folder: Path, key: str | None = None) -> LazyStates:
    """A vLLM ``extract_hidden_states`` folder (module docstring): headers read, rows on demand."""
    from safetensors import SafetensorError, safe_open

    label = str(folder)
    if key not in (None, VLLM_STATES):
        raise ValueError(f"{label}: a vLLM extract_hidden_states folder holds {VLLM_STATES!r}, not {key!r}")
    files = sorted(folder.glob("*.safetensors"), key=_natural_key)
    lengths, inner, dtype = [], None, None
    for path in files:
        try:
            header = read_safetensors_header(path)
        except (ValueError, OSError) as error:
            raise ValueError(f"{label}: {path.name} cannot be read as safetensors ({error})") from None
        names = sorted(n for n in header if n != "__metadata__")
        if VLLM_STATES not in header or VLLM_IDS not in header:
            raise ValueError(
                f"{label}: {path.name} holds {names}; a vLLM extract_hidden_states file holds "
                f"{VLLM_STATES!r} (seq, layers, hidden) and {VLLM_IDS!r} (seq,)"
            )
        states, ids = header[VLLM_STATES], header[VLLM_IDS]
        shape, id_shape = tuple(states.get("shape", [])), tuple(ids.get("shape", []))
        if len(shape) != 3 or id_shape != shape[:1] or ids.get("dtype") not in _INT_DTYPES or not shape[0]:
            raise ValueError(
                f"{label}: {path.name} holds {VLLM_STATES} {shape} and {VLLM_IDS} {id_shape} {ids.get('dtype')}; "
                f"expected (seq, layers, hidden) and (seq,) integers, seq > 0"
            )
        if inner is None:
            inner, dtype = shape[1:], _float_dtype_name(states.get("dtype"), f"{label}: {path.name}")
        elif shape[1:] != inner or _FLOAT_DTYPES.get(states.get("dtype")) != dtype:
            raise ValueError(
                f"{label}: {path.name} holds {shape} {states.get('dtype')}, the files before it (n, {inner[0]}, "
                f"{inner[1]}) {dtype}: one folder is one run of one model"
            )
        lengths.append(shape[0])
    if not files:
        raise ValueError(f"{label}: holds no .safetensors file")
    bounds = [0, *torch.tensor(lengths).cumsum(0).tolist()]  # file k owns rows bounds[k]:bounds[k + 1]

    def open_file(k: int, what: Callable) -> torch.Tensor:
        try:
            with safe_open(files[k], "pt") as handle:
                return what(handle)
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{label}: {files[k].name} cannot be read ({error}); is it truncated?") from None

    def fetch(start: int, stop: int) -> torch.Tensor:
        parts = []
        k = bisect.bisect_right(bounds, start) - 1
        while k < len(files) and bounds[k] < stop:
            low, high = max(start, bounds[k]) - bounds[k], min(stop, bounds[k + 1]) - bounds[k]
            parts.append(open_file(k, lambda h, low=low, high=high: h.get_slice(VLLM_STATES)[low:high]))
            k += 1
        return torch.cat(parts)

    def fetch_ids(texts: list[int]) -> list[list[int]]:
        return [open_file(t, lambda h: h.get_tensor(VLLM_IDS)).tolist() for t in texts]

    metadata = {"format": VLLM_FORMAT, "pooling": "tokens"}
    offsets = torch.tensor(bounds, dtype=torch.long)
    token_ids = StoredTokenIds(VLLM_IDS, len(files), f"one file per request, {VLLM_IDS} (seq,)", fetch_ids)
    shape = (bounds[-1], *inner)
    return LazyStates(label, VLLM_STATES, dtype, shape, fetch, metadata, offsets, token_ids=token_ids)


def vllm_file_names(states: LazyStates) -> list[str] | None:
    """The request files of a vLLM folder in text order (text i is file i), None for another store."""
    if states.metadata.get("format") != VLLM_FORMAT:
        return None
    return [p.name for p in sorted(Path(states.source).glob("*.safetensors"), key=_natural_key)]


__all__ = ["VLLM_FORMAT", "is_vllm_folder", "open_ids_file", "open_vllm_folder", "vllm_file_names"]
