"""Peers: the code researchers write instead, timed on the same texts in the same run.

Each peer is written as a user would write it with plain transformers: tokenizer calls in
the loop, ``torch.no_grad()``, ``output_hidden_states=True`` (every layer), full logits
(the model's default), and the last-token state of each text at every layer:

* ``one-at-a-time``: one text a pass, no padding (the usual "slow but correct");
* ``left-padding``: batches of 8 in input order, left padding, read at ``-1``;
* ``grouped-by-length``: texts sorted by token length, then left-padded batches of 8;
* ``library-batched``: a popular library's batched extraction: right padding, batches of
  8 in input order, read at the last real index ``attention_mask.sum(1) - 1``.

``this project`` is :func:`extraction.extract.extract_states` with the strategy
``--strategy auto`` picks (:func:`extraction.comparison.choose.choose_strategy`, run before the clock),
tokenization included, every layer, no logits kept: what ``extract`` does per text.
Every approach's rows are compared with single-text extraction (min cosine over texts and
layers), so a fast but wrong peer shows as such. Figures are seconds per text.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from bench.rates import useful_flops

if TYPE_CHECKING:
    from extraction.models import LoadedModel

logger = logging.getLogger(__name__)

PEER_BATCH_SIZE = 8
DEFAULT_PEER_TEXTS = 96
PEERS = ("one-at-a-time", "left-padding", "grouped-by-length", "library-batched")
OURS = "this project"


@dataclass
class PeerTiming:
    """One approach on the peer texts."""

    name: str
    texts: int
    seconds: float
    ms_per_text: float
    min_cosine_vs_single: float  # over texts and layers
    useful_gflops: float  # body for every real token, lm_head once per text, per second
    sgemm_fraction: float
    slower_than_ours: float | None = None  # this approach's ms per text / this project's
    strategy: str = ""  # for this project: the layout auto chose
    load_average: float = 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _last_token_states(hidden_states: Sequence[torch.Tensor], rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return torch.stack([h[rows, cols] for h in hidden_states], dim=1).float().cpu()  # (B, L, d)


def one_at_a_time(model, tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """``for text in texts: model(**tokenizer(text), output_hidden_states=True)``, row -1."""
    out = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt").to(model.device)
            hidden = model(**enc, output_hidden_states=True).hidden_states
            out.append(torch.stack([h[0, -1] for h in hidden]).float().cpu())  # (L, d)
    return torch.stack(out)


def _padded_batches(model, tokenizer, texts: Sequence[str], side: str, order: Sequence[int]) -> torch.Tensor:
    previous = tokenizer.padding_side
    tokenizer.padding_side = side
    rows: dict[int, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for start in range(0, len(order), PEER_BATCH_SIZE):
                batch = list(order[start : start + PEER_BATCH_SIZE])
                enc = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True).to(model.device)
                hidden = model(**enc, output_hidden_states=True).hidden_states
                index = torch.arange(len(batch), device=model.device)
                if side == "left":
                    last = torch.full_like(index, enc["input_ids"].shape[1] - 1)
                else:
                    last = enc["attention_mask"].sum(1) - 1
                for k, states in zip(batch, _last_token_states(hidden, index, last), strict=True):
                    rows[k] = states
    finally:
        tokenizer.padding_side = previous
    return torch.stack([rows[i] for i in range(len(texts))])


def left_padding(model, tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Batches of 8 in input order, ``padding_side="left"``, row ``-1``."""
    return _padded_batches(model, tokenizer, texts, "left", range(len(texts)))


def grouped_by_length(model, tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Sorted by token length, then left-padded batches of 8, row ``-1``."""
    lengths = [len(ids) for ids in tokenizer(list(texts))["input_ids"]]
    return _padded_batches(model, tokenizer, texts, "left", sorted(range(len(texts)), key=lengths.__getitem__))


def library_batched(model, tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Right padding, batches of 8 in input order, read at ``attention_mask.sum(1) - 1``."""
    return _padded_batches(model, tokenizer, texts, "right", range(len(texts)))


PEER_FUNCTIONS: dict[str, Callable] = {
    "one-at-a-time": one_at_a_time,
    "left-padding": left_padding,
    "grouped-by-length": grouped_by_length,
    "library-batched": library_batched,
}


def time_peers(
    loaded: LoadedModel,
    texts: Sequence[str],
    sgemm: float,
    peers: Sequence[str] = PEERS,
    say: Callable[[str], None] = logger.info,
) -> list[PeerTiming]:
    """Time this project's extraction and each peer on ``texts``; this project first."""
    from extraction.comparison.choose import choose_strategy
    from extraction.comparison.cost import body_parameters
    from extraction.extract import extract_states
    from extraction.metrics import cosine_similarity
    from extraction.texts import tokenize_texts

    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
    tokenized = tokenize_texts(tokenizer, list(texts), max_tokens=loaded.context_length)
    real_tokens = sum(tokenized.lengths)
    body = body_parameters(model)
    flops = useful_flops(body, loaded.hidden_size, loaded.vocab_size, real_tokens, len(texts))
    reference = extract_states(loaded, tokenized, "single", keep_logits=False).hidden  # also warms up
    choice = choose_strategy(loaded, tokenized, PEER_BATCH_SIZE)

    def timed(name: str, run: Callable[[], torch.Tensor], strategy: str = "") -> PeerTiming:
        say(f"peers: {name} on {len(texts)} texts")
        _sync(device)
        start = time.perf_counter()
        rows = run()
        _sync(device)
        seconds = time.perf_counter() - start
        gflops = flops / seconds / 1e9
        say(f"peers: {name}: {1000 * seconds / len(texts):.1f} ms per text (load {os.getloadavg()[0]:.1f})")
        return PeerTiming(
            name=name,
            texts=len(texts),
            seconds=seconds,
            ms_per_text=1000 * seconds / len(texts),
            min_cosine_vs_single=float(cosine_similarity(rows, reference).min()),
            useful_gflops=gflops,
            sgemm_fraction=gflops / sgemm,
            strategy=strategy,
            load_average=os.getloadavg()[0],
        )

    def ours() -> torch.Tensor:
        again = tokenize_texts(tokenizer, list(texts), max_tokens=loaded.context_length)
        return extract_states(loaded, again, choice.name, PEER_BATCH_SIZE, keep_logits=False).hidden

    timings = [timed(OURS, ours, choice.name)]
    for name in peers:
        timings.append(timed(name, lambda name=name: PEER_FUNCTIONS[name](model, tokenizer, texts)))
    for timing in timings:
        timing.slower_than_ours = timing.ms_per_text / timings[0].ms_per_text
    return timings


def peers_to_dicts(timings: Sequence[PeerTiming]) -> list[dict]:
    return [asdict(t) for t in timings]
