"""``special-tokens``: a special token was added or dropped at the start or the end of every text.

The edits tried (:func:`token_edits`): each of the tokenizer's special tokens (BOS, EOS, pad,
``<|im_start|>``..., at most :data:`MAX_SPECIAL_TOKENS`) added before or after the text, and
the text's first or last token dropped where it is a special one. TransformerLens prepends a
BOS by default (``<|im_start|>`` on SmolLM2, whose tokenizer adds none); a pipeline that
tokenizes with ``add_special_tokens=False`` drops the BOS a Llama tokenizer adds. Every edit
is tried on the worst row (one batched pass of the edited texts), and the one that reproduces
it on the other tested rows. An added token changes every text, so the hypothesis is
rejected when some checked row matches.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..texts import TokenizedTexts
from .evidence import Evidence, RowSearch, fresh_states
from .report import Hypothesis

TITLE = "a special token added or dropped at the start or end of every text"
MAX_SPECIAL_TOKENS = 8  # special tokens tried, in the tokenizer's order


@dataclass(frozen=True)
class TokenEdit:
    """One change to a text's token ids."""

    change: str  # "added" or "dropped"
    where: str  # "start" or "end"
    token_id: int | None  # the token added (None: whatever special token the text has there)

    def apply(self, ids: list[int], special: set[int]) -> list[int] | None:
        """The edited ids, or None when the edit does not apply (nothing special to drop, or empty)."""
        if self.change == "added":
            return [self.token_id, *ids] if self.where == "start" else [*ids, self.token_id]
        if len(ids) < 2:
            return None
        end = ids[0] if self.where == "start" else ids[-1]
        if end not in special:
            return None
        return ids[1:] if self.where == "start" else ids[:-1]

    def to_dict(self, tokenizer) -> dict:
        token = tokenizer.convert_ids_to_tokens(self.token_id) if self.token_id is not None else None
        return {"change": self.change, "where": self.where, "token": token, "token_id": self.token_id}

    def describe(self, tokenizer, ids: list[int] | None = None) -> str:
        token_id = self.token_id if self.token_id is not None else (ids[0] if self.where == "start" else ids[-1])
        token = tokenizer.convert_ids_to_tokens(token_id)
        roles = [r for r in ("bos", "eos", "pad") if getattr(tokenizer, f"{r}_token_id", None) == token_id]
        role = f" (the tokenizer's {'/'.join(r.upper() for r in roles)} token)" if roles else ""
        preposition = "at" if self.change == "added" else "from"
        return f"{token}{role} {self.change} {preposition} the {self.where}"


def special_ids(tokenizer) -> list[int]:
    """The tokenizer's special token ids, BOS first, at most MAX_SPECIAL_TOKENS."""
    ids = [getattr(tokenizer, f"{r}_token_id", None) for r in ("bos", "eos", "pad")]
    ids += list(getattr(tokenizer, "all_special_ids", []))
    unique = list(dict.fromkeys(i for i in ids if i is not None))
    return unique[:MAX_SPECIAL_TOKENS]


def token_edits(tokenizer) -> list[TokenEdit]:
    """Every edit tried: each special token added at the start, then at the end; the first or last token dropped."""
    specials = special_ids(tokenizer)
    edits = [TokenEdit("added", "start", t) for t in specials] + [TokenEdit("added", "end", t) for t in specials]
    return edits + [TokenEdit("dropped", "start", None), TokenEdit("dropped", "end", None)]


def edited_states(ev: Evidence, row: int, edits: list[TokenEdit]) -> tuple:
    """The row's states with each applicable edit of ``edits``: ((C, L, d), the edits applied)."""
    ids = ev.tokenized.token_ids[row]
    special = set(special_ids(ev.loaded.tokenizer))
    applied = [(e, e.apply(ids, special)) for e in edits]
    applied = [(e, new) for e, new in applied if new is not None]
    if not applied:
        return None, []
    texts = TokenizedTexts([""] * len(applied), [new for _, new in applied])
    hidden = fresh_states(ev, texts)  # (C, L, d)
    return hidden, [e for e, _ in applied]


def special_tokens_hypothesis(ev: Evidence) -> Hypothesis:
    """``special-tokens``: the rule in the module docstring."""
    if ev.pooling == "tokens":
        reason = "not tested under tokens pooling (an added or dropped token changes the row count: it says so)"
        return Hypothesis("special-tokens", TITLE, "not applicable", None, None, [], [], reason)
    tokenizer = ev.loaded.tokenizer
    search = RowSearch(ev)
    edits = token_edits(tokenizer)
    for row in ev.rows:
        candidates, applied = edited_states(ev, row, edits)
        if candidates is None:
            search.skip(row)
            break
        if not search.score(row, candidates):
            break
        edits = [applied[search.best[row]]]  # the same edit for every text
    edit = edits[0] if len(edits) == 1 and search.reproduced else None
    evidence = {"edit": edit.to_dict(tokenizer) if edit else None}
    if edit is not None and edit.change == "added" and ev.exact_checked:
        reason = (
            f"{edit.describe(tokenizer)} reproduces the tested rows, but an added token changes every text and "
            f"{len(ev.exact_checked)} checked rows match"
        )
        result = search.result("special-tokens", TITLE, reason, evidence, "other-tokens")
        result.status, result.detail, result.rows_reproduced = "rejected", reason, []
        return result
    example = ev.tokenized.token_ids[ev.rows[0]]
    detail = (
        f"the stored rows are the texts with {edit.describe(tokenizer, example) if edit else '-'} "
        f"(reproduction cosine {min(search.repro_cosines, default=float('nan')):.6f})"
    )
    if edit is not None and edit.change == "added" and edit.where == "start":
        detail += "; e.g. TransformerLens' prepend_bos, or a template that starts with it"
    return search.result("special-tokens", TITLE, detail, evidence, "other-tokens")
