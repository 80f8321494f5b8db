"""Verdicts on the tiny random models: the facts from NOTES.md, measured, not assumed."""

import pytest
import torch

from extraction.comparison.compare import DRIFT_COSINE, EXACT_COSINE, compare_strategies, verdict_for
from extraction.models import load_model
from extraction.samples import SAMPLE_TEXTS
from extraction.verdicts import CAUSE_KINDS

# (model, strategy) -> verdict in float32. Everything not listed is exact.
CORRUPTED = {
    "tiny-random-llama": {"right-naive", "packed-naive"},
    "tiny-random-gpt2": {"right-naive", "packed-naive", "left-naive"},
}


@pytest.fixture(scope="module")
def report(tiny_model):
    loaded = tiny_model
    return compare_strategies(loaded, SAMPLE_TEXTS, batch_size=4)


def test_each_strategy_gets_its_known_verdict(report):
    for name, comparison in report.strategies.items():
        expected = "corrupted" if name in CORRUPTED[report.model] else "exact"
        assert comparison.verdict == expected, (name, comparison.min_cosine, comparison.cause)


def test_causes_are_derived_from_the_layout(report):
    causes = {name: comp.cause for name, comp in report.strategies.items()}
    kinds = {name: comp.cause_kind for name, comp in report.strategies.items()}
    assert "pad token" in causes["right-naive"]
    assert kinds["right-naive"] == "pad-state"
    assert "attended to each other" in causes["packed-naive"]
    assert kinds["packed-naive"] == "cross-text"
    if report.uses_absolute_positions:
        assert "absolute position" in causes["left-naive"]
        assert kinds["left-naive"] == "position-shift"
    else:
        assert "relative" in causes["left-naive"]
        assert kinds["left-naive"] == "none"
    for name in ("single", "right", "left", "sorted", "bucketed", "packed"):
        assert kinds[name] == "none", (name, causes[name])


def test_report_shapes_and_json(report):
    n, num_layers = len(SAMPLE_TEXTS), report.num_layers
    data = report.to_json_dict()
    assert data["num_layers"] == num_layers == 5  # embeddings + 4 blocks
    for name, record in data["strategies"].items():
        assert len(record["per_layer_min_cosine"]) == num_layers
        assert set(record) >= {"verdict", "cause_kind", "cause", "min_cosine", "max_relative_l2", "top1_agreement"}
        assert record["cause_kind"] == report.strategies[name].cause_kind in CAUSE_KINDS
        assert record["max_relative_l2"] == pytest.approx(float(report.strategies[name].relative_l2.max()))
        comp = report.strategies[name]
        assert comp.cosine.shape == (n, num_layers)
        assert comp.logit_lens_agreement.shape == (num_layers,)
    single = report.strategies["single"]
    assert single.min_cosine == pytest.approx(1.0)
    assert single.top1_agreement == 1.0
    assert single.lm_head_reproduces.all()  # hidden_states[-1] is post-norm: lm_head gives the logits back
    assert len(report.layers_frame()) == len(report.strategies) * n * num_layers
    assert list(report.summary_frame()["strategy"]) == list(report.strategies)


def test_right_naive_corrupts_exactly_the_texts_shorter_than_their_batch(report):
    comp = report.strategies["right-naive"]
    pad_id = load_model(report.model).pad_token_id
    lengths = report.tokenized.lengths
    for start in range(0, len(lengths), 4):  # batch size 4, input order
        group = range(start, min(start + 4, len(lengths)))
        longest = max(lengths[i] for i in group)
        for i in group:
            if lengths[i] == longest:
                assert comp.cosine[i].min() >= EXACT_COSINE
            else:
                assert comp.extraction.read_token_ids[i] == pad_id
                assert comp.cosine[i].min() < DRIFT_COSINE


def test_verdict_rule():
    assert verdict_for(1.0, True) == "exact"
    assert verdict_for(EXACT_COSINE, True) == "exact"
    assert verdict_for(1.0, False) == "drift"
    assert verdict_for(DRIFT_COSINE, True) == "drift"
    assert verdict_for(DRIFT_COSINE - 1e-6, True) == "corrupted"
    assert verdict_for(float("nan"), True) == "corrupted"
    assert verdict_for(1.0, True, any_nonfinite=True) == "corrupted"


def test_bfloat16_drifts_but_is_not_corrupted():
    loaded = load_model("tiny-random-llama", dtype="bfloat16")
    report = compare_strategies(loaded, SAMPLE_TEXTS, strategies="right,left", batch_size=4)
    for name in ("right", "left"):
        comp = report.strategies[name]
        assert comp.verdict in ("exact", "drift"), (name, comp.min_cosine)
        if comp.verdict == "drift":
            assert "bfloat16" in comp.cause
            assert comp.cause_kind == "rounding"


def test_bfloat16_left_padding_on_rope_names_the_shift():
    """RoPE is relative, so shifted positions only change the rounding: drift, and the cause says so."""
    loaded = load_model("tiny-random-llama", dtype="bfloat16")
    report = compare_strategies(loaded, SAMPLE_TEXTS, strategies="left-naive", batch_size=4)
    comp = report.strategies["left-naive"]
    assert comp.verdict == "drift", comp.cause
    assert comp.cause_kind == "rounding"
    shifted = (comp.extraction.read_position_ids != report.reference.read_position_ids).nonzero().flatten()
    first = int(shifted[0])
    moved = int(comp.extraction.read_position_ids[first])
    alone = int(report.reference.read_position_ids[first])
    assert f"text {first + 1} at position {moved} instead of {alone}" in comp.cause


def test_eager_attention_reads_the_packed_mask_too():
    loaded = load_model("tiny-random-gpt2", attn_implementation="eager")
    report = compare_strategies(loaded, SAMPLE_TEXTS, strategies="packed,packed-naive", batch_size=4)
    assert report.strategies["packed"].verdict == "exact"
    assert report.strategies["packed-naive"].verdict == "corrupted"


def test_nan_is_reported_not_averaged(monkeypatch):
    loaded = load_model("tiny-random-llama")
    from extraction.comparison import compare as compare_module

    original = compare_module.extract_states

    def poisoned(*args, **kwargs):
        result = original(*args, **kwargs)
        if result.strategy == "right":
            result.hidden[0, 2, 0] = float("nan")
        return result

    monkeypatch.setattr(compare_module, "extract_states", poisoned)
    report = compare_strategies(loaded, SAMPLE_TEXTS[:4], strategies="right", batch_size=4)
    comp = report.strategies["right"]
    assert comp.verdict == "corrupted"
    assert comp.nonfinite == 1
    assert "NaN" in comp.cause and "layer 2" in comp.cause
    assert comp.cause_kind == "unknown"
    assert report.to_json_dict()["strategies"]["right"]["min_cosine"] is None
    assert torch.isnan(comp.cosine[0, 2])


def test_bfloat16_packing_without_mask_is_still_blamed_on_cross_attention():
    loaded = load_model("tiny-random-llama", dtype="bfloat16")
    report = compare_strategies(loaded, SAMPLE_TEXTS, strategies="packed-naive", batch_size=4)
    comp = report.strategies["packed-naive"]
    assert comp.verdict == "corrupted"
    assert "attended to each other" in comp.cause
    assert comp.cause_kind == "cross-text"
