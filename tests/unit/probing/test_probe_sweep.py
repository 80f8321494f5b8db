"""The layer sweep without a model: the t-interval by hand, the gap on constructed features,
layer parsing, and the sweep's table, JSON, sentences and figures on a constructed result."""

import json

import numpy as np
import pytest

from extraction.probing.features import StrategyStates
from extraction.probing.findings import layer_ranges
from extraction.probing.probe import stratified_split
from extraction.probing.sweep import (
    Interval,
    ProbeSweep,
    mean_interval,
    score_sweep,
)

# --- the interval ------------------------------------------------------------------------------


def test_mean_interval_by_hand():
    # mean 0.04; deviations -0.02, 0, 0.02, -0.04, 0.04: s = sqrt(0.004 / 4) = 0.0316228;
    # s / sqrt(5) = 0.0141421; t(0.975, 4) = 2.776445 (tables); half width 0.0392644.
    interval = mean_interval([0.02, 0.04, 0.06, 0.00, 0.08])
    assert interval.mean == pytest.approx(0.04)
    assert interval.low == pytest.approx(0.04 - 0.0392644, abs=1e-6)
    assert interval.high == pytest.approx(0.04 + 0.0392644, abs=1e-6)
    assert interval.significant  # 0.0007 > 0
    # two values 0 and 0.1: mean 0.05, s = 0.0707107, s / sqrt(2) = 0.05, t(0.975, 1) = 12.7062
    wide = mean_interval([0.0, 0.1])
    assert (wide.low, wide.high) == (pytest.approx(0.05 - 0.635310, abs=1e-5), pytest.approx(0.05 + 0.635310, abs=1e-5))
    assert not wide.significant
    # 90%: t(0.95, 4) = 2.131847
    assert mean_interval([0.02, 0.04, 0.06, 0.00, 0.08], confidence=0.9).high == pytest.approx(
        0.04 + 2.131847 * 0.0141421, abs=1e-6
    )


def test_interval_edges():
    assert mean_interval([0.1, 0.1, 0.1]) == Interval(pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1))
    assert mean_interval([0.0] * 5).significant is False  # zero width at 0 covers 0
    assert mean_interval([-0.1, -0.12, -0.08]).significant  # significant below 0 too
    single = mean_interval([0.3])
    assert (single.mean, single.low, single.high, single.significant) == (0.3, None, None, False)
    for bad, message in (([], "non-empty"), ([0.1, np.nan], "NaN")):
        with pytest.raises(ValueError, match=message):
            mean_interval(bad)
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([0.1, 0.2], confidence=1.0)


# --- layers ------------------------------------------------------------------------------------


def test_layer_ranges():
    assert layer_ranges([12, 3, 4, 5, 9, 11]) == "3-5, 9, 11-12"
    assert layer_ranges([7]) == "7"


# --- the gap on constructed features ---------------------------------------------------------

N = 40
LABELS = np.arange(N) % 2  # 20 of each class
#: Single-sample features: one dimension, class 1 at +1..+2, class 0 at -1..-2 (separable at 0).
SINGLE = ((2 * LABELS - 1) * (1 + np.arange(N) / N))[:, None]  # (N, 1)
FLIPPED = [0, 1, 2, 3]  # two rows of each class, corrupted to the other side


def constructed_states() -> dict[str, StrategyStates]:
    """Layer 0: ``naive`` is single + 10 (a probe trained on it puts every single-sample state in
    class 0: 50% at inference). Layer 1: ``naive`` equals single. Layer 2: ``naive`` flips the
    sign of rows FLIPPED (its own test rows among them are misread; single's are not)."""
    shifted = SINGLE + 10.0
    flipped = SINGLE.copy()
    flipped[FLIPPED] *= -1
    single = np.stack([SINGLE, SINGLE, SINGLE], axis=1)  # (N, 3, 1)
    naive = np.stack([shifted, SINGLE, flipped], axis=1)  # (N, 3, 1)
    return {
        "single": StrategyStates(single.astype(np.float32), (0, 1, 2), 0.0),
        "naive": StrategyStates(naive.astype(np.float32), (0, 1, 2), 0.0),
    }


def test_score_sweep_gaps_on_constructed_features():
    seeds = [0, 1, 2, 3, 4]
    scores = score_sweep(constructed_states(), LABELS, [0, 1, 2], seeds, test_fraction=0.25)
    assert scores.accuracy_same.shape == (3, 2, 5)  # (L, S, K)
    gap = scores.accuracy_same - scores.accuracy_single  # (L, S, K)
    assert (gap[:, 0] == 0).all()  # single against itself
    # layer 0: the shifted probe is right on its own states, half right on single's (5 of 10 test rows)
    assert scores.accuracy_same[0, 1].tolist() == [1.0] * 5
    assert scores.accuracy_single[0, 1].tolist() == [0.5] * 5
    assert gap[1, 1].tolist() == [0.0] * 5  # layer 1: identical states
    # layer 2: each flipped row in the test split is one mistake on the naive states only
    expected = [-len(np.intersect1d(stratified_split(LABELS, 0.25, seed)[1], FLIPPED)) / 10 for seed in seeds]
    assert any(value != 0 for value in expected) and len(set(expected)) > 1  # the splits differ
    np.testing.assert_allclose(gap[2, 1], expected)
    assert scores.accuracy_single[2, 1].tolist() == [1.0] * 5


def constructed_sweep(gaps_layer_1=(0.02, 0.04, 0.06, 0.00, 0.08)) -> ProbeSweep:
    """Two layers, single and right-naive, five seeds, accuracies chosen by hand."""
    same = np.full((2, 2, 5), 0.9)
    single = np.full((2, 2, 5), 0.9)
    same[1, 1] = 0.9 + np.array(gaps_layer_1)  # right-naive at layer 1: validation higher
    single[0, 1] = [0.92, 0.93, 0.91, 0.94, 0.90]  # right-naive at layer 0: gap -0.02 .. -0.04, mean -0.02
    return ProbeSweep(
        model="constructed",
        model_description="constructed",
        is_random=False,
        num_layers=1,
        layers=[0, 1],
        strategies=["single", "right-naive"],
        seeds=[0, 1, 2, 3, 4],
        data_source="hand-made",
        classes=["a", "b"],
        num_texts=40,
        num_test=10,
        test_fraction=0.25,
        batch_size=4,
        accuracy_same=same,
        accuracy_single=single,
        train_accuracy=np.ones((2, 2, 5)),
        prediction_flips=np.zeros((2, 2, 5)),
        corrupted=np.array([[0.0, 0.5], [0.0, 0.5]]),
        majority_rate=0.5,
        lm_head_accuracy=np.array([[0.8] * 5, [0.6, 0.5, 0.6, 0.5, 0.6]]),
    )


def test_sweep_gap_interval_table_and_json():
    sweep = constructed_sweep()
    gap = sweep.gap(1, "right-naive")
    assert gap.mean == pytest.approx(0.04) and gap.low == pytest.approx(0.0007356, abs=1e-6)
    frame = sweep.to_frame()
    assert list(frame.columns[:2]) == ["layer", "strategy"] and len(frame) == 4
    row = frame[(frame["layer"] == 1) & (frame["strategy"] == "right-naive")].iloc[0]
    assert row["gap"] == pytest.approx(0.04) and row["gap_high"] == pytest.approx(0.0792644, abs=1e-6)
    assert bool(row["significant"])
    # lm_head numbers belong to the last layer only
    assert frame[frame["layer"] == 0]["lm_head_accuracy"].isna().all()
    assert row["lm_head_gap"] == pytest.approx(0.56 - 0.8)
    data = json.loads(json.dumps(sweep.to_dict(), allow_nan=False))
    assert data["seeds"] == 5 and data["lm_head_layer"] == 1
    record = data["layers"]["1"]["right-naive"]
    assert {"accuracy_same", "accuracy_single", "gap", "gap_low", "gap_high", "lm_head_gap"} <= set(record)
    assert record["accuracy_same"] == pytest.approx(0.94)
    assert record["gaps"] == pytest.approx([0.02, 0.04, 0.06, 0, 0.08])
    assert "lm_head_accuracy" not in data["layers"]["0"]["right-naive"]
    assert sweep.largest_gap_layer("right-naive") == 1
    assert sweep.significant_layers("right-naive") == [0, 1]  # layer 0: -0.02 +- 0.0196
    with pytest.raises(ValueError, match="layer 7 was not probed"):
        sweep.gap(7, "right-naive")


def test_focus_layer_prefers_where_validation_overstates_inference():
    sweep = constructed_sweep()
    sweep.accuracy_single[0, 1] += 0.2  # layer 0: gap about -0.22, larger in size than layer 1's +0.04
    assert sweep.largest_gap_layer("right-naive") == 0
    assert sweep.focus_layer == 1  # the largest significant positive gap
    sweep.accuracy_same[1, 1] = sweep.accuracy_single[1, 1]  # no positive gap left
    assert sweep.focus_layer == 0  # the largest significant gap in size
    sweep.accuracy_single[:] = sweep.accuracy_same
    assert sweep.focus_layer == 1  # no gap anywhere: the last layer


def test_findings_say_no_significant_gap_where_the_interval_covers_zero():
    sweep = constructed_sweep(gaps_layer_1=(0.1, -0.1, 0.05, -0.05, 0.0))
    sweep.accuracy_single[0, 1] = sweep.accuracy_same[0, 1] - np.array([0.1, -0.1, 0.0, 0.0, 0.0])
    assert sweep.significant_layers("right-naive") == []
    (finding, lm_head) = sweep.findings()
    assert finding.startswith("right-naive: no significant gap at any of the 2 layers")
    assert "lm_head" in lm_head and "last layer (1) only" in lm_head
    assert sweep.layer_findings(1)[0].endswith("no significant gap.")


def test_sweep_figures_draw_the_numbers():
    from extraction.plotting import probe_layer_figure, probe_sweep_figure

    sweep = constructed_sweep()
    figure = probe_sweep_figure(sweep)
    (line,) = [trace for trace in figure.data if trace.name == "right-naive"]
    np.testing.assert_allclose(line.y, [-2.0, 4.0])
    (band,) = [trace for trace in figure.data if trace.fill == "toself"]
    np.testing.assert_allclose(band.y[1], 100 * sweep.gap(1, "right-naive").high)
    (star,) = [trace for trace in figure.data if trace.marker.symbol == "star"]
    assert list(star.x) == [1]
    sweep.accuracy_single[:] = sweep.accuracy_same  # no gap anywhere: no star
    assert not [trace for trace in probe_sweep_figure(sweep).data if trace.marker.symbol == "star"]
    assert not any(trace.name == "single" for trace in figure.data)
    bars = [trace for trace in probe_layer_figure(constructed_sweep(), 1).data if trace.type == "bar"]
    np.testing.assert_allclose(bars[0].y, [0.9, 0.94])
    assert bars[0].error_y.array[1] == pytest.approx(0.0392644, abs=1e-6)
