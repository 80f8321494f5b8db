"""The likely cause among the hypotheses of :mod:`.forensics`, and the others that reproduce too.

When two hypotheses reproduce the rows, the one the layout evidence supports is named: a padding
explanation needs a batching whose longest text is read right (its inferred padded lengths must
come from some batch size in input or length order); an EOS appended to every text reproduces
as right padding by one token too, but no batch pads its longest text, so it is
``special-tokens``. The others are listed under the cause's ``also``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .report import Hypothesis

#: The padding hypotheses: each needs a batching that gives the padded lengths it inferred.
PADDING = ("right-naive", "left-naive")


def layout_fits(hypothesis: Hypothesis) -> bool:
    """False for a padding hypothesis whose inferred padded lengths no batch size in any order
    gives (every text padded, the longest of each batch included: no batch padding does that)."""
    if hypothesis.name not in PADDING:
        return True
    batchings = hypothesis.evidence.get("consistent_batch_sizes") or {}
    return any(batchings.values())


def _rank(hypothesis: Hypothesis) -> tuple:
    """Higher is likelier: a layout the evidence supports; not ``duplicate-rows`` (rows equal because
    their texts were made equal are explained by what made them so); not a cut to one token (that is
    the first token read: ``read-position``); not a piece of the chat template added as a string
    (``chat-template`` names the option that adds it); then the reproduction cosine."""
    first_token_cut = hypothesis.name == "truncated" and hypothesis.evidence.get("max_length") == 1
    edit = hypothesis.evidence.get("edit") if hypothesis.name == "special-tokens" else None
    return (
        layout_fits(hypothesis),
        hypothesis.name != "duplicate-rows",
        not first_token_cut,
        not (edit or {}).get("template_piece", False),
        hypothesis.reproduction_cosine,
    )


def name_the_others(hypotheses: Sequence[Hypothesis]) -> None:
    """List the other reproduced hypotheses under the likely cause's ``also`` (after a second defect
    :mod:`.compound` found), each with why it ranks lower."""
    best = likely_cause(hypotheses)
    if best is None or best.status != "reproduced":
        return
    also = best.evidence.setdefault("also", [])
    for other in hypotheses:
        if other is best or other.status != "reproduced":
            continue
        entry = {"name": other.name, "cause_kind": other.cause_kind}
        if not layout_fits(other):
            entry["why_not"] = "no batch size in input or length order gives the padded lengths it needs"
        also.append(entry)
    if not also:
        del best.evidence["also"]


def likely_cause(hypotheses: Sequence[Hypothesis]) -> Hypothesis | None:
    """The reproduced hypothesis of the highest :func:`_rank` (a padding cause only where a batching
    fits: never one when no batch size and order give its padded lengths); else one the pattern of
    the differences names (status ``consistent``: ``kernels``); else None."""
    reproduced = [h for h in hypotheses if h.status == "reproduced" and layout_fits(h)]
    if reproduced:
        return max(reproduced, key=_rank)
    return next((h for h in hypotheses if h.status == "consistent"), None)
