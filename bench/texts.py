"""The benchmark's texts: a seeded set whose token lengths spread evenly over a range, and
evenly spread subsets of it. Deterministic for a given tokenizer and seed; nothing is
downloaded."""

from __future__ import annotations

import random
from collections.abc import Sequence

DEFAULT_TEXTS = 256
DEFAULT_MIN_TOKENS = 5
DEFAULT_MAX_TOKENS = 200

_WORDS_SOURCE_EXTRA = (
    "a probe reads the hidden state of the last token and learns a direction that separates the classes, "
    "while padding shifts positions, hides tokens behind a mask, or lets texts see each other in one row"
)


def _word_pool() -> list[str]:
    from extraction.samples import SAMPLE_TEXTS

    words = " ".join([*SAMPLE_TEXTS, _WORDS_SOURCE_EXTRA]).split()
    return sorted(set(words))


def benchmark_texts(
    tokenizer,
    count: int = DEFAULT_TEXTS,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    seed: int = 0,
) -> list[str]:
    """``count`` texts whose token lengths are drawn uniformly from ``[min_tokens, max_tokens]``.

    Words from the sample texts are drawn with ``random.Random(seed)``; each text is the
    decoded first ``target`` tokens of such a word sequence, shortened word by word if
    re-tokenizing it gives more than ``max_tokens``. Deterministic for a given tokenizer
    and seed; nothing is downloaded.
    """
    if not 1 <= min_tokens <= max_tokens:
        raise ValueError(f"need 1 <= min_tokens <= max_tokens, got {min_tokens} and {max_tokens}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    rng = random.Random(seed)
    pool = _word_pool()

    def length(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    texts = []
    for _ in range(count):
        target = rng.randint(min_tokens, max_tokens)
        words = rng.choices(pool, k=target + 8)
        ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:target]
        text = tokenizer.decode(ids).strip()
        while length(text) > max_tokens and " " in text:
            text = text.rsplit(" ", 1)[0]
        while length(text) < min_tokens:
            text = f"{text} {rng.choice(pool)}"
        texts.append(text)
    return texts


def spread_subset(lengths: Sequence[int], size: int) -> list[int]:
    """``size`` indices spread evenly over the texts sorted by length (shortest and longest
    included), in ascending index order; all indices when ``size >= len(lengths)``."""
    n = len(lengths)
    if size >= n:
        return list(range(n))
    if size < 1:
        raise ValueError(f"subset size must be at least 1, got {size}")
    by_length = sorted(range(n), key=lambda i: (lengths[i], i))
    if size == 1:
        return [by_length[n // 2]]
    picks = {by_length[round(k * (n - 1) / (size - 1))] for k in range(size)}
    return sorted(picks)
