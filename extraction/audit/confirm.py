"""Confirming the likely cause on the differing rows its search did not run on.

The hypotheses of :mod:`.forensics` search on the worst few differing rows
(:data:`~.forensics.FORENSIC_ROWS`), where a defect shows most. The other differing rows of
the sample are then *confirmed* under the cause found, not searched again: its hypothesis runs
on them with the parameters the worst row fixes (the same edit, variant, position, cut or
padding side), at most :data:`CONFIRM_ROWS` of them, spread evenly over the differing rows.
A row it reproduces is confirmed; a row it does not is *not confirmed* and counted as such,
never taken as explained (another defect, or a mixture of sources, may be at work there).

Each hypothesis stops at the first row it does not reproduce, so the rows are run in groups:
the worst row first (it fixes the parameters), then the group; a group whose run fails (or
finds other parameters) is split in two and each half run again, a lone row that fails is not
confirmed. At most :data:`MAX_CONFIRM_RUNS` runs: rows left then are counted as not tested.

``order`` and ``duplicate-rows`` match every differing row already (no forward pass), so
their confirmation reads the rows they tested. The evidence key is ``confirmation``: see
docs/audit.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..extract import extract_states
from .check import subset
from .evidence import Evidence
from .report import Hypothesis

CONFIRM_ROWS = 16  # other differing rows the likely cause is confirmed on (spread evenly)
MAX_CONFIRM_RUNS = 8  # runs of the hypothesis spent confirming (a failing group is split in two)
MAX_LISTED = 24  # rows not confirmed listed by index

#: The evidence keys that carry a hypothesis's parameters: a confirmation run must find the same ones.
PARAMETERS = {
    "special-tokens": ("edit",),
    "chat-template": ("variant", "system_turn", "generation_prompt"),
    "read-position": ("position",),
    "truncated": ("side",),
    "pre-norm": ("layer",),
    "right-naive": ("attention_mask",),
    "left-naive": ("pads_counted",),
    "packed-naive": ("position_ids_reset",),
}
#: Hypotheses that match every differing row themselves.
MATCH_ALL = ("order", "duplicate-rows")


def _spread(rows: list[int], count: int) -> list[int]:
    """At most ``count`` of ``rows``, evenly spaced (pure)."""
    if len(rows) <= count:
        return list(rows)
    return [rows[round(k * (len(rows) - 1) / (count - 1))] for k in range(count)] if count > 1 else rows[:1]


def _fresh_rows(ev: Evidence, rows: list[int], every_layer: bool) -> dict:
    """``{row: fresh states (S, d)}`` for ``rows``: the check's fresh states put at the stored layers
    (no forward pass; the other hidden states are zeros, which only ``wrong-layer`` reads), or, for
    ``every_layer`` or a per-token file, one single-sample pass of the rows."""
    if every_layer or ev.fresh_checked is None:
        fresh = extract_states(ev.loaded, subset(ev.tokenized, rows), "single", keep_logits=False, pooling=ev.pooling)
        return {row: fresh.rows_of(k) for k, row in enumerate(rows)}
    position = {text: k for k, text in enumerate(ev.checked)}
    num_states = ev.loaded.num_hidden_layers + 1
    found = {}
    for row in rows:
        states = ev.fresh_checked.new_zeros(num_states, ev.fresh_checked.shape[-1])  # (S, d)
        states[ev.layers] = ev.fresh_checked[position[row]]  # (L, d) at the stored layers
        found[row] = states
    return found


def _same_parameters(found: Hypothesis, cause: Hypothesis) -> bool:
    keys = PARAMETERS.get(cause.name, ())
    return all(found.evidence.get(k) == cause.evidence.get(k) for k in keys)


def confirmation(ev: Evidence, cause: Hypothesis, hypothesis: Callable[[Evidence], Hypothesis] | None) -> dict | None:
    """The ``confirmation`` evidence of ``cause`` (reproduced on ``ev.rows``): the rule in the
    module docstring; None when it cannot be run again (a compound of two defects)."""
    searched = list(cause.rows_tested)
    differing = list(ev.affected_checked)
    result = {"differing_rows": len(differing), "searched": len(searched)}
    if cause.name in MATCH_ALL:
        others = [r for r in differing if r not in set(searched)]
        missed = [r for r in searched if r not in set(cause.rows_reproduced)]
        return {
            **result,
            "confirmed": 0,
            "not_confirmed": len(missed),
            "not_confirmed_rows": missed[:MAX_LISTED],
            "not_tested": len(others),
        }
    if hypothesis is None:
        return None
    others = [r for r in differing if r not in set(searched)]
    picked = _spread(others, CONFIRM_ROWS)
    confirmed: list[int] = []
    missed: list[int] = []
    if picked:
        anchor = ev.rows[0]
        fresh_rows = {**ev.fresh, **_fresh_rows(ev, picked, every_layer=cause.name == "wrong-layer")}
        groups, runs = [picked], 0
        while groups and runs < MAX_CONFIRM_RUNS:
            group = groups.pop(0)
            found = hypothesis(dataclasses.replace(ev, rows=[anchor, *group], fresh=fresh_rows))
            runs += 1
            if anchor not in found.rows_reproduced or not _same_parameters(found, cause):
                if len(group) == 1:
                    missed.extend(group)
                else:
                    groups[:0] = [group[: len(group) // 2], group[len(group) // 2 :]]
                continue
            tested = [r for r in found.rows_tested if r != anchor]
            confirmed.extend(r for r in tested if r in found.rows_reproduced)
            missed.extend(r for r in tested if r not in found.rows_reproduced)
            rest = [r for r in group if r not in set(tested)]
            if rest:
                groups.insert(0, rest)
    missed.sort()
    return {
        **result,
        "confirmed": len(confirmed),
        "not_confirmed": len(missed),
        "not_confirmed_rows": missed[:MAX_LISTED],
        "not_tested": len(others) - len(confirmed) - len(missed),  # beyond CONFIRM_ROWS, or the runs spent
    }


def confirmation_words(found: dict) -> str:
    """The confirmation in a clause: ``"confirmed on 28 of 28 other differing rows"`` (pure)."""
    tried = found["confirmed"] + found["not_confirmed"]
    words = f"searched on {found['searched']} of {found['differing_rows']} differing rows"
    if tried:
        words += f", confirmed on {found['confirmed']} of {tried} others"
    if found["not_confirmed"]:
        listed = ", ".join(str(r + 1) for r in found["not_confirmed_rows"][:6])
        more = " ..." if found["not_confirmed"] > 6 else ""
        words += f"; {found['not_confirmed']} not confirmed (texts {listed}{more}: another defect, or another source)"
    if found["not_tested"]:
        words += f"; {found['not_tested']} not tested"
    return words
