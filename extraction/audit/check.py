"""Measuring stored rows against fresh extraction (single-sample, or a layout verified to give the
same states: :mod:`.reference`): cosine, relative L2 error,
bit-exactness, length ratio and ``lm_head`` top-1 per row (:func:`check_rows`; ``lm_head`` under
``last`` pooling only), a text's token rows under ``tokens`` pooling (:func:`check_token_rows`,
where another row count than the text's tokens is itself a defect), and the helpers that pick
and slice the rows."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import metrics
from ..extract import extract_states, lm_head_not_run, wants_lm_head
from ..logit_lens import apply_lm_head, logit_tolerance
from ..pooling import DEFAULT_POOLING, Pooling, row_offsets
from ..strategies import REFERENCE
from ..texts import TokenizedTexts
from .row_check import RowCheck

if TYPE_CHECKING:
    from ..models import LoadedModel


def subset(tokenized: TokenizedTexts, indices: Sequence[int]) -> TokenizedTexts:
    """The texts at ``indices``, already tokenized."""
    return TokenizedTexts(
        [tokenized.texts[i] for i in indices], [tokenized.token_ids[i] for i in indices], [], tokenized.max_tokens
    )


def lm_head_note(layer: int, num_states: int) -> str:
    if layer == num_states - 1:
        return f"lm_head on the stored layer {layer} (the last, already after the final norm)"
    return f"final norm then lm_head on the stored layer {layer} (an intermediate layer: logit lens)"


def checked_lm_head_note(check: RowCheck, layers: Sequence[int], num_states: int, pooling: Pooling) -> str:
    """How ``check`` applied lm_head (:func:`lm_head_note`), or why it did not: ``pooling`` other
    than ``last``, or lm_head not run (:data:`~extraction.extract.LM_HEAD_NOT_RUN`)."""
    if pooling != "last":
        return f"no lm_head check under {pooling} pooling: lm_head predicts from a last token's state"
    if check.top1_same is None:
        return lm_head_not_run(layers)
    return lm_head_note(max(layers), num_states)


def token_rows(stored: torch.Tensor, offsets: torch.Tensor, texts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``texts`` from ``stored`` (R, L, d) with ``offsets`` (N + 1,): ``(rows, their offsets)``."""
    parts = [stored[int(offsets[i]) : int(offsets[i + 1])] for i in texts]
    counts = torch.tensor([len(part) for part in parts], dtype=torch.long)
    return torch.cat(parts) if parts else stored[:0], row_offsets(counts)


def check_token_rows(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    stored: torch.Tensor,
    offsets: torch.Tensor,
    layers: Sequence[int],
    layout: str = REFERENCE,
) -> RowCheck:
    """Re-extract ``tokenized`` (K texts) with ``layout`` (default one at a time) under ``tokens`` pooling
    and measure their stored rows ``stored`` (R, L, d), text k owning ``offsets[k]:offsets[k + 1]``, against it.

    Per text (:func:`~extraction.metrics.per_text_token_metrics`): the worst cosine and relative L2
    over the rows both sides have, position by position; ``rows_differ`` when the row count is not
    the token count (corrupted whatever the shared rows measure); bit-exact when the counts match
    and every row is equal; the length ratio is the mean over the shared rows. No lm_head checks.
    """
    fresh = extract_states(loaded, tokenized, layout, layers=list(layers), keep_logits=False, pooling="tokens")
    measured = metrics.per_text_token_metrics(stored, offsets, fresh.hidden, fresh.offsets)
    counts, fresh_counts = offsets.diff(), fresh.offsets.diff()
    bit_exact = torch.zeros(len(counts), dtype=torch.bool)
    norm_ratio = torch.full((len(counts), len(layers)), float("nan"))
    for k in range(len(counts)):
        common = int(min(counts[k], fresh_counts[k]))
        a = stored[int(offsets[k]) : int(offsets[k]) + common]  # (m, L, d)
        b = fresh.hidden[int(fresh.offsets[k]) : int(fresh.offsets[k]) + common]
        bit_exact[k] = bool(counts[k] == fresh_counts[k]) and bool((a == b).all())
        if common:
            norm_ratio[k] = (a.double().norm(dim=-1) / b.double().norm(dim=-1).clamp(min=1e-12)).mean(0).float()
    return RowCheck(
        cosine=measured["cosine"].float(),
        relative_l2=measured["relative_l2"].float(),
        bit_exact=bit_exact,
        norm_ratio=norm_ratio,
        top1_stored=None,
        top1_fresh=None,
        top1_same=None,
        top1_stored_renormed=None,
        rows_differ=measured["rows_differ"],
    )


def check_rows(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    stored: torch.Tensor,
    layers: Sequence[int],
    pooling: Pooling = DEFAULT_POOLING,
    layout: str = REFERENCE,
    lm_head: bool | None = None,
) -> RowCheck:
    """Re-extract ``tokenized`` with ``layout`` (default one text at a time) and measure ``stored``
    (K, L, d) against it, both pooled by ``pooling`` (``last`` or ``mean``; ``tokens`` is :func:`check_token_rows`).

    Under ``last`` the lm_head checks use the last stored layer if it is the model's last hidden
    state (``lm_head(h)``), otherwise the highest stored layer (``lm_head(final_norm(h))``);
    "the model's own top-1" is the fresh next-token prediction, which needs the whole pass. They
    run when ``lm_head`` says so (:func:`~extraction.extract.wants_lm_head`: by default only when
    the last hidden state is stored); otherwise the fresh pass stops after the deepest stored layer
    and the ``top1_*`` fields are None, as under ``mean``, which has none.
    """
    if pooling == "tokens":
        raise ValueError("tokens rows are checked with check_token_rows (they need offsets)")
    layers = list(layers)
    num_states = loaded.num_hidden_layers + 1
    run_lm_head = pooling == "last" and wants_lm_head(lm_head, layers, num_states)
    fresh = extract_states(loaded, tokenized, layout, layers=layers, keep_logits=run_lm_head, pooling=pooling)
    similarity = state_cosine(stored, fresh.hidden).float()  # (K, L)
    relative_l2 = state_relative_l2(stored, fresh.hidden).float()  # (K, L)
    bit_exact = (stored == fresh.hidden).flatten(1).all(1)  # (K,)
    norm_ratio = (stored.double().norm(dim=-1) / fresh.hidden.double().norm(dim=-1).clamp(min=1e-12)).float()
    if not run_lm_head:
        return RowCheck(similarity, relative_l2, bit_exact, norm_ratio, None, None, None, None, fresh=fresh.hidden)
    lens_position = int(np.argmax(layers))
    is_last = layers[lens_position] == num_states - 1
    atol, rtol = logit_tolerance(loaded.dtype)
    stored_logits = apply_lm_head(loaded, stored[:, lens_position], final_norm=not is_last)  # (K, V)
    fresh_logits = apply_lm_head(loaded, fresh.hidden[:, lens_position], final_norm=not is_last)
    reference = fresh.logits  # (K, V): the model's own prediction
    renormed = None
    if is_last and loaded.final_norm is not None:
        renormed_logits = apply_lm_head(loaded, stored[:, lens_position], final_norm=True)
        renormed = metrics.top1_agrees(renormed_logits, reference, atol, rtol)
    return RowCheck(
        cosine=similarity,
        relative_l2=relative_l2,
        bit_exact=bit_exact,
        norm_ratio=norm_ratio,
        top1_stored=metrics.top1_agrees(stored_logits, reference, atol, rtol),
        top1_fresh=metrics.top1_agrees(fresh_logits, reference, atol, rtol),
        top1_same=metrics.top1_agrees(stored_logits, fresh_logits, atol, rtol),
        top1_stored_renormed=renormed,
        fresh=fresh.hidden,
    )


def state_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last dimension, where two all-zero vectors count as
    identical (1.0): a pad token's embedding can be all zeros (``padding_idx``)."""
    out = metrics.cosine_similarity(a, b)
    both_zero = (a == 0).all(-1) & (b == 0).all(-1)
    return out.masked_fill(both_zero, 1.0)


def state_relative_l2(stored: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """Relative L2 error ``|stored - fresh| / |fresh|`` along the last dimension, where two
    all-zero vectors count as identical (0.0), like :func:`state_cosine`."""
    out = metrics.relative_l2_error(stored, fresh)
    both_zero = (stored == 0).all(-1) & (fresh == 0).all(-1)
    return out.masked_fill(both_zero, 0.0)


def concat_checks(checks: list[RowCheck]) -> RowCheck:
    def joined(name: str) -> torch.Tensor | None:
        parts = [getattr(c, name) for c in checks]
        return None if any(p is None for p in parts) else torch.cat(parts)

    return RowCheck(
        cosine=torch.cat([c.cosine for c in checks]),
        relative_l2=torch.cat([c.relative_l2 for c in checks]),
        bit_exact=torch.cat([c.bit_exact for c in checks]),
        norm_ratio=torch.cat([c.norm_ratio for c in checks]),
        top1_stored=joined("top1_stored"),
        top1_fresh=joined("top1_fresh"),
        top1_same=joined("top1_same"),
        top1_stored_renormed=joined("top1_stored_renormed"),
        rows_differ=joined("rows_differ"),
        fresh=joined("fresh"),
    )


def take_rows(check: RowCheck, index: torch.Tensor) -> RowCheck:
    """``check`` with its K rows reordered (or selected) by ``index`` (K',) long."""

    def taken(name: str) -> torch.Tensor | None:
        value = getattr(check, name)
        return None if value is None else value[index]

    return RowCheck(**{name: taken(name) for name in RowCheck.__dataclass_fields__})


def sample_indices(n: int, sample: int | None, seed: int = 0) -> list[int]:
    """All of ``range(n)`` when ``sample`` is None or at least n, else ``sample`` random indices, sorted."""
    if sample is not None and sample < 1:
        raise ValueError(f"sample must be at least 1, got {sample}")
    if sample is None or sample >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), sample))
