"""``special-tokens``: a special token or a short string was added, or a special token dropped,
at the start or the end of every text.

The edits tried (:func:`token_edits`): each of the tokenizer's special tokens (BOS, EOS, pad,
``<|im_start|>``..., at most :data:`MAX_SPECIAL_TOKENS`) added before or after the text, the
text's first or last token dropped where it is a special one, and the strings pipelines add
(:func:`string_edits`: each special token's text after a space, as llm2vec appends ``" </s>"``,
other families' end strings, a newline; the instruction prefixes of embedding recipes, ``"query:
"``...; the chat template's own pieces, :func:`template_pieces`), each tokenized with the text
as the pipeline would and named as tokenized. TransformerLens prepends a
BOS by default (``<|im_start|>`` on SmolLM2, whose tokenizer adds none); a pipeline that
tokenizes with ``add_special_tokens=False`` drops the BOS a Llama tokenizer adds. Every edit
is tried on the worst row (one batched pass of the edited texts), and the one that reproduces
it on the other tested rows. An added token or string changes every text, so when some
checked row matches only the drops are tried.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..chat import has_chat_template
from ..texts import TokenizedTexts, tokenize_texts
from .chat_template import user_turn_frame
from .evidence import Evidence, RowSearch, fresh_states
from .report import Hypothesis

TITLE = "a special token or a string added or dropped at the start or end of every text"
MAX_SPECIAL_TOKENS = 8  # special tokens tried, in the tokenizer's order
#: Strings appended to every text: other families' end-of-sequence strings, whitespace.
END_STRINGS = ("</s>", " </s>", "<|endoftext|>", " <|endoftext|>", "<eos>", "\n", " ", ".")
#: Strings prepended: the instruction prefixes of embedding recipes (E5, Nomic, BGE, GTE), whitespace.
START_STRINGS = (
    "query: ",
    "passage: ",
    "Query: ",
    "search_query: ",
    "search_document: ",
    "Represent this sentence for searching relevant passages: ",
    "Instruct: ",
    " ",
    "\n",
)


@dataclass(frozen=True)
class TokenEdit:
    """One change to a text's token ids."""

    change: str  # "added" or "dropped"
    where: str  # "start" or "end"
    token_id: int | None  # the token added (None: whatever special token the text has there, or a string)
    string: str | None = None  # a string added to the text before tokenizing (token_id None)
    template_piece: bool = False  # the string is a piece of the chat template (``chat-template`` names it better)

    def apply(self, ids: list[int], special: set[int]) -> list[int] | None:
        """The edited ids, or None when the edit does not apply (nothing special to drop, or empty,
        or a string: :meth:`apply_text`)."""
        if self.string is not None:
            return None
        if self.change == "added":
            return [self.token_id, *ids] if self.where == "start" else [*ids, self.token_id]
        if len(ids) < 2:
            return None
        end = ids[0] if self.where == "start" else ids[-1]
        if end not in special:
            return None
        return ids[1:] if self.where == "start" else ids[:-1]

    def apply_text(self, text: str) -> str:
        """The text with the string added (string edits only)."""
        return self.string + text if self.where == "start" else text + self.string

    def to_dict(self, tokenizer, added_ids: list[int] | None = None) -> dict:
        token = tokenizer.convert_ids_to_tokens(self.token_id) if self.token_id is not None else None
        found = {"change": self.change, "where": self.where, "token": token, "token_id": self.token_id}
        if self.string is not None:
            found["string"] = self.string
            found["tokens"] = tokenizer.convert_ids_to_tokens(added_ids) if added_ids else None
        if self.template_piece:
            found["template_piece"] = True
        return found

    def describe(self, tokenizer, ids: list[int] | None = None, added_ids: list[int] | None = None) -> str:
        if self.string is not None:
            tokens = tokenizer.convert_ids_to_tokens(added_ids) if added_ids else []
            count = f"{len(tokens)} token{'s' if len(tokens) != 1 else ''}"
            named = f" ({count}: {', '.join(map(repr, tokens))})" if tokens else ""
            return f"the string {self.string!r}{named} added at the {self.where}"
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


def template_pieces(tokenizer) -> tuple[list[str], list[str]]:
    """``(starts, ends)``: the chat template's own pieces, as a pipeline that writes part of a
    template by hand adds them: the user turn's header before the text, its end (and the
    generation prompt after it) after the text; empty lists without a template (or one that
    renders no user turn alone)."""
    if not has_chat_template(tokenizer):
        return [], []
    before, after = user_turn_frame(tokenizer, False)
    prompted = user_turn_frame(tokenizer, True)[1]
    starts = [before] if before else []
    ends = list(dict.fromkeys(piece for piece in (after, prompted, prompted[len(after) :]) if piece))
    return starts, ends


def string_edits(tokenizer) -> list[TokenEdit]:
    """The strings tried: each special token's text after a space, then :data:`END_STRINGS` and the
    chat template's pieces (:func:`template_pieces`), at the end; :data:`START_STRINGS` and the
    template's user-turn header at the start. A string no pipeline could derive from these is not
    guessed (the file stays ``unknown``, with the nearest source ``read-position`` found)."""
    specials = [tokenizer.convert_ids_to_tokens(t) for t in special_ids(tokenizer)]
    starts, template_ends = template_pieces(tokenizer)
    ends = list(dict.fromkeys([" " + s for s in specials if s] + list(END_STRINGS) + template_ends))
    pieces = {*starts, *template_ends} - {*START_STRINGS, *END_STRINGS}
    return [TokenEdit("added", "end", None, s, s in pieces) for s in ends] + [
        TokenEdit("added", "start", None, s, s in pieces) for s in dict.fromkeys([*START_STRINGS, *starts])
    ]


def added_ids(ids: list[int], new: list[int], where: str) -> list[int]:
    """The ids ``new`` has beyond ``ids`` at ``where`` (pure): what an added string became, tokenized."""
    if where == "start":
        common = 0
        while common < min(len(ids), len(new)) and ids[-1 - common] == new[-1 - common]:
            common += 1
        return new[: len(new) - common]
    common = 0
    while common < min(len(ids), len(new)) and ids[common] == new[common]:
        common += 1
    return new[common:]


def edited_ids(ev: Evidence, row: int, edits: list[TokenEdit]) -> list[tuple[TokenEdit, list[int]]]:
    """``(edit, the row's edited ids)`` for each edit of ``edits`` that applies to the row."""
    ids = ev.tokenized.token_ids[row]
    special = set(special_ids(ev.loaded.tokenizer))
    applied = [(e, e.apply(ids, special)) for e in edits if e.string is None]
    text = ev.tokenized.texts[row] if row < len(ev.tokenized.texts) else ""
    strings = [e for e in edits if e.string is not None]
    if strings and text:
        retokenized = tokenize_texts(
            ev.loaded.tokenizer, [e.apply_text(text) for e in strings], max_tokens=ev.loaded.context_length
        )
        applied += list(zip(strings, retokenized.token_ids, strict=True))
    return [(e, new) for e, new in applied if new is not None and new != ids]


def edited_states(ev: Evidence, row: int, edits: list[TokenEdit]) -> tuple:
    """The row's states with each applicable edit of ``edits``: ((C, L, d), the edits applied, their ids)."""
    applied = edited_ids(ev, row, edits)
    if not applied:
        return None, [], []
    texts = TokenizedTexts([""] * len(applied), [new for _, new in applied])
    hidden = fresh_states(ev, texts)  # (C, L, d)
    return hidden, [e for e, _ in applied], [new for _, new in applied]


def special_tokens_hypothesis(ev: Evidence) -> Hypothesis:
    """``special-tokens``: the rule in the module docstring."""
    if ev.pooling == "tokens":
        reason = "not tested under tokens pooling (an added or dropped token changes the row count: it says so)"
        return Hypothesis("special-tokens", TITLE, "not applicable", None, None, [], [], reason)
    tokenizer = ev.loaded.tokenizer
    search = RowSearch(ev)
    edits = token_edits(tokenizer) + string_edits(tokenizer)
    if ev.exact_checked:  # an added token or string changes every text: only a drop leaves rows exact
        edits = [e for e in edits if e.change == "dropped"]
    added: list[int] | None = None
    for row in ev.rows:
        candidates, applied, new_ids = edited_states(ev, row, edits)
        if candidates is None:
            search.skip(row)
            break
        if not search.score(row, candidates):
            break
        best = search.best[row]
        edits = [applied[best]]  # the same edit for every text
        if added is None and applied[best].string is not None:
            added = added_ids(ev.tokenized.token_ids[row], new_ids[best], applied[best].where)
    edit = edits[0] if len(edits) == 1 and search.reproduced else None
    evidence = {"edit": edit.to_dict(tokenizer, added) if edit else None}
    if edit is None and ev.exact_checked:
        result = search.result("special-tokens", TITLE, "-", evidence, "other-tokens")
        result.detail += (
            f"; only a dropped special token was tried: an added token or string changes every text and "
            f"{len(ev.exact_checked)} checked rows match"
        )
        return result
    example = ev.tokenized.token_ids[ev.rows[0]]
    detail = (
        f"the stored rows are the texts with {edit.describe(tokenizer, example, added) if edit else '-'} "
        f"(reproduction cosine {min(search.repro_cosines, default=float('nan')):.6f})"
    )
    if edit is not None and edit.change == "added" and edit.where == "start" and edit.string is None:
        detail += "; e.g. TransformerLens' prepend_bos, or a template that starts with it"
    if edit is not None and edit.template_piece:
        detail += "; a piece of the chat template, written by hand without the rest of it"
    elif edit is not None and edit.string is not None and edit.where == "end" and edit.string.strip().startswith("<"):
        detail += "; e.g. llm2vec's eos_token pooling, which appends the EOS as text"
    return search.result("special-tokens", TITLE, detail, evidence, "other-tokens")
