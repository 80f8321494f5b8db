"""What a stored-states file says about how it was made: its format name, the layers it holds
(parsed and described), the library versions and the metadata every export writes
(:func:`base_metadata`, read back by :mod:`extraction.storage.stored_states`).
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..pooling import DEFAULT_POOLING, Pooling
from ..texts import TokenizedTexts, texts_sha256

if TYPE_CHECKING:
    from ..comparison.choose import StrategyChoice
    from ..models import LoadedModel

FORMAT = "padding-audit hidden states v1"
_VERSIONED = ("torch", "transformers", "tokenizers", "safetensors", "numpy")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def parse_layers(spec: str | Sequence[int] | None, num_states: int) -> list[int]:
    """``"all"``/None -> every hidden state; ``"i,j,..."`` or a list -> those indices
    (negative ones count from the end), validated and deduplicated in the order given."""
    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return list(range(num_states))
    if isinstance(spec, str):
        try:
            values = [int(part) for part in spec.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"layers must be 'all' or comma-separated integers, got {spec!r}") from None
    else:
        values = [int(v) for v in spec]
    if not values:
        raise ValueError("no layer named: use 'all' or comma-separated integers")
    for value in values:
        if not -num_states <= value < num_states:
            raise ValueError(f"layer {value} out of range: this model has hidden_states 0..{num_states - 1}")
    return list(dict.fromkeys(v % num_states for v in values))


def describe_layers(layers: Sequence[int]) -> str:
    """``"layers 0..30"`` for a contiguous run of 3 or more, else ``"layer 4"`` / ``"layers 2,5"``."""
    layers = list(layers)
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"layers {layers[0]}..{layers[-1]}"
    return ("layer " if len(layers) == 1 else "layers ") + ",".join(map(str, layers))


def base_metadata(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    strategy: str,
    choice: StrategyChoice | None,
    layers: list[int],
    store_dtype: str,
    batch_size: int,
    pooling: Pooling = DEFAULT_POOLING,
) -> dict[str, str]:
    numbering = (
        "layers in the hidden_states numbering: 0 = embeddings, k = output of block k, the last one after the "
        "final norm"
    )
    read = {
        "last": "last real token of each text",
        "mean": "mean of each text's token states, at each layer",
        "tokens": "one row per token of each text, at each layer",
    }[pooling]
    order = (
        "text i owns rows offsets[i]:offsets[i+1] (tensor 'offsets'), texts in input order, tokens in text order"
        if pooling == "tokens"
        else "row i is the i-th input text"
    )
    return {
        "format": FORMAT,
        "row_order": order,
        "convention": f"{read}; {numbering}",
        "pooling": pooling,
        "model": loaded.name,
        "model_source": loaded.source,
        "model_description": loaded.description,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "stored_dtype": store_dtype,
        "attn_implementation": loaded.attn_implementation,
        "strategy": strategy,
        "strategy_choice": json.dumps(choice.to_dict() if choice else {"chosen": strategy, "named": True}),
        "batch_size": str(batch_size),
        "layers": json.dumps(layers),
        "num_texts": str(len(tokenized)),
        "hidden_size": str(loaded.hidden_size),
        "texts_sha256": texts_sha256(tokenized.texts),
        "truncated_texts": json.dumps([i for i, _ in tokenized.truncated]),
        "versions": json.dumps(library_versions()),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
