"""``chat-template``: the states are those of the texts formatted with the chat template (with or
without the generation prompt), or the reverse.

The variants of a text tried (:func:`chat_variants`), each rendered with the model's own
template (:func:`~extraction.chat.render_chat`):

* a plain text formatted as one user turn, without or with the generation prompt
  (``add_generation_prompt=True``: the text ends in the assistant's header);
* a text that is already one rendered user turn (audited with ``--chat-template``): the
  generation prompt added or removed, or the template taken off (the plain text).

Every variant is tried on the worst row (one batched pass), and the one that reproduces it on
the other tested rows. The evidence says which options audit such a file as exact.
"""

from __future__ import annotations

from ..chat import has_chat_template, render_chat
from ..texts import tokenize_texts
from .evidence import Evidence, RowSearch, fresh_states
from .report import Hypothesis

TITLE = "the texts were (or were not) formatted with the chat template"
MARKER = "\u2063CONTENT\u2063"  # stands for a turn's content when the template's frame is rendered

#: variant -> (what the pipeline did, the audit options that reproduce it)
VARIANTS = {
    "chat": ("formatted as one user turn with the chat template", "--chat-template"),
    "chat+generation-prompt": (
        "formatted as one user turn with the chat template and the generation prompt",
        "--chat-template --generation-prompt",
    ),
    "generation-prompt-added": ("the generation prompt added after the chat template", "--generation-prompt"),
    "generation-prompt-removed": ("the chat template without the generation prompt", "no --generation-prompt"),
    "template-removed": ("plain texts, without the chat template", "no --chat-template"),
}


def _frame(tokenizer, generation_prompt: bool) -> tuple[str, str]:
    """The text a user turn's content sits between: (before, after)."""
    rendered = render_chat(tokenizer, [{"role": "user", "content": MARKER}], generation_prompt)
    before, _, after = rendered.partition(MARKER)
    return before, after


def chat_variants(text: str, tokenizer) -> dict[str, str]:
    """``{variant: text}`` for the variants of ``text`` in the module docstring that differ from it."""
    plain_frame, prompt_frame = _frame(tokenizer, False), _frame(tokenizer, True)
    suffix = prompt_frame[1][len(plain_frame[1]) :] if prompt_frame[1].startswith(plain_frame[1]) else ""
    variants = {}
    for frame, with_prompt in ((plain_frame, False), (prompt_frame, True)):
        before, after = frame
        if text.startswith(before) and text.endswith(after) and len(text) >= len(before) + len(after):
            content = text[len(before) : len(text) - len(after)]
            variants["template-removed"] = content
            if with_prompt and suffix:
                variants["generation-prompt-removed"] = text[: len(text) - len(suffix)]
            elif suffix:
                variants["generation-prompt-added"] = text + suffix
            return variants
    variants["chat"] = render_chat(tokenizer, [{"role": "user", "content": text}], False)
    variants["chat+generation-prompt"] = render_chat(tokenizer, [{"role": "user", "content": text}], True)
    return variants


def chat_template_hypothesis(ev: Evidence) -> Hypothesis:
    """``chat-template``: the rule in the module docstring."""
    tokenizer = ev.loaded.tokenizer
    if not has_chat_template(tokenizer):
        reason = "the model has no chat template"
        return Hypothesis("chat-template", TITLE, "not applicable", None, None, [], [], reason)
    if ev.pooling == "tokens":
        reason = "not tested under tokens pooling (other tokens give another row count: it says so)"
        return Hypothesis("chat-template", TITLE, "not applicable", None, None, [], [], reason)
    search = RowSearch(ev)
    wanted: str | None = None
    for row in ev.rows:
        variants = chat_variants(ev.tokenized.texts[row], tokenizer)
        if wanted is not None:
            variants = {wanted: variants[wanted]} if wanted in variants else {}
        if not variants:
            search.skip(row)
            break
        names = list(variants)
        tokenized = tokenize_texts(tokenizer, [variants[n] for n in names], max_tokens=ev.loaded.context_length)
        candidates = fresh_states(ev, tokenized)  # (C, L, d)
        if not search.score(row, candidates):
            break
        wanted = names[search.best[row]]
    found = wanted if search.reproduced else None
    what, options = VARIANTS[found] if found else ("-", None)
    evidence = {"variant": found, "audit_with": options}
    detail = (
        f"the stored rows are the texts {what} (reproduction cosine "
        f"{min(search.repro_cosines, default=float('nan')):.6f}); audit with {options} to check the file as it was made"
    )
    return search.result("chat-template", TITLE, detail, evidence, "other-tokens")
