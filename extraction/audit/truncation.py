"""``truncated``: texts longer than N tokens were cut to N (``truncation=True, max_length=N``).

The rows that match bound N from below (a text of n <= N tokens is not cut) and the rows that
differ from above (each was cut, so it is longer than N): N is searched in that range only.
The right side cut (the default) keeps a text's first N tokens: with a causal model one
forward pass of the whole text gives the state after each of its prefixes (the mean over the
first N tokens under ``mean``), so every N costs nothing more. Only if that fails is the left
side tried (``truncation_side="left"``: the last N tokens, one batched pass of the candidate
suffixes, at most :data:`MAX_CUT_CANDIDATES`). Not tested under ``tokens`` pooling (a cut text
has fewer rows: the row count already says so).
"""

from __future__ import annotations

from ..texts import TokenizedTexts
from .evidence import Evidence, RowSearch, fresh_states
from .report import Hypothesis
from .reproduce import padded_means, prefix_layout, states_at

TITLE = "texts longer than N tokens were cut to N (truncation)"
MAX_CUT_CANDIDATES = 64  # left side: cut lengths tried per row (one suffix each)


def cut_range(lengths: list[int], exact: list[int], affected: list[int]) -> tuple[int, int]:
    """``(low, high)``: the cut lengths N that leave every ``exact`` text whole and cut every
    ``affected`` one (pure); ``low > high`` when none does."""
    low = max([lengths[r] for r in exact], default=1)
    high = min([lengths[r] for r in affected], default=0) - 1
    return low, high


def _search(ev: Evidence, low: int, high: int, side: str) -> tuple[RowSearch, set[int]]:
    search = RowSearch(ev)
    common: set[int] | None = None
    for row in ev.rows:
        ids = ev.tokenized.token_ids[row]
        cuts = list(range(low, min(high, len(ids) - 1) + 1))
        if side == "left":
            cuts = cuts[:MAX_CUT_CANDIDATES]
        if not cuts:
            search.skip(row)
            break
        if side == "right" and ev.pooling == "mean":
            candidates = padded_means(ev.loaded, prefix_layout(ids), ev.layers, cuts)  # (C, L, d)
        elif side == "right":
            candidates = states_at(ev.loaded, prefix_layout(ids), ev.layers)[[n - 1 for n in cuts]]  # (C, L, d)
        else:
            suffixes = TokenizedTexts([""] * len(cuts), [ids[-n:] for n in cuts])
            candidates = fresh_states(ev, suffixes)  # (C, L, d)
        if not search.score(row, candidates):
            break
        tied = {cuts[k] for k in search.tied[row]}
        common = tied if common is None else common & tied
    return search, common or set()


def truncated_hypothesis(ev: Evidence) -> Hypothesis:
    """``truncated``: the rule in the module docstring."""
    if ev.pooling == "tokens":
        reason = "not tested under tokens pooling (a cut text has fewer rows than tokens: the row count says so)"
        return Hypothesis("truncated", TITLE, "not applicable", None, None, [], [], reason)
    lengths = ev.tokenized.lengths
    low, high = cut_range(lengths, ev.exact_checked, ev.affected_checked)
    if low > high:
        shortest = min(ev.affected_checked, key=lambda r: lengths[r])
        reason = f"no cut length fits: text {shortest + 1} ({lengths[shortest]} tokens) differs"
        if ev.exact_checked:
            longest = max(ev.exact_checked, key=lambda r: lengths[r])
            reason += f" while text {longest + 1} ({lengths[longest]} tokens) matches"
        return Hypothesis(
            "truncated", TITLE, "rejected", None, None, [], [], reason, {"max_length": None}, "other-tokens"
        )
    search, cuts = _search(ev, low, high, "right")
    side = "right"
    if len(search.reproduced) < len(search.tested):
        left, left_cuts = _search(ev, low, high, "left")
        if len(left.reproduced) > len(search.reproduced):
            search, cuts, side = left, left_cuts, "left"
    n = min(cuts) if cuts else None
    longer = [r for r in ev.checked if n is not None and lengths[r] > n]
    evidence = {
        "max_length": (n if len(cuts) == 1 else sorted(cuts)) if cuts else None,
        "side": side if cuts else None,
        "texts_longer": len(longer),
        "all_longer_differ": sorted(longer) == sorted(ev.affected_checked) if cuts else None,
    }
    kept = "first" if side == "right" else "last"
    at = f"state at token {n}" if ev.pooling == "last" else f"mean over those {n} tokens"
    detail = (
        f"texts longer than {n} tokens were cut to their {kept} {n} ({side} side cut; e.g. truncation=True, "
        f"max_length={n}): the rows of the {len(longer)} checked texts longer than that are the {at} "
        f"(reproduction cosine {min(search.repro_cosines, default=float('nan')):.6f})"
    )
    if len(cuts) > 1:
        detail += f"; any cut length of {min(cuts)}..{max(cuts)} gives these rows"
    return search.result("truncated", TITLE, detail, evidence, "other-tokens")
