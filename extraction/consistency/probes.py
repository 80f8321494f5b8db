"""The cause from behaviour, with no model: call ``extract_fn`` on chosen lists and see what a
text's state depends on.

* **rows of other texts** (no call): a batched row that reproduces another text's single state
  (the audit's :func:`~extraction.audit.evidence.reproduces` rule) is that text's row. Several
  rows holding one text's state are ``duplicate-rows``; rows moved to other places are
  ``order``, confirmed by one call on the same texts in reverse order (rows that come back in
  the same places whatever the order say the function reorders the texts and never puts them
  back).
* **neighbours** (two or three calls of two texts): a text ``s`` beside a longer text ``L`` first
  (``[s, L]``) and second (``[L, s]``), and second beside a shorter text ``S`` (``[S, s]``).
  Padding makes ``s`` depend on the longest text of its batch: ``[s, L]`` and ``[L, s]`` differ,
  ``[S, s]`` does not (``padding``). Texts attending to each other make ``s`` depend on what
  precedes it: ``[s, L]`` matches, ``[L, s]`` and ``[S, s]`` differ (``packing``).
* **a pad read, exactly** (one call, with ``tokenizer=``): ``s`` followed by as many pad tokens as
  ``L`` has more tokens, as one text alone. When it reproduces ``s``'s row beside ``L``, that row is
  a pad token's state (``last``) or a mean with the pads counted (``mean``), attended as tokens (no
  attention mask). Under ``tokens`` a row count that follows ``L``'s length says so directly.

Rounding can make ``s`` depend on its neighbours too (a padded kernel rounds otherwise), so in
reduced precision only differences beyond drift count; in float32, beyond the noise floor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..audit.evidence import reproduces
from ..audit.report import Hypothesis
from .calls import FunctionCalls
from .measure import Distance, distance

#: The most batched rows searched for another text's state (the worst first).
MATCH_ROWS = 8
#: The most calls the probes make: the reverse order, three neighbour lists, the padded text.
PROBE_CALLS = 5


def other_texts_rows(
    tested: Sequence[torch.Tensor], truths: dict[int, torch.Tensor], texts: Sequence[str], rows: Sequence[int]
) -> dict[int, int]:
    """``{row: text}`` for each of ``rows`` (at most :data:`MATCH_ROWS`) whose batched state
    reproduces the single state of another text (with other words than its own)."""
    found = {}
    for row in list(rows)[:MATCH_ROWS]:
        own = distance(tested[row], truths[row])
        best: tuple[int, float] | None = None
        for text, truth in truths.items():
            if text == row or texts[text] == texts[row] or tested[row].shape != truth.shape:
                continue
            other = distance(tested[row], truth)
            if reproduces(other.min_cosine, own.min_cosine, other.max_relative_l2) and (
                best is None or other.min_cosine > best[1]
            ):
                best = (text, other.min_cosine)
        if best is not None:
            found[row] = best[0]
    return found


def rows_hypothesis(
    found: dict[int, int], tested_rows: Sequence[int], sound_rows: Sequence[int], calls: FunctionCalls, texts, tested
) -> Hypothesis:
    """``duplicate-rows`` or ``order`` from ``found`` (:func:`other_texts_rows` on ``tested_rows``);
    ``sound_rows`` are the rows that hold their own text's state. ``order`` costs one call."""
    targets = list(found.values())
    listed = ", ".join(f"row {row + 1} holds text {text + 1}" for row, text in list(found.items())[:4])
    reproduced = [row for row in tested_rows if row in found]
    status = "reproduced" if len(found) == len(tested_rows) else "partial"
    if len(set(targets)) < len(targets) or any(text in sound_rows for text in targets):
        copies = {text: [row for row, t in found.items() if t == text] for text in set(targets)}
        detail = f"{listed}; " + "; ".join(
            f"text {text + 1}'s state is in rows "
            f"{', '.join(str(r + 1) for r in sorted(rows + ([text] if text in sound_rows else [])))}"
            for text, rows in copies.items()
            if text in sound_rows or len(rows) > 1
        )
        return Hypothesis(
            "duplicate-rows", "rows copied from another text", status, None, None, list(tested_rows), reproduced,
            detail, {"rows": {str(row): text for row, text in found.items()}}, "other-row",
        )  # fmt: skip
    reversed_rows = calls(list(reversed(texts)), "the same texts in reverse order (order probe)").blocks
    same_place = [row for row in found if not distance(reversed_rows[row], tested[row]).corrupted]
    how = (
        f"; given in reverse order, {len(same_place)} of these {len(found)} rows come back in the same places: "
        "the function reorders the texts (e.g. sorts them by length) and does not put the rows back"
        if same_place
        else "; given in reverse order, the rows move with the texts"
    )
    return Hypothesis(
        "order", "rows returned in another order than the texts", status, None, None, list(tested_rows), reproduced,
        f"rows in other places: {listed}{how}", {"rows": {str(row): text for row, text in found.items()},
        "same_place_reversed": same_place}, "other-row",
    )  # fmt: skip


@dataclass
class NeighbourProbe:
    """Text ``s`` (0-based) beside a longer text and a shorter one, each distance from ``s`` alone."""

    s: int
    longer: int
    shorter: int | None
    first_beside_longer: Distance  # [s, L]
    second_beside_longer: Distance  # [L, s]
    second_beside_shorter: Distance | None  # [S, s]
    row_beside_longer: torch.Tensor  # s's states in [s, L]

    def to_dict(self) -> dict:
        return {
            "text": self.s,
            "longer": self.longer,
            "shorter": self.shorter,
            "first_beside_longer": self.first_beside_longer.to_dict(),
            "second_beside_longer": self.second_beside_longer.to_dict(),
            "second_beside_shorter": None
            if self.second_beside_shorter is None
            else self.second_beside_shorter.to_dict(),
        }


def neighbour_probe(
    calls: FunctionCalls, texts: Sequence[str], s: int, longer: int, shorter: int | None, alone: torch.Tensor
) -> NeighbourProbe:
    """Two or three calls of two texts (module docstring)."""
    first = calls([texts[s], texts[longer]], f"text {s + 1} then the longer text {longer + 1}").blocks[0]
    second = calls([texts[longer], texts[s]], f"the longer text {longer + 1} then text {s + 1}").blocks[1]
    beside_shorter = None
    if shorter is not None:
        row = calls([texts[shorter], texts[s]], f"the shorter text {shorter + 1} then text {s + 1}").blocks[1]
        beside_shorter = distance(row, alone)
    return NeighbourProbe(s, longer, shorter, distance(first, alone), distance(second, alone), beside_shorter, first)


def neighbour_hypotheses(probe: NeighbourProbe, differs: Callable[[Distance], bool]) -> list[Hypothesis]:
    """``padding`` and ``packing`` judged on ``probe``; ``differs`` says which distances count."""
    first, second = differs(probe.first_beside_longer), differs(probe.second_beside_longer)
    shorter = None if probe.second_beside_shorter is None else differs(probe.second_beside_shorter)
    s, longer = probe.s + 1, probe.longer + 1

    def said(flag: bool | None) -> str:
        return "not tried (no shorter text)" if flag is None else ("differs" if flag else "matches")

    seen = (
        f"text {s} beside the longer text {longer}, first: {said(first)}; second: {said(second)}; after a shorter "
        f"text{'' if probe.shorter is None else f' {probe.shorter + 1}'}: {said(shorter)} (against text {s} alone)"
    )
    # "fresh cosine": text s beside the longer text against s alone, the worse of the two places.
    worst = min(probe.first_beside_longer.min_cosine, probe.second_beside_longer.min_cosine)
    padding = first and second and shorter is not True
    packing = not first and second and shorter is not False
    evidence = probe.to_dict()
    return [
        Hypothesis(
            "padding", "the state depends on the batch's longest text (padding reaches it)",
            "reproduced" if padding else "rejected", None, worst, [probe.s], [probe.s] if padding else [], seen,
            evidence, "pad-state",
        ),
        Hypothesis(
            "packing", "the state depends on the texts before it in the call (texts attend to each other)",
            "reproduced" if packing else "rejected", None, worst, [probe.s], [probe.s] if packing else [], seen,
            evidence, "cross-text",
        ),
    ]  # fmt: skip


def pad_read(calls: FunctionCalls, texts: Sequence[str], probe: NeighbourProbe, tokenizer, pooling: str) -> str | None:
    """With ``tokenizer``: one call on text ``s`` followed by as many pad tokens as the longer text
    has more tokens; the sentence saying what ``s``'s row beside it is when that reproduces it, else None."""
    pad = tokenizer.pad_token or tokenizer.eos_token
    if pad is None:
        return None
    count = len(tokenizer(texts[probe.longer])["input_ids"]) - len(tokenizer(texts[probe.s])["input_ids"])
    if count <= 0:
        return None
    if pooling == "tokens":
        rows = len(probe.row_beside_longer)
        alone = len(tokenizer(texts[probe.s])["input_ids"])
        return (
            f"beside the longer text, text {probe.s + 1} has {rows} rows for its {alone} tokens: {count} pad positions "
            "kept as tokens"
            if rows == alone + count
            else None
        )
    padded = calls([texts[probe.s] + pad * count], f"text {probe.s + 1} followed by {count} pad tokens {pad!r}").blocks[
        0
    ]
    match = distance(probe.row_beside_longer, padded)
    if match.corrupted or not reproduces(match.min_cosine, probe.first_beside_longer.min_cosine, match.max_relative_l2):
        return None
    what = "a mean with the pads counted" if pooling == "mean" else "a pad token's state"
    return (
        f"text {probe.s + 1}'s row beside the longer text is {what}: it equals text {probe.s + 1} followed by "
        f"{count} pad tokens {pad!r} run as one text (cosine {match.min_cosine:.6f}), so the pads were attended as "
        "tokens (no attention mask)"
    )
