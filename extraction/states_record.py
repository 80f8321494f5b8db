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
        offsets: ``(N + 1,)`` int64 when the file also holds an ``offsets`` tensor (``tokens``
            pooling: ``tensor`` is then ``(R, L, d)`` and text i owns rows ``offsets[i]:offsets[i + 1]``).
    """

    tensor: torch.Tensor
    source: str
    key: str | None
    stored_dtype: str
    metadata: dict[str, str] = field(default_factory=dict)
    offsets: torch.Tensor | None = None

    @property
    def pooling(self) -> str | None:
        """The pooling recorded by ``extract`` in the metadata (``"pooling"``), if any."""
        return self.metadata.get("pooling") or None

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
