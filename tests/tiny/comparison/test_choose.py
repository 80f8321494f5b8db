"""``--strategy auto``'s choice: the probe texts, the cost model, exactness and the remembered decision."""

import json

import pytest
import torch

from extraction.comparison import choose, cost
from extraction.comparison.choose import (
    AUTO_EXCLUDED,
    choice_identity,
    choice_key,
    choose_strategy,
    probe_rows,
)
from extraction.comparison.cost import estimate_seconds, pass_flops
from extraction.extract import extract_states
from extraction.samples import SAMPLE_TEXTS
from extraction.strategies import STRATEGIES
from extraction.texts import tokenize_texts

TEXTS = SAMPLE_TEXTS + [text + " and then some more words" for text in SAMPLE_TEXTS[:4]]
#: The cost model's (pass_seconds, flops_per_second), fixed: a test of what auto remembers must rank the
#: layouts the same way in every call, not by a rate fitted on a machine that may be busy.
FIXED_RATE = (0.005, 50e9)


@pytest.fixture
def cache_path(tmp_path):
    return tmp_path / "strategy-choices.json"


def test_probe_rows_have_distinct_lengths_and_prefer_short_texts():
    lengths = [30, 5, 5, 100, 12, 7, 60, 40, 9]
    rows = probe_rows(lengths, count=4, max_tokens=48)
    assert len(rows) == 4 and rows == sorted(rows)
    picked = [lengths[i] for i in rows]
    assert len(set(picked)) == 4 and max(picked) <= 48
    assert 5 in picked and 40 in picked  # the shortest and the longest of the short ones
    assert probe_rows([200, 300, 250], count=2, max_tokens=48) == [0, 2]  # none short: the shortest lengths
    assert probe_rows([8, 8, 8], count=4) == [0]  # one length: one text
    with pytest.raises(ValueError, match="at least 1"):
        probe_rows(lengths, count=0)


def test_cost_model_counts_passes_padding_and_flops(tiny_llama):
    lengths = [3, 9, 9, 20, 4]
    single = estimate_seconds(tiny_llama, lengths, "single", 4, None, pass_seconds=0.5, flops_per_second=1e9)
    body = cost.body_parameters(tiny_llama.model)
    d, layers = tiny_llama.hidden_size, tiny_llama.num_hidden_layers
    flops = sum(pass_flops(body, d, layers, 1, n) for n in lengths)
    assert single["passes"] == 5 and single["pad_fraction"] == 0
    assert single["estimated_seconds"] == pytest.approx(5 * 0.5 + flops / 1e9)
    right = estimate_seconds(tiny_llama, lengths, "right", 4, None, 0.5, 1e9)
    assert right["passes"] == 2 and right["pad_fraction"] == pytest.approx(1 - 45 / (4 * 20 + 1 * 4))
    packed = estimate_seconds(tiny_llama, lengths, "packed", 4, None, 0.5, 1e9)
    assert packed["pad_fraction"] == 0 and packed["passes"] == 2
    assert estimate_seconds(tiny_llama, lengths, "sorted", 4, None, 0.5, 1e9)["pad_fraction"] < right["pad_fraction"]
    assert pass_flops(10, 2, 3, rows=2, cols=5) == 2 * 10 * 2 * 5 + 4 * 2 * 3 * 2 * 25


def test_fit_recovers_a_linear_cost():
    flops = [1e9, 2e9, 4e9, 8e9]
    seconds = [0.01 + f / 5e10 for f in flops]
    pass_seconds, rate = cost.fit_cost(flops, seconds)
    assert pass_seconds == pytest.approx(0.01) and rate == pytest.approx(5e10)
    assert cost.fit_cost([1e9], [0.5])[1] == pytest.approx(2e9)  # one pass: the rate alone


def test_off_the_cpu_the_rate_is_the_devices_and_flat_passes_are_fixed_cost():
    # GPU-like probe passes (measured on an H200: ~42 ms a short single-text pass whatever its
    # length): the time does not grow with the FLOPs, so it is all fixed cost.
    flops = [1e9, 2e9, 4e9, 8e9]
    flat = [0.043, 0.041, 0.042, 0.042]
    assert cost.fit_cost(flops, flat, device_rate=5e13) == pytest.approx((0.042, 5e13))
    # A fitted rate below the device's is raised to it; the CPU (no device rate) keeps the fit.
    seconds = [0.04 + f / 1e12 for f in flops]
    assert cost.fit_cost(flops, seconds, device_rate=5e13) == pytest.approx((0.04, 5e13))
    assert cost.fit_cost(flops, seconds) == pytest.approx((0.04, 1e12))


def test_with_gpu_constants_fewer_padded_passes_beat_many_unpadded_ones(tiny_llama):
    # Before: the CPU-style fit of flat passes (5 ms a pass, the rate of the short passes) made
    # bucketed's many passes look cheapest. With the device's rate and the passes' fixed cost,
    # sorted (few passes, little padding) is cheaper, as the H200 measured (100,941 against
    # 4,455 tokens/s).
    lengths = [5 + (37 * k) % 196 for k in range(256)]
    flops = [1e9, 2e9, 4e9]
    old = cost.fit_cost(flops, [0.043, 0.041, 0.042])  # no device rate: the CPU rule
    new = cost.fit_cost(flops, [0.043, 0.041, 0.042], device_rate=5e13)

    def price(name, constants):
        return estimate_seconds(tiny_llama, lengths, name, 64, 8192, *constants, body_params=106_000_000)

    assert price("bucketed", old)["estimated_seconds"] < price("sorted", old)["estimated_seconds"]
    assert price("sorted", new)["estimated_seconds"] < price("bucketed", new)["estimated_seconds"]


def test_no_device_rate_on_the_cpu(tiny_llama):
    assert cost.device_matmul_rate(tiny_llama) is None


def test_choice_is_the_cheapest_exact_layout_and_reuses_single_rows(tiny_model, cache_path):
    tokenized = tokenize_texts(tiny_model.tokenizer, TEXTS)
    choice = choose_strategy(tiny_model, tokenized, batch_size=4, cache_path=cache_path)
    names = [c["name"] for c in choice.candidates]
    assert set(names) == set(STRATEGIES) - set(AUTO_EXCLUDED)
    costs = [c["estimated_seconds"] for c in choice.candidates]
    assert costs == sorted(costs)
    position = names.index(choice.name)
    assert choice.candidates[position]["verdict"] == "exact"
    assert all(c["verdict"] not in ("exact", None) for c in choice.candidates[:position])
    assert all(c["verdict"] is None for c in choice.candidates[position + 1 :])  # not run: a cheaper one was exact
    assert choice.why.startswith(choice.name) and not choice.from_cache
    lengths = [tokenized.lengths[i] for i in choice.probe_rows]
    assert len(set(lengths)) == len(lengths) >= 2
    single = extract_states(tiny_model, tokenized, "single", keep_logits=False).hidden
    assert torch.equal(choice.reference_rows, single[choice.probe_rows])


def test_decision_is_remembered_per_model_and_dtype(tiny_llama, cache_path, monkeypatch):
    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS)
    first = choose_strategy(tiny_llama, tokenized, batch_size=4, cache_path=cache_path, rate=FIXED_RATE)
    stored = json.loads(cache_path.read_text())
    assert list(stored) == [choice_key(tiny_llama)]
    assert stored[choice_key(tiny_llama)]["exactness"][first.name]["verdict"] == "exact"

    assert "pass_seconds" not in stored[choice_key(tiny_llama)]  # the cost follows the load: fitted every run
    real_extract = choose.extract_states
    ran: list[str] = []

    def recording(loaded, texts, strategy, *args, **kwargs):
        ran.append(strategy)
        return real_extract(loaded, texts, strategy, *args, **kwargs)

    monkeypatch.setattr(choose, "extract_states", recording)
    again = choose_strategy(tiny_llama, tokenized, batch_size=4, cache_path=cache_path, rate=FIXED_RATE)
    assert again.name == first.name and again.from_cache and again.reference_rows is not None
    assert set(ran) == {"single"}  # only the probe's single-text passes (written to the output), no candidate
    assert again.candidates[[c["name"] for c in again.candidates].index(again.name)]["checked"] == "remembered"
    ran.clear()
    fresh = choose_strategy(tiny_llama, tokenized, batch_size=4, cache_path=cache_path, remember=False, rate=FIXED_RATE)
    assert not fresh.from_cache  # nothing remembered: a candidate pass is run unless single is the cheapest
    assert fresh.name == "single" or set(ran) - {"single"}
    identity = choice_identity(tiny_llama)
    assert {"model", "dtype", "device", "attn_implementation", "torch", "transformers"} <= set(identity)
    monkeypatch.setattr(choose, "choice_identity", lambda loaded: {**identity, "dtype": "bfloat16"})
    assert choice_key(tiny_llama) != list(stored)[0]  # another dtype is another key


def test_a_layout_remembered_as_not_exact_is_skipped(tiny_llama, cache_path):
    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS)
    first = choose_strategy(tiny_llama, tokenized, batch_size=4, cache_path=cache_path, rate=FIXED_RATE)
    stored = json.loads(cache_path.read_text())
    key = choice_key(tiny_llama)
    stored[key]["exactness"][first.name] = {"verdict": "corrupted", "min_cosine": 0.5}
    cache_path.write_text(json.dumps(stored))
    second = choose_strategy(tiny_llama, tokenized, batch_size=4, cache_path=cache_path, rate=FIXED_RATE)
    assert second.name != first.name
    by_name = {c["name"]: c for c in second.candidates}
    assert by_name[first.name]["verdict"] == "corrupted" and by_name[first.name]["checked"] == "remembered"
    cache_path.write_text("not json")  # a damaged cache is ignored (probed again), then rewritten
    third = choose_strategy(tiny_llama, tokenized, batch_size=4, cache_path=cache_path, rate=FIXED_RATE)
    assert not third.from_cache and {c["checked"] for c in third.candidates} <= {"probe", "reference", None}
    assert key in json.loads(cache_path.read_text())


def test_a_fixed_rate_prices_the_candidates_and_no_pass_is_timed(tiny_llama, cache_path, monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("the rate was fixed: nothing is fitted on the probe's timings")

    monkeypatch.setattr(choose, "fit_cost", no_fit)
    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS)
    choice = choose_strategy(tiny_llama, tokenized, batch_size=4, cache_path=cache_path, rate=FIXED_RATE)
    assert (choice.pass_seconds, choice.flops_per_second) == FIXED_RATE
    for record in choice.candidates:
        priced = estimate_seconds(tiny_llama, tokenized.lengths, record["name"], 4, 8192, *FIXED_RATE)
        assert record["estimated_seconds"] == pytest.approx(priced["estimated_seconds"])


def test_candidates_are_priced_for_the_pass_the_extraction_runs(tiny_llama, cache_path):
    tokenized = tokenize_texts(tiny_llama.tokenizer, TEXTS)
    blocks = tiny_llama.num_hidden_layers // 2
    choice = choose_strategy(tiny_llama, tokenized, batch_size=4, cache_path=cache_path, rate=(0.0, 1e9),
                             blocks_run=blocks)  # fmt: skip
    assert choice.blocks_run == blocks and choice.to_dict()["blocks_run"] == blocks
    for record in choice.candidates:
        full = estimate_seconds(tiny_llama, tokenized.lengths, record["name"], 4, 8192, 0.0, 1e9)
        assert record["estimated_seconds"] == pytest.approx(full["estimated_seconds"] / 2)


def test_probe_verdict_catches_a_changed_row():
    hidden = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(0))
    logits = torch.randn(3, 10, generator=torch.Generator().manual_seed(1))
    assert choose._probe_verdict(hidden, logits, (hidden, logits), torch.float32) == ("exact", pytest.approx(1.0))
    changed = hidden.clone()
    changed[1, 2] = -changed[1, 2]
    verdict, min_cosine = choose._probe_verdict(changed, logits, (hidden, logits), torch.float32)
    assert verdict == "corrupted" and min_cosine == pytest.approx(-1.0)
