"""Property tests (hypothesis) on the tiny random models.

For random texts, odd characters included, and random batch sizes and token budgets:

* every strategy whose verdict on that model is exact agrees with ``single`` within
  tolerance (cosine >= EXACT_COSINE and relative L2 within CORRUPTED_RELATIVE_L2 at every
  layer, for every text) under each pooling (last, mean, tokens: the same rows, row for row);
* ``right-naive`` differs for exactly the texts that are shorter than the longest text
  in their batch (they read a pad token's state, count pads in their mean, or keep pad
  positions as rows) and agrees for the others;
* a text that tokenizes to zero tokens is refused with a :class:`TextsError` naming it;
* texts that may end in the pad token (``<|im_end|>``, as chat data does): the exact
  strategies stay exact, and wherever ``right-naive`` differs its ``cause_kind`` is
  ``pad-state`` (never ``cross-text``: the layout, not the token id, decides), under
  every pooling.

Each tiny model is loaded once per module; ``extract_states`` is called directly.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extraction.comparison.compare import EXACT_COSINE, compare_strategies
from extraction.extract import extract_states
from extraction.metrics import cosine_similarity, per_text_token_metrics, relative_l2_error
from extraction.models import LoadedModel, load_model
from extraction.pooling import POOLINGS
from extraction.strategies import REFERENCE, STRATEGIES, get_strategy
from extraction.texts import TextsError, tokenize_texts
from extraction.verdicts import CORRUPTED_RELATIVE_L2

#: Strategies that are not exact in float32, per model (the rest must match ``single``).
NOT_EXACT = {
    "tiny-random-llama": {"right-naive", "packed-naive"},
    "tiny-random-gpt2": {"right-naive", "packed-naive", "left-naive"},  # absolute positions
}

ODD_CHARACTERS = [
    "🙂",
    "👍🏽",
    "👨\u200d👩\u200d👧",  # zero-width joiners
    "日本語",
    "中文",
    "مرحبا",  # right-to-left
    "שלום",
    "\u200f",  # right-to-left mark
    "\u202e",  # right-to-left override
    "\u200b",  # zero-width space
    "\ufeff",  # zero-width no-break space (BOM)
    "e\u0301",  # combining acute
    "\u0308",  # a lone combining diaeresis
    "\x00",
    "\x07",
    "\x1b[0m",
    "\t",
    "\r\n",
    "\x0c",
    "\u2028",
    " ",
]

# Text pieces: ordinary words, odd characters, and any characters at all (no surrogates:
# a str holding one cannot be encoded; texts.unicode_problem refuses those).
pieces = st.one_of(
    st.sampled_from(["the", "cat", "sat", "on", "a", "mat", "padding", "."]),
    st.sampled_from(ODD_CHARACTERS),
    # U+001D alone tokenizes to nothing on these tokenizers (measured): such a text is refused
    # by number, which the empty-text test below covers; here every text must have tokens.
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x1d"), min_size=1, max_size=4),
)
texts_strategy = st.lists(st.lists(pieces, min_size=1, max_size=12).map("".join), min_size=2, max_size=7)
batch_sizes = st.integers(min_value=1, max_value=8)
budgets = st.sampled_from([None, 24, 64, 8192])

PROPERTY_SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module", params=sorted(NOT_EXACT))
def tiny(request: pytest.FixtureRequest) -> LoadedModel:
    return load_model(request.param, device="cpu")


def last_token_states(loaded: LoadedModel, tokenized, name: str, batch_size: int, budget) -> torch.Tensor:
    """(N, L, d) last-real-token states of every layer."""
    return extract_states(loaded, tokenized, name, batch_size, budget, keep_logits=False).hidden


def per_text_measures(extraction, reference) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per text: the worst cosine (N,), the largest relative L2 (N,) over layers (and rows under
    tokens), and whether the row count differs from the reference's (N,)."""
    if extraction.pooling == "tokens":
        measured = per_text_token_metrics(extraction.hidden, extraction.offsets, reference.hidden, reference.offsets)
        cosine, relative, differ = measured["cosine"], measured["relative_l2"], measured["rows_differ"]
    else:
        cosine = cosine_similarity(extraction.hidden, reference.hidden)
        relative = relative_l2_error(extraction.hidden, reference.hidden)
        differ = torch.zeros(len(cosine), dtype=torch.bool)
    return cosine.min(1).values, relative.max(1).values, differ


@PROPERTY_SETTINGS
@given(texts=texts_strategy, batch_size=batch_sizes, budget=budgets)
def test_exact_strategies_agree_with_single(tiny: LoadedModel, texts, batch_size, budget):
    tokenized = tokenize_texts(tiny.tokenizer, texts, max_tokens=tiny.context_length)
    for pooling in POOLINGS:
        reference = extract_states(tiny, tokenized, REFERENCE, 1, budget, keep_logits=False, pooling=pooling)
        assert torch.isfinite(reference.hidden).all()
        if pooling == "tokens":
            assert reference.offsets.diff().tolist() == tokenized.lengths
        for name in STRATEGIES:
            if name == REFERENCE or name in NOT_EXACT[tiny.name]:
                continue
            extraction = extract_states(tiny, tokenized, name, batch_size, budget, keep_logits=False, pooling=pooling)
            cosine, relative, differ = per_text_measures(extraction, reference)
            assert not differ.any(), (name, pooling)
            assert cosine.min() >= EXACT_COSINE, (name, pooling, cosine.tolist())
            assert relative.max() <= CORRUPTED_RELATIVE_L2, (name, pooling, relative.tolist())


@PROPERTY_SETTINGS
@given(texts=texts_strategy, batch_size=batch_sizes, budget=budgets)
def test_right_naive_differs_exactly_for_the_shorter_texts_of_a_batch(tiny: LoadedModel, texts, batch_size, budget):
    tokenized = tokenize_texts(tiny.tokenizer, texts, max_tokens=tiny.context_length)
    lengths = tokenized.lengths
    reference = last_token_states(tiny, tokenized, REFERENCE, 1, budget)
    naive = last_token_states(tiny, tokenized, "right-naive", batch_size, budget)
    per_text_min = cosine_similarity(naive, reference).min(1).values  # (N,)
    pooled = {
        pooling: per_text_measures(
            extract_states(tiny, tokenized, "right-naive", batch_size, budget, keep_logits=False, pooling=pooling),
            extract_states(tiny, tokenized, REFERENCE, 1, budget, keep_logits=False, pooling=pooling),
        )
        for pooling in ("mean", "tokens")
    }
    for group in get_strategy("right-naive").plan(lengths, batch_size, budget):
        longest = max(lengths[i] for i in group)
        for i in group:
            shorter = lengths[i] < longest  # position -1 of this row is a pad token, and pads follow the text
            assert (per_text_min[i] < EXACT_COSINE) == shorter, (i, lengths, group)
            assert bool(pooled["tokens"][2][i]) == shorter, (i, lengths, group)  # pad positions kept as rows
            assert pooled["tokens"][0][i] >= EXACT_COSINE  # the rows it shares with single are the tokens
            if not shorter:  # pads counted in the mean can still average to a near-equal vector, so only this way
                assert pooled["mean"][0][i] >= EXACT_COSINE, (i, lengths, group)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(texts=texts_strategy, ends_in_pad=st.lists(st.booleans(), min_size=7, max_size=7), batch_size=batch_sizes)
def test_texts_ending_in_the_pad_token_keep_true_verdicts_and_causes(tiny: LoadedModel, texts, ends_in_pad, batch_size):
    pad = tiny.tokenizer.convert_ids_to_tokens(tiny.pad_token_id)  # '<|im_end|>': the eos token, as chat data ends
    texts = [text + pad if end else text for text, end in zip(texts, ends_in_pad, strict=False)]
    for pooling in POOLINGS:
        report = compare_strategies(tiny, texts, batch_size=batch_size, pooling=pooling)
        for name, comparison in report.strategies.items():
            if name not in NOT_EXACT[tiny.name]:
                assert (comparison.verdict, comparison.cause_kind) == ("exact", "none"), (name, pooling)
        naive = report.strategies["right-naive"]
        assert not naive.extraction.saw_other_text.any()
        if naive.verdict != "exact":
            assert naive.cause_kind == "pad-state", (pooling, naive.cause)
        if pooling == "last":
            differs = naive.cosine.min(1).values < EXACT_COSINE  # (N,)
            assert (differs == naive.extraction.read_is_pad).all()  # exactly the texts read at a pad position
        if pooling == "tokens":
            assert (naive.rows_differ == naive.extraction.read_is_pad).all()  # exactly the texts with pad rows


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=texts_strategy, data=st.data())
def test_a_text_with_no_tokens_is_refused_by_number(tiny: LoadedModel, texts, data):
    position = data.draw(st.integers(min_value=0, max_value=len(texts)))
    with_empty = [*texts[:position], "", *texts[position:]]
    with pytest.raises(TextsError, match=f"^text {position + 1} \\(''\\) has no tokens"):
        tokenize_texts(tiny.tokenizer, with_empty)
    # Every non-empty text, however odd, has at least one token.
    assert min(tokenize_texts(tiny.tokenizer, texts).lengths) >= 1


@settings(max_examples=25, deadline=None)
@given(text=st.text(min_size=1, max_size=20))
def test_unpaired_surrogates_are_refused_not_crashed_on(text):
    # Any str, surrogates included: either it tokenizes or TextsError says why; no other error.
    class Utf8Tokenizer:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": list(text.encode("utf-8"))}

    try:
        tokenized = tokenize_texts(Utf8Tokenizer(), [text])
    except TextsError as error:
        assert "unpaired surrogate" in str(error)
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    else:
        assert tokenized.lengths[0] >= 1
