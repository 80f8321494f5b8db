"""``wrong-layer``: the stored states belong to other layers than the ones named.

The fresh single-sample states of the tested rows are extracted at every hidden state once
(for all hypotheses), so the search is free: for each stored layer, the hidden state of
the model that matches it best over the tested rows (the worst of their cosines), among
all of them. The mapping found is then tested row by row like any reproduction. It covers
an off-by-one or a far shift of one layer (``hidden_states[5]`` stored as layer 20), a
consistent offset of every layer in a file holding them all (``hidden_states[1:]`` stored
as layers 0..), and any other permutation.
"""

from __future__ import annotations

import torch

from .check import state_cosine
from .evidence import Evidence, RowSearch
from .report import Hypothesis

TITLE = "the stored states belong to other layers than the ones named"


def best_layers(stored_rows: torch.Tensor, fresh_rows: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """For each stored layer, the hidden state that matches it best over the rows (pure).

    ``stored_rows`` (R, L, d), ``fresh_rows`` (R, S, d) every hidden state. Returns the best
    hidden-state index per stored layer (L,) and the score table (L, S): the minimum over the
    rows of cos(stored[r, i], fresh[r, j]), NaN counted as -1.
    """
    scores = state_cosine(stored_rows[:, :, None, :], fresh_rows[:, None, :, :])  # (R, L, S)
    table = scores.nan_to_num(-1.0).min(0).values  # (L, S)
    return table.argmax(1).tolist(), table


def describe_mapping(named: list[int], actual: list[int]) -> tuple[str, int | None]:
    """The mapping in words, and the offset when every moved layer moved by the same amount."""
    moved = [(n, a) for n, a in zip(named, actual, strict=True) if n != a]
    offsets = {a - n for n, a in moved}
    pairs = ", ".join(f"{n} -> {a}" for n, a in moved[:6]) + (" ..." if len(moved) > 6 else "")
    if len(offsets) == 1:
        offset = offsets.pop()
        words = f"{len(moved)} of {len(named)} named layers are hidden_states {offset:+d} from their name ({pairs})"
        return words, offset
    return f"the named layers map to other hidden states ({pairs})", None


def wrong_layer_hypothesis(ev: Evidence) -> Hypothesis:
    num_states = ev.loaded.num_hidden_layers + 1
    if num_states < 2:
        return Hypothesis("wrong-layer", TITLE, "not applicable", None, None, [], [], "the model has one hidden state")
    stored_rows = ev.stored[ev.rows]  # (R, L, d)
    fresh_rows = torch.stack([ev.fresh[r] for r in ev.rows])  # (R, S, d)
    mapping, table = best_layers(stored_rows, fresh_rows)
    evidence = {
        "named_layers": ev.layers,
        "matching_layers": mapping,
        "offset": None,
        "best_cosine_per_layer": [float(table[i, j]) for i, j in enumerate(mapping)],
    }
    if mapping == ev.layers:
        detail = "each stored layer matches its own hidden state better than any other"
        return Hypothesis("wrong-layer", TITLE, "rejected", None, None, list(ev.rows), [], detail, evidence)
    search = RowSearch(ev)
    for row in ev.rows:
        if not search.score(row, ev.fresh[row][mapping][None]):  # (1, L, d)
            break
    words, offset = describe_mapping(ev.layers, mapping)
    evidence["offset"] = offset
    moved = [(n, a) for n, a in zip(ev.layers, mapping, strict=True) if n != a]
    detail = (
        f"{words}; cosine {min(search.repro_cosines, default=float('nan')):.6f}; "
        + "; ".join(convention_words(n, a) for n, a in moved[:2])
        + ("; ..." if len(moved) > 2 else "")
    )
    return search.result("wrong-layer", TITLE, detail, evidence, "other-layer")


def convention_words(named: int, actual: int) -> str:
    """What ``hidden_states[actual]`` stored as ``hidden_states[named]`` is, in both conventions of
    counting layers (pure): ``hidden_states[k + 1]`` is the output of decoder layer k counted from 0,
    which nnsight calls ``layers[k]`` and TransformerLens ``blocks.k``."""
    if actual == 0:
        return f"stored as hidden_states[{named}], it is hidden_states[0]: the embeddings, before any decoder layer"
    block = actual - 1
    return (
        f"stored as hidden_states[{named}], it is hidden_states[{actual}]: the output of decoder layer {block} "
        f"counted from 0, e.g. nnsight `layers[{block}]` or TransformerLens `blocks.{block}.hook_resid_post` "
        f"(hidden_states[k] is the output of layer k counted from 1)"
    )
