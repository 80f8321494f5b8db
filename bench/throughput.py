"""Throughput: real tokens per second of each strategy against ``single``, exact runs only.

``single`` is timed on an evenly spread subset of the texts; every other strategy is
first checked on a small sample of that subset and timed on all texts only if it
reproduces ``single`` there (min cosine at least :data:`BENCH_EXACT_COSINE`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from bench.rates import body_parameters, useful_flops
from bench.texts import spread_subset

if TYPE_CHECKING:
    from extraction.extract import ExtractionResult
    from extraction.models import LoadedModel
    from extraction.texts import TokenizedTexts

logger = logging.getLogger(__name__)

#: Stricter than the verdict's exact threshold: the benchmark only times float32 runs
#: that reproduce ``single`` to within rounding.
BENCH_EXACT_COSINE = 0.99999
DEFAULT_SINGLE_TEXTS = 48
#: Texts the exactness pre-check runs on (spread over the lengths).
CHECK_TEXTS = 16
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_BATCH_TOKENS = 1024


@dataclass
class StrategyTiming:
    """One strategy timed on the benchmark texts."""

    name: str
    texts: int
    real_tokens: int
    computed_positions: int
    forward_passes: int
    seconds: float
    tokens_per_second: float
    pad_fraction: float
    useful_gflops: float  # useful FLOPs / seconds / 1e9
    sgemm_fraction: float  # useful_gflops / the sgemm rate of the same run
    ratio_to_single: float | None = None
    min_cosine_vs_single: float | None = None  # over the texts single was timed on, every layer
    exact: bool | None = None  # min_cosine_vs_single >= the run's exact_cosine
    capture: str = ""
    load_average: float | None = None  # 1-minute load average when the run ended (other work on the machine)


def min_cosine(rows: torch.Tensor, reference: torch.Tensor) -> float:
    """Minimum over texts and layers of the cosine similarity of (N, L, d) rows."""
    from extraction import metrics

    return float(metrics.cosine_similarity(rows, reference).min())


def _timing(name, result, body_params, loaded, sgemm) -> StrategyTiming:
    flops = useful_flops(body_params, loaded.hidden_size, loaded.vocab_size, result.real_tokens, len(result.hidden))
    gflops = flops / result.seconds / 1e9
    return StrategyTiming(
        name=name,
        texts=len(result.hidden),
        real_tokens=result.real_tokens,
        computed_positions=result.computed_positions,
        forward_passes=result.forward_passes,
        seconds=result.seconds,
        tokens_per_second=result.tokens_per_second,
        pad_fraction=result.pad_fraction,
        useful_gflops=gflops,
        sgemm_fraction=gflops / sgemm,
        capture=result.capture,
        load_average=os.getloadavg()[0],
    )


def _subset(tokenized: TokenizedTexts, rows: Sequence[int]) -> TokenizedTexts:
    from extraction.texts import TokenizedTexts

    return TokenizedTexts(
        [tokenized.texts[i] for i in rows], [tokenized.token_ids[i] for i in rows], [], tokenized.max_tokens
    )


def _fastest(repeats: int, run: Callable[[], ExtractionResult]) -> ExtractionResult:
    """The run with the fewest seconds out of ``repeats``; all must agree bit for bit."""
    best = run()
    for _ in range(repeats - 1):
        again = run()
        if not torch.equal(again.hidden, best.hidden):
            raise RuntimeError(f"{best.strategy}: two runs of the same extraction gave different states")
        best = min(best, again, key=lambda result: result.seconds)
    return best


def time_strategies(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    strategies: Sequence[str],
    sgemm: float,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    single_texts: int = DEFAULT_SINGLE_TEXTS,
    check_texts: int = CHECK_TEXTS,
    say: Callable[[str], None] = logger.info,
    repeats: int = 1,
    exact_cosine: float = BENCH_EXACT_COSINE,
) -> tuple[list[StrategyTiming], dict[str, str]]:
    """Time ``single`` on a spread subset of ``single_texts`` texts, then every other strategy
    in ``strategies`` that is exact on a ``check_texts`` sample of that subset, on all texts.

    Each timing is the fastest of ``repeats`` runs (other work on a shared machine only
    ever slows a run down). Every timed run keeps all layers (``keep_logits=False``); its rows on the ``single``
    subset are compared with ``single``'s. Returns the timings (``single`` first) and, for
    the strategies not timed, why.
    """
    from extraction.extract import extract_states

    body = body_parameters(loaded.model)
    single_rows = spread_subset(tokenized.lengths, single_texts)
    single_set = _subset(tokenized, single_rows)
    check_rows = spread_subset(single_set.lengths, check_texts)
    check_set = _subset(single_set, check_rows)
    # Warm-up: the first forward passes of a process pay one-off costs (allocator, kernels),
    # and the first extraction verifies the capture hooks for this model.
    extract_states(loaded, _subset(tokenized, [0]), "single", keep_logits=False)

    say(f"timing single on {len(single_set)} texts ({sum(single_set.lengths)} tokens)")
    reference = _fastest(repeats, lambda: extract_states(loaded, single_set, "single", keep_logits=False))
    single = _timing("single", reference, body, loaded, sgemm)
    single.ratio_to_single, single.min_cosine_vs_single, single.exact = 1.0, 1.0, True
    timings, not_timed = [single], {}
    for name in strategies:
        if name == "single":
            continue
        check = extract_states(loaded, check_set, name, batch_size, max_batch_tokens, keep_logits=False)
        check_cosine = min_cosine(check.hidden, reference.hidden[check_rows])  # (check, L, d) vs the same rows
        if not check_cosine >= exact_cosine:
            not_timed[name] = f"not exact on the {len(check_set)}-text check sample (min cosine {check_cosine:.6f})"
            say(f"{name}: {not_timed[name]}; not timed")
            continue
        say(f"timing {name} on {len(tokenized)} texts ({sum(tokenized.lengths)} tokens)")
        result = _fastest(
            repeats,
            lambda name=name: extract_states(loaded, tokenized, name, batch_size, max_batch_tokens, keep_logits=False),
        )
        timing = _timing(name, result, body, loaded, sgemm)
        timing.ratio_to_single = timing.tokens_per_second / single.tokens_per_second
        timing.min_cosine_vs_single = min_cosine(result.hidden[single_rows], reference.hidden)
        timing.exact = timing.min_cosine_vs_single >= exact_cosine
        timings.append(timing)
    return timings, not_timed
