"""``order``: the stored rows are other texts' correct states (the rows were reordered).

Found from one matrix of cosines between the fresh single-sample states of the checked texts
(K, computed by the check anyway) and every stored row (N): text t's state is in the stored
row that matches it best. The matrix is taken at no more than :data:`MATCH_LAYERS` stored
layers; each match is then tested at every stored layer like any reproduction (cosine,
closeness, relative L2: :func:`~extraction.audit.evidence.reproduces`). No forward pass.

The rows found are then compared with the order the texts have sorted by token length,
ascending or descending (equal lengths in any order): a pipeline that sorted its texts for
speed and never restored the order stores exactly that.
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
    tested, found, repro_cosines, fresh_cosines = [], [], [], []
    for text in ev.affected_checked:
        fresh = ev.fresh_checked[position[text]]  # (L, d)
        own = float(state_cosine(ev.stored[text], fresh).nan_to_num(-1.0).min())
        row = row_of_text[text]
        tested.append(text)
        fresh_cosines.append(own)
        if token_ids[row] == token_ids[text]:  # its own row, or the row of the same text repeated
            continue
        repro = float(state_cosine(ev.stored[row], fresh).nan_to_num(-1.0).min())
        error = float(state_relative_l2(ev.stored[row], fresh).nan_to_num(float("inf")).max())
        repro_cosines.append(repro)
        if reproduces(repro, own, error):
            found.append(text)
    exact = set(ev.checked) - set(ev.affected_checked)
    located = {t: (t if t in exact else row_of_text[t]) for t in ev.checked if t in exact or t in found}
    moved = {t: r for t, r in located.items() if token_ids[r] != token_ids[t]}
    direction = sorted_order(ev.tokenized.lengths, located) if found else None
    status: HypothesisStatus = (
        "reproduced" if tested and len(found) == len(tested) else "partial" if found else "rejected"
    )
    evidence = {
        "rows_moved": len(moved),
        "n_checked": len(ev.checked),
        "row_of_text": {str(t): r for t, r in list(moved.items())[:MAX_LISTED]},
        "sorted_by_length": direction,
        "texts_not_found": len(tested) - len(found),
    }
    listed = ", ".join(f"text {t + 1} in row {r + 1}" for t, r in list(moved.items())[:4])
    sorted_words = (
        f"; the rows are in the order of the texts sorted by {direction} token length (sorted for speed and the "
        "order never restored)"
        if direction
        else "; not the order of the texts sorted by length"
    )
    detail = (
        f"{len(moved)} of {len(ev.checked)} checked texts have their correct state in another text's row "
        f"({listed}{' ...' if len(moved) > 4 else ''}; cosine {min(repro_cosines, default=float('nan')):.6f})"
        + sorted_words
    )
    if status != "reproduced":
        detail = (
            f"{len(found)} of {len(tested)} differing texts have their state in another row "
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
