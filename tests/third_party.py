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
