"""Stored files as people make them outside this project, with plain transformers: the data
and the extraction code of a popular extraction library, known bugs included.

Used by the audit tests (tiny and integration tiers) to check that the audit names what is
wrong in files it did not write.
"""

from __future__ import annotations

import torch

#: Chat turns as instruct models' data has them, each text ending in ``<|im_end|>`` (the eos
#: token, which is also the pad token of SmolLM2 and of the tiny models, which share its tokenizer).
CHAT_TURNS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Hi", "Hello!"),
    ("Give me three colours.", "Red, green and blue."),
    ("How many legs does a spider have?", "Eight."),
    ("Translate 'good morning' into German, please, and say how formal it is.", "Guten Morgen; it is neutral."),
    ("2+2?", "4"),
    ("Name a prime number larger than ten.", "Eleven is prime, and so is thirteen."),
    ("Why is the sky blue?", "Sunlight scatters off air molecules, and blue light scatters most."),
]


def plain_last_states(loaded, texts: list[str]) -> torch.Tensor:
    """Correct last-layer states, one text at a time with plain transformers: (N, d)."""
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([loaded.tokenizer(text)["input_ids"]])
            rows.append(loaded.model(ids, output_hidden_states=True).hidden_states[-1][0, -1].float())
    return torch.stack(rows)


def chat_texts(count: int = len(CHAT_TURNS)) -> list[str]:
    """``count`` chat-formatted texts (user turn, assistant turn), each ending in ``<|im_end|>``."""
    texts = []
    for k in range(count):
        question, answer = CHAT_TURNS[k % len(CHAT_TURNS)]
        if k >= len(CHAT_TURNS):
            question = f"{question} (asked again, number {k})"
        texts.append(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>")
    return texts


def library_last_token_states(model, tokenizer, texts: list[str], layer: int, batch_size: int = 8) -> torch.Tensor:
    """Last-token states as a popular extraction library takes them: batches of ``batch_size``,
    right padding, ``output_hidden_states=True``, and ``hidden_states[layer][:, -1]``, which is a
    pad token's state for every text shorter than the longest of its batch. (N, d) float32."""
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], padding=True, padding_side="right", return_tensors="pt")
        with torch.no_grad():
            output = model(**batch, output_hidden_states=True)
        rows.append(output.hidden_states[layer][:, -1].float())
    return torch.cat(rows)


def perturb_rows(states: torch.Tensor, rows: list[int], cosine: float, seed: int = 0) -> torch.Tensor:
    """A copy of ``states`` (N, L, d) where each of ``rows`` is turned, at every layer, by a random
    direction orthogonal to it so that its cosine to the original is ``cosine`` and its length is
    kept; the other rows stay bit-exact (a float32 file from another build differs like that)."""
    generator = torch.Generator().manual_seed(seed)
    out = states.clone()
    angle = torch.tensor(cosine, dtype=torch.float64).acos()
    for row in rows:
        original = states[row].double()  # (L, d)
        noise = torch.randn(original.shape, generator=generator, dtype=torch.float64)
        unit = original / original.norm(dim=-1, keepdim=True)
        noise = noise - (noise * unit).sum(-1, keepdim=True) * unit  # orthogonal to each layer's state
        noise = noise / noise.norm(dim=-1, keepdim=True) * original.norm(dim=-1, keepdim=True)
        out[row] = (original * angle.cos() + noise * angle.sin()).float()
    return out


def add_noise(states: torch.Tensor, relative: float, seed: int = 0) -> torch.Tensor:
    """``states`` (N, L, d) plus Gaussian noise of ``relative`` times each vector's length."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(states.shape, generator=generator)
    noise = noise / noise.norm(dim=-1, keepdim=True) * states.norm(dim=-1, keepdim=True) * relative
    return states + noise


# --- defects of real pipelines (issue 21), each written as a user writes it with plain transformers ---


def _gather_last(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``hidden`` (B, T, d) read at each row's last real token (right padding, ``mask`` (B, T))."""
    return hidden[torch.arange(hidden.shape[0]), mask.sum(1) - 1]  # (B, d)


def unmasked_right_padded_states(model, tokenizer, texts: list[str], layer: int, batch_size: int = 8) -> torch.Tensor:
    """Right padding **without** an attention mask (``model(input_ids)``, pads attended), read at
    -1, as TransformerLens 4.3 does for right padding. (N, d) float32."""
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], padding=True, padding_side="right", return_tensors="pt")
        with torch.no_grad():
            output = model(batch["input_ids"], output_hidden_states=True)
        rows.append(output.hidden_states[layer][:, -1].float())
    return torch.cat(rows)


def length_sorted_states(model, tokenizer, texts: list[str], layer: int, batch_size: int = 4) -> torch.Tensor:
    """Texts sorted by length for speed, each read correctly (right padding, the mask, gathered at its
    last token), and the order never restored: row i is the i-th shortest text's state. (N, d)."""
    order = sorted(range(len(texts)), key=lambda i: len(tokenizer(texts[i])["input_ids"]))
    rows = []
    for start in range(0, len(texts), batch_size):
        chunk = [texts[i] for i in order[start : start + batch_size]]
        batch = tokenizer(chunk, padding=True, padding_side="right", return_tensors="pt")
        with torch.no_grad():
            output = model(**batch, output_hidden_states=True)
        rows.append(_gather_last(output.hidden_states[layer], batch["attention_mask"]).float())
    return torch.cat(rows)


def truncated_states(
    model, tokenizer, texts: list[str], layer: int, max_length: int, side: str = "right", batch_size: int = 8
) -> torch.Tensor:
    """``tokenizer(..., truncation=True, max_length=max_length)``, right padding with the mask,
    gathered at the last token kept: a longer text's row is the state at its token ``max_length``."""
    rows = []
    kept_side, tokenizer.truncation_side = tokenizer.truncation_side, side  # a tokenizer attribute, not an argument
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                padding_side="right",
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            with torch.no_grad():
                output = model(**batch, output_hidden_states=True)
            rows.append(_gather_last(output.hidden_states[layer], batch["attention_mask"]).float())
    finally:
        tokenizer.truncation_side = kept_side
    return torch.cat(rows)


def prepended_token_states(model, tokenizer, texts: list[str], layer: int, token: str | None = None) -> torch.Tensor:
    """One text at a time with a token put before it (default the BOS token, as TransformerLens'
    ``prepend_bos`` does), read at the last token. (N, d)."""
    token_id = tokenizer.convert_tokens_to_ids(token or tokenizer.bos_token)
    rows = []
    for text in texts:
        ids = torch.tensor([[token_id, *tokenizer(text)["input_ids"]]])
        with torch.no_grad():
            rows.append(model(ids, output_hidden_states=True).hidden_states[layer][0, -1].float())
    return torch.stack(rows)


def chat_formatted_states(
    model, tokenizer, texts: list[str], layer: int, generation_prompt: bool = True, system: str | None = None
) -> torch.Tensor:
    """Each text rendered as one user turn with the chat template (``add_generation_prompt``), after
    a ``system`` message when given (else the template's own system turn, if it has one), one text
    at a time, read at the last token. (N, d)."""
    rows = []
    for text in texts:
        messages = [{"role": "system", "content": system}] if system is not None else []
        ids = tokenizer.apply_chat_template(
            [*messages, {"role": "user", "content": text}], add_generation_prompt=generation_prompt, tokenize=True
        )
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        with torch.no_grad():
            output = model(torch.tensor([list(ids)]), output_hidden_states=True)
        rows.append(output.hidden_states[layer][0, -1].float())
    return torch.stack(rows)


def hand_written_chat_states(
    model, tokenizer, texts: list[str], layer: int, generation_prompt: bool = False
) -> torch.Tensor:
    """Each text in a ChatML user turn written by hand (no system turn, as scripts that format
    their own prompts do), the assistant's header after it with ``generation_prompt``, one text at a
    time, read at the last token. (N, d)."""
    rows = []
    for text in texts:
        prompt = f"<|im_start|>user\n{text}<|im_end|>\n" + ("<|im_start|>assistant\n" if generation_prompt else "")
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        with torch.no_grad():
            rows.append(model(ids, output_hidden_states=True).hidden_states[layer][0, -1].float())
    return torch.stack(rows)


def transformer_lens_default_states(
    model, tokenizer, texts: list[str], layer: int, batch_size: int = 8
) -> torch.Tensor:
    """TransformerLens 4.3's defaults: a BOS prepended to every text, right padding, no attention
    mask, read at -1 (two defects at once). (N, d)."""
    bos = tokenizer.bos_token_id
    rows = []
    for start in range(0, len(texts), batch_size):
        ids = [[bos, *tokenizer(text)["input_ids"]] for text in texts[start : start + batch_size]]
        width = max(len(i) for i in ids)
        input_ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i in ids])
        with torch.no_grad():
            output = model(input_ids, output_hidden_states=True)
        rows.append(output.hidden_states[layer][:, -1].float())
    return torch.cat(rows)


def reused_buffer(states: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """A copy of ``states`` where every row of ``rows`` holds the first one's state (a buffer reused)."""
    out = states.clone()
    out[rows] = states[rows[0]]
    return out


def shifted_rows(states: torch.Tensor, shift: int) -> torch.Tensor:
    """Rows off by ``shift`` (``states[i] = hidden[i + shift]``, an index off by one): row i holds
    text i + shift's state, the last rows repeat the last text's state. (N, d)."""
    index = torch.arange(len(states)) + shift
    return states[index.clamp(max=len(states) - 1)].clone()


def read_at_states(model, tokenizer, texts: list[str], layer: int, position: int) -> torch.Tensor:
    """One text at a time, ``hidden_states[layer][0, position]`` (``-2``: the token before the last,
    ``0``: the first token). (N, d)."""
    rows = []
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            rows.append(model(ids, output_hidden_states=True).hidden_states[layer][0, position].float())
    return torch.stack(rows)


def left_padded_mean_states(model, tokenizer, texts: list[str], layer: int, batch_size: int = 4) -> torch.Tensor:
    """Left padding with the attention mask, then ``hidden.mean(1)``: the pads counted in the mean. (N, d)."""
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], padding=True, padding_side="left", return_tensors="pt")
        with torch.no_grad():
            output = model(**batch, output_hidden_states=True)
        rows.append(output.hidden_states[layer].mean(1).float())
    return torch.cat(rows)


def edited_ids_states(model, tokenizer, texts: list[str], layer: int, edit) -> torch.Tensor:
    """One text at a time, its ids changed by ``edit(ids) -> ids`` (the EOS appended, the first token
    dropped), read at the last token. (N, d)."""
    rows = []
    for text in texts:
        ids = torch.tensor([edit(tokenizer(text)["input_ids"])])
        with torch.no_grad():
            rows.append(model(ids, output_hidden_states=True).hidden_states[layer][0, -1].float())
    return torch.stack(rows)


def string_added_states(model, tokenizer, texts: list[str], layer: int, prefix: str = "", suffix: str = ""):
    """One text at a time, ``tokenizer(prefix + text + suffix)``, read at the last token, as llm2vec's
    ``eos_token`` pooling appends ``" </s>"`` and embedding recipes prepend ``"query: "``. (N, d)."""
    return edited_ids_states(model, tokenizer, [prefix + t + suffix for t in texts], layer, lambda ids: ids)
