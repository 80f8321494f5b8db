"""``--strategy auto``: the cheapest layout that is exact on this model, decided in about a second.

:func:`choose_strategy` does three things, none of which times a whole strategy:

1. **Exactness, on a probe.** A handful of texts of different token lengths
   (:func:`probe_rows`: up to :data:`PROBE_TEXTS`, the short ones preferred, plus a copy of
   one so that two texts share a length) is extracted one text a pass (``single``, the
   ground truth) and then, for a candidate layout, all together in one pass. The layout is
   exact when the verdict rule of :mod:`extraction.verdicts` says ``exact`` over every
   layer and the ``lm_head`` top-1. Under ``mean``/``tokens`` pooling (:mod:`extraction.pooling`)
   both are extracted with that pooling and judged the same way without the top-1 (not
   defined for a pooled state), with the row count under ``tokens``. The ``-naive``
   layouts are never candidates.
2. **Cost, from a model.** Every candidate's plan for *these* texts and batch size is
   priced without running it (:func:`extraction.comparison.cost.estimate_seconds`): ``passes x pass_seconds + FLOPs /
   flops_per_second`` with ``FLOPs = 2 P_body B T + 4 d n_layers B T^2`` per pass of ``B``
   rows of ``T`` positions (padding and the attention over the padded width included).
   ``pass_seconds`` and ``flops_per_second`` are fitted on the probe's own single-text
   passes (least squares on their FLOPs and seconds), or fixed by the caller (``rate``). The
   FLOPs are those of the pass the extraction will run: ``blocks_run`` blocks when it stops
   after the deepest layer asked (:func:`extraction.extract.forward_pass`). Candidates are checked in order of
   cost and the first exact one is taken, so usually one candidate pass is run.
3. **Memory.** Exactness is remembered in
   ``<cache_dir>/strategy-choices.json`` (:func:`choice_cache_path`, the cache folder of
   :mod:`extraction.models`) under a key of the model (name, source, a hash of its
   config), dtype, device, attention implementation and the torch / transformers versions
   (:func:`choice_key`), and the pooling when it is not ``last``: a change of any of them
   is another key. A remembered verdict runs no candidate pass; a candidate not yet checked
   under a key is probed and added. The cost constants are NOT remembered: they are fitted
   again on every run from the probe's single-text passes (a few short passes whose rows are
   written to the output, so they cost nearly nothing), because they depend on what else
   runs on the machine: constants fitted once under load (6 GFLOP/s instead of 160 on this
   build machine) made every later run pick ``bucketed`` at 578 tokens/s over ``sorted`` at
   777.

The single-text rows of the probe texts are handed back (:attr:`StrategyChoice.reference_rows`)
so that ``extract`` writes them instead of extracting those texts again (under ``last`` and
``mean``; None under ``tokens``, whose rows are not one per text).

(How probe rows are judged against single's: :mod:`extraction.comparison.exactness`.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..extract import ExtractionResult, extract_states
from ..pooling import DEFAULT_POOLING, Pooling, parse_pooling
from ..storage.atomic import write_json_atomic
from ..strategies import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_TOKENS, REFERENCE, STRATEGIES
from ..texts import TokenizedTexts
from .cost import (
    FALLBACK_FLOPS_PER_SECOND,
    FALLBACK_PASS_SECONDS,
    body_parameters,
    device_matmul_rate,
    estimate_seconds,
    fit_cost,
    pass_flops,
)
from .exactness import _concat_results, _probe_verdict

if TYPE_CHECKING:
    from ..models import LoadedModel

logger = logging.getLogger(__name__)

#: Texts of different lengths in the exactness probe (a copy of one is added).
PROBE_TEXTS = 4
#: Probe texts are taken among those of at most this many tokens when there are enough.
PROBE_MAX_TOKENS = 48
#: Never chosen: known-buggy layouts whose agreement on a probe is luck of its lengths.
AUTO_EXCLUDED = tuple(name for name, strategy in STRATEGIES.items() if strategy.naive)
CACHE_FILE = "strategy-choices.json"
#: Names another file for the remembered decisions (default: CACHE_FILE in the cache folder).
CACHE_ENV = "PADDING_AUDIT_CHOICES"
#: Bump to forget every remembered decision (a change in what is remembered or how it is decided).
CHOICE_FORMAT = 2  # 2: off the CPU the compute rate is the device's matrix-product rate
#: ``progress(done, total)``: candidate layouts checked so far.
ChoiceProgress = Callable[[int, int], None]


@dataclass
class StrategyChoice:
    """What ``auto`` chose, and why.

    ``candidates`` holds one record per candidate layout, cheapest first: ``name``,
    ``estimated_seconds``, ``passes``, ``pad_fraction`` (of the computed positions) for
    these texts, ``verdict`` on the probe (None when it was not needed; ``"skipped"`` when the
    layout's forward pass fails on this model, with ``skipped_because``), ``min_cosine``,
    and ``checked`` (``"probe"`` now, ``"remembered"`` from the cache, or None).
    """

    name: str  # the chosen strategy
    why: str  # one sentence
    candidates: list[dict] = field(default_factory=list)
    probe_rows: list[int] = field(default_factory=list)  # text indices extracted one at a time (the probe)
    reference_rows: torch.Tensor | None = field(default=None, repr=False)  # (P, L+1, d) single rows of probe_rows
    from_cache: bool = False  # every verdict used came from the cache: no candidate pass was run
    seconds: float = 0.0  # wall time of the choice
    pass_seconds: float = FALLBACK_PASS_SECONDS  # the cost model's fixed cost of one forward pass
    flops_per_second: float = FALLBACK_FLOPS_PER_SECOND  # the cost model's compute rate
    blocks_run: int | None = None  # blocks each priced pass runs (the extraction's; None: not said)

    @property
    def chosen(self) -> str:
        return self.name

    def to_dict(self) -> dict:
        return {
            "chosen": self.name,
            "why": self.why,
            "from_cache": self.from_cache,
            "seconds": self.seconds,
            "probe_rows": self.probe_rows,
            "pass_seconds": self.pass_seconds,
            "flops_per_second": self.flops_per_second,
            "blocks_run": self.blocks_run,
            "candidates": self.candidates,
        }


def probe_rows(lengths: Sequence[int], count: int = PROBE_TEXTS, max_tokens: int = PROBE_MAX_TOKENS) -> list[int]:
    """Up to ``count`` text indices of pairwise different token lengths, spread over the
    lengths of at most ``max_tokens`` tokens (over the shortest lengths when fewer than
    ``count`` are that short), shortest and longest of that range included."""
    if count < 1:
        raise ValueError(f"the probe needs at least 1 text, got {count}")
    first_of_length: dict[int, int] = {}
    for index, length in enumerate(lengths):
        first_of_length.setdefault(length, index)
    distinct = sorted(first_of_length)
    short = [n for n in distinct if n <= max_tokens]
    pool = short if len(short) >= min(count, len(distinct)) else distinct[:count]
    if len(pool) > count:
        pool = [pool[round(k * (len(pool) - 1) / (count - 1))] for k in range(count)] if count > 1 else pool[:1]
    return sorted(first_of_length[n] for n in dict.fromkeys(pool))


def _config_hash(loaded: LoadedModel) -> str:
    config = loaded.config.to_dict()
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def choice_identity(loaded: LoadedModel) -> dict[str, str]:
    """What a remembered decision depends on: model, dtype, device, attention, versions
    (and the pooling, added by :func:`choice_key`)."""
    import transformers

    device = loaded.device
    device_name = f"{device} {torch.cuda.get_device_name(device)}" if device.type == "cuda" else str(device)
    return {
        "format": str(CHOICE_FORMAT),
        "model": loaded.name,
        "source": loaded.source,
        "config": _config_hash(loaded),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "device": device_name,
        "attn_implementation": loaded.attn_implementation,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _pooled_identity(loaded: LoadedModel, pooling: Pooling) -> dict[str, str]:
    """:func:`choice_identity` with the pooling when it is not ``last`` (so that the decisions
    remembered before pooling existed keep their key)."""
    identity = choice_identity(loaded)
    return identity if pooling == DEFAULT_POOLING else {**identity, "pooling": pooling}


def choice_key(loaded: LoadedModel, pooling: Pooling = DEFAULT_POOLING) -> str:
    """The cache key of :func:`choice_identity` and the pooling (a SHA-256 prefix)."""
    return hashlib.sha256(json.dumps(_pooled_identity(loaded, pooling), sort_keys=True).encode()).hexdigest()[:24]


def choice_cache_path() -> Path:
    """``<cache_dir>/strategy-choices.json`` in the models' cache folder, or the file named
    by the environment variable :data:`CACHE_ENV` (the benchmark times a cold choice so)."""
    from ..models import cache_dir

    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else cache_dir() / CACHE_FILE


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def choose_strategy(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    probe_texts: int = PROBE_TEXTS,
    remember: bool = True,
    cache_path: str | Path | None = None,
    progress: ChoiceProgress | None = None,
    pooling: Pooling = DEFAULT_POOLING,
    rate: tuple[float, float] | None = None,
    blocks_run: int | None = None,
) -> StrategyChoice:
    """The cheapest strategy, by the cost model, that is exact on this model under ``pooling``
    (see the module docstring). ``remember=False`` neither reads nor writes the cache;
    ``cache_path`` overrides :func:`choice_cache_path`. ``single`` is always exact, so there is
    always a choice.

    ``rate`` = ``(pass_seconds, flops_per_second)`` prices the candidates at these constants
    instead of the fit on the probe's passes: the ranking then does not follow the machine's
    load (tests of what is remembered fix it; a caller that knows its device's rate may too).
    ``blocks_run``: the blocks each pass of the extraction that follows runs (default all;
    :func:`extraction.extract.forward_pass`); the candidates are priced for that shortened pass.
    """
    started = time.perf_counter()
    pooling = parse_pooling(pooling)
    path = Path(cache_path) if cache_path is not None else choice_cache_path()
    key = choice_key(loaded, pooling)
    cache = _read_cache(path) if remember else {}
    entry = cache.get(key) if isinstance(cache.get(key), dict) else None
    known: dict[str, dict] = dict(entry.get("exactness", {})) if entry else {}
    probe = _run_probe(loaded, tokenized, probe_texts, pooling, rate)
    blocks_run = loaded.num_hidden_layers if blocks_run is None else blocks_run
    candidates = _priced_candidates(loaded, tokenized.lengths, batch_size, max_batch_tokens, probe.rate, blocks_run)
    chosen, checked = _first_exact(loaded, tokenized.lengths, candidates, known, probe, pooling, progress)
    if remember and len(probe.lengths) >= 2:
        _remember(path, cache, key, _pooled_identity(loaded, pooling), known, probe.lengths)
    why = _why(chosen, next(c for c in candidates if c["name"] == REFERENCE), probe)
    choice = StrategyChoice(
        name=chosen["name"],
        why=why,
        candidates=candidates,
        probe_rows=probe.rows,
        reference_rows=probe.reference.hidden[: len(probe.rows)] if pooling != "tokens" else None,
        from_cache=checked == 0 and any(c["checked"] == "remembered" for c in candidates),
        seconds=time.perf_counter() - started,
        pass_seconds=probe.rate[0],
        flops_per_second=probe.rate[1],
        blocks_run=blocks_run,
    )
    logger.info("auto: %s (%.2f s)", why, choice.seconds)
    return choice


@dataclass
class _Probe:
    """The probe texts, their single-text extraction (the ground truth) and the cost fitted on it."""

    rows: list[int]  # text indices of the probe
    texts: TokenizedTexts  # the probe texts and a copy of the first, last
    reference: ExtractionResult  # single's extraction of ``texts``
    rate: tuple[float, float]  # (pass_seconds, flops_per_second) fitted on its passes

    @property
    def lengths(self) -> list[int]:
        return sorted({len(ids) for ids in self.texts.token_ids})


def _run_probe(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    probe_texts: int,
    pooling: Pooling,
    rate: tuple[float, float] | None = None,
) -> _Probe:
    """Extract the probe texts one a pass and fit the cost model on those passes (unless ``rate`` is given)."""
    rows = probe_rows(tokenized.lengths, probe_texts)
    items = [tokenized.token_ids[i] for i in rows]
    texts = TokenizedTexts([tokenized.texts[i] for i in rows] + [tokenized.texts[rows[0]]],
                           items + [items[0]], [], tokenized.max_tokens)  # fmt: skip
    body = body_parameters(loaded.model)
    flops, seconds, parts = [], [], []
    for ids, text in zip(items, texts.texts, strict=False):
        one = TokenizedTexts([text], [ids], [], tokenized.max_tokens)
        result = extract_states(loaded, one, REFERENCE, keep_logits=True, pooling=pooling)
        parts.append(result)
        flops.append(pass_flops(body, loaded.hidden_size, loaded.num_hidden_layers, 1, len(ids)))
        seconds.append(result.seconds)
    # The first pass warms up; off the CPU the rate is at least the device's (see fit_cost).
    if rate is None:
        rate = fit_cost(flops[1:] or flops, seconds[1:] or seconds, device_matmul_rate(loaded))
    return _Probe(rows, texts, _concat_results(parts + [parts[0]]), tuple(rate))


def _priced_candidates(
    loaded: LoadedModel,
    lengths: Sequence[int],
    batch_size: int,
    max_batch_tokens: int | None,
    rate: tuple[float, float],
    blocks_run: int,
) -> list[dict]:
    """One record per candidate layout, priced by the cost model at ``rate`` for passes of
    ``blocks_run`` blocks, cheapest first."""
    body = body_parameters(loaded.model)
    names = [REFERENCE] + [name for name in STRATEGIES if name not in AUTO_EXCLUDED and name != REFERENCE]
    candidates = []
    for name in names:
        record = {"name": name}
        record.update(estimate_seconds(loaded, lengths, name, batch_size, max_batch_tokens, *rate, body, blocks_run))
        record.update({"verdict": None, "min_cosine": None, "checked": None})
        candidates.append(record)
    candidates.sort(key=lambda c: (c["estimated_seconds"], names.index(c["name"])))
    return candidates


def _first_exact(
    loaded: LoadedModel,
    lengths: Sequence[int],
    candidates: list[dict],
    known: dict[str, dict],
    probe: _Probe,
    pooling: Pooling,
    progress: ChoiceProgress | None,
) -> tuple[dict, int]:
    """The first exact candidate (a remembered verdict, else one probe pass each), and how many
    were probed; ``known`` gains the new verdicts."""
    checked = 0
    for record in candidates:
        name = record["name"]
        if name == REFERENCE:
            record.update(verdict="exact", min_cosine=1.0, checked="reference")
        elif window_cut := _window_replaced(loaded, name, lengths):
            record.update(verdict="skipped", skipped_because=window_cut, checked="layout")
        elif name in known:
            record.update(verdict=known[name]["verdict"], min_cosine=known[name]["min_cosine"], checked="remembered")
        else:
            verdict, min_cosine = _check_on_probe(loaded, name, probe, pooling, record)
            record.update(verdict=verdict, min_cosine=min_cosine, checked="probe")
            known[name] = {"verdict": verdict, "min_cosine": min_cosine}
            checked += 1
            if progress is not None:
                progress(checked, len(candidates))
        if record["verdict"] == "exact":
            return record, checked
    raise AssertionError("single is exact by definition and always a candidate")


def _check_on_probe(
    loaded: LoadedModel, name: str, probe: _Probe, pooling: Pooling, record: dict
) -> tuple[str, float | None]:
    """``name``'s verdict and min cosine on the probe, all of it in one pass (``skipped``, with
    ``record["skipped_because"]``, when this model cannot run the layout)."""
    texts, reference = probe.texts, probe.reference
    try:
        result = extract_states(loaded, texts, name, batch_size=len(texts), max_batch_tokens=None, pooling=pooling)
    except Exception as error:  # noqa: BLE001 - a layout this model cannot run (a 4-D mask on a recurrent one)
        record["skipped_because"] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
        logger.info("auto: %s cannot run on this model: %s", name, record["skipped_because"])
        return "skipped", None
    return _probe_verdict(
        result.hidden,
        result.logits,
        (reference.hidden, reference.logits),
        loaded.dtype,
        (result.offsets, reference.offsets) if pooling == "tokens" else None,
    )


def _remember(
    path: Path, cache: dict, key: str, identity: dict, known: dict[str, dict], probe_lengths: list[int]
) -> None:
    """Write ``known`` under ``key`` into the cache file (a read-only folder only logs a warning)."""
    cache[key] = {
        "identity": identity,
        "exactness": known,
        "probe_lengths": probe_lengths,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        write_json_atomic(path, cache)
    except OSError as error:  # a read-only cache folder costs a probe next time, nothing else
        logger.warning("could not remember the strategy choice in %s: %s", path, error)


def _why(chosen: dict, single: dict, probe: _Probe) -> str:
    """One sentence: how ``chosen`` was found exact, and its cost against ``single``'s."""
    lengths = probe.lengths
    how = (
        f"exact on {len(probe.rows)} probe texts of {min(lengths)}-{max(lengths)} tokens"
        if chosen["checked"] == "probe"
        else "remembered as exact for this model, dtype, device and versions"
        if chosen["checked"] == "remembered"
        else "the ground truth"
    )
    return (
        f"{chosen['name']}: {how}, and the cheapest such layout by the cost model "
        f"({chosen['passes']} passes, {100 * chosen['pad_fraction']:.1f}% padding, about "
        f"{chosen['estimated_seconds']:.1f} s against {single['estimated_seconds']:.1f} s for {REFERENCE})"
    )


def _window_replaced(loaded: LoadedModel, name: str, lengths: Sequence[int]) -> str | None:
    """Why ``name`` cannot be exact here, or None: its 4-D mask replaces the model's sliding
    window (the conformance matrix measured that texts longer than the window then see tokens the
    model never shows them), and some text is longer than the window. The probe's short texts
    would not show it on a real model's window of thousands of tokens."""
    window = loaded.attention_window
    if not window or max(lengths, default=0) <= window:
        return None
    probe_layout = STRATEGIES[name].layout([[0, 0], [0, 0]], 0)  # equal lengths: every layout accepts them
    if probe_layout.mask_kind != "block-diagonal":
        return None
    return (
        f"its 4-D mask replaces the model's attention window of {window} tokens and a text has "
        f"{max(lengths)} tokens (docs/conformance.md)"
    )


__all__ = [
    "AUTO_EXCLUDED",
    "PROBE_TEXTS",
    "StrategyChoice",
    "choice_cache_path",
    "choice_identity",
    "choice_key",
    "choose_strategy",
    "probe_rows",
]
