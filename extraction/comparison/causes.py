"""Why a strategy's states differ from single-sample extraction: a cause kind and a sentence.

:func:`diagnose` derives the cause from what was measured (which texts differ, from which
layer on, by how much) and from what the batch layout did to those texts: was the read
position padding, at which position id was it read, could it see other texts or padding.
Every layout fact comes from segment ids, never from token ids: chat texts end in the eos
token, which is often the pad token too. Under ``mean``/``tokens`` pooling the facts are about
every position pooled for the text (:func:`extraction.pooling.span_facts`): pads counted in
a mean, or kept as rows, are the pooled form of a pad state read. The kinds are the closed set
:data:`~extraction.verdicts.CAUSE_KINDS`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..extract import ExtractionResult
from ..verdicts import EXACT_COSINE, CauseKind, corrupted_rows, rounding_bound
from .inputs_read import inputs_read
from .record import StrategyComparison

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)


@dataclass
class ModelFacts:
    """What the cause sentences need to know about the model."""

    name: str
    dtype: str
    uses_absolute_positions: bool
    attn_implementation: str
    pad_token_id: int
    is_random: bool
    attention_window: int | None = None  # sliding/local window the config states, in tokens
    #: Measured (:mod:`extraction.comparison.inputs_read`; None: not measured): the forward pass changes with
    #: the position ids / the 2-D attention mask / masked left pads before the text (with position
    #: ids restarting at the text, whatever the pads hold: positions counted along the row).
    reads_position_ids: bool | None = None
    reads_attention_mask: bool | None = None
    counts_row_positions: bool | None = None

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> ModelFacts:
        try:
            read = inputs_read(loaded)
        except Exception as exc:  # noqa: BLE001 - a model the probe cannot call: the causes go without it
            logger.info("input probe failed on %s: %s", loaded.name, exc)
            read = None
        return cls(
            loaded.name,
            str(loaded.dtype).removeprefix("torch."),
            loaded.uses_absolute_positions,
            loaded.attn_implementation,
            loaded.pad_token_id,
            loaded.is_random,
            loaded.attention_window,
            read.position_ids if read else None,
            read.attention_mask if read else None,
            read.row_offset if read else None,
        )


def _count(mask: torch.Tensor) -> int:
    return int(mask.sum())


def _positions(ext: ExtractionResult, reference: ExtractionResult, texts: torch.Tensor, limit: int = 3) -> str:
    """'text 2 at position 9 instead of 3, ...' for the first ``limit`` of ``texts`` (N,) bool."""
    shown = [
        f"text {i + 1} at position {int(ext.read_position_ids[i])} instead of {int(reference.read_position_ids[i])}"
        for i in texts.nonzero().flatten().tolist()[:limit]
    ]
    more = _count(texts) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def diagnose(comparison: StrategyComparison, reference: ExtractionResult, facts: ModelFacts) -> tuple[CauseKind, str]:
    """Why ``comparison`` differs from ``reference`` (or why it does not): a
    :data:`~extraction.verdicts.CauseKind` and one sentence.

    Every fact about the layout comes from the layout (segment ids: was the read position
    padding, could it see another text or padding; the position ids), never from token
    ids: chat texts end in the eos token, which is often the pad token too.
    """
    ext = comparison.extraction
    n = comparison.cosine.shape[0]
    per_text_min = comparison.cosine.nan_to_num(-1.0).min(1).values  # (N,)
    per_text_rel = comparison.relative_l2.nan_to_num(float("inf")).max(1).values  # (N,)
    top1_differs = ~comparison.top1_same if comparison.top1_same is not None else torch.zeros(n, dtype=torch.bool)
    rows_differ = comparison.rows_differ if comparison.rows_differ is not None else torch.zeros(n, dtype=torch.bool)
    affected = (per_text_min < EXACT_COSINE) | top1_differs | (per_text_rel > rounding_bound(facts.dtype)) | rows_differ
    pad_read = ext.read_is_pad  # (N,) from the layout's segment ids
    other_token = ~pad_read & (ext.read_token_ids != reference.read_token_ids)  # (N,) a real token, not the last
    shifted = ext.read_position_ids != reference.read_position_ids
    layer0_differs = comparison.cosine[:, 0].nan_to_num(-1.0) < EXACT_COSINE
    worst = comparison.min_cosine
    worst_rel = comparison.max_relative_l2
    if comparison.nonfinite:
        bad_layers = (~torch.isfinite(ext.hidden)).any(-1).any(0).nonzero().flatten().tolist()
        where = f"first at layer {bad_layers[0]}" if bad_layers else "in the logits"
        return "unknown", (
            f"NaN or inf values appeared ({comparison.nonfinite} entries, {where}); the states are unusable."
        )
    if rows_differ.any():
        counts, reference_counts = ext.offsets.diff(), reference.offsets.diff()
        example = int(rows_differ.nonzero()[0])
        pads = "pad positions kept as tokens: " if (rows_differ & pad_read).any() else ""
        return "pad-state", (
            f"For {_count(rows_differ)} of {n} texts the rows kept are not the text's tokens ({pads}text "
            f"{example + 1} has {int(counts[example])} rows for {int(reference_counts[example])} tokens): the "
            "positions kept ignore where the text ends, so the row count no longer matches the tokens."
        )
    if not affected.any():
        if shifted.any():
            encoding = (
                "this model reads no position ids (measured: they change nothing)"
                if facts.reads_position_ids is False
                else "this model's position encoding is relative (no absolute position embeddings)"
            )
            return "none", (
                f"Matches single-sample extraction (min cosine {worst:.6f}): the position ids of {_count(shifted)} "
                f"of {n} texts were shifted, but {encoding}, so the shift changes nothing."
            )
        return "none", f"Matches single-sample extraction at every layer (min cosine {worst:.6f})."
    # Structural defects show as large errors; reduced precision adds small ones to every
    # text. Explain the clearly wrong texts when there are any, else every affected one.
    # In float32 anything above float32 rounding is structural (verdicts.rounding_bound).
    severe = corrupted_rows(per_text_min, per_text_rel, facts.dtype)  # (N,)
    target = severe if severe.any() else affected  # (N,) the texts a cause must explain
    k = _count(target)
    majority = max(1, k // 2)
    reduced = facts.dtype != "float32"
    rounding = f"; the others drift by {facts.dtype} rounding" if reduced and (affected & ~target).any() else ""
    layer_note = (
        f" from layer {comparison.first_divergent_layer} on" if comparison.first_divergent_layer is not None else ""
    )
    if (target & pad_read).sum() >= majority and ext.pooling == "mean":
        return "pad-state", (
            f"Pads counted in the mean: for {_count(target & pad_read)} of {n} texts the mean runs over every "
            f"column of the padded row, padding included (the pooling ignores the attention mask){rounding}."
        )
    if (target & pad_read).sum() >= majority:
        return "pad-state", (
            f"For {_count(target & pad_read)} of {n} texts a pad token's state was read instead of the last real "
            f"token (the read position lies in the padding after the text: the read index ignores where the text "
            f"ends){rounding}."
        )
    if (target & other_token).sum() >= majority:
        return "unknown", (
            f"For {_count(target & other_token)} of {n} texts another token's state was read instead of the last "
            f"real token{rounding}."
        )
    after_text = ext.after_other_text if ext.after_other_text is not None else torch.zeros(n, dtype=torch.bool)
    after_pad = ext.after_padding if ext.after_padding is not None else torch.zeros(n, dtype=torch.bool)
    if (
        severe.any()
        and facts.reads_attention_mask is False
        and (facts.reads_position_ids is False or not (target & shifted).any())  # else the shift may be it
        and (target == after_pad).all()
        and not (target & ext.saw_padding).any()
    ):
        # Measured: masking tokens out changes nothing, so the pads before a text reach it.
        return "pad-state", (
            f"The pads before the text passed through the recurrent state; the model ignores the attention mask "
            f"(measured: masking every earlier token changes nothing), and the {k} of {n} texts that differ are "
            f"exactly those with padding before them in their row{layer_note}{rounding}."
        )
    row_offset = (after_pad | after_text) & ~shifted  # (N,) their own position ids given, yet not at the row's start
    if (
        severe.any()
        and facts.reads_position_ids is False
        and facts.counts_row_positions
        and (target == row_offset).all()
        and not (target & (ext.saw_padding | ext.saw_other_text)).any()
    ):
        before = " or ".join(
            what for what, flags in (("padding", after_pad), ("another text", after_text)) if (target & flags).any()
        )
        return "position-shift", (
            f"Positions taken from the padded row because the model ignores the position ids it was given "
            f"(measured: they change nothing, while masked pads before a text do, whatever the pads hold): the {k} "
            f"of {n} texts that differ are exactly those placed after {before} in their row, so their positions "
            f"were counted from the row's start{layer_note}{rounding}."
        )
    if (target & shifted & layer0_differs).sum() >= majority and facts.uses_absolute_positions:
        example = int((target & shifted).nonzero()[0])
        return "position-shift", (
            f"Positions shifted by left padding: the last token of text {example + 1} sat at position "
            f"{int(ext.read_position_ids[example])} instead of {int(reference.read_position_ids[example])}, and this "
            f"model adds absolute position embeddings, so {_count(target & shifted)} of {n} texts differ from the "
            f"embeddings (layer 0) on{rounding}."
        )
    if severe.any() and (target == after_text).all() and not (target & ext.saw_other_text).any():
        return "cross-text", (
            f"The mask hid the other texts, yet the {k} of {n} texts that differ are exactly those placed after "
            f"another text in their row{layer_note}: a layer that does not read the mask (a recurrent or "
            f"state-space state, a convolution) carried the earlier text into them{rounding}."
        )
    own = reference.read_position_ids + 1  # (N,) the text's own tokens up to its read
    spared = after_text & ~target  # (N,) after another text, yet matching
    if (
        severe.any()
        and spared.any()
        and not (target & ~after_text).any()
        and not (target & ext.saw_other_text).any()
        and int(own[target].max()) < int(own[spared].min())
    ):
        # A leak that fades: only the texts read a few tokens after the earlier one still carry it.
        return "cross-text", (
            f"The mask hid the other texts, yet the {k} of {n} texts that differ all sit after another text in their "
            f"row and are read closest to it (at most {int(own[target].max())} tokens of their own), while the "
            f"{_count(spared)} after another text with {int(own[spared].min())} or more tokens match{layer_note}: a "
            f"layer that does not read the mask (a recurrent or state-space state, a convolution) carried the earlier "
            f"text in, and its memory of it fades within a few tokens{rounding}."
        )
    if severe.any() and (target == after_pad).all() and not (target & (ext.saw_padding | shifted)).any():
        return "pad-state", (
            f"The mask hid the padding, yet the {k} of {n} texts that differ are exactly those with padding before "
            f"them in their row{layer_note}: a layer that does not read the attention mask (a recurrent or "
            f"state-space state, a convolution) ran through the pads{rounding}."
        )
    if severe.any() and (target & shifted).sum() >= majority and not (target & ~shifted).any():
        # Relative positions, yet the shifted texts are beyond rounding: the shift is the cause.
        return "position-shift", (
            f"Positions shifted by left padding: {_positions(ext, reference, target & shifted)}; this model's "
            f"positions are relative, yet the {k} shifted texts that differ are beyond rounding (min cosine "
            f"{worst:.4f}, max relative L2 {worst_rel:.4f}){rounding}. Position ids from the mask (left) avoid it."
        )
    if (target & ext.saw_other_text).sum() >= majority and not (target & ~ext.saw_other_text).any():
        alone = _count(~ext.saw_other_text)
        return "cross-text", (
            f"Texts attended to each other: the {k} of {n} texts that differ are exactly those that could see "
            f"another text's tokens; the {alone} with nothing before them "
            f"{f'only drift by {facts.dtype} rounding' if rounding else 'match'}."
        )
    longer = (
        reference.read_position_ids + 1 > facts.attention_window  # (N,) texts longer than the window
        if facts.attention_window
        else torch.zeros(n, dtype=torch.bool)
    )
    if severe.any() and longer.any() and (target == longer).all() and not ext.saw_other_text.any():
        return "window", (
            f"The layout's mask replaced the model's attention window of {facts.attention_window} tokens (sliding "
            f"or chunked): the {k} of "
            f"{n} texts that differ are exactly those longer than the window{layer_note}, so they attended to "
            f"tokens the model never shows them (a 4-D mask is used as given, window included){rounding}."
        )
    if (target & ext.saw_padding).sum() >= majority and not (target & ~ext.saw_padding).any():
        return "pad-state", (
            f"Real tokens attended to padding: the {k} texts that differ could see pad positions{layer_note}."
        )
    if not severe.any() and (target & shifted).sum() >= majority:
        # Relative positions (RoPE): the shift is invisible in exact arithmetic, but the rotation
        # at other angles rounds differently, so shifted texts drift more than unshifted ones.
        precision = f"Reduced-precision ({facts.dtype}) rounding" if reduced else "Float32 rounding"
        return ("rounding" if reduced else "kernels"), (
            f"{precision} of shifted positions: left padding moved the last token of "
            f"{_count(target & shifted)} of {n} texts ({_positions(ext, reference, target & shifted)}); this "
            f"model's positions are relative, so the shift changes only how the rotation rounds (min cosine "
            f"{worst:.6f}, max relative L2 {worst_rel:.4f}). Position ids from the mask (left) avoid it."
        )
    if not severe.any() and reduced:
        return "rounding", (
            f"Reduced-precision ({facts.dtype}) rounding: batched and single-sample kernels round differently "
            f"(min cosine {worst:.6f}, max relative L2 {worst_rel:.4f}); the layout itself is sound: no pad read, "
            "no position shifted, no other text seen."
        )
    if not severe.any():
        return "kernels", (
            f"Float32 rounding of the batched kernels (min cosine {worst:.6f}, max relative L2 {worst_rel:.4f}): "
            "batched and single-sample passes take different kernel paths (TF32 matmuls on GPU, other BLAS "
            "blockings); the layout itself is sound."
        )
    return "unknown", (
        f"{k} of {n} texts differ from single-sample extraction{layer_note} (min cosine {worst:.4f}, max relative "
        f"L2 {worst_rel:.4f}); no known padding defect explains it."
    )
