"""The layer sweep on a tiny model: one extraction per strategy, every (layer, seed) the numbers
of a single-layer run_probe, the cache shared with run_probe."""

import numpy as np
import pytest

import extraction.probing.features as probe_features
from extraction.probing.probe import run_probe
from extraction.probing.sweep import run_probe_sweep
from tests.tiny.probing.test_probe import ending_word_data

LAYERS = [1, 3]
SEEDS = 3
FIRST_SEED = 5


@pytest.fixture(scope="module")
def swept(tiny_llama):
    calls = []
    real = probe_features.extract_states

    def counting_extract(loaded, tokenized, strategy, *args, **kwargs):
        calls.append((strategy, tuple(kwargs["layers"])))
        return real(loaded, tokenized, strategy, *args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(probe_features, "extract_states", counting_extract)
    cache: dict = {}
    sweep = run_probe_sweep(
        tiny_llama,
        ending_word_data(),
        "right-naive,right",
        layers="1,-2",  # -2 = hidden_states 3 on this 4-block model
        seeds=SEEDS,
        first_seed=FIRST_SEED,
        batch_size=4,
        feature_cache=cache,
        lm_head=True,  # the zero-shot accuracy on the last layer, which the layers probed do not include
    )
    yield sweep, calls, cache
    patch.undo()


def test_one_extraction_per_strategy_gives_every_layer(swept):
    sweep, calls, _ = swept
    assert sweep.layers == LAYERS and sweep.seeds == [5, 6, 7]
    # every layer asked plus the last (for lm_head, asked), in one pass per strategy
    assert calls == [("single", (1, 3, 4)), ("right-naive", (1, 3, 4)), ("right", (1, 3, 4))]
    assert sweep.accuracy_same.shape == (2, 3, SEEDS)
    assert set(sweep.extraction_seconds) == set(sweep.strategies)  # timed, never compared: timings go in bench/


def test_sweep_equals_single_layer_runs_with_the_same_seeds(tiny_llama, swept):
    sweep, calls, cache = swept
    for i, layer in enumerate(LAYERS):
        for k, seed in enumerate(sweep.seeds):
            report = run_probe(
                tiny_llama,
                ending_word_data(),
                "right-naive,right",
                layer=layer,
                seed=seed,
                batch_size=4,
                feature_cache=cache,
                lm_head=True,
            )
            for j, name in enumerate(sweep.strategies):
                result = report.strategies[name]
                assert result.from_cache  # the sweep's states serve the single-layer run
                assert sweep.accuracy_same[i, j, k] == result.accuracy_same
                assert sweep.accuracy_single[i, j, k] == result.accuracy_single
                assert sweep.prediction_flips[i, j, k] == result.scores.prediction_flips
            lm_head = [report.strategies[name].lm_head_accuracy for name in sweep.strategies]
            np.testing.assert_array_equal(sweep.lm_head_accuracy[:, k], lm_head)
    assert len(calls) == 3  # no extraction after the sweep's


def test_right_is_exact_and_right_naive_is_not(swept):
    sweep, _, _ = swept
    for layer in LAYERS:
        right = sweep.gap(layer, "right")
        assert (right.mean, right.low, right.high, right.significant) == (0.0, 0.0, 0.0, False)
    naive = sweep.strategies.index("right-naive")
    assert (sweep.corrupted[:, naive] > 0).all() and (sweep.corrupted[:, sweep.strategies.index("right")] == 0).all()
    assert sweep.findings()[1].startswith("right: no significant gap at any of the 2 layers")
    record = sweep.to_dict()["layers"]["3"]["right-naive"]
    assert record["gap"] == pytest.approx(np.mean(sweep.gaps(3, "right-naive")))
    assert "lm_head_accuracy" not in record  # layer 3 is not the last (4)


def test_sweep_input_errors(tiny_llama):
    data = ending_word_data(16)
    with pytest.raises(ValueError, match="seeds must be at least 1"):
        run_probe_sweep(tiny_llama, data, "right", seeds=0)
    with pytest.raises(ValueError, match="layer 7 out of range"):
        run_probe_sweep(tiny_llama, data, "right", layers="1,7")
