"""What a layer sweep of probes says, in sentences: computed here so that the command line,
the JSON and the Probe page say the same thing. A gap is "significant" when its 95% interval
over the splits excludes 0 (:attr:`~extraction.probing.interval.Interval.significant`); where the
interval covers 0 the sentence says "no significant gap"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..strategies import REFERENCE
from .interval import Interval


class SweepGaps(Protocol):
    """What the sentences read of a sweep: :class:`extraction.probing.sweep.ProbeSweep` has it all
    (named by its shape here, so this module needs nothing from the module that builds sweeps)."""

    num_layers: int
    layers: list[int]  # (L,)
    strategies: list[str]  # (S,)
    seeds: list[int]  # (K,)
    accuracy_same: np.ndarray  # (L, S, K)
    accuracy_single: np.ndarray  # (L, S, K)
    lm_head_accuracy: np.ndarray | None  # (S, K)

    def gap(self, layer: int, strategy: str) -> Interval: ...
    def lm_head_gap(self, strategy: str) -> Interval | None: ...
    def largest_gap_layer(self, strategy: str) -> int: ...


def layer_ranges(layers: Sequence[int]) -> str:
    """``[3, 4, 5, 9, 11, 12]`` -> ``"3-5, 9, 11-12"``: runs of consecutive indices."""
    runs: list[list[int]] = []
    for layer in sorted(layers):
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def points(value: float) -> str:
    """A gap (a fraction) in signed percentage points: ``0.153`` -> ``"+15.3"``."""
    return f"{100 * value:+.1f}"


def interval_text(interval: Interval) -> str:
    """``"95% interval +2.1 to +9.0"``, or ``"one split, no interval"``."""
    if interval.low is None or interval.high is None:
        return "one split, no interval"
    return f"95% interval {points(interval.low)} to {points(interval.high)}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def strategy_finding(sweep: SweepGaps, name: str) -> str:
    """Where ``name``'s gap is significant across the layers, in which direction, and its size there."""
    gaps = {layer: sweep.gap(layer, name) for layer in sweep.layers}
    largest = sweep.largest_gap_layer(name)
    if len(sweep.seeds) == 1:
        return (
            f"{name}: one split only, so no interval: the largest gap is {points(gaps[largest].mean)} points at layer "
            f"{largest}; use 2 or more seeds to tell a gap from the luck of the split."
        )
    over = [layer for layer, gap in gaps.items() if gap.significant and gap.mean > 0]
    under = [layer for layer, gap in gaps.items() if gap.significant and gap.mean < 0]
    if not over and not under:
        if all(gap.mean == 0.0 for gap in gaps.values()):
            return (
                f"{name}: no significant gap at any of the {len(gaps)} layers probed: the probe scores the same "
                "on its own and on single-sample test states in every split."
            )
        return (
            f"{name}: no significant gap at any of the {len(gaps)} layers probed (every 95% interval covers 0); "
            f"the largest mean gap is {points(gaps[largest].mean)} points at layer {largest} "
            f"({interval_text(gaps[largest])})."
        )
    parts = []
    if over:
        peak = max(over, key=lambda layer: gaps[layer].mean)
        i, j = sweep.layers.index(peak), sweep.strategies.index(name)
        parts.append(
            f"validation overstates inference at {_plural(len(over), 'layer')} ({layer_ranges(over)}), most at "
            f"layer {peak}: {points(gaps[peak].mean)} points ({interval_text(gaps[peak])}; validation "
            f"{sweep.accuracy_same[i, j].mean():.0%}, inference {sweep.accuracy_single[i, j].mean():.0%})"
        )
    if under:
        low = min(under, key=lambda layer: gaps[layer].mean)
        parts.append(
            f"inference scores higher than validation at {_plural(len(under), 'layer')} ({layer_ranges(under)}), "
            f"most at layer {low}: {points(gaps[low].mean)} points ({interval_text(gaps[low])}), a probe trained "
            "on states it will not see at inference"
        )
    rest = len(gaps) - len(over) - len(under)
    if rest:
        parts.append(f"no significant gap at the other {_plural(rest, 'layer')}")
    return f"{name}: " + "; ".join(parts) + "."


def layer_finding(sweep: SweepGaps, layer: int, name: str) -> str:
    """``name``'s accuracies and gap at ``layer``, and whether the gap is significant."""
    gap = sweep.gap(layer, name)
    i, j = sweep.layers.index(layer), sweep.strategies.index(name)
    numbers = (
        f"{name} at layer {layer}: validation {sweep.accuracy_same[i, j].mean():.1%}, inference "
        f"{sweep.accuracy_single[i, j].mean():.1%}, gap {points(gap.mean)} points ({interval_text(gap)}, "
        f"{_plural(len(sweep.seeds), 'split')})"
    )
    if gap.low is None:
        return f"{numbers}."
    if not gap.significant:
        return f"{numbers}: no significant gap."
    if gap.mean > 0:
        return f"{numbers}: validation overstates what inference will see."
    return f"{numbers}: inference scores higher, but the probe was trained on states it will not see."


def lm_head_finding(sweep: SweepGaps) -> str | None:
    """The zero-shot ``lm_head`` accuracy of each strategy's final-layer states against the
    single-sample one, or None when the labels are not single tokens."""
    if sweep.lm_head_accuracy is None:
        return None
    reference = sweep.lm_head_accuracy[sweep.strategies.index(REFERENCE)].mean()
    parts = []
    for j, name in enumerate(sweep.strategies):
        if name == REFERENCE:
            continue
        gap = sweep.lm_head_gap(name)
        verdict = "significant" if gap.significant else "no significant gap"
        if gap.low is None:
            verdict = "one split"
        parts.append(
            f"{name} {sweep.lm_head_accuracy[j].mean():.0%} ({points(gap.mean)} points, {interval_text(gap)}: "
            f"{verdict})"
        )
    listed = "; ".join(parts) if parts else "no other strategy"
    return (
        f"lm_head, zero-shot over the label tokens, last layer ({sweep.num_layers}) only: {reference:.0%} on "
        f"single-sample states; {listed}."
    )


__all__ = ["interval_text", "layer_finding", "layer_ranges", "lm_head_finding", "points", "strategy_finding"]
