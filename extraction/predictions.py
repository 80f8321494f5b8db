"""Next-token predictions of a comparison as tables: the top tokens per text and strategy,
each text's tokens decoded, how many strategies disagree with single on each text, and where
each strategy read a text's state. Pure functions returning lists and DataFrames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch

if TYPE_CHECKING:
    from .compare import ComparisonReport

#: Top next tokens kept per text and strategy for the dashboard's Predictions page.
TOP_K = 5


def token_strings(decode: Callable[[list[int]], str], token_ids: Sequence[Sequence[int]]) -> list[list[str]]:
    """Per text, each token decoded on its own (``decode`` is e.g. ``tokenizer.decode``)."""
    return [[decode([token]) for token in ids] for ids in token_ids]


def top_k_frame(report: ComparisonReport, decode: Callable[[int], str], k: int = 5) -> pd.DataFrame:
    """Top ``k`` next tokens per text, for the reference and every strategy.

    The distribution is ``softmax(logits)`` at the position each strategy read, which is
    what ``lm_head`` gives on the strategy's extracted final state. One row per
    (strategy, text, rank) with columns ``strategy, text, rank, token_id, token,
    probability``; ``decode`` maps a token id to its text.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rows = []
    for name, comparison in report.strategies.items():
        logits = comparison.extraction.logits
        if logits is None:
            continue
        probabilities = torch.softmax(logits.double(), dim=-1)  # (N, V)
        top = probabilities.topk(min(k, probabilities.shape[-1]), dim=-1)
        for text in range(probabilities.shape[0]):
            for rank, (token, probability) in enumerate(
                zip(top.indices[text].tolist(), top.values[text].tolist(), strict=True), start=1
            ):
                rows.append(
                    {
                        "strategy": name,
                        "text": text,
                        "rank": rank,
                        "token_id": token,
                        "token": decode(token),
                        "probability": probability,
                    }
                )
    return pd.DataFrame(rows, columns=["strategy", "text", "rank", "token_id", "token", "probability"])


def disagreements(report: ComparisonReport, strategies: Sequence[str]) -> list[int]:
    """Per text, how many of ``strategies`` predict another top-1 next token than single."""
    return [
        sum(not bool(report.strategies[name].top1_same[i]) for name in strategies) for i in range(len(report.texts))
    ]


def most_disputed_text(counts: Sequence[int]) -> int:
    """The text with the most disagreeing strategies (the first of them on a tie)."""
    return max(range(len(counts)), key=lambda i: (counts[i], -i))


def top_k_table(top_k: pd.DataFrame, text: int, strategies: Sequence[str]) -> pd.DataFrame:
    """One text's top next tokens from :func:`top_k_frame`: a ``rank`` column, then one column
    per strategy with ``"'token'  12.3%"`` cells."""
    rows_of_text = top_k[top_k["text"] == text]
    table = pd.DataFrame({"rank": sorted(rows_of_text["rank"].unique())})
    for name in strategies:
        rows = rows_of_text[rows_of_text["strategy"] == name].sort_values("rank")
        table[name] = [
            f"{token!r}  {probability:.1%}"
            for token, probability in zip(rows["token"], rows["probability"], strict=True)
        ]
    return table


def read_positions_frame(
    report: ComparisonReport,
    text: int,
    strategies: Sequence[str],
    strings: Sequence[Sequence[str]],
    pad_token_id: int,
    pad_token: str,
) -> pd.DataFrame:
    """Where each strategy read text ``text``'s state and what that position could see: one row
    per strategy (token read, its position id, padding or another text seen, top-1 equal to
    single's, KL in nats). ``strings`` are the texts' decoded tokens (:func:`token_strings`)."""
    known_tokens = dict(zip(report.tokenized.token_ids[text], strings[text], strict=True))
    known_tokens.setdefault(pad_token_id, pad_token)
    rows = []
    for name in strategies:
        extraction = report.strategies[name].extraction
        token_id = int(extraction.read_token_ids[text])
        rows.append(
            {
                "strategy": name,
                "token read": known_tokens.get(token_id, f"id {token_id}"),
                "position id there": int(extraction.read_position_ids[text]),
                "saw padding": bool(extraction.saw_padding[text]),
                "saw another text": bool(extraction.saw_other_text[text]),
                "top-1 = single's": bool(report.strategies[name].top1_same[text]),
                "KL (nats)": float(report.strategies[name].kl[text]),
            }
        )
    return pd.DataFrame(rows)
