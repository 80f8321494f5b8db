"""The states a probe is trained on: each strategy's states at the layers asked, pooled by
``pooling`` (``last``: the last real token, the default; ``mean``: the mean of the text's
tokens as the strategy's layout pools them, :mod:`extraction.pooling`), extracted once per
strategy and kept in a :data:`FeatureCache` between runs.

One extraction gives every layer's state of a text (the forward pass computes them all), so
a layer sweep costs one pass per strategy, and a later run that asks for a subset of the
layers already extracted (or another seed) extracts nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..comparison.cost import extraction_seconds, measured_rate
from ..extract import extract_states, forward_pass
from ..pooling import DEFAULT_POOLING, PER_TEXT_POOLINGS, Pooling

if TYPE_CHECKING:
    from ..models import LoadedModel
    from ..texts import TokenizedTexts

#: ``progress(strategy_name, strategy_number, strategy_count, done_texts, total_texts)``
ProbeProgress = Callable[[str, int, int, int, int], None]


@dataclass
class StrategyStates:
    """One strategy's extracted states of every text at some ``hidden_states`` indices."""

    states: np.ndarray = field(repr=False)  # (N, L, d) float32, L = len(layers)
    layers: tuple[int, ...]  # hidden_states index of each slice of ``states``, ascending
    seconds: float  # wall-clock time of the extraction
    from_cache: bool = False  # taken from a FeatureCache filled by an earlier run
    pooling: Pooling = DEFAULT_POOLING  # how each text's state was pooled

    def at(self, layer: int) -> np.ndarray:
        """(N, d): every text's state at ``hidden_states[layer]``."""
        if layer not in self.layers:
            raise ValueError(f"layer {layer} was not extracted (extracted: {', '.join(map(str, self.layers))})")
        return self.states[:, self.layers.index(layer)]


#: Extracted states kept between runs, keyed by (strategy, batch size, max batch tokens, layers);
#: each entry says its pooling (an entry of another pooling is never used).
#: Valid for one model and one data set only: the keys do not name them.
FeatureCache = dict[tuple[str, int, int | None, tuple[int, ...]], StrategyStates]


def cached_states(
    cache: FeatureCache,
    name: str,
    batch_size: int,
    max_batch_tokens: int | None,
    layers: Sequence[int],
    pooling: Pooling = DEFAULT_POOLING,
) -> StrategyStates | None:
    """A cache entry of ``name`` with this batch size, token budget and pooling holding every
    layer of ``layers`` (the exact key, or any entry extracted with more layers), or None."""
    wanted = set(layers)
    for (strategy, size, budget, held), entry in cache.items():
        same = (strategy, size, budget, entry.pooling) == (name, batch_size, max_batch_tokens, pooling)
        if same and wanted <= set(held):
            return entry
    return None


def strategy_states(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    names: Sequence[str],
    layers: Sequence[int],
    batch_size: int,
    max_batch_tokens: int | None,
    progress: ProbeProgress | None = None,
    cache: FeatureCache | None = None,
    pooling: Pooling = DEFAULT_POOLING,
) -> dict[str, StrategyStates]:
    """Every strategy's states at ``layers`` (``hidden_states`` indices) pooled by ``pooling``
    (``last`` or ``mean``), from ``cache`` where it holds them, else extracted (one pass per
    strategy) and added to it (an entry of another pooling is replaced)."""
    if pooling not in PER_TEXT_POOLINGS:
        raise ValueError(f"probes take one state per text: pooling 'last' or 'mean', not {pooling!r}")
    cache = cache if cache is not None else {}
    kept = tuple(sorted(set(layers)))
    result: dict[str, StrategyStates] = {}
    for number, name in enumerate(names, start=1):

        def report(done: int, total: int, name: str = name, number: int = number) -> None:
            if progress is not None:
                progress(name, number, len(names), done, total)

        held = cached_states(cache, name, batch_size, max_batch_tokens, kept, pooling)
        if held is None:
            report(0, len(tokenized))
            extraction = extract_states(
                loaded,
                tokenized,
                name,
                batch_size,
                max_batch_tokens,
                layers=list(kept),
                keep_logits=False,
                progress=report,
                pooling=pooling,
            )
            cache[(name, batch_size, max_batch_tokens, kept)] = StrategyStates(
                extraction.hidden.numpy(),  # (N, L, d)
                kept,
                extraction.seconds,
                pooling=pooling,
            )
            result[name] = cache[(name, batch_size, max_batch_tokens, kept)]
        else:
            result[name] = StrategyStates(held.states, held.layers, held.seconds, from_cache=True, pooling=pooling)
        report(len(tokenized), len(tokenized))
    return result


__all__ = ["FeatureCache", "ProbeProgress", "StrategyStates", "cached_states", "strategy_states"]


def extraction_estimate(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    names: Sequence[str],
    batch_size: int,
    max_batch_tokens: int | None,
    layers: Sequence[int] | None = None,
) -> dict[str, float]:
    """Seconds each of ``names`` would take to extract ``tokenized`` at ``layers`` (default all):
    the cost model of :mod:`extraction.comparison.cost` (the passes and FLOPs of the strategy's
    layout of these texts' token counts, each pass running the blocks up to the deepest of
    ``layers``, :func:`~extraction.extract.forward_pass`) at the rate of a few single-text passes
    measured now (:func:`~extraction.comparison.cost.measured_rate`). Runs the model: hold it as for
    an extraction."""
    rate = measured_rate(loaded, tokenized.token_ids)
    blocks = forward_pass(loaded, layers, keep_logits=False).blocks_run
    return extraction_seconds(loaded, tokenized.lengths, names, batch_size, max_batch_tokens, rate, blocks)
