"""``chat-template``: the states are those of the texts formatted with the chat template (with
or without its system turn, with or without the generation prompt), or the reverse.

The variants of a text tried (:func:`chat_variants`), each rendered with the model's own
template (:func:`~extraction.chat.render_chat`):

* a plain text formatted as one user turn, as a user writes it with ``apply_chat_template``:
  without a system message (the template's own system turn, where it has one: SmolLM2 adds a
  default one), with a common system message (:data:`SYSTEM_PROMPTS`), and with no system turn
  at all (the template's user turn alone, as a hand-written template gives it); each without
  and with the generation prompt (``add_generation_prompt=True``: the text ends in the
  assistant's header);
* a text that is already one rendered user turn (audited with ``--chat-template``): the
  generation prompt added or removed, or the template taken off (the plain text).

Every variant is tried on the worst row (one batched pass), and the one that reproduces it on
the other tested rows. Formatting changes every text: when some checked row matches, the
hypothesis does not apply. The evidence names the variant (``variant``, and in words: "chat
template, system turn included, generation prompt added"), its ``system_turn`` and
``generation_prompt``, and the options that audit such a file as exact (``audit_with``). A
system message outside :data:`SYSTEM_PROMPTS` is not guessed: such a file stays ``unknown``.
"""

from __future__ import annotations

from ..chat import has_chat_template, render_chat
from ..texts import tokenize_texts
from .evidence import Evidence, RowSearch, fresh_states
from .report import Hypothesis

TITLE = "the texts were (or were not) formatted with the chat template"
MARKER = "\u2063CONTENT\u2063"  # stands for a turn's content when the template's frame is rendered

SYSTEM_MARKER = "\u2063SYSTEM\u2063"  # stands for a system turn's content
#: System messages tried besides none (the most common one: Qwen's default, many scripts' first line).
SYSTEM_PROMPTS = ("You are a helpful assistant.",)
#: Audited with --chat-template, the texts carry the template's own system turn; the rest no option renders.
AS_MESSAGES = "texts as .jsonl chat messages rendered the same way (no audit option renders this variant)"

#: variant -> (what the pipeline did, the audit options that reproduce it)
VARIANTS = {
    "chat": ("formatted as one user turn with the chat template", "--chat-template"),
    "chat+generation-prompt": (
        "formatted as one user turn with the chat template and the generation prompt",
        "--chat-template --generation-prompt",
    ),
    "chat-with-system": ("formatted with the chat template after a system message", AS_MESSAGES),
    "chat-with-system+generation-prompt": (
        "formatted with the chat template after a system message, with the generation prompt",
        AS_MESSAGES,
    ),
    "chat-without-system": ("formatted as the chat template's user turn alone (no system turn)", AS_MESSAGES),
    "chat-without-system+generation-prompt": (
        "formatted as the chat template's user turn alone (no system turn), with the generation prompt",
        AS_MESSAGES,
    ),
    "generation-prompt-added": ("the generation prompt added after the chat template", "--generation-prompt"),
    "generation-prompt-removed": ("the chat template without the generation prompt", "no --generation-prompt"),
    "template-removed": ("plain texts, without the chat template", "no --chat-template"),
}
#: variant -> (system turn: "default" the template's own when none is given, "given", "none"; generation prompt)
VARIANT_PARTS = {
    "chat": ("default", False),
    "chat+generation-prompt": ("default", True),
    "chat-with-system": ("given", False),
    "chat-with-system+generation-prompt": ("given", True),
    "chat-without-system": ("none", False),
    "chat-without-system+generation-prompt": ("none", True),
    "generation-prompt-added": (None, True),
    "generation-prompt-removed": (None, False),
    "template-removed": (None, None),
}


def variant_words(variant: str, system_prompt: str | None = None) -> str:
    """``"chat+generation-prompt"`` -> ``"chat template, system turn included, generation prompt
    added"`` (pure; "system turn included" is the template's own, when no system message is given)."""
    system, prompt = VARIANT_PARTS[variant]
    if prompt is None:
        return "no chat template"
    system_words = {
        "default": "system turn included",
        "given": f"system message {system_prompt!r}" if system_prompt else "a system message given",
        "none": "no system turn",
        None: "system turn as in the texts",
    }[system]
    return f"chat template, {system_words}, generation prompt {'added' if prompt else 'not added'}"


def _frame(tokenizer, generation_prompt: bool) -> tuple[str, str]:
    """The text a user turn's content sits between: (before, after)."""
    rendered = render_chat(tokenizer, [{"role": "user", "content": MARKER}], generation_prompt)
    before, _, after = rendered.partition(MARKER)
    return before, after


def _user_turn_alone(tokenizer, text: str, generation_prompt: bool) -> str | None:
    """``text`` as the template's user turn without any system turn: the rendering after a system
    message with the system turn (the rendering of the system message alone) taken off; None when
    the template does not render that way (a system message merged into the user turn, or refused)."""
    system = [{"role": "system", "content": SYSTEM_MARKER}]
    try:
        alone = render_chat(tokenizer, system, False)
        both = render_chat(tokenizer, [*system, {"role": "user", "content": text}], generation_prompt)
    except Exception:  # noqa: BLE001 (a template that refuses a system turn raises its own errors)
        return None
    if not both.startswith(alone) or SYSTEM_MARKER not in alone:
        return None
    return both[len(alone) :]


def user_turn_frame(tokenizer, generation_prompt: bool) -> tuple[str, str]:
    """The text a user turn's content sits between when the template renders it without any system
    turn: (before, after); ``("", "")`` when it cannot (:func:`_user_turn_alone`)."""
    alone = _user_turn_alone(tokenizer, MARKER, generation_prompt)
    if alone is None or MARKER not in alone:
        return "", ""
    before, _, after = alone.partition(MARKER)
    return before, after


def _plain_variants(text: str, tokenizer) -> dict[str, str]:
    """A plain text's chat variants (module docstring): ``{variant: rendered text}``, one variant
    per distinct rendering (a template without a system turn of its own renders "default" as "none")."""
    user = [{"role": "user", "content": text}]
    variants: dict[str, str] = {}
    for prompt, suffix in ((False, ""), (True, "+generation-prompt")):
        variants["chat" + suffix] = render_chat(tokenizer, user, prompt)
        for system_prompt in SYSTEM_PROMPTS:
            try:
                given = render_chat(tokenizer, [{"role": "system", "content": system_prompt}, *user], prompt)
            except Exception:  # noqa: BLE001 (a template that refuses a system turn)
                continue
            variants.setdefault("chat-with-system" + suffix, given)
        alone = _user_turn_alone(tokenizer, text, prompt)
        if alone is not None:
            variants["chat-without-system" + suffix] = alone
    distinct: dict[str, str] = {}
    for name, rendered in variants.items():
        if rendered != text and rendered not in distinct.values():
            distinct[name] = rendered
    return distinct


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
    return _plain_variants(text, tokenizer)


def chat_template_hypothesis(ev: Evidence) -> Hypothesis:
    """``chat-template``: the rule in the module docstring."""
    tokenizer = ev.loaded.tokenizer
    if not has_chat_template(tokenizer):
        reason = "the model has no chat template"
        return Hypothesis("chat-template", TITLE, "not applicable", None, None, [], [], reason)
    if ev.pooling == "tokens":
        reason = "not tested under tokens pooling (other tokens give another row count: it says so)"
        return Hypothesis("chat-template", TITLE, "not applicable", None, None, [], [], reason)
    if ev.exact_checked:
        reason = f"formatting with the chat template changes every text, and {len(ev.exact_checked)} checked rows match"
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
    system_turn, generation_prompt = VARIANT_PARTS[found] if found else (None, None)
    system_prompt = SYSTEM_PROMPTS[0] if system_turn == "given" else None
    evidence = {
        "variant": found,
        "audit_with": options,
        "system_turn": system_turn,
        "system_prompt": system_prompt,
        "generation_prompt": generation_prompt,
        "variant_words": variant_words(found, system_prompt) if found else None,
    }
    detail = (
        f"the stored rows are the texts {what} ({evidence['variant_words']}; reproduction cosine "
        f"{min(search.repro_cosines, default=float('nan')):.6f}); audit with {options} to check the file as it was made"
    )
    return search.result("chat-template", TITLE, detail, evidence, "other-tokens")
