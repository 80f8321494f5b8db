"""Chat-formatted texts: conversations rendered with the model's own chat template.

A texts file's ``.jsonl`` line may hold a ``messages`` field instead of ``text``: a list of
``{"role": ..., "content": ...}`` turns, as instruct data sets store them. Parsing is pure and
lives in :mod:`extraction.texts` (``parse_messages`` gives a ``Chat``); rendering needs the
tokenizer, so it is a separate step, :func:`format_texts`, done once the model is loaded:

* a :class:`Chat` becomes ``tokenizer.apply_chat_template(messages, tokenize=False)``;
* a plain text stays as it is, or, with ``as_chat=True`` (the ``--chat-template`` flag,
  the app's *Format as chat* toggle), becomes one user turn rendered the same way.

The template is rendered as the model ships it (nothing stripped), without the generation
prompt unless ``generation_prompt=True`` (``--generation-prompt``, the app's *Add the
generation prompt* toggle: ``add_generation_prompt=True``, which ends the text in the
assistant's header, ``<|im_start|>assistant\n`` on SmolLM2, as a file made for generation
was): SmolLM2's adds a default system turn when none is given and ends every turn in
``<|im_end|>`` and a newline. The one change: when the rendered text starts with the
tokenizer's BOS token and the tokenizer adds a BOS itself, the leading one is dropped
so that tokenizing the text gives a single BOS, as ``apply_chat_template(tokenize=True)``
would.

A model without a chat template cannot format chat data: one :class:`~extraction.texts.TextsError`
says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from .texts import Chat, TextItem, TextsError


def has_chat_template(tokenizer) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def needs_template(items: Sequence[TextItem], as_chat: bool) -> bool:
    """Whether rendering ``items`` needs a chat template."""
    return as_chat or any(isinstance(item, Chat) for item in items)


def render_chat(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    """``messages`` rendered with the tokenizer's chat template (``add_generation_prompt`` as
    given), without a leading BOS that tokenizing adds anyway."""
    asked = {"add_generation_prompt": True} if generation_prompt else {}  # the template's default otherwise
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, **asked)
    return _without_doubled_bos(rendered, tokenizer)


def format_texts(
    items: Sequence[TextItem],
    tokenizer,
    as_chat: bool = False,
    model_name: str = "the model",
    generation_prompt: bool = False,
) -> list[str]:
    """The texts to tokenize: each :class:`Chat` (and, with ``as_chat``, each plain text as
    one user turn) rendered with the tokenizer's chat template, ending in the generation
    prompt with ``generation_prompt``; other texts unchanged.

    Raises :class:`TextsError` when a template is needed and the model has none, the
    template refuses a conversation (a role it does not know, say), or ``generation_prompt``
    is asked for texts that are not rendered with a template.
    """
    if generation_prompt and not needs_template(items, as_chat):
        raise TextsError(
            "--generation-prompt ends chat-formatted texts in the assistant's header: give --chat-template "
            "or chat 'messages' too"
        )
    if not needs_template(items, as_chat):
        return [item for item in items if isinstance(item, str)]
    if not has_chat_template(tokenizer):
        raise TextsError(
            f"{model_name} has no chat template: chat 'messages' and --chat-template need one; "
            "give plain texts without --chat-template"
        )
    texts = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, str) and not as_chat:
            texts.append(item)
            continue
        chat = item if isinstance(item, Chat) else Chat((("user", item),))
        try:
            texts.append(render_chat(tokenizer, chat.messages(), generation_prompt))
        except Exception as error:  # jinja2 raises its own TemplateError for refused conversations
            raise TextsError(f"text {number}: the chat template of {model_name} refused it ({error})") from None
    return texts


def _without_doubled_bos(rendered: str, tokenizer) -> str:
    """``rendered`` without its leading BOS token when tokenizing would add one anyway."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or not rendered.startswith(bos):
        return rendered
    bos_id = getattr(tokenizer, "bos_token_id", None)
    added = tokenizer("", add_special_tokens=True)["input_ids"]
    return rendered[len(bos) :] if bos_id is not None and bos_id in added else rendered


__all__ = ["Chat", "TextItem", "format_texts", "has_chat_template", "needs_template", "render_chat"]
