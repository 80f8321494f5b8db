"""Are a store's own token ids the given texts' tokenization? And if not, how do they differ?

A store that keeps its token ids (:mod:`extraction.storage.stored_ids`) is re-extracted from those
ids; when texts are given too, each sampled text's tokenization (as single-sample extraction
tokenizes it) is compared with the stored ids, and a difference is named with the edits the
forensics know, applied to ids and texts instead of to states:

- ``special-tokens`` (:mod:`.special_tokens`): a special token added or dropped at the start or the
  end (e.g. a BOS added: TransformerLens' ``prepend_bos``; dropped: ``add_special_tokens=False``),
  or a string added (``" </s>"``, ``"query: "``), tokenized with the text;
- ``chat-template`` (:mod:`.chat_template`): the text formatted with the chat template (with or
  without the generation prompt), or the template taken off;
- ``truncated`` (:mod:`.truncation`'s vocabulary): the stored ids are the text's first N ids (a
  right side cut) or its last N (a left side cut);
- ``other``: none of these (another tokenizer, or other texts): the first position that differs.

:func:`compare_token_ids` is pure given the tokenizer (no forward pass).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ..chat import has_chat_template
from ..texts import tokenize_texts
from .chat_template import VARIANTS, chat_variants
from .special_tokens import added_ids, special_ids, string_edits, token_edits


@dataclass(frozen=True)
class IdsDifference:
    """One way the stored ids differ from the texts' tokenization, and the checked texts it fits."""

    how: str  # "special-tokens", "chat-template", "truncated" or "other"
    detail: str  # in words, e.g. "<|im_start|> added at the start"
    texts: tuple[int, ...]  # text indices (0-based)

    def to_dict(self) -> dict:
        return {"how": self.how, "detail": self.detail, "texts": list(self.texts)}


@dataclass
class StoredIdsCheck:
    """What the audit knows of a store's own token ids.

    Attributes:
        name: the tensor or column they came from.
        layout: how the store lays them out, in words.
        texts_given: whether texts were given beside them (else nothing was compared).
        checked: texts compared (the sampled ones), 0 without texts.
        same: of those, the texts whose tokenization is exactly the stored ids.
        differences: the others, grouped by how they differ (most texts first).
    """

    name: str
    layout: str
    texts_given: bool
    checked: int = 0
    same: int = 0
    differences: list[IdsDifference] = field(default_factory=list)

    def describe(self) -> str:
        source = f"re-extracted from the store's own token ids ({self.name}: {self.layout})"
        if not self.texts_given:
            return f"{source}; no texts given, so their tokenization was not compared"
        if self.same == self.checked:
            return f"{source}; they are the texts' tokenization ({self.same} of {self.checked} checked texts)"
        ways = "; ".join(f"{d.detail} ({len(d.texts)} of them)" for d in self.differences)
        return (
            f"{source}; they are NOT the texts' tokenization in {self.checked - self.same} of {self.checked} "
            f"checked texts: {ways}"
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "layout": self.layout,
            "texts_given": self.texts_given,
            "checked": self.checked,
            "same": self.same,
            "differences": [d.to_dict() for d in self.differences],
        }


def how_ids_differ(tokenizer, text: str, ours: list[int], stored: list[int], max_tokens=None) -> tuple[str, str]:
    """``(how, detail)``: how ``stored`` differs from ``ours`` (``text``'s tokenization); ``("same", "")`` if not."""
    if stored == ours:
        return "same", ""
    special = set(special_ids(tokenizer))
    for edit in token_edits(tokenizer):
        if edit.apply(ours, special) == stored:
            return "special-tokens", edit.describe(tokenizer, ours)
    strings = string_edits(tokenizer)
    variants = chat_variants(text, tokenizer) if has_chat_template(tokenizer) else {}
    candidates = [edit.apply_text(text) for edit in strings] + list(variants.values())
    if text and candidates:
        tokenized = tokenize_texts(tokenizer, candidates, max_tokens=max_tokens).token_ids
        for edit, new in zip(strings, tokenized, strict=False):
            if new == stored:
                return "special-tokens", edit.describe(tokenizer, added_ids=added_ids(ours, new, edit.where))
        for name, new in zip(variants, tokenized[len(strings) :], strict=True):
            if new == stored:
                return "chat-template", f"the texts {VARIANTS[name][0]}"
    n = len(stored)
    if 0 < n < len(ours) and ours[:n] == stored:
        return "truncated", f"cut to their first {n} tokens (right side cut, e.g. truncation=True, max_length={n})"
    if 0 < n < len(ours) and ours[-n:] == stored:
        return "truncated", f"cut to their last {n} tokens (left side cut, truncation_side='left')"
    first = next((k for k, (a, b) in enumerate(zip(ours, stored, strict=False)) if a != b), min(len(ours), n))
    return "other", (
        f"other ids (first difference at token {first}; {len(stored)} stored ids against {len(ours)}): "
        "another tokenizer, or not these texts"
    )


def compare_token_ids(
    tokenizer,
    name: str,
    layout: str,
    texts: list[str] | None,
    ours: list[list[int]] | None,
    stored: list[list[int]],
    indices: list[int],
    max_tokens: int | None = None,
) -> StoredIdsCheck:
    """The :class:`StoredIdsCheck` of the texts at ``indices`` (``texts``/``ours``: their texts and
    tokenization, None when no texts were given; ``stored``: their stored ids)."""
    if texts is None or ours is None:
        return StoredIdsCheck(name, layout, False)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    same = 0
    for index, text, mine, kept in zip(indices, texts, ours, stored, strict=True):
        how, detail = how_ids_differ(tokenizer, text, mine, kept, max_tokens)
        if how == "same":
            same += 1
        else:
            groups[(how, detail)].append(index)
    differences = [IdsDifference(how, detail, tuple(found)) for (how, detail), found in groups.items()]
    differences.sort(key=lambda d: -len(d.texts))
    return StoredIdsCheck(name, layout, True, len(indices), same, differences)


__all__ = ["IdsDifference", "StoredIdsCheck", "compare_token_ids", "how_ids_differ"]
