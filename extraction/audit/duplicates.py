"""``duplicate-rows``: stored rows identical to another text's row (a reused buffer, a repeated write).

For each checked row that differs from its fresh state, the stored rows of *other* texts (other
token ids: a text given twice rightly has one state twice) that equal it at every stored layer
to float32 rounding (relative L2 at most
:data:`~extraction.audit.pattern.FLOAT32_MATCH_RELATIVE_L2`), or bit for bit. Candidates come
from one matrix of cosines at the last stored layer between those rows and every stored row;
no forward pass. The evidence groups the rows that hold one state and names, where the check
measured it, the row of the group that is its own text's.
"""

from __future__ import annotations

import torch

from .check import state_cosine, state_relative_l2
from .evidence import Evidence
from .pattern import FLOAT32_MATCH_RELATIVE_L2
from .report import Hypothesis, HypothesisStatus

TITLE = "rows identical to another text's row (a reused buffer or a repeated write)"
CANDIDATE_COSINE = 0.99999  # prefilter at one layer; the match itself is the relative L2 at every layer
MAX_GROUPS = 12  # groups listed in the evidence


def identical_rows(stored: torch.Tensor, rows: list[int]) -> dict[int, list[int]]:
    """For each of ``rows``, the other stored rows equal to it at every layer to float32 rounding
    (pure): ``{row: [other, ...]}``. ``stored`` (N, L, d)."""
    unit = torch.nn.functional.normalize(stored[:, -1].float(), dim=-1)  # (N, d)
    scores = unit[rows] @ unit.T  # (R, N)
    found = {}
    for k, row in enumerate(rows):
        others = [int(j) for j in (scores[k] >= CANDIDATE_COSINE).nonzero().flatten() if int(j) != row]
        same = [
            j
            for j in others
            if float(state_relative_l2(stored[j], stored[row]).nan_to_num(float("inf")).max())
            <= FLOAT32_MATCH_RELATIVE_L2
        ]
        found[row] = same
    return found


def duplicate_rows_hypothesis(ev: Evidence) -> Hypothesis:
    """``duplicate-rows``: the rule in the module docstring."""
    if ev.offsets is not None:
        reason = "not tested under tokens pooling (rows are compared per text)"
        return Hypothesis("duplicate-rows", TITLE, "not applicable", None, None, [], [], reason)
    token_ids = ev.tokenized.token_ids
    tested = list(ev.affected_checked)
    matches = identical_rows(ev.stored, tested)
    position = {text: k for k, text in enumerate(ev.checked)}
    found, repro_cosines, fresh_cosines = [], [], []
    groups: list[set[int]] = []
    for row in tested:
        others = [j for j in matches[row] if token_ids[j] != token_ids[row]]
        if ev.fresh_checked is not None:
            fresh_cosines.append(
                float(state_cosine(ev.stored[row], ev.fresh_checked[position[row]]).nan_to_num(-1.0).min())
            )
        if not others:
            continue
        found.append(row)
        repro_cosines.append(float(state_cosine(ev.stored[row], ev.stored[others[0]]).nan_to_num(-1.0).min()))
        members = {row, *others}
        joined = [g for g in groups if g & members]
        for g in joined:
            members |= g
            groups.remove(g)
        groups.append(members)
    status: HypothesisStatus = (
        "reproduced" if tested and len(found) == len(tested) else "partial" if found else "rejected"
    )
    exact = set(ev.checked) - set(ev.affected_checked)
    listed_groups = [sorted(g) for g in sorted(groups, key=min)][:MAX_GROUPS]
    owners = {str(min(g)): next((r for r in g if r in exact), None) for g in map(sorted, groups)}
    bit_exact = all(bool((ev.stored[r] == ev.stored[g[0]]).all()) for g in listed_groups for r in g)
    evidence = {
        "groups": listed_groups,
        "n_rows_duplicated": len(found),
        "bit_exact": bit_exact if found else None,
        "own_row_of_group": owners,
    }

    def words(group: list[int]) -> str:
        owner = next((r for r in group if r in exact), None)
        rows = ", ".join(str(r + 1) for r in group)
        held = f" (text {owner + 1}'s state)" if owner is not None else ""
        return f"rows {rows} hold one state{held}"

    how = "bit for bit" if bit_exact else "to float32 rounding"
    if status == "reproduced":
        detail = (
            f"{len(found)} differing rows are identical {how} to another text's row: "
            + "; ".join(words(g) for g in listed_groups[:3])
            + ("; ..." if len(listed_groups) > 3 else "")
            + ": a buffer reused or a row written twice"
        )
    else:
        detail = f"{len(found)} of {len(tested)} differing rows equal another text's row"
    repro = (min if status == "reproduced" else max)(repro_cosines) if repro_cosines else None
    fresh = min(fresh_cosines) if fresh_cosines else None
    return Hypothesis("duplicate-rows", TITLE, status, repro, fresh, tested, found, detail, evidence, "other-row")
