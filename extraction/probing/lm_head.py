"""The zero-shot ``lm_head`` side of a probe run: the label tokens (when every label is one token of
the vocabulary) and ``lm_head``'s choice among them on final-layer states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..extract import lm_head_not_run, wants_lm_head
from ..logit_lens import apply_lm_head
from ..pooling import Pooling

if TYPE_CHECKING:
    from ..models import LoadedModel


def label_token_ids(tokenizer, classes: Sequence[str]) -> tuple[list[int] | None, str | None]:
    """(token id per class, None) when every label is exactly one token of the vocabulary
    (encoded as written, without special tokens), else (None, the reason)."""
    ids: list[int] = []
    for label in classes:
        encoded = list(tokenizer(label, add_special_tokens=False)["input_ids"])
        if len(encoded) != 1:
            return None, (
                f"label {label!r} is {len(encoded)} tokens, not one, so lm_head cannot score it as a next token "
                "(labels are tokenized as written: ' positive' with its leading space is one token in many "
                "vocabularies, 'positive' may not be)"
            )
        ids.append(encoded[0])
    if len(set(ids)) != len(ids):
        return None, "two labels map to the same token, so lm_head cannot tell them apart"
    return ids, None


def label_predictions(label_logits: torch.Tensor) -> np.ndarray:
    """(N, C) logits of the label tokens -> (N,) class index, ``argmax_k logits[:, k]``."""
    return label_logits.argmax(-1).cpu().numpy()


def lm_head_labels(tokenizer, classes: Sequence[str], pooling: Pooling) -> tuple[list[int] | None, str | None]:
    """:func:`label_token_ids`, and (None, the reason) under a pooling other than ``last``: ``lm_head``
    predicts the next token from a last token's state, not from a mean of states."""
    if pooling != "last":
        return None, f"lm_head predicts from a last token's state, not from a {pooling} of states"
    return label_token_ids(tokenizer, classes)


def probe_lm_head(
    tokenizer, classes: Sequence[str], pooling: Pooling, lm_head: bool | None, probed: Sequence[int], num_states: int
) -> tuple[list[int] | None, str | None]:
    """:func:`lm_head_labels` where the zero-shot accuracy runs, else
    (None, :func:`~extraction.extract.lm_head_not_run`).

    It needs the final layer, so the whole pass: it runs as ``lm_head`` says, by default only when
    the last hidden state (``num_states - 1``) is among the ``probed`` layers
    (:func:`~extraction.extract.wants_lm_head`); a probe of middle layers alone stops each pass
    after the deepest of them."""
    token_ids, note = lm_head_labels(tokenizer, classes, pooling)
    if token_ids is not None and not wants_lm_head(lm_head, probed, num_states):
        return None, lm_head_not_run(probed)
    return token_ids, note


def lm_head_label_predictions(loaded: LoadedModel, final_states: np.ndarray, token_ids: Sequence[int]) -> np.ndarray:
    """(N,) class index: argmax over the label tokens of ``lm_head`` applied to final-layer states
    ``(N, d)``. ``hidden_states[-1]`` is already after the final norm: ``lm_head`` alone gives the logits."""
    logits = apply_lm_head(loaded, torch.from_numpy(np.ascontiguousarray(final_states)), final_norm=False)  # (N, V)
    return label_predictions(logits[:, list(token_ids)])
