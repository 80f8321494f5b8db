"""Next-token predictions of a comparison as tables: the top tokens per text and strategy,
each text's tokens decoded, how many strategies disagree with single on each text, and where
each strategy read a text's state. Pure functions returning lists and DataFrames.

``lm_head`` agreement (top-1, KL, the logit lens) exists under ``last`` pooling only
(:func:`has_lm_head`); under ``mean``/``tokens`` the tables leave those columns out and the
dashboard and the HTML report say :data:`LM_HEAD_ONLY_LAST` instead of drawing them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch

if TYPE_CHECKING:
    from ..comparison.compare import ComparisonReport

#: Top next tokens kept per text and strategy for the dashboard's Predictions page.
TOP_K = 5
#: Why top-1 agreement, KL and the logit lens are "n/a" under ``mean``/``tokens`` pooling.
LM_HEAD_ONLY_LAST = (
    "lm_head agreement (top-1, KL, the logit lens) is defined for the last token only: lm_head predicts "
    "the next token from the last token's state, not from a mean or from every token. "
    "The verdicts here use cosine and relative L2 of the pooled states."
)
#: How a measure that does not exist for this pooling is shown.
NOT_APPLICABLE = "n/a"


def has_lm_head(report: ComparisonReport) -> bool:
    """Whether ``report`` has lm_head measures (top-1, KL, logit lens): ``last`` pooling only."""
    return report.pooling == "last"


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
    """Per text, how many of ``strategies`` predict another top-1 next token than single
    (zeros when the pooling has no lm_head measures)."""
    if not has_lm_head(report):
        return [0] * len(report.texts)
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
    single's, KL in nats). ``strings`` are the texts' decoded tokens (:func:`token_strings`).

    Under ``mean``/``tokens`` the facts are over the text's pooled positions (the token and
    position id at its last real token among them), without the top-1 and KL columns, which
    do not exist there; under ``tokens`` with ``rows kept`` (the rows stored for the text)."""
    known_tokens = dict(zip(report.tokenized.token_ids[text], strings[text], strict=True))
    known_tokens.setdefault(pad_token_id, pad_token)
    rows = []
    for name in strategies:
        comparison = report.strategies[name]
        extraction = comparison.extraction
        token_id = int(extraction.read_token_ids[text])
        row = {
            "strategy": name,
            "token read": known_tokens.get(token_id, f"id {token_id}"),
            "position id there": int(extraction.read_position_ids[text]),
            "saw padding": bool(extraction.saw_padding[text]),
            "saw another text": bool(extraction.saw_other_text[text]),
        }
        if comparison.top1_same is not None and comparison.kl is not None:
            row["top-1 = single's"] = bool(comparison.top1_same[text])
            row["KL (nats)"] = float(comparison.kl[text])
        elif extraction.offsets is not None:  # tokens: the rows kept for the text
            row["rows kept"] = int(extraction.offsets[text + 1] - extraction.offsets[text])
        rows.append(row)
    return pd.DataFrame(rows)
