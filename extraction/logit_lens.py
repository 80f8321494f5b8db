"""The ``lm_head`` side of a comparison: logit tolerances, ``lm_head`` on stored or extracted
states, and the logit lens (per layer, does ``lm_head(final_norm(h))`` give single's top-1?).

Defined for ``last`` pooling only: ``lm_head`` predicts the next token from a last token's
state, not from a mean or from every token. Used by :mod:`extraction.comparison.compare`, the audit's
checks, ``auto``'s probe and the probes' zero-shot accuracy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from . import metrics

if TYPE_CHECKING:
    from .models import LoadedModel

#: Rows of logits computed together in the logit lens (about 50 MB of float32 logits at V = 49,152).
LENS_ROWS = 256


def logit_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) for comparing logits computed in ``dtype``."""
    return (1e-4, 1e-5) if dtype == torch.float32 else (5e-2, 1e-2)


def lm_head_inputs(loaded: LoadedModel, states: torch.Tensor, final_norm: bool) -> torch.Tensor:
    """What ``lm_head`` is given: ``states`` (..., d) on the model's device and dtype, after the
    final norm when ``final_norm``."""
    with torch.inference_mode():
        x = states.to(device=loaded.device, dtype=loaded.dtype)
        if final_norm and loaded.final_norm is not None:
            x = loaded.final_norm(x)
        return x


def apply_lm_head(loaded: LoadedModel, states: torch.Tensor, final_norm: bool) -> torch.Tensor:
    """``lm_head(states)`` (optionally after the final norm) in the model's dtype: (..., d) -> (..., V) float32."""
    with torch.inference_mode():
        return loaded.lm_head(lm_head_inputs(loaded, states, final_norm)).float().cpu()


def _max_head_row_norm(loaded: LoadedModel) -> float | None:
    """``max_v |W_v|`` of a linear ``lm_head`` in float32/64 (None otherwise: no certificate)."""
    head = loaded.lm_head
    if loaded.dtype not in (torch.float32, torch.float64) or not isinstance(head, torch.nn.Linear):
        return None
    with torch.inference_mode():
        return float(head.weight.detach().double().norm(dim=-1).max())


def logit_lens_agreement(
    loaded: LoadedModel, reference_hidden: torch.Tensor, hidden_by_name: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per layer, the fraction of texts whose logit-lens top-1 matches the reference's.

    Logit lens: ``lm_head(final_norm(h))`` for every layer but the last, which the model
    returns already normed (``lm_head(h)``). Inputs (N, L, d); outputs (L,) per name.

    Most rows of a sound strategy differ from the reference by rounding only, and their
    agreement is certain without computing their V logits: with ``x`` and ``x_ref`` the
    ``lm_head`` inputs and ``B = max_v |W_v| |x - x_ref|`` (Cauchy-Schwarz), no logit moves by
    more than ``B``, so the top-1 agrees (:func:`~extraction.metrics.top1_agrees`) when
    ``2B`` is within the tolerance or below the reference's gap between its first and second
    logits. A factor 2 margin covers the rounding of the computed logits (``4B`` is tested);
    float32/64 only. The other rows, and every row of 16-bit models, go through ``lm_head``.
    Rows go through ``lm_head`` many at a time, every layer together (the vocabulary matrix
    is read once per :data:`LENS_ROWS` rows, not once per layer): the reference's rows one
    block of texts at a time, then the uncertified rows of that block.
    """
    atol, rtol = logit_tolerance(loaded.dtype)
    names = list(hidden_by_name)
    n, num_states = reference_hidden.shape[:2]
    agrees = {name: torch.zeros(n, num_states, dtype=torch.bool) for name in names}
    head_norm = _max_head_row_norm(loaded)
    texts_per_block = max(1, LENS_ROWS // num_states)

    def head(rows: torch.Tensor) -> torch.Tensor:  # (R, d) in the model's dtype -> (R, V) float32 on cpu
        with torch.inference_mode():
            return torch.cat(
                [loaded.lm_head(rows[k : k + LENS_ROWS]).float().cpu() for k in range(0, len(rows), LENS_ROWS)]
            )

    for start in range(0, n, texts_per_block):
        block = slice(start, start + texts_per_block)
        stacked = torch.stack(
            [reference_hidden[block]] + [hidden_by_name[name][block] for name in names]
        )  # (1 + S, n_block, L, d)
        inputs = torch.stack(
            [
                lm_head_inputs(loaded, stacked[:, :, layer], final_norm=layer < num_states - 1)
                for layer in range(num_states)
            ]
        )  # (L, 1 + S, n_block, d)
        num_layers, _, n_block, width = inputs.shape
        reference_logits = head(inputs[:, 0].reshape(-1, width)).view(num_layers, n_block, -1)  # (L, n_block, V)
        same = torch.zeros(num_layers, len(names), n_block, dtype=torch.bool)  # (L, S, n_block)
        todo = torch.ones_like(same)
        if head_norm is not None:
            spread = (inputs[:, 1:].double() - inputs[:, :1].double()).norm(dim=-1).cpu()  # (L, S, n_block)
            top2 = reference_logits.topk(2, dim=-1).values.double()  # (L, n_block, 2)
            gap = (top2[..., 0] - top2[..., 1])[:, None]  # (L, 1, n_block)
            tolerance = (atol + rtol * top2[..., 0].abs())[:, None]
            finite = (torch.isfinite(reference_logits.amax(-1)) & torch.isfinite(reference_logits.amin(-1)))[:, None]
            bound = 4 * head_norm * spread
            certain = ((bound <= tolerance) | (bound < gap)) & finite & torch.isfinite(spread)
            same |= certain
            todo &= ~certain
        layer_rows, strategy_rows, text_rows = todo.nonzero(as_tuple=True)
        if len(layer_rows):
            logits = head(inputs[layer_rows, strategy_rows + 1, text_rows])  # (R, V)
            same[layer_rows, strategy_rows, text_rows] = metrics.top1_agrees(
                logits, reference_logits[layer_rows, text_rows], atol, rtol
            )
        for k, name in enumerate(names):
            agrees[name][block] = same[:, k].T
    return {name: agrees[name].float().mean(0) for name in names}
