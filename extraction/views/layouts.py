"""What the "How it works" pictures show, computed (no drawing here): the forward passes a
strategy makes on some texts, the token in each cell of a pass, who each position can
attend to, the positions pooled into each text's state (:func:`pooled_cells`: the read
position under ``last``, the positions averaged under ``mean`` or kept under ``tokens``),
and one sentence per text on where it is read (or pooled) and what those positions saw.

:mod:`extraction.plotting.layouts` draws these; the dashboard's page chooses with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..pooling import Pooling, pooled_positions, span_facts
from ..strategies import BatchLayout, get_strategy

if TYPE_CHECKING:
    from ..comparison.compare import ComparisonReport

#: Token ids of the small batches :func:`strategy_summary` lays out, tried in order until the
#: strategy accepts one (texts of different lengths; equal lengths for ``bucketed``; one text
#: for ``single``).
_SUMMARY_BATCHES: tuple[tuple[tuple[int, ...], ...], ...] = (((1, 2, 3), (4,)), ((1, 2, 3), (4, 5, 6)), ((1, 2, 3),))


def strategy_summary(name: str, pooling: Pooling = "last") -> str:
    """What strategy ``name`` does, in a sentence or two: its summary, and outside ``last``
    what its pooled read takes, found by laying out a small batch (pads counted or kept, other
    texts seen), not from a table of names."""
    strategy = get_strategy(name)
    if pooling == "last":
        return strategy.summary
    for batch in _SUMMARY_BATCHES:
        try:
            layout = strategy.layout([list(ids) for ids in batch], 0)
        except ValueError:
            continue
        facts = span_facts(layout, pooling)
        verb = "averages" if pooling == "mean" else "keeps"
        if bool(facts["read_is_pad"].any()):
            taken = f"{verb} every column of a text's row, pads included"
        elif bool(facts["saw_other_text"].any()):
            taken = f"{verb} each text's own tokens, which attend to the texts before them"
        else:
            taken = f"{verb} each text's own tokens"
        return f"{strategy.summary} Under {pooling} pooling it {taken}."
    return strategy.summary


#: What query position i sees at key j, by the index :func:`attention_categories` gives.
ATTENTION_LABELS: tuple[str, ...] = (
    "hidden (masked or in the future)",
    "sees its own text",
    "sees ANOTHER text",
    "sees padding",
)

#: What the frames of a layout picture mark, per pooling (captions of the picture).
POOLED_MARKS: dict[str, str] = {
    "last": "a black frame marks the position read",
    "mean": "a black frame marks each position averaged into its text's state; a red frame, a pad position "
    "counted in the mean",
    "tokens": "a black frame marks each position kept as a row of its text; a red frame, a pad position kept "
    "as if it were a token",
}
#: The legend of the pooled frames, per pooling: (a text's own position, a pad position).
POOLED_LEGEND: dict[str, tuple[str, str]] = {
    "last": ("position read", "pad position read"),
    "mean": ("averaged (mean)", "pad counted in the mean"),
    "tokens": ("kept as a row (tokens)", "pad kept as a row"),
}


def plan_layouts(
    strategy: str, token_ids: Sequence[Sequence[int]], pad_id: int, batch_size: int
) -> list[tuple[list[int], BatchLayout]]:
    """The forward passes ``strategy`` makes on these texts: ``(text indices, layout)`` per pass."""
    chosen = get_strategy(strategy)
    lengths = [len(ids) for ids in token_ids]
    groups = chosen.plan(lengths, batch_size)
    return [(group, chosen.layout([token_ids[i] for i in group], pad_id)) for group in groups]


def cell_tokens(
    layout: BatchLayout, token_strings: Sequence[Sequence[str]], text_indices: Sequence[int]
) -> list[list[str | None]]:
    """(B, T): the decoded token in each cell of the pass, None for padding, ``"?"`` past the
    end of a text's tokens. ``token_strings[text_indices[k]]`` are the tokens of segment k."""
    rows, cols = layout.shape
    segments = layout.segment_ids  # (B, T)
    offsets = [0] * len(text_indices)
    grid: list[list[str | None]] = []
    for row in range(rows):
        line: list[str | None] = []
        for col in range(cols):
            segment = int(segments[row, col])
            if segment < 0:
                line.append(None)
                continue
            strings = token_strings[text_indices[segment]]
            line.append(strings[offsets[segment]] if offsets[segment] < len(strings) else "?")
            offsets[segment] += 1
        grid.append(line)
    return grid


def attention_categories(layout: BatchLayout, row: int) -> torch.Tensor:
    """(T, T) long: for batch ``row``, what query position i sees at key j (index into
    :data:`ATTENTION_LABELS`): 0 hidden, 1 its own text, 2 another text, 3 padding.
    A padding query counts the real tokens of its row as its own text."""
    rows, _ = layout.shape
    if not 0 <= row < rows:
        raise ValueError(f"row {row} out of range: this layout has rows 0..{rows - 1}")
    visible = layout.visibility()[row]  # (T, T)
    segments = layout.segment_ids[row]  # (T,)
    query, key = segments[:, None], segments[None, :]  # (T, 1), (1, T)
    # A pad query (segment -1) belongs to no text: the real tokens it sees are its row's own.
    category = torch.where(key < 0, 3, torch.where((key == query) | (query < 0), 1, 2))  # (T, T)
    return torch.where(visible, category, torch.zeros_like(category))


def pooled_cells(layout: BatchLayout, pooling: Pooling) -> dict[str, torch.Tensor]:
    """The cells that make each text's state under ``pooling``, from the layout itself
    (:func:`~extraction.pooling.pooled_positions`): ``rows``, ``cols``, ``owner`` (the text
    ``k`` of the pass each belongs to) and ``is_pad`` (the cell holds padding), each ``(P,)``.
    ``last``: the read positions; ``mean``: the positions averaged; ``tokens``: those kept."""
    rows, cols, owner = pooled_positions(layout, pooling)
    return {"rows": rows, "cols": cols, "owner": owner, "is_pad": layout.segment_ids[rows, cols] < 0}


def read_descriptions(
    layout: BatchLayout,
    token_strings: Sequence[Sequence[str]],
    text_indices: Sequence[int],
    pooling: Pooling = "last",
) -> list[str]:
    """One sentence per text of the pass: where it is read (``last``) or which positions are
    pooled into it (``mean``, ``tokens``), and what those positions could see."""
    if pooling != "last":
        return _pooled_descriptions(layout, token_strings, text_indices, pooling)
    facts = layout.read_facts()
    segments = layout.segment_ids
    sentences = []
    for k, text_index in enumerate(text_indices):
        row, col = int(layout.read_rows[k]), int(layout.read_cols[k])
        own = segments[row] == k  # (T,)
        last_real = int(own.nonzero().max()) if own.any() else -1
        if int(segments[row, col]) < 0:
            token = "a pad token"
        else:
            offset = int(own[: col + 1].sum()) - 1
            strings = token_strings[text_index]
            token = f"'{strings[offset]}'" if 0 <= offset < len(strings) else "a token"
        position = int(facts["position_ids"][k])
        where = f"Text {text_index + 1} is read in row {row}, column {col} ({token}, position id {position})"
        alone = len(token_strings[text_index]) - 1  # the position id of its last token when run alone
        if int(segments[row, col]) != k:
            what = f"that is not its last real token (column {last_real}): the wrong state is read"
        elif bool(facts["saw_other_text"][k]):
            what = "that position attends to another text's tokens: a contaminated state"
        elif bool(facts["saw_padding"][k]):
            what = "that position attends to padding"
        elif position != alone:
            what = (
                f"its position id is {position} where it would be {alone} alone, which changes the state on "
                "models with absolute position embeddings"
            )
        else:
            what = "it sees only its own tokens, at their own positions"
        sentences.append(f"{where}: {what}.")
    return sentences


def _pooled_descriptions(
    layout: BatchLayout, token_strings: Sequence[Sequence[str]], text_indices: Sequence[int], pooling: Pooling
) -> list[str]:
    """:func:`read_descriptions` under ``mean``/``tokens``: the span pooled per text, pads in it,
    what it could see, and its position ids against those the text has alone."""
    cells = pooled_cells(layout, pooling)
    facts = span_facts(layout, pooling)
    positions = layout.effective_position_ids()  # (B, T)
    verb = "averaged over" if pooling == "mean" else "kept as rows from"
    sentences = []
    for k, text_index in enumerate(text_indices):
        mine = cells["owner"] == k  # (P,)
        rows, cols, is_pad = cells["rows"][mine], cells["cols"][mine], cells["is_pad"][mine]
        tokens = len(token_strings[text_index])
        pads = int(is_pad.sum())
        span = ", ".join(
            f"row {int(row)}, columns {int(cols[rows == row].min())}-{int(cols[rows == row].max())}"
            for row in rows.unique()
        )
        counted = f"{len(rows)} positions: {len(rows) - pads} of its {tokens} tokens" + (
            f" and {pads} pad positions" if pads else ""
        )
        where = f"Text {text_index + 1} is {verb} {span} ({counted})"
        own_positions = positions[rows[~is_pad], cols[~is_pad]]  # (n,)
        if pads and pooling == "mean":
            what = "the pad positions' states are counted in the mean: a corrupted state"
        elif pads:
            what = f"the pad positions are stored as if they were tokens: {len(rows)} rows for {tokens} tokens"
        elif bool(facts["saw_other_text"][k]):
            what = "its positions attend to another text's tokens: contaminated states"
        elif bool(facts["saw_padding"][k]):
            what = "its positions attend to padding"
        elif not torch.equal(own_positions, torch.arange(len(own_positions))):
            what = (
                f"its position ids run {int(own_positions.min())}-{int(own_positions.max())} where they would be "
                f"0-{len(own_positions) - 1} alone, which changes the states on models with absolute position "
                "embeddings"
            )
        else:
            what = "only its own tokens, at their own positions, seeing only its own text"
        sentences.append(f"{where}: {what}.")
    return sentences


def default_layout_texts(lengths: Sequence[int], count: int = 3) -> list[int]:
    """Texts to lay out by default: the first text of each distinct length, shortest first, up
    to ``count`` of them (padding needs different lengths; few texts keep the picture readable),
    in text order; ``[0]`` when there is none."""
    first_of_length: dict[int, int] = {}
    for index in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        first_of_length.setdefault(lengths[index], index)
    return sorted(list(first_of_length.values())[:count]) or [0]


def worst_strategy(report: ComparisonReport) -> str:
    """The strategy of ``report`` with the lowest cosine to single (NaN counts as lowest)."""
    return min(report.strategies, key=lambda name: float(report.strategies[name].cosine.nan_to_num(-2.0).min()))


def most_padded_row(layout: BatchLayout) -> int:
    """The batch row worth drawing: the one with the most padding (the first row when none has any)."""
    return int(layout.is_pad.sum(-1).argmax())
