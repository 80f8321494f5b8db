"""Run a strategy over tokenized texts and keep only the last-real-token rows.

For every text this keeps the hidden state at every layer (the ``hidden_states``
convention: the embeddings, then the output of each block, the last one as the model
returns it, i.e. after the final norm) and the next-token logits at the position read.
Full per-position states of a batch live only for the duration of its forward pass.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .strategies import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, Strategy, get_strategy
from .texts import TokenizedTexts

if TYPE_CHECKING:
    from .models import LoadedModel

logger = logging.getLogger(__name__)

#: ``progress(done_texts, total_texts)``, called after every forward pass.
ProgressCallback = Callable[[int, int], None]


@dataclass
class ExtractionResult:
    """The rows one strategy extracted, in input order (``N`` texts, ``L`` layers kept, width ``d``)."""

    strategy: str
    hidden: torch.Tensor  # (N, L, d) float32 on cpu: last-real-token state per kept layer
    layers: list[int]  # hidden_states index of each of the L kept layers
    logits: torch.Tensor | None  # (N, V) float32: the model's own next-token logits at the read position
    read_token_ids: torch.Tensor  # (N,) token id at the position read
    read_position_ids: torch.Tensor  # (N,) position id the model used there
    saw_other_text: torch.Tensor  # (N,) bool: the read position could attend to another text
    saw_padding: torch.Tensor  # (N,) bool: it could attend to (or is) a pad position
    forward_passes: int
    real_tokens: int  # tokens of the texts themselves
    computed_positions: int  # positions the model computed, padding included
    seconds: float

    @property
    def pad_fraction(self) -> float:
        """Fraction of computed positions that were padding."""
        return 1.0 - self.real_tokens / self.computed_positions if self.computed_positions else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.real_tokens / self.seconds if self.seconds > 0 else float("inf")


def _supports_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def extract_states(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    strategy: str | Strategy,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    layers: Sequence[int] | None = None,
    keep_logits: bool = True,
    progress: ProgressCallback | None = None,
) -> ExtractionResult:
    """Extract last-real-token states of every text with ``strategy``.

    ``layers`` selects ``hidden_states`` indices to keep (default all, ``0..num_layers``).
    """
    if isinstance(strategy, str):
        strategy = get_strategy(strategy)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    model = loaded.model
    num_states = loaded.num_hidden_layers + 1
    layers = list(range(num_states)) if layers is None else list(layers)
    for layer in layers:
        if not 0 <= layer < num_states:
            raise ValueError(f"layer {layer} out of range: this model has hidden_states 0..{num_states - 1}")
    n, width = len(tokenized), loaded.hidden_size
    hidden = torch.empty(n, len(layers), width, dtype=torch.float32)  # (N, L, d)
    logits: torch.Tensor | None = None  # (N, V), allocated once the vocabulary width is known
    facts = {
        key: torch.empty(n, dtype=dtype)
        for key, dtype in (
            ("token_ids", torch.long),
            ("position_ids", torch.long),
            ("saw_other_text", torch.bool),
            ("saw_padding", torch.bool),
        )
    }
    use_logits_to_keep = _supports_logits_to_keep(model)
    groups = strategy.plan(tokenized.lengths, batch_size, max_batch_tokens)
    computed = done = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for group in groups:
            layout = strategy.layout([tokenized.token_ids[i] for i in group], loaded.pad_token_id)
            computed += layout.input_ids.numel()
            rows, cols = layout.read_rows.to(loaded.device), layout.read_cols.to(loaded.device)
            kwargs = {}
            if use_logits_to_keep:
                # Only the read columns go through lm_head: (B, C, V) with C distinct columns.
                keep_cols, col_index = torch.unique(layout.read_cols, return_inverse=True)
                kwargs["logits_to_keep"] = keep_cols.to(loaded.device)
            output = model(
                **layout.model_inputs(loaded.dtype, loaded.device),
                output_hidden_states=True,
                use_cache=False,
                **kwargs,
            )
            states = output.hidden_states  # tuple of L+1 tensors (B, T, d)
            picked = torch.stack([states[layer][rows, cols] for layer in layers], dim=1)  # (K, L, d)
            hidden[group] = picked.float().cpu()
            if keep_logits:
                if logits is None:
                    logits = torch.empty(n, output.logits.shape[-1], dtype=torch.float32)
                logit_cols = col_index.to(loaded.device) if use_logits_to_keep else cols
                logits[group] = output.logits[rows, logit_cols].float().cpu()  # (K, V)
            for key, value in layout.read_facts().items():
                facts[key][group] = value
            done += len(group)
            if progress is not None:
                progress(done, n)
    seconds = time.perf_counter() - start
    result = ExtractionResult(
        strategy=strategy.name,
        hidden=hidden,
        layers=layers,
        logits=logits,
        read_token_ids=facts["token_ids"],
        read_position_ids=facts["position_ids"],
        saw_other_text=facts["saw_other_text"],
        saw_padding=facts["saw_padding"],
        forward_passes=len(groups),
        real_tokens=sum(tokenized.lengths),
        computed_positions=computed,
        seconds=seconds,
    )
    logger.info(
        "%s: %d texts, %d passes, %.1f tokens/s, %.0f%% padding",
        strategy.name,
        n,
        len(groups),
        result.tokens_per_second,
        100 * result.pad_fraction,
    )
    return result
