"""The cost model of ``--strategy auto``: what a strategy's passes over some texts would cost,
priced without running them.

``estimate_seconds`` = ``passes x pass_seconds + FLOPs / flops_per_second``, with the FLOPs of
each pass from its shape (:func:`pass_flops`: the body's matrix products for every position,
padding included, and attention over the padded width), scaled to the blocks the pass runs (a
pass that stops after the deepest layer asked, :func:`extraction.extract.forward_pass`). ``pass_seconds`` and
``flops_per_second`` are fitted on a few single-text passes (:func:`fit_cost`); off the CPU the
rate is at least the device's own matrix-product rate (:func:`device_matmul_rate`). Used by
:mod:`extraction.comparison.choose`, the benchmark's FLOP accounting and its replays, and the Probe page's
estimate of a sweep's extraction (:func:`measured_rate`, :func:`extraction_seconds`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..strategies import get_strategy

if TYPE_CHECKING:
    from ..models import LoadedModel

#: Used when the probe's passes cannot be fitted (too few, or a negative slope).
FALLBACK_PASS_SECONDS = 0.005
FALLBACK_FLOPS_PER_SECOND = 50e9


def body_parameters(model: torch.nn.Module) -> int:
    """Parameters outside the embeddings and ``lm_head`` (a tied head counted once)."""
    excluded = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    head = model.get_output_embeddings()
    if head is not None:
        excluded.update(id(p) for p in head.parameters())
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values() if id(p) not in excluded)


def pass_flops(
    body_params: int, hidden_size: int, num_layers: int, rows: int, cols: int, blocks_run: int | None = None
) -> float:
    """FLOPs of one pass of ``rows x cols`` positions through ``blocks_run`` of the ``num_layers``
    blocks (default all): ``(k / n) 2 P_body B T + 4 d k B T^2`` with ``k = blocks_run``, ``n =
    num_layers`` (the matrix products of the blocks run, and attention scores and values over the
    padded width); a pass stopped after block ``k`` computes ``k / n`` of the body."""
    blocks = num_layers if blocks_run is None else blocks_run
    share = blocks / num_layers if num_layers else 1.0
    return share * 2.0 * body_params * rows * cols + 4.0 * hidden_size * blocks * rows * cols * cols


def estimate_seconds(
    loaded: LoadedModel,
    lengths: Sequence[int],
    strategy: str,
    batch_size: int,
    max_batch_tokens: int | None,
    pass_seconds: float,
    flops_per_second: float,
    body_params: int | None = None,
    blocks_run: int | None = None,
) -> dict:
    """The cost model for one strategy on texts of ``lengths``: ``{"estimated_seconds",
    "passes", "pad_fraction"}`` with ``passes x pass_seconds + sum(pass_flops) / flops_per_second``,
    each pass running ``blocks_run`` blocks (default all; :func:`extraction.extract.forward_pass`)."""
    chosen = get_strategy(strategy)
    body = body_parameters(loaded.model) if body_params is None else body_params
    groups = chosen.plan(lengths, batch_size, max_batch_tokens)
    flops = positions = 0.0
    for group in groups:
        rows, cols = chosen.pass_shape([lengths[i] for i in group])
        positions += rows * cols
        flops += pass_flops(body, loaded.hidden_size, loaded.num_hidden_layers, rows, cols, blocks_run)
    return {
        "estimated_seconds": len(groups) * pass_seconds + flops / flops_per_second,
        "passes": len(groups),
        "pad_fraction": 1.0 - sum(lengths) / positions if positions else 0.0,
    }


def fit_cost(flops: Sequence[float], seconds: Sequence[float], device_rate: float | None = None) -> tuple[float, float]:
    """``(pass_seconds, flops_per_second)`` from least squares of ``seconds = a + flops / r`` over
    the probe's single-text passes.

    ``device_rate`` (FLOP/s of a large matrix product on the device, :func:`device_matmul_rate`)
    is given off the CPU. There one short text a pass leaves most of the device idle: its time
    is almost all fixed cost (kernel launches, Python), so the passes cannot tell the rate at
    which a full batch computes, and a rate fitted from them makes padding look dear and many
    small passes cheap (``bucketed`` chosen on an H200, 3-7x slower than ``sorted``). With
    ``device_rate`` the rate is at least the device's, and passes whose time does not grow with
    their FLOPs are all fixed cost. On the CPU a short text's pass already runs near the
    matrix-product rate and the fit stands as it is.
    """
    n = len(flops)
    if n >= 2 and max(flops) > min(flops):
        mean_f, mean_s = sum(flops) / n, sum(seconds) / n
        slope = sum((f - mean_f) * (s - mean_s) for f, s in zip(flops, seconds, strict=True)) / sum(
            (f - mean_f) ** 2 for f in flops
        )
        intercept = mean_s - slope * mean_f
        if slope > 0:
            rate = 1.0 / slope
            return max(intercept, 0.0), rate if device_rate is None else max(rate, device_rate)
    if device_rate is not None and n:
        return sum(seconds) / n, device_rate
    if n and sum(seconds) > 0:
        return FALLBACK_PASS_SECONDS, sum(flops) / sum(seconds)
    return FALLBACK_PASS_SECONDS, FALLBACK_FLOPS_PER_SECOND


def device_matmul_rate(loaded: LoadedModel, rows: int = 4096, repeats: int = 5) -> float | None:
    """FLOP/s of a ``(rows, d) x (d, 4d)`` product in the model's dtype on its device (a few
    milliseconds off the CPU); None on the CPU, where the probe's fit is used as it is."""
    device = loaded.device
    if device.type == "cpu":
        return None
    width = loaded.hidden_size
    a = torch.randn(rows, width, device=device, dtype=loaded.dtype)
    b = torch.randn(width, 4 * width, device=device, dtype=loaded.dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()

    with torch.inference_mode():
        for _ in range(2):
            a @ b
        sync()
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync()
        seconds = time.perf_counter() - started
    return 2.0 * rows * width * 4 * width * repeats / seconds if seconds > 0 else None


def measured_rate(loaded: LoadedModel, token_ids: Sequence[Sequence[int]], passes: int = 3) -> tuple[float, float]:
    """``(pass_seconds, flops_per_second)`` of this model on this device, fitted (:func:`fit_cost`)
    on ``passes`` single-text forward passes of the shortest and longest of ``token_ids`` and
    one between (after one warm-up pass): a fraction of a second on a small model."""
    ordered = sorted((ids for ids in token_ids if len(ids)), key=len)
    if not ordered:
        return FALLBACK_PASS_SECONDS, FALLBACK_FLOPS_PER_SECOND
    picks = [ordered[round(k * (len(ordered) - 1) / max(passes - 1, 1))] for k in range(passes)]
    body = body_parameters(loaded.model)
    flops, seconds = [], []
    with torch.inference_mode():
        for number, ids in enumerate([picks[0], *picks]):
            input_ids = torch.tensor([list(ids)], device=loaded.device)  # (1, T)
            started = time.perf_counter()
            loaded.model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
            if number:  # the first pass warms up
                seconds.append(time.perf_counter() - started)
                flops.append(pass_flops(body, loaded.hidden_size, loaded.num_hidden_layers, 1, len(ids)))
    return fit_cost(flops, seconds, device_matmul_rate(loaded))


def extraction_seconds(
    loaded: LoadedModel,
    lengths: Sequence[int],
    strategies: Sequence[str],
    batch_size: int,
    max_batch_tokens: int | None,
    rate: tuple[float, float],
    blocks_run: int | None = None,
) -> dict[str, float]:
    """The cost model's seconds to extract texts of ``lengths`` with each of ``strategies``,
    at ``rate`` = ``(pass_seconds, flops_per_second)`` (:func:`measured_rate`), each pass running
    ``blocks_run`` blocks (default all)."""
    body = body_parameters(loaded.model)
    return {
        name: estimate_seconds(loaded, lengths, name, batch_size, max_batch_tokens, *rate, body, blocks_run)[
            "estimated_seconds"
        ]
        for name in strategies
    }
