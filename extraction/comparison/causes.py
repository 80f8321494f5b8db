"""Why a strategy's states differ from single-sample extraction: a cause kind and a sentence.

:func:`diagnose` derives the cause from what was measured (which texts differ, from which
layer on, by how much) and from what the batch layout did to those texts: was the read
position padding, at which position id was it read, could it see other texts or padding.
Every layout fact comes from segment ids, never from token ids: chat texts end in the eos
token, which is often the pad token too. Under ``mean``/``tokens`` pooling the facts are about
every position pooled for the text (:func:`extraction.pooling.span_facts`): pads counted in
a mean, or kept as rows, are the pooled form of a pad state read. The kinds are the closed set
:data:`~extraction.verdicts.CAUSE_KINDS`; what the sentences know about the model is
:class:`~extraction.comparison.model_facts.ModelFacts`.

Each cause is one small function (``_pad_read``, ``_texts_saw_each_other``, ...) that names its kind
and sentence when it explains the texts that differ; :data:`_CAUSES` is the order they are tried in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..extract import ExtractionResult
from ..verdicts import EXACT_COSINE, CauseKind, corrupted_rows, rounding_bound
from .model_facts import ModelFacts
from .record import StrategyComparison


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


@dataclass(frozen=True)
class _Measured:
    """What :func:`diagnose` reads, per text (each tensor (N,) bool unless said): what was measured
    against the reference and what the layout did to the text."""

    comparison: StrategyComparison
    reference: ExtractionResult
    facts: ModelFacts
    n: int
    rows_differ: torch.Tensor  # the rows kept are not the text's tokens (tokens pooling)
    affected: torch.Tensor  # differs at all: below exact cosine, top-1 changed, above rounding, rows differ
    severe: torch.Tensor  # clearly wrong (verdicts.corrupted_rows)
    target: torch.Tensor  # the texts a cause must explain: the severe ones when there are any, else affected
    pad_read: torch.Tensor  # the read position is padding (segment ids)
    other_token: torch.Tensor  # a real token read, not the last
    shifted: torch.Tensor  # read at another position id than alone
    layer0_differs: torch.Tensor  # differs already at the embeddings
    after_text: torch.Tensor  # another text sits before it in its row
    after_pad: torch.Tensor  # padding sits before it in its row
    rounding: str  # "; the others drift by bfloat16 rounding" or ""
    layer_note: str  # " from layer 3 on" or ""

    @classmethod
    def measure(cls, comparison: StrategyComparison, reference: ExtractionResult, facts: ModelFacts) -> _Measured:
        ext = comparison.extraction
        n = comparison.cosine.shape[0]
        none = torch.zeros(n, dtype=torch.bool)
        per_text_min = comparison.cosine.nan_to_num(-1.0).min(1).values  # (N,)
        per_text_rel = comparison.relative_l2.nan_to_num(float("inf")).max(1).values  # (N,)
        top1_differs = ~comparison.top1_same if comparison.top1_same is not None else none
        rows_differ = comparison.rows_differ if comparison.rows_differ is not None else none
        affected = (
            (per_text_min < EXACT_COSINE) | top1_differs | (per_text_rel > rounding_bound(facts.dtype)) | rows_differ
        )
        pad_read = ext.read_is_pad  # (N,) from the layout's segment ids
        # Structural defects show as large errors; reduced precision adds small ones to every
        # text. Explain the clearly wrong texts when there are any, else every affected one.
        # In float32 anything above float32 rounding is structural (verdicts.rounding_bound).
        severe = corrupted_rows(per_text_min, per_text_rel, facts.dtype)  # (N,)
        target = severe if severe.any() else affected  # (N,)
        reduced = facts.dtype != "float32"
        return cls(
            comparison=comparison,
            reference=reference,
            facts=facts,
            n=n,
            rows_differ=rows_differ,
            affected=affected,
            severe=severe,
            target=target,
            pad_read=pad_read,
            other_token=~pad_read & (ext.read_token_ids != reference.read_token_ids),
            shifted=ext.read_position_ids != reference.read_position_ids,
            layer0_differs=comparison.cosine[:, 0].nan_to_num(-1.0) < EXACT_COSINE,
            after_text=ext.after_other_text if ext.after_other_text is not None else none,
            after_pad=ext.after_padding if ext.after_padding is not None else none,
            rounding=f"; the others drift by {facts.dtype} rounding" if reduced and (affected & ~target).any() else "",
            layer_note=(
                f" from layer {comparison.first_divergent_layer} on"
                if comparison.first_divergent_layer is not None
                else ""
            ),
        )

    @property
    def ext(self) -> ExtractionResult:
        return self.comparison.extraction

    @property
    def k(self) -> int:
        """How many texts the cause must explain."""
        return _count(self.target)

    @property
    def majority(self) -> int:
        """How many of them a cause must cover to be named."""
        return max(1, self.k // 2)

    @property
    def reduced(self) -> bool:
        return self.facts.dtype != "float32"

    @property
    def worst(self) -> float:
        return self.comparison.min_cosine

    @property
    def worst_rel(self) -> float:
        return self.comparison.max_relative_l2


Cause = tuple[CauseKind, str]


def diagnose(comparison: StrategyComparison, reference: ExtractionResult, facts: ModelFacts) -> Cause:
    """Why ``comparison`` differs from ``reference`` (or why it does not): a
    :data:`~extraction.verdicts.CauseKind` and one sentence.

    Every fact about the layout comes from the layout (segment ids: was the read position
    padding, could it see another text or padding; the position ids), never from token
    ids: chat texts end in the eos token, which is often the pad token too. The causes are
    tried in the order of :data:`_CAUSES`, the first that explains the texts wins; when none
    does, the cause is ``unknown``.
    """
    measured = _Measured.measure(comparison, reference, facts)
    for cause in _CAUSES:
        found = cause(measured)
        if found is not None:
            return found
    return _unexplained(measured)


# The causes, one function each, in the order they are tried: each returns its kind and sentence
# when it explains the texts that differ, else None.


def _nonfinite(m: _Measured) -> Cause | None:
    if not m.comparison.nonfinite:
        return None
    bad_layers = (~torch.isfinite(m.ext.hidden)).any(-1).any(0).nonzero().flatten().tolist()
    where = f"first at layer {bad_layers[0]}" if bad_layers else "in the logits"
    return "unknown", (
        f"NaN or inf values appeared ({m.comparison.nonfinite} entries, {where}); the states are unusable."
    )


def _rows_not_tokens(m: _Measured) -> Cause | None:
    if not m.rows_differ.any():
        return None
    ext, rows_differ = m.ext, m.rows_differ
    counts, reference_counts = ext.offsets.diff(), m.reference.offsets.diff()
    example = int(rows_differ.nonzero()[0])
    pads = "pad positions kept as tokens: " if (rows_differ & m.pad_read).any() else ""
    return "pad-state", (
        f"For {_count(rows_differ)} of {m.n} texts the rows kept are not the text's tokens ({pads}text "
        f"{example + 1} has {int(counts[example])} rows for {int(reference_counts[example])} tokens): the "
        "positions kept ignore where the text ends, so the row count no longer matches the tokens."
    )


def _matches(m: _Measured) -> Cause | None:
    if m.affected.any():
        return None
    if m.shifted.any():
        encoding = (
            "this model reads no position ids (measured: they change nothing)"
            if m.facts.reads_position_ids is False
            else "this model's position encoding is relative (no absolute position embeddings)"
        )
        return "none", (
            f"Matches single-sample extraction (min cosine {m.worst:.6f}): the position ids of {_count(m.shifted)} "
            f"of {m.n} texts were shifted, but {encoding}, so the shift changes nothing."
        )
    return "none", f"Matches single-sample extraction at every layer (min cosine {m.worst:.6f})."


def _pads_in_mean(m: _Measured) -> Cause | None:
    if not ((m.target & m.pad_read).sum() >= m.majority and m.ext.pooling == "mean"):
        return None
    return "pad-state", (
        f"Pads counted in the mean: for {_count(m.target & m.pad_read)} of {m.n} texts the mean runs over every "
        f"column of the padded row, padding included (the pooling ignores the attention mask){m.rounding}."
    )


def _pad_read(m: _Measured) -> Cause | None:
    if not (m.target & m.pad_read).sum() >= m.majority:
        return None
    return "pad-state", (
        f"For {_count(m.target & m.pad_read)} of {m.n} texts a pad token's state was read instead of the last real "
        f"token (the read position lies in the padding after the text: the read index ignores where the text "
        f"ends){m.rounding}."
    )


def _other_token_read(m: _Measured) -> Cause | None:
    if not (m.target & m.other_token).sum() >= m.majority:
        return None
    return "unknown", (
        f"For {_count(m.target & m.other_token)} of {m.n} texts another token's state was read instead of the last "
        f"real token{m.rounding}."
    )


def _pads_through_unmasked_model(m: _Measured) -> Cause | None:
    if not (
        m.severe.any()
        and m.facts.reads_attention_mask is False
        and (m.facts.reads_position_ids is False or not (m.target & m.shifted).any())  # else the shift may be it
        and (m.target == m.after_pad).all()
        and not (m.target & m.ext.saw_padding).any()
    ):
        return None
    # Measured: masking tokens out changes nothing, so the pads before a text reach it.
    return "pad-state", (
        f"The pads before the text passed through the recurrent state; the model ignores the attention mask "
        f"(measured: masking every earlier token changes nothing), and the {m.k} of {m.n} texts that differ are "
        f"exactly those with padding before them in their row{m.layer_note}{m.rounding}."
    )


def _positions_counted_along_row(m: _Measured) -> Cause | None:
    row_offset = (m.after_pad | m.after_text) & ~m.shifted  # (N,) their own position ids given, yet not at the start
    if not (
        m.severe.any()
        and m.facts.reads_position_ids is False
        and m.facts.counts_row_positions
        and (m.target == row_offset).all()
        and not (m.target & (m.ext.saw_padding | m.ext.saw_other_text)).any()
    ):
        return None
    before = " or ".join(
        what for what, flags in (("padding", m.after_pad), ("another text", m.after_text)) if (m.target & flags).any()
    )
    return "position-shift", (
        f"Positions taken from the padded row because the model ignores the position ids it was given "
        f"(measured: they change nothing, while masked pads before a text do, whatever the pads hold): the {m.k} "
        f"of {m.n} texts that differ are exactly those placed after {before} in their row, so their positions "
        f"were counted from the row's start{m.layer_note}{m.rounding}."
    )


def _absolute_positions_shifted(m: _Measured) -> Cause | None:
    if not ((m.target & m.shifted & m.layer0_differs).sum() >= m.majority and m.facts.uses_absolute_positions):
        return None
    example = int((m.target & m.shifted).nonzero()[0])
    return "position-shift", (
        f"Positions shifted by left padding: the last token of text {example + 1} sat at position "
        f"{int(m.ext.read_position_ids[example])} instead of {int(m.reference.read_position_ids[example])}, and "
        f"this model adds absolute position embeddings, so {_count(m.target & m.shifted)} of {m.n} texts differ "
        f"from the embeddings (layer 0) on{m.rounding}."
    )


def _text_carried_through_state(m: _Measured) -> Cause | None:
    if not (m.severe.any() and (m.target == m.after_text).all() and not (m.target & m.ext.saw_other_text).any()):
        return None
    return "cross-text", (
        f"The mask hid the other texts, yet the {m.k} of {m.n} texts that differ are exactly those placed after "
        f"another text in their row{m.layer_note}: a layer that does not read the mask (a recurrent or "
        f"state-space state, a convolution) carried the earlier text into them{m.rounding}."
    )


def _fading_text_carried_through_state(m: _Measured) -> Cause | None:
    own = m.reference.read_position_ids + 1  # (N,) the text's own tokens up to its read
    spared = m.after_text & ~m.target  # (N,) after another text, yet matching
    if not (
        m.severe.any()
        and spared.any()
        and not (m.target & ~m.after_text).any()
        and not (m.target & m.ext.saw_other_text).any()
        and int(own[m.target].max()) < int(own[spared].min())
    ):
        return None
    # A leak that fades: only the texts read a few tokens after the earlier one still carry it.
    return "cross-text", (
        f"The mask hid the other texts, yet the {m.k} of {m.n} texts that differ all sit after another text in "
        f"their row and are read closest to it (at most {int(own[m.target].max())} tokens of their own), while the "
        f"{_count(spared)} after another text with {int(own[spared].min())} or more tokens match{m.layer_note}: a "
        f"layer that does not read the mask (a recurrent or state-space state, a convolution) carried the earlier "
        f"text in, and its memory of it fades within a few tokens{m.rounding}."
    )


def _pads_through_state(m: _Measured) -> Cause | None:
    if not (
        m.severe.any() and (m.target == m.after_pad).all() and not (m.target & (m.ext.saw_padding | m.shifted)).any()
    ):
        return None
    return "pad-state", (
        f"The mask hid the padding, yet the {m.k} of {m.n} texts that differ are exactly those with padding before "
        f"them in their row{m.layer_note}: a layer that does not read the attention mask (a recurrent or "
        f"state-space state, a convolution) ran through the pads{m.rounding}."
    )


def _relative_positions_shifted(m: _Measured) -> Cause | None:
    if not (m.severe.any() and (m.target & m.shifted).sum() >= m.majority and not (m.target & ~m.shifted).any()):
        return None
    # Relative positions, yet the shifted texts are beyond rounding: the shift is the cause.
    return "position-shift", (
        f"Positions shifted by left padding: {_positions(m.ext, m.reference, m.target & m.shifted)}; this model's "
        f"positions are relative, yet the {m.k} shifted texts that differ are beyond rounding (min cosine "
        f"{m.worst:.4f}, max relative L2 {m.worst_rel:.4f}){m.rounding}. Position ids from the mask (left) avoid it."
    )


def _texts_saw_each_other(m: _Measured) -> Cause | None:
    saw_other = m.ext.saw_other_text
    if not ((m.target & saw_other).sum() >= m.majority and not (m.target & ~saw_other).any()):
        return None
    alone = _count(~saw_other)
    return "cross-text", (
        f"Texts attended to each other: the {m.k} of {m.n} texts that differ are exactly those that could see "
        f"another text's tokens; the {alone} with nothing before them "
        f"{f'only drift by {m.facts.dtype} rounding' if m.rounding else 'match'}."
    )


def _attention_window_replaced(m: _Measured) -> Cause | None:
    window = m.facts.attention_window
    longer = (
        m.reference.read_position_ids + 1 > window  # (N,) texts longer than the window
        if window
        else torch.zeros(m.n, dtype=torch.bool)
    )
    if not (m.severe.any() and longer.any() and (m.target == longer).all() and not m.ext.saw_other_text.any()):
        return None
    return "window", (
        f"The layout's mask replaced the model's attention window of {window} tokens (sliding "
        f"or chunked): the {m.k} of "
        f"{m.n} texts that differ are exactly those longer than the window{m.layer_note}, so they attended to "
        f"tokens the model never shows them (a 4-D mask is used as given, window included){m.rounding}."
    )


def _padding_seen(m: _Measured) -> Cause | None:
    saw_padding = m.ext.saw_padding
    if not ((m.target & saw_padding).sum() >= m.majority and not (m.target & ~saw_padding).any()):
        return None
    return "pad-state", (
        f"Real tokens attended to padding: the {m.k} texts that differ could see pad positions{m.layer_note}."
    )


def _shifted_positions_round(m: _Measured) -> Cause | None:
    if not (not m.severe.any() and (m.target & m.shifted).sum() >= m.majority):
        return None
    # Relative positions (RoPE): the shift is invisible in exact arithmetic, but the rotation
    # at other angles rounds differently, so shifted texts drift more than unshifted ones.
    precision = f"Reduced-precision ({m.facts.dtype}) rounding" if m.reduced else "Float32 rounding"
    return ("rounding" if m.reduced else "kernels"), (
        f"{precision} of shifted positions: left padding moved the last token of "
        f"{_count(m.target & m.shifted)} of {m.n} texts ({_positions(m.ext, m.reference, m.target & m.shifted)}); "
        f"this model's positions are relative, so the shift changes only how the rotation rounds (min cosine "
        f"{m.worst:.6f}, max relative L2 {m.worst_rel:.4f}). Position ids from the mask (left) avoid it."
    )


def _reduced_precision(m: _Measured) -> Cause | None:
    if m.severe.any() or not m.reduced:
        return None
    return "rounding", (
        f"Reduced-precision ({m.facts.dtype}) rounding: batched and single-sample kernels round differently "
        f"(min cosine {m.worst:.6f}, max relative L2 {m.worst_rel:.4f}); the layout itself is sound: no pad read, "
        "no position shifted, no other text seen."
    )


def _float32_kernels(m: _Measured) -> Cause | None:
    if m.severe.any():
        return None
    return "kernels", (
        f"Float32 rounding of the batched kernels (min cosine {m.worst:.6f}, max relative L2 {m.worst_rel:.4f}): "
        "batched and single-sample passes take different kernel paths (TF32 matmuls on GPU, other BLAS "
        "blockings); the layout itself is sound."
    )


def _unexplained(m: _Measured) -> Cause:
    return "unknown", (
        f"{m.k} of {m.n} texts differ from single-sample extraction{m.layer_note} (min cosine {m.worst:.4f}, max "
        f"relative L2 {m.worst_rel:.4f}); no known padding defect explains it."
    )


#: The causes :func:`diagnose` tries, in order: the states unusable, the rows not the text's tokens,
#: nothing differs; then a pad read (in a mean, at the read), another token read, the measured
#: reads of the model (mask, position ids), the position shift, a text or pads carried through a
#: state the mask does not reach, texts or padding seen, the attention window; last, rounding.
_CAUSES = (
    _nonfinite,
    _rows_not_tokens,
    _matches,
    _pads_in_mean,
    _pad_read,
    _other_token_read,
    _pads_through_unmasked_model,
    _positions_counted_along_row,
    _absolute_positions_shifted,
    _text_carried_through_state,
    _fading_text_carried_through_state,
    _pads_through_state,
    _relative_positions_shifted,
    _texts_saw_each_other,
    _attention_window_replaced,
    _padding_seen,
    _shifted_positions_round,
    _reduced_precision,
    _float32_kernels,
)
