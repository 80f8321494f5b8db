"""Calling the user's function: each call named and counted, each return checked and split into
one block of states per text (``(L, d)`` under ``last``/``mean``, ``(m, L, d)`` under ``tokens``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..pooling import Pooling
from .remote import ChildProcessFailed
from .returns import states_from_return, token_states_from_return

#: ``extract_fn(texts) -> (N, d) or (N, L, d)`` array or tensor, row i for text i (``tokens``:
#: ``(rows, offsets)``).
ExtractFn = Callable[[list[str]], Any]


def function_name(extract_fn: ExtractFn) -> str:
    return getattr(extract_fn, "__qualname__", None) or type(extract_fn).__name__


@dataclass
class Returned:
    """One call's return: ``tensor`` float32 ``(N, L, d)`` (``tokens``: ``(R, L, d)``), its dtype as
    returned, and ``blocks``, text i's states ``(L, d)`` (``tokens``: its rows ``(m, L, d)``)."""

    tensor: torch.Tensor
    dtype: str
    blocks: list[torch.Tensor]
    shape: tuple[int, ...]  # as returned: (N, d), (N, L, d); tokens (R, d), (R, L, d)


class FunctionCalls:
    """Calls ``extract_fn`` and keeps what each call was (``made``, in order). Every return must
    have the shape of the first one past its rows (the same layers and width); anything wrong,
    the function raising included, is one ``ValueError`` naming the call."""

    def __init__(self, extract_fn: ExtractFn, pooling: Pooling, layers: Sequence[int] | None):
        self.extract_fn = extract_fn
        self.name = function_name(extract_fn)
        self.pooling = pooling
        self.layers = layers
        self.made: list[str] = []
        self.shape: tuple[int, ...] | None = None  # (L, d) of every return

    def __call__(self, texts: Sequence[str], what: str) -> Returned:
        self.made.append(what)
        try:
            value = self.extract_fn(list(texts))  # a copy: the function may not change our texts
        except ChildProcessFailed as error:  # already worded, with the child's stderr
            raise error.on(what) from None
        except Exception as error:  # noqa: BLE001 - any failure of the user's code is reported as one line
            raise ValueError(f"extract_fn {self.name} raised {type(error).__name__} on {what}: {error}") from error
        offsets = None
        try:
            if self.pooling == "tokens":
                tensor, offsets, dtype = token_states_from_return(value, len(texts), self.layers)
            else:
                tensor, dtype = states_from_return(value, len(texts), self.layers)
        except ValueError as error:
            raise ValueError(f"{error} (on {what})") from None
        returned_shape = tuple(tensor.shape)
        tensor = tensor[:, None] if tensor.dim() == 2 else tensor  # (N, L, d)
        shape = tuple(tensor.shape[1:])
        if self.layers is not None and shape[0] != len(self.layers):
            raise ValueError(
                f"extract_fn returned {shape[0]} layers on {what} but {len(self.layers)} were named in layers="
            )
        if self.shape is None:
            self.shape = shape
        elif shape != self.shape:
            raise ValueError(
                f"extract_fn returned states of (layers, width) {shape} on {what} but {self.shape} on "
                f"{self.made[0]}: every call must return the same layers and width"
            )
        if offsets is None:
            blocks = list(tensor)
        else:
            blocks = [tensor[int(offsets[i]) : int(offsets[i + 1])] for i in range(len(texts))]
        return Returned(tensor, dtype, blocks, returned_shape)
