"""Token ids a store keeps beside its states (``input_ids`` / ``token_ids``), read when asked.

A store that carries its own ids needs no texts file and no guess about how the texts were
tokenized: the audit re-extracts from the ids (:mod:`extraction.audit.inputs`) and, when texts
are given too, says whether the ids are those texts' tokenization
(:mod:`extraction.audit.stored_tokens`). The readers that find ids are
:mod:`.engine_formats` (safetensors / ``.pt`` tensors, vLLM folders) and :mod:`.columnar`
(Parquet, ``datasets`` folders).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: Tensor (or column) names read as a store's token ids, in the order they are looked for.
ID_NAMES = ("input_ids", "token_ids")

#: ``fetch(texts)``: the token ids of each text index in ``texts``, in that order.
IdsFetch = Callable[[list[int]], list[list[int]]]


@dataclass
class StoredTokenIds:
    """The token ids of a store's texts.

    Attributes:
        name: the tensor or column they come from (``"input_ids"``, ``"token_ids"``).
        count: the number of texts (text i owns ``of([i])[0]``).
        layout: how the file lays them out, in words (e.g. ``"token_ids (R,) with offsets (N + 1,)"``).
        ids_read: token ids read so far (the sampled texts' ids, not the file's).
    """

    name: str
    count: int
    layout: str
    fetch: IdsFetch
    ids_read: int = 0

    def of(self, texts: Sequence[int]) -> list[list[int]]:
        """The ids of the texts at ``texts`` (text indices), as lists of ints."""
        texts = [int(t) for t in texts]
        if any(not 0 <= t < self.count for t in texts):
            raise IndexError(f"{self.name}: text index outside 0..{self.count - 1}")
        found = self.fetch(texts)
        self.ids_read += sum(len(ids) for ids in found)
        return found


__all__ = ["ID_NAMES", "StoredTokenIds"]
