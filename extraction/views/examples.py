"""The Audit page's worked example: a stored-states file as a buggy pipeline writes it
(right padding read at position -1, batches of :data:`EXAMPLE_BATCH`, the last layer), on
texts whose lengths differ within a batch so that most are padded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..extract import extract_states
from ..samples import SAMPLE_TEXTS
from ..storage.stored_states import StoredStates
from ..texts import tokenize_texts

if TYPE_CHECKING:
    from ..models import LoadedModel

#: Texts per forward pass of the buggy extraction.
EXAMPLE_BATCH = 4
#: The sample texts and longer variants, so that batches of 4 pad most texts.
EXAMPLE_TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:6]]


def example_states(loaded: LoadedModel) -> tuple[StoredStates, list[str]]:
    """(stored states, their texts): ``right-naive`` last-layer states of :data:`EXAMPLE_TEXTS`,
    one (N, d) float32 row per text, as a pipeline with the classic padding bug stores them."""
    tokenized = tokenize_texts(loaded.tokenizer, EXAMPLE_TEXTS, max_tokens=loaded.context_length)
    last = loaded.num_hidden_layers
    hidden = extract_states(
        loaded, tokenized, "right-naive", batch_size=EXAMPLE_BATCH, layers=[last], keep_logits=False
    ).hidden[:, 0]  # (N, d)
    source = f"example: right padding read at position -1, batches of {EXAMPLE_BATCH}, layer {last}"
    return StoredStates(hidden, source, None, "float32"), list(EXAMPLE_TEXTS)
