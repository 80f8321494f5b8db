"""The record of stored hidden states as read from a file or a folder of shards, before any
check against a model. One small module so that the readers (:mod:`.stored_states` for files,
:mod:`.shards` for folders) share it without importing each other."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch


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
        offsets: ``(N + 1,)`` int64 for a token-level file (``extract --pooling tokens``):
            text i owns rows ``offsets[i]:offsets[i + 1]`` of ``tensor``; None otherwise.
    """

    tensor: torch.Tensor
    source: str
    key: str | None
    stored_dtype: str
    metadata: dict[str, str] = field(default_factory=dict)
    offsets: torch.Tensor | None = None

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

    @property
    def stored_pooling(self) -> str | None:
        """The pooling the file records (``extract``'s ``pooling`` metadata), ``"tokens"`` for
        a file with offsets and no such metadata, else None (the file does not say)."""
        recorded = self.metadata.get("pooling")
        if recorded:
            return recorded
        return "tokens" if self.offsets is not None else None

    @property
    def num_texts(self) -> int:
        """Texts in the file: ``len(offsets) - 1`` for a token-level file, else the row count."""
        return len(self.offsets) - 1 if self.offsets is not None else (self.shape[0] if self.shape else 0)

    def rows_of(self, text: int) -> torch.Tensor:
        """Text ``text``'s stored rows: ``tensor[text]``, or its ``(n, ...)`` token rows."""
        if self.offsets is None:
            return self.tensor[text]
        return self.tensor[int(self.offsets[text]) : int(self.offsets[text + 1])]
