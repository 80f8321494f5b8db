"""Two defects at once: a layout defect (padding or packing) on texts that also had a special
token added at the start.

TransformerLens 4.3's defaults do exactly that: a BOS prepended to every text
(``prepend_bos``) and, for right padding, no attention mask, read at -1. Neither hypothesis
alone reproduces such rows (the padded rows carry both defects, the longest text of a batch
only the BOS), so when no single hypothesis reproduces the tested rows, the layout hypotheses
are run again on the texts with each special token added at their start
(:func:`~extraction.audit.special_tokens.special_ids`, at most :data:`MAX_EDITS`). The layout
defect is named (it is what corrupts the worst rows); the added token is listed as the second
defect, in the evidence's ``also``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from ..texts import TokenizedTexts
from .evidence import Evidence
from .report import Hypothesis
from .special_tokens import TokenEdit, special_ids

MAX_EDITS = 3  # special tokens tried at the start of every text


def with_edit(tokenized: TokenizedTexts, edit: TokenEdit) -> TokenizedTexts:
    """Every text with ``edit`` applied to its token ids (an added token applies to every text)."""
    return TokenizedTexts(
        list(tokenized.texts), [edit.apply(list(ids), set()) for ids in tokenized.token_ids], [], tokenized.max_tokens
    )


def two_defects(
    ev: Evidence, layout_hypotheses: dict[str, Callable[[Evidence], Hypothesis]], results: Sequence[Hypothesis]
) -> Hypothesis | None:
    """The layout hypothesis that reproduces the tested rows once a special token is added at the
    start of every text, with that token in its evidence (``also``); None when no single
    hypothesis fails or no pair reproduces."""
    if any(h.status == "reproduced" for h in results) or ev.pooling == "tokens":
        return None
    tokenizer = ev.loaded.tokenizer
    for token_id in special_ids(tokenizer)[:MAX_EDITS]:
        edit = TokenEdit("added", "start", token_id)
        # A token added to every text changes every row: which rows were padded besides is not known.
        edited = dataclasses.replace(ev, tokenized=with_edit(ev.tokenized, edit), exact_checked=[], affected_checked=[])
        for hypothesis in layout_hypotheses.values():
            found = hypothesis(edited)
            if found.status != "reproduced":
                continue
            second = {"name": "special-tokens", "cause_kind": "other-tokens", "edit": edit.to_dict(tokenizer)}
            found.evidence["also"] = [second]
            found.detail += (
                f"; and a second defect: {edit.describe(tokenizer)} of every text (the lengths above count it; "
                "e.g. TransformerLens' defaults: prepend_bos and no attention mask for right padding)"
            )
            return found
    return None
