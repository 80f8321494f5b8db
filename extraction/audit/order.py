"""``order``: the stored rows are other texts' correct states (the rows were reordered).

Found from one matrix of cosines between the fresh single-sample states of the checked texts
(K, computed by the check anyway) and every stored row (N): text t's state is in the stored
row that matches it best; and, the other way round, each differing row holds the state of the
checked text that matches it best (a shift, row i holding text i + 1, leaves one text's state
nowhere: every row is found, not every text). A row is explained when that text is another one.
The matrix is taken at no more than :data:`MATCH_LAYERS` stored
layers; each match is then tested at every stored layer like any reproduction (cosine,
closeness, relative L2: :func:`~extraction.audit.evidence.reproduces`). No forward pass.

The rows found are then compared with the order the texts have sorted by token length,
ascending or descending (equal lengths in any order): a pipeline that sorted its texts for
speed and never restored the order stores exactly that; and with one shift for every moved
row (``rows shifted by 1: row i holds text i+1``, an index off by one), which is named too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .check import state_cosine, state_relative_l2
from .evidence import Evidence, reproduces
from .report import Hypothesis, HypothesisStatus

TITLE = "the rows are other texts' states (the rows were reordered)"
MATCH_LAYERS = 4  # stored layers the cosine matrix is taken at (evenly spaced; matches are re-tested at all)
MATCH_CHUNK = 64  # fresh rows per block of the matrix (bounds its memory: MATCH_CHUNK x N x MATCH_LAYERS)
MAX_LISTED = 24  # moved rows listed in the evidence


def best_stored_rows(fresh: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """For each fresh state, the stored row that matches it best (pure).

    ``fresh`` (K, L, d), ``stored`` (N, L, d). The score of a pair is the minimum over the
    layers of their cosine; returns (K,) stored row indices."""
    fresh_unit = torch.nn.functional.normalize(fresh.float(), dim=-1).transpose(0, 1)  # (L, K, d)
    stored_unit = torch.nn.functional.normalize(stored.float(), dim=-1).permute(1, 2, 0)  # (L, d, N)
    best = []
    for start in range(0, fresh_unit.shape[1], MATCH_CHUNK):
        scores = torch.bmm(fresh_unit[:, start : start + MATCH_CHUNK], stored_unit)  # (L, k, N)
        best.append(scores.nan_to_num(-1.0).min(0).values.argmax(1))  # (k,)
    return torch.cat(best)


def sorted_order(lengths: Sequence[int], row_of_text: dict[int, int]) -> str | None:
    """``"ascending"`` or ``"descending"`` when every text ``t`` sits, at ``row_of_text[t]``, where
    sorting the texts by length that way puts it (equal lengths in any order); else None (pure)."""
    lengths_t = torch.tensor(list(lengths))
    for direction in ("ascending", "descending"):
        fits = True
        for text, row in row_of_text.items():
            before = lengths_t < lengths[text] if direction == "ascending" else lengths_t > lengths[text]
            low = int(before.sum())
            high = low + int((lengths_t == lengths[text]).sum())
            if not low <= row < high:
                fits = False
                break
        if fits:
            return direction
    return None


def _match_layers(count: int) -> list[int]:
    """At most MATCH_LAYERS positions among ``count`` stored layers, evenly spaced, the last included."""
    if count <= MATCH_LAYERS:
        return list(range(count))
    return sorted({round(k * (count - 1) / (MATCH_LAYERS - 1)) for k in range(MATCH_LAYERS)})


def common_shift(text_of_row: dict[int, int], count: int) -> tuple[int | None, bool]:
    """``(k, wraps)`` when every moved row ``i`` holds text ``i + k`` (past the end: the last text;
    ``wraps``: the last rows hold the first texts, ``i + k - count``); ``(None, False)`` when no one
    shift does (pure)."""
    offsets = {t - r for r, t in text_of_row.items()}
    for k in sorted({o for o in offsets if o > -count}, key=abs):
        if k == 0:
            continue
        # Past the end an index clamped to the last text (or a last row repeated) holds that text.
        plain = all(t - r == k or (t == count - 1 and r + k > t) for r, t in text_of_row.items())
        if plain:
            return k, False
        if all((t - r) % count == k % count for r, t in text_of_row.items()):
            return k, True
    return None, False


def shift_words(shift: int, wraps: bool) -> str:
    """``1`` -> ``"rows shifted by 1: row i holds text i+1"`` (pure)."""
    sign = "+" if shift > 0 else "-"
    words = f"rows shifted by {shift}: row i holds text i{sign}{abs(shift)}"
    return words + (" (wrapping around)" if wraps else "")


def order_hypothesis(ev: Evidence) -> Hypothesis:
    """``order``: the rule in the module docstring."""
    if ev.fresh_checked is None:
        reason = "not tested under tokens pooling (rows are matched per text)"
        return Hypothesis("order", TITLE, "not applicable", None, None, [], [], reason)
    token_ids = ev.tokenized.token_ids
    position = {text: k for k, text in enumerate(ev.checked)}
    picked = _match_layers(len(ev.layers))
    best = best_stored_rows(ev.fresh_checked[:, picked], ev.stored[:, picked])  # (K,)
    row_of_text = {text: int(best[k]) for k, text in enumerate(ev.checked)}
    # Row by row too: the checked text whose state each differing row holds (a shift drops a text's
    # state altogether, so not every text is found, but every row is).
    affected = list(ev.affected_checked)
    sources = best_stored_rows(ev.stored[affected][:, picked], ev.fresh_checked[:, picked]) if affected else []
    tested, found, repro_cosines, fresh_cosines = [], [], [], []
    text_of_row: dict[int, int] = {}
    for k, row in enumerate(affected):
        own = float(state_cosine(ev.stored[row], ev.fresh_checked[position[row]]).nan_to_num(-1.0).min())
        tested.append(row)
        fresh_cosines.append(own)
        text = ev.checked[int(sources[k])]
        if token_ids[row] == token_ids[text]:  # its own text's state (or that of the same text repeated) fits best
            continue
        fresh = ev.fresh_checked[position[text]]
        repro = float(state_cosine(ev.stored[row], fresh).nan_to_num(-1.0).min())
        error = float(state_relative_l2(ev.stored[row], fresh).nan_to_num(float("inf")).max())
        repro_cosines.append(repro)
        if reproduces(repro, own, error):
            found.append(row)
            text_of_row[row] = text
    exact = set(ev.checked) - set(ev.affected_checked)
    if found and all(text_of_row[r] in exact for r in found):  # copies of rows that are right: duplicate-rows
        found, text_of_row = [], {}
    located = {
        t: (t if t in exact else row_of_text[t])
        for t in ev.checked
        if t in exact or row_of_text[t] in text_of_row and text_of_row[row_of_text[t]] == t
    }
    moved = {t: r for t, r in located.items() if token_ids[r] != token_ids[t]}
    direction = sorted_order(ev.tokenized.lengths, located) if found else None
    shift, wraps = common_shift(text_of_row, len(token_ids)) if text_of_row else (None, False)
    status: HypothesisStatus = (
        "reproduced" if tested and len(found) == len(tested) else "partial" if found else "rejected"
    )
    evidence = {
        "rows_moved": len(moved),
        "n_checked": len(ev.checked),
        "row_of_text": {str(t): r for t, r in list(moved.items())[:MAX_LISTED]},
        "sorted_by_length": direction,
        "texts_not_found": sum(1 for t in ev.affected_checked if t not in located),
        "shift": shift,
        "text_of_row": {str(r): t for r, t in list(text_of_row.items())[:MAX_LISTED]},
    }
    listed = ", ".join(f"text {t + 1} in row {r + 1}" for t, r in list(moved.items())[:4])
    if shift is not None:
        how = f"; {shift_words(shift, wraps)}"
    elif direction:
        how = (
            f"; the rows are in the order of the texts sorted by {direction} token length (sorted for speed and the "
            "order never restored)"
        )
    else:
        how = "; not the order of the texts sorted by length"
    detail = (
        f"{len(text_of_row)} of {len(ev.checked)} checked rows hold another text's correct state "
        f"({listed}{' ...' if len(moved) > 4 else ''}; cosine {min(repro_cosines, default=float('nan')):.6f})" + how
    )
    if status != "reproduced":
        detail = (
            f"{len(found)} of {len(tested)} differing rows hold another text's state "
            f"(best cosine {max(repro_cosines, default=float('nan')):.6f})"
        )
    # Reproduced: the worst match; otherwise the best one seen (how close the idea came).
    repro = (min if status == "reproduced" else max)(repro_cosines) if repro_cosines else None
    return Hypothesis(
        "order",
        TITLE,
        status,
        repro,
        min(fresh_cosines) if fresh_cosines else None,
        tested,
        found,
        detail,
        evidence,
        "other-row",
    )
