"""The self-consistency check (check_extractor without a model) on extraction functions written
here with plain transformers, on tiny random architectures load_model does not know (GPT-NeoX,
OPT): each defect is found and named from the function's behaviour alone, rounding is drift,
and a function that is not the model's states but is self-consistent passes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, OPTConfig, OPTForCausalLM

from extraction import ExtractorMismatchError, LoadedModel, assert_matches_single, check_extractor, load_model
from extraction.consistency import FLOOR_COPIES, PROBE_CALLS, SelfCheckReport
from extraction.models.embedded import embedded_tokenizer
from extraction.samples import SAMPLE_TEXTS
from tests.tiny.consistency import pipelines

#: Texts of clearly different lengths (4 to 14 tokens).
TEXTS = SAMPLE_TEXTS[:6]


def _ids(tokenizer) -> dict:
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": 2}


@pytest.fixture(scope="module")
def tokenizer():
    return embedded_tokenizer()


@pytest.fixture(scope="module")
def neox(tokenizer):
    """A tiny random GPT-NeoX (RoPE), seeded, in eval mode: the user's own model."""
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=256, initializer_range=0.2, **_ids(tokenizer),
    )  # fmt: skip
    return GPTNeoXForCausalLM(config).eval()


@pytest.fixture(scope="module")
def opt(tokenizer):
    """A tiny random OPT (learned absolute positions), seeded, in eval mode."""
    torch.manual_seed(0)
    config = OPTConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
        word_embed_proj_dim=64, max_position_embeddings=256, init_std=0.2, **_ids(tokenizer),
    )  # fmt: skip
    return OPTForCausalLM(config).eval()


@pytest.mark.parametrize("architecture", ["neox", "opt"])
def test_right_padding_read_at_last_is_padding(request, tokenizer, architecture):
    model = request.getfixturevalue(architecture)
    report = check_extractor(pipelines.right_padding_read_at_last(model, tokenizer), texts=TEXTS)
    assert isinstance(report, SelfCheckReport)
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("corrupted", "padding", "pad-state")
    padding = next(h for h in report.hypotheses if h.name == "padding")
    assert padding.status == "reproduced"
    assert report.model == "none" and report.to_dict()["model"] is None


def test_the_calls_are_bounded_and_listed(neox, tokenizer):
    report = check_extractor(pipelines.right_padding_read_at_last(neox, tokenizer), texts=TEXTS, tokenizer=tokenizer)
    assert report.likely_cause == "padding"
    assert len(TEXTS) + 3 <= len(report.calls) <= len(TEXTS) + 3 + PROBE_CALLS
    assert report.calls[0].startswith(f"all {len(TEXTS)} texts")
    assert sum(call.endswith("alone") for call in report.calls) == len(TEXTS)
    assert f"{len(report.calls)} calls of extract_fn" in report.notes[1]


def test_packing_without_a_mask_is_cross_text(neox, tokenizer):
    report = check_extractor(pipelines.packed_without_mask(neox, tokenizer), texts=TEXTS)
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("corrupted", "packing", "cross-text")
    # The copies of one text in one call see each other: the floor leaves them out and says so.
    assert report.noise_floor.copies_beyond_drift == list(range(1, FLOOR_COPIES))
    assert report.noise_floor.repeatable


def test_order_lost_is_order(neox, tokenizer):
    report = check_extractor(pipelines.sorted_and_not_put_back(neox, tokenizer), texts=TEXTS)
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("corrupted", "order", "other-row")
    assert "come back in the same places" in report.cause


def test_one_row_copied_everywhere_is_duplicate_rows(neox, tokenizer):
    report = check_extractor(pipelines.first_row_everywhere(neox, tokenizer), texts=TEXTS)
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("corrupted", "duplicate-rows", "other-row")


def test_centred_one_text_at_a_time_is_exact_here_and_corrupted_against_the_model(neox, tokenizer):
    extract = pipelines.centred_one_text_at_a_time(neox, tokenizer)
    report = assert_matches_single(extract, texts=TEXTS)
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("exact", None, "none")
    assert report.check.bit_exact.all()
    # Against the model's own states (the in-memory model, wrapped as it is) it is not them.
    against_model = check_extractor(extract, (neox, tokenizer), TEXTS, forensics=False)
    assert against_model.verdict == "corrupted"


def test_bfloat16_batched_on_the_cpu_is_drift_by_rounding(neox, tokenizer):
    bf16 = copy.deepcopy(neox).to(torch.bfloat16)
    report = check_extractor(pipelines.right_padding_gathered(bf16, tokenizer), texts=TEXTS)
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("drift", "rounding", "rounding")
    assert report.noise_floor.reduced_precision == "bfloat16"
    assert assert_matches_single(pipelines.right_padding_gathered(bf16, tokenizer), texts=TEXTS, allow_drift=True)


def test_float32_batched_correctly_is_exact_within_its_floor(neox, tokenizer):
    report = check_extractor(pipelines.right_padding_gathered(neox, tokenizer), texts=TEXTS)
    assert report.verdict == "exact"
    assert report.max_relative_l2 <= report.noise_floor.tolerance
    assert "noise floor" in report.cause


def test_assert_matches_single_without_a_model_raises_with_the_cause(neox, tokenizer):
    with pytest.raises(ExtractorMismatchError, match="verdict corrupted, likely cause packing") as raised:
        assert_matches_single(pipelines.packed_without_mask(neox, tokenizer), texts=TEXTS)
    assert "itself one text at a time" in str(raised.value)


def test_mean_and_tokens_pooling(neox, tokenizer):
    def mean_pads_counted(texts):
        batch = tokenizer(texts, padding=True, padding_side="right", return_tensors="pt")
        with torch.no_grad():
            return neox(**batch, output_hidden_states=True).hidden_states[-1].mean(1)  # pads counted

    report = check_extractor(mean_pads_counted, texts=TEXTS, pooling="mean")
    assert (report.verdict, report.likely_cause, report.pooling) == ("corrupted", "padding", "mean")

    def padded_tokens(texts):
        batch = tokenizer(texts, padding=True, padding_side="right", return_tensors="pt")
        with torch.no_grad():
            states = neox(**batch, output_hidden_states=True).hidden_states[-1]  # (B, T, d)
        offsets = torch.arange(len(texts) + 1) * states.shape[1]  # every column kept, pads too
        return states.reshape(-1, states.shape[-1]), offsets

    report = check_extractor(padded_tokens, texts=TEXTS, pooling="tokens", tokenizer=tokenizer)
    assert (report.verdict, report.likely_cause, report.cause_kind) == ("corrupted", "padding", "pad-state")
    assert "pad positions kept as tokens" in report.cause


def test_not_repeatable_is_corrupted(tokenizer):
    generator = torch.Generator().manual_seed(0)
    report = check_extractor(lambda texts: torch.randn(len(texts), 8, generator=generator), texts=TEXTS[:3])
    assert (report.verdict, report.likely_cause) == ("corrupted", "not-repeatable")


def test_to_dict_keys(neox, tokenizer):
    out = check_extractor(pipelines.right_padding_gathered(neox, tokenizer), texts=TEXTS[:3]).to_dict()
    assert out["check"] == "self-consistency"
    assert {"verdict", "likely_cause", "cause_kind", "cause", "noise_floor", "calls", "n_calls"} <= set(out)
    assert {"text", "relative_l2", "tolerance", "factor", "repeat", "copies", "copies_beyond_drift", "repeatable",
            "reduced_precision"} == set(out["noise_floor"])  # fmt: skip


def _constant(value):
    return lambda texts: value


BAD_FUNCTIONS = {
    "raises": (lambda texts: {}["missing"], "raised KeyError on all 3 texts"),
    "a list": (_constant([[0.0] * 8] * 3), "returned a list"),
    "wrong rows": (lambda texts: np.ones((2, 8), dtype=np.float32), "returned 2 rows"),
    "another width alone": (lambda texts: torch.ones(len(texts), 8 if len(texts) > 1 else 4), r"\(1, 4\) on text 1"),
    "integers": (lambda texts: np.ones((len(texts), 8), dtype=np.int64), "array of int64"),
}


@pytest.mark.parametrize("case", list(BAD_FUNCTIONS))
def test_bad_functions_are_one_clear_error(case):
    extract_fn, message = BAD_FUNCTIONS[case]
    with pytest.raises(ValueError, match=message):
        check_extractor(extract_fn, texts=TEXTS[:3])


def test_texts_are_needed_and_at_least_two():
    with pytest.raises(ValueError, match="texts are needed"):
        check_extractor(_constant(None))
    with pytest.raises(ValueError, match="at least 2 texts"):
        check_extractor(_constant(None), texts=["one"])
    report = check_extractor(lambda texts: torch.ones(len(texts), 4), TEXTS[:2])  # texts as the second argument
    assert report.verdict == "exact"


def test_wrap_uses_the_model_as_it_is(neox, tokenizer):
    pad_less = copy.deepcopy(tokenizer)
    pad_less.pad_token = None
    loaded = LoadedModel.wrap(neox, pad_less)
    assert pad_less.pad_token is None and loaded.tokenizer.pad_token == pad_less.eos_token  # a copy got it
    assert loaded.model is neox and not neox.training
    assert (loaded.dtype, loaded.device.type, loaded.source) == (torch.float32, "cpu", "in memory")
    training = copy.deepcopy(neox).train()
    training.config.hidden_dropout = 0.1
    training.gpt_neox.emb_dropout.p = 0.1
    with pytest.raises(ValueError, match="training mode"):
        LoadedModel.wrap(training, tokenizer)
    with pytest.raises(ValueError, match="dtype='bfloat16' cannot be applied"):
        load_model((neox, tokenizer), dtype="bfloat16")


def test_a_wrapped_model_in_compare_and_audit(neox, tokenizer):
    from extraction import audit_states, compare_strategies

    loaded = load_model((neox, tokenizer))
    comparison = compare_strategies(loaded, TEXTS[:4], ["right-naive", "right"], batch_size=4)
    assert comparison.strategies["right-naive"].verdict == "corrupted"
    assert comparison.strategies["right"].verdict == "exact"
    states = pipelines.right_padding_read_at_last(neox, tokenizer)(TEXTS[:4])
    audit = audit_states(loaded, TEXTS[:4], states)
    assert (audit.verdict, audit.likely_cause) == ("corrupted", "right-naive")
