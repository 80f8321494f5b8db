"""Check a sentence-transformers embedding of a causal LM, against itself and against this
package's single-sample extraction of the same model.

    PADDING_AUDIT_MODEL=folder python examples/sentence_transformers_check.py

sentence-transformers 6.3.0, given a plain Hugging Face folder of a causal LM (no
sentence-transformers config), builds ``Transformer`` + ``Pooling("lasttoken")``. Batching is
sound: it pads on the right and pools with the attention mask, so ``lasttoken`` reads each text's
last real token and ``mean`` averages its real tokens (``exact`` against itself). But when the
tokenizer has a chat template, its modality config carries a ``"message"`` entry and every plain
string is rendered through the template first (SmolLM2's default system turn, then the text as a
user turn): the model-based check names ``chat-template``. The one line that embeds the text as
it is: ``model[0].modality_config.pop("message")``.
"""

from __future__ import annotations

import os

import torch

from extraction import check_extractor, load_model
from extraction.samples import SAMPLE_TEXTS


def load(folder: str | None = None, pooling: str = "lasttoken", chat_template: bool = True):
    """A SentenceTransformer over ``folder`` (default ``$PADDING_AUDIT_MODEL``) with ``pooling``
    (``"lasttoken"``, its default for a causal LM, or ``"mean"``); ``chat_template=False`` is the fix."""
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(folder or os.environ["PADDING_AUDIT_MODEL"])
    if not chat_template:
        transformer.modality_config.pop("message")  # the one line: plain strings stay plain text
    pooled = models.Pooling(transformer.get_embedding_dimension(), pooling)
    return SentenceTransformer(modules=[transformer, pooled], device="cpu")


def encoder(model, batch_size: int = 32):
    """The recipe: ``model.encode`` of every text, batched as sentence-transformers batches it."""

    def extract(texts: list[str]) -> torch.Tensor:
        return model.encode(texts, batch_size=batch_size, convert_to_tensor=True)  # (B, d)

    return extract


def extract(texts: list[str]) -> torch.Tensor:
    """For ``padding-audit check examples/sentence_transformers_check.py:extract``."""
    return encoder(load())(texts)


if __name__ == "__main__":
    folder = os.environ["PADDING_AUDIT_MODEL"]
    for chat_template in (True, False):
        st_model = load(folder, "mean", chat_template=chat_template)
        itself = check_extractor(encoder(st_model), texts=SAMPLE_TEXTS[:6])
        against = check_extractor(encoder(st_model), load_model(folder), SAMPLE_TEXTS[:6], pooling="mean")
        print(f"chat_template={chat_template}: itself {itself.verdict}; model {against.verdict} {against.likely_cause}")
