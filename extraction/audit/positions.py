"""``read-position``: the stored row is the state at another position of the same text (read at
-2 instead of -1, the first token read, ``hidden[:, k]`` with the wrong k).

The search: one forward pass of the text alone with every position kept (the layout of
:func:`~extraction.audit.reproduce.prefix_layout`) gives the candidates, every position of the
text at the stored layers; the best one reproduces the row or nothing does. The position is
named the way a pipeline indexes it, counted from the end (``-2``: the token before the last)
or from the start (``0``: the first token), whichever is the same for every tested row.
Tried under ``last`` pooling only (a mean or a per-token file reads every position).

When nothing reproduces the row, the evidence keeps the nearest source the pass holds: the
position and the hidden state (any layer) closest to the stored row, and its cosine, so that an
``unknown`` says how far the nearest thing this model computes for the text is.
"""

from __future__ import annotations

from .check import state_cosine
from .evidence import Evidence, RowSearch
from .report import Hypothesis
from .reproduce import prefix_layout, states_at

TITLE = "the state of another position of the same text was read"


def position_words(position: int) -> str:
    """``-2`` -> ``"position -2: the token before the last"``; ``0`` -> ``"position 0: the first
    token"`` (pure)."""
    if position == 0:
        what = "the first token"
    elif position == 1:
        what = "the second token"
    elif position == -2:
        what = "the token before the last"
    elif position < 0:
        what = f"{-position - 1} tokens before the last"
    else:
        what = f"token {position + 1} from the start"
    return f"position {position}: {what}"


def _common_position(tied: dict[int, list[int]], lengths: dict[int, int]) -> int | None:
    """The one index, from the end (negative) or from the start, that every row's best positions
    share (end first: a read at -2 is the commoner bug); None when there is none."""
    from_end = set.intersection(*({k - lengths[r] for k in ks} for r, ks in tied.items()))
    from_end.discard(-1)
    if from_end:
        return max(from_end)
    from_start = set.intersection(*(set(ks) for ks in tied.values()))
    from_start -= {lengths[r] - 1 for r in tied}
    return min(from_start) if from_start else None


def nearest_source(ev: Evidence, row: int) -> dict:
    """The position and the hidden states of the text's own pass nearest the stored row: each
    stored layer takes its best hidden state at a position, the position with the best worst
    layer wins. A dict: ``text``, ``position`` (from the end), ``hidden_states`` (one per stored
    layer) and ``cosine`` (the minimum over the stored layers)."""
    ids = ev.tokenized.token_ids[row]
    every = list(range(ev.loaded.num_hidden_layers + 1))
    states = states_at(ev.loaded, prefix_layout(ids), every)  # (n, S, d)
    stored = ev.stored_row(row)  # (L, d)
    scores = state_cosine(states[:, None, :, :], stored[None, :, None, :]).nan_to_num(-1.0)  # (n, L, S)
    per_layer, layer_of = scores.max(-1)  # (n, L): the best hidden state per stored layer
    position = int(per_layer.min(-1).values.argmax())
    return {
        "text": row,
        "position": position - len(ids),
        "hidden_states": layer_of[position].tolist(),
        "cosine": float(per_layer[position].min()),
    }


def read_position_hypothesis(ev: Evidence) -> Hypothesis:
    """``read-position``: the rule in the module docstring."""
    if ev.pooling != "last":
        reason = f"not tested under {ev.pooling} pooling (it reads every position of the text)"
        return Hypothesis("read-position", TITLE, "not applicable", None, None, [], [], reason)
    search = RowSearch(ev)
    tied: dict[int, list[int]] = {}
    lengths = {}
    for row in ev.rows:
        ids = ev.tokenized.token_ids[row]
        if len(ids) < 2:
            search.skip(row)
            break
        candidates = states_at(ev.loaded, prefix_layout(ids), ev.layers)[:-1]  # (n - 1, L, d): not the last
        if not search.score(row, candidates):
            break
        tied[row], lengths[row] = search.tied[row], len(ids)
    position = _common_position(tied, lengths) if tied and len(tied) == len(search.tested) else None
    evidence: dict = {"position": position, "tokens": None}
    if position is not None:
        ids = ev.tokenized.token_ids[ev.rows[0]]
        evidence["tokens"] = ev.loaded.tokenizer.convert_ids_to_tokens([ids[position]])
    elif search.reproduced and tied:  # each row at another position: nothing a pipeline indexes
        search.reproduced = []
    else:
        evidence["nearest"] = nearest_source(ev, ev.rows[0])
    example = ev.rows[0]
    detail = (
        f"the stored rows are the state at {position_words(position) if position is not None else '-'} of each "
        f"text (text {example + 1}: {evidence['tokens']}; reproduction cosine "
        f"{min(search.repro_cosines, default=float('nan')):.6f}); read position -1 (or gather at the "
        "attention mask's last 1) for the last token"
    )
    result = search.result("read-position", TITLE, detail, evidence, "other-position")
    if "nearest" in evidence and result.status != "reproduced":
        near = evidence["nearest"]
        result.detail += (
            f"; the nearest source in text {example + 1}'s own pass is position {near['position']} "
            f"(hidden states {near['hidden_states'][:4]}{' ...' if len(near['hidden_states']) > 4 else ''}), "
            f"cosine {near['cosine']:.6f}"
        )
    return result
