"""The audit's cause on files shaped like real pipelines' (issue 10): a clean float32 file from
another build (``kernels``, not ``dtype``), genuine and noisy reduced-precision files, layers
shifted far or all at once, and a third-party library's right-padded chat extraction."""

import json

import pytest
import torch

from extraction.audit import CAUSES, audit_states
from extraction.audit.layers import best_layers, describe_mapping
from extraction.audit.pattern import FLOAT32_MATCH_RELATIVE_L2, difference_pattern
from extraction.audit.report import RowCheck
from extraction.extract import extract_states
from extraction.models import load_model
from extraction.samples import SAMPLE_TEXTS
from extraction.storage.stored_states import StoredStates
from extraction.texts import tokenize_texts
from extraction.verdicts import CORRUPTED_RELATIVE_L2, DRIFT_COSINE, EXACT_COSINE
from tests.third_party import add_noise, chat_texts, library_last_token_states, perturb_rows

TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:6]]
#: 40 texts, like the issue's file: one of them (a 2-token text) differs, the other 39 are bit-exact.
FORTY = (TEXTS + [f"{text} Number {k}." for k, text in enumerate(TEXTS)] + ["Yes."] + SAMPLE_TEXTS)[:40]


def _hypothesis(report, name):
    return next(h for h in report.hypotheses if h.name == name)


@pytest.fixture(scope="module")
def single(tiny_model):
    tokenized = tokenize_texts(tiny_model.tokenizer, TEXTS)
    return tokenized, extract_states(tiny_model, tokenized, "single", keep_logits=False).hidden  # (N, S, d)


# --- rounding: dtype, kernels, or neither -------------------------------------------------


def test_a_float32_file_from_another_build_is_kernels_not_dtype(tiny_model):
    tokenized = tokenize_texts(tiny_model.tokenizer, FORTY)
    clean = extract_states(tiny_model, tokenized, "single", keep_logits=False).hidden
    short = min(range(len(FORTY)), key=lambda i: tokenized.lengths[i])
    stored = perturb_rows(clean, [short], cosine=0.99985)
    report = audit_states(tiny_model, tokenized, stored, reference="single")  # bit for bit against single: its rows
    assert report.verdict == "drift"
    assert report.likely_cause == "kernels", report.cause
    assert report.differences.differing == [short]
    assert len(report.differences.bit_exact) == len(FORTY) - 1
    assert _hypothesis(report, "dtype").status == "rejected"  # one row of 40: reduced precision touches every row
    kernels = report.best_hypothesis
    assert kernels.status == "consistent" and kernels.evidence["pattern"]["n_differing"] == 1
    assert kernels.evidence["representable_fraction"]["bfloat16"] < 0.01
    data = json.loads(json.dumps(report.to_dict()))
    assert data["likely_cause"] == "kernels" and data["likely_cause"] in CAUSES
    assert data["differences"]["n_bit_exact"] == len(FORTY) - 1
    assert 0.01 < data["max_relative_l2"] < CORRUPTED_RELATIVE_L2  # sqrt(2 (1 - 0.99985)) = 0.017


@pytest.mark.parametrize(("strategy", "batch"), [("sorted", 4), ("right", 8)])
def test_a_genuine_bf16_extraction_stored_as_float32_is_dtype(tiny_model, strategy, batch):
    tokenized = tokenize_texts(tiny_model.tokenizer, TEXTS)
    bf16 = load_model(tiny_model.name, dtype="bfloat16")
    stored = extract_states(bf16, tokenized, strategy, batch_size=batch, keep_logits=False).hidden.float()
    report = audit_states(tiny_model, tokenized, StoredStates(stored, "bf16.safetensors", None, "float32"))
    assert report.verdict == "drift"
    assert report.likely_cause == "dtype", report.cause
    dtype = report.best_hypothesis
    assert dtype.evidence["dtype"] == "bfloat16"
    assert dtype.evidence["pattern"]["spread"] and dtype.evidence["pattern"]["n_differing"] == len(TEXTS)
    assert dtype.evidence["rows_closer"] > len(dtype.rows_tested) / 2
    assert _hypothesis(report, "kernels").status == "rejected"


def test_noisy_bf16_values_whose_reproduction_is_no_closer_are_not_dtype(tiny_model, single):
    tokenized, clean = single
    # Values stored in bfloat16, but their differences are noise, not bfloat16 computation: every
    # bfloat16 reproduction is further from them (or no clearer) than the float32 states.
    stored = add_noise(clean, relative=0.02).to(torch.bfloat16)
    report = audit_states(tiny_model, tokenized, StoredStates(stored.float(), "noisy.pt", None, "bfloat16"))
    assert report.verdict == "drift"
    assert report.likely_cause == "unknown", report.cause
    dtype = _hypothesis(report, "dtype")
    assert dtype.status != "reproduced" and dtype.evidence["dtype"] is None
    assert dtype.evidence["representable_fraction"]["bfloat16"] == 1.0  # the bits say bf16; the vectors do not
    kernels = _hypothesis(report, "kernels")
    assert kernels.status == "rejected"  # bfloat16 numbers are not float32 rounding


def test_corrupted_rows_are_never_kernels(tiny_gpt2):
    tokenized = tokenize_texts(tiny_gpt2.tokenizer, TEXTS)
    clean = extract_states(tiny_gpt2, tokenized, "single", keep_logits=False).hidden
    stored = clean.roll(1, dims=0)
    report = audit_states(tiny_gpt2, tokenized, stored)
    assert report.verdict == "corrupted" and report.likely_cause == "order"  # rows moved (issue 21)
    assert _hypothesis(report, "kernels").status == "rejected"
    assert report.to_dict()["differences"]["n_corrupted"] > 0


def test_difference_pattern_by_hand():
    cosine = torch.tensor([[1.0, 1.0], [1.0, 0.9998], [0.5, 0.9], [1.0, 1.0]])  # (K, L)
    relative_l2 = torch.tensor([[0.0, 0.0], [0.0, 0.02], [0.9, 0.4], [0.0, 2 * FLOAT32_MATCH_RELATIVE_L2]])
    check = RowCheck(
        cosine=cosine,
        relative_l2=relative_l2,
        bit_exact=torch.tensor([True, False, False, False]),
        norm_ratio=torch.ones(4, 2),
        top1_stored=torch.ones(4, dtype=torch.bool),
        top1_fresh=torch.ones(4, dtype=torch.bool),
        top1_same=torch.ones(4, dtype=torch.bool),
        top1_stored_renormed=None,
    )
    pattern = difference_pattern(check, [3, 5, 7, 9])
    assert pattern.differing == [5, 7, 9] and pattern.bit_exact == [3] and pattern.corrupted == [7]
    assert pattern.spread and not pattern.drift_level
    assert pattern.max_relative_l2 == pytest.approx(0.9) and pattern.min_cosine_differing == pytest.approx(0.5)
    assert check.verdict == "corrupted"
    # Length alone: cosine 1 everywhere, but one row twice as long is corrupted.
    check.cosine = torch.ones(4, 2)
    check.relative_l2 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert check.verdict == "corrupted" and check.corrupted.tolist() == [False, False, True, False]
    check.relative_l2 = torch.zeros(4, 2)
    assert check.verdict == "exact"
    assert DRIFT_COSINE < EXACT_COSINE


# --- wrong-layer: every hidden state, and files holding every layer ------------------------


def test_a_far_layer_is_found(tiny_model, single):
    tokenized, clean = single
    report = audit_states(tiny_model, tokenized, clean[:, 1])  # hidden_states[1] stored as the last (4)
    assert report.layers == [tiny_model.num_hidden_layers]
    assert report.verdict == "corrupted"
    assert report.likely_cause == "wrong-layer", report.cause
    assert report.best_hypothesis.evidence["matching_layers"] == [1]
    assert report.best_hypothesis.evidence["offset"] == 1 - tiny_model.num_hidden_layers


def test_several_layers_shifted_far(tiny_model, single):
    tokenized, clean = single
    report = audit_states(tiny_model, tokenized, clean[:, [3, 4]], layers=[0, 1])
    assert report.likely_cause == "wrong-layer", report.cause
    assert report.best_hypothesis.evidence["matching_layers"] == [3, 4]
    assert report.best_hypothesis.evidence["offset"] == 3


def test_every_layer_shifted_by_one(tiny_model, single):
    tokenized, clean = single
    num_states = tiny_model.num_hidden_layers + 1
    # hidden_states[1:] stored as layers 0..S-2 (the embeddings dropped, the names not shifted).
    report = audit_states(tiny_model, tokenized, clean[:, 1:], layers=list(range(num_states - 1)))
    assert report.likely_cause == "wrong-layer", report.cause
    assert report.best_hypothesis.evidence["matching_layers"] == list(range(1, num_states))
    assert report.best_hypothesis.evidence["offset"] == 1
    # A file holding every layer, each one from the next hidden state (the last one repeated).
    shifted = clean[:, [min(k + 1, num_states - 1) for k in range(num_states)]]
    report = audit_states(tiny_model, tokenized, shifted)
    assert report.layers == list(range(num_states))
    assert report.likely_cause == "wrong-layer", report.cause
    assert report.best_hypothesis.evidence["offset"] == 1


def test_a_permutation_of_all_layers(tiny_gpt2):
    tokenized = tokenize_texts(tiny_gpt2.tokenizer, TEXTS)
    clean = extract_states(tiny_gpt2, tokenized, "single", keep_logits=False).hidden
    order = [0, 2, 1, 4, 3]
    report = audit_states(tiny_gpt2, tokenized, clean[:, order])
    assert report.likely_cause == "wrong-layer", report.cause
    assert report.best_hypothesis.evidence["matching_layers"] == order
    assert report.best_hypothesis.evidence["offset"] is None


def test_best_layers_and_mapping_words_by_hand():
    fresh = torch.eye(4)[None].repeat(2, 1, 1)  # (R=2, S=4, d=4): hidden state j is unit vector j
    stored = fresh[:, [2, 3]]  # (2, L=2, d): named 0, 1, actually 2, 3
    mapping, table = best_layers(stored, fresh)
    assert mapping == [2, 3] and table.shape == (2, 4)
    assert describe_mapping([0, 1], mapping)[1] == 2
    assert describe_mapping([0, 1, 2], [0, 2, 1])[1] is None


# --- a third-party library's extraction of chat texts ---------------------------------------


def test_a_library_right_padded_chat_extraction_is_right_naive(tiny_model):
    texts = chat_texts(16)
    tokenized = tokenize_texts(tiny_model.tokenizer, texts)
    assert all(ids[-1] == tiny_model.pad_token_id for ids in tokenized.token_ids)  # every text ends in the pad id
    stored = library_last_token_states(tiny_model.model, tiny_model.tokenizer, texts, layer=-1, batch_size=8)
    report = audit_states(tiny_model, tokenized, stored)
    assert report.verdict == "corrupted"
    assert report.likely_cause == "right-naive", report.cause
    best = report.best_hypothesis
    assert 8 in best.evidence["consistent_batch_sizes"]["input order"]
    lengths = tokenized.lengths
    padded = [i for i in range(16) if lengths[i] < max(lengths[i - i % 8 : i - i % 8 + 8])]
    assert report.differences.differing == padded


def test_a_reduced_precision_copy_computes_what_a_reduced_precision_load_does(tiny_model, single):
    from extraction.audit.precision import reduced_precision_copies

    tokenized, _ = single
    copies = reduced_precision_copies(tiny_model, torch.bfloat16)
    buffers = {name: b.dtype for name, b in copies["loaded in"].model.named_buffers() if b.is_floating_point()}
    assert set(buffers.values()) <= {torch.float32}  # kept, as from_pretrained(dtype=bfloat16) keeps RoPE's
    assert ("cast with .to()" in copies) == bool(buffers)  # the tiny Llama has inv_freq, the tiny GPT-2 none
    loaded = load_model(tiny_model.name, dtype="bfloat16")  # the tiny models are built, then cast with .to()
    expected = extract_states(loaded, tokenized, "single", keep_logits=False).hidden
    made = "cast with .to()" if buffers else "loaded in"
    assert torch.equal(extract_states(copies[made], tokenized, "single", keep_logits=False).hidden, expected)
    assert next(tiny_model.model.parameters()).dtype == torch.float32  # the shared model is untouched
