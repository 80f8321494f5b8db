"""Which layout makes the audit's fresh rows (:func:`choose_reference`).

The ground truth is the model's single-text computation (``single``: one text a forward pass).
Re-extracting every checked text that way costs what ``extract --strategy single`` costs, about
twice what ``extract`` (auto) takes on SmolLM2 (docs/forensics.md, "Cost"). So by default
(``reference="auto"``) the fresh rows come from the layout ``--strategy auto`` takes for the
checked texts (:func:`extraction.comparison.choose.choose_strategy`): the cheapest one that its probe
found exact against ``single`` on this model, dtype, device, attention implementation,
versions and pooling (or remembered so from an earlier probe), and ``single`` when none is.
``reference="single"`` forces one text a pass.

A verified batched layout differs from ``single`` by float32 rounding only (relative L2 about
1e-6 on CPU, far below every threshold of :mod:`extraction.verdicts` and below
:data:`~extraction.audit.pattern.FLOAT32_MATCH_RELATIVE_L2`), so verdicts and the rows that
differ are the same; what changes is bit-for-bit equality: ``n_bit_exact`` counts rows equal to
the reference's rows, which for a batched reference is not the same as equal to ``single``'s.
Force ``single`` where bit-for-bit agreement with one text a pass is the question.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..pooling import DEFAULT_POOLING, Pooling
from ..strategies import REFERENCE
from ..texts import TokenizedTexts

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)

ReferenceChoice = Literal["auto", "single"]
#: ``auto``: the layout ``--strategy auto`` verified exact (else single); ``single``: one text a pass.
REFERENCE_CHOICES: tuple[ReferenceChoice, ...] = ("auto", REFERENCE)


@dataclass(frozen=True)
class AuditReference:
    """The layout that made the fresh rows, and how it is known to give single's states."""

    layout: str  # a strategy name: "single", or a batched layout auto verified exact
    how: str  # one phrase: why this layout stands for single-sample extraction

    def describe(self) -> str:
        """``"sorted (exact against single on 4 probe texts of 6-35 tokens: auto's probe)"``."""
        return f"{self.layout} ({self.how})"

    def to_dict(self) -> dict:
        return {"layout": self.layout, "how": self.how}


SINGLE_FORCED = AuditReference(REFERENCE, "one text a pass, as asked")


def parse_reference(reference: str) -> ReferenceChoice:
    if reference not in REFERENCE_CHOICES:
        raise ValueError(f"unknown reference {reference!r}; valid: {', '.join(REFERENCE_CHOICES)}")
    return reference  # type: ignore[return-value]


def choose_reference(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    reference: ReferenceChoice = "auto",
    pooling: Pooling = DEFAULT_POOLING,
    layers: Sequence[int] | None = None,
    lm_head: bool | None = None,
) -> AuditReference:
    """The layout for the fresh rows of ``tokenized`` (the checked texts): see the module docstring.
    The candidates are priced for the pass the re-extraction runs: the blocks up to the deepest of
    ``layers`` (default all), the whole pass when the lm_head checks run (``lm_head``, as in
    :func:`~extraction.audit.check.check_rows`)."""
    from ..comparison.choose import choose_strategy
    from ..extract import forward_pass, wants_lm_head

    if parse_reference(reference) == REFERENCE:
        return SINGLE_FORCED
    if len(tokenized) < 2:
        return AuditReference(REFERENCE, "one text: nothing to batch")
    num_states = loaded.num_hidden_layers + 1
    layers = list(range(num_states)) if layers is None else list(layers)
    keep_logits = pooling == "last" and wants_lm_head(lm_head, layers, num_states)
    blocks_run = forward_pass(loaded, layers, keep_logits).blocks_run
    choice = choose_strategy(loaded, tokenized, pooling=pooling, blocks_run=blocks_run)
    if choice.name == REFERENCE:
        return AuditReference(REFERENCE, "no batched layout is cheaper and verified exact here")
    record = next(c for c in choice.candidates if c["name"] == choice.name)
    if record["checked"] == "probe":
        lengths = sorted(tokenized.lengths[i] for i in choice.probe_rows)
        how = (
            f"exact against single on {len(choice.probe_rows)} probe texts of {lengths[0]}-{lengths[-1]} tokens, "
            f"min cosine {record['min_cosine']:.6f}: auto's probe"
        )
    else:
        how = "exact against single, remembered from auto's probe for this model, dtype, device and versions"
    logger.info("audit reference: %s (%s)", choice.name, how)
    return AuditReference(choice.name, how)


__all__ = ["REFERENCE_CHOICES", "AuditReference", "ReferenceChoice", "choose_reference", "parse_reference"]
