"""Compute rates: the sgemm rate of the machine, and the useful FLOPs of an extraction.

Useful FLOPs are ``2 P_body T_real + 2 d V N`` (:func:`useful_flops`): the body for every
real token, ``lm_head`` once per text. Attention scores and padding are not counted: they
are work the result does not need.
"""

from __future__ import annotations

import time

import torch


def sgemm_gflops(size: int = 2048, repeats: int = 5, device: str | torch.device = "cpu") -> float:
    """Best-of-``repeats`` rate of ``torch.mm`` on two ``size x size`` float32 matrices on
    ``device``: ``2 size^3 / seconds / 1e9`` (on CUDA, synchronized around each product)."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    out = torch.empty(size, size, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.mm(a, b, out=out)  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def body_parameters(model: torch.nn.Module) -> int:
    """Parameters outside the embeddings and ``lm_head``: the per-token matmul work of the
    body is ``2 x`` this many FLOPs (a tied ``lm_head`` is counted once, as an embedding).
    The cost model of ``--strategy auto`` counts the same (:func:`extraction.comparison.cost.body_parameters`)."""
    from extraction.comparison.cost import body_parameters as count

    return count(model)


def useful_flops(body_params: int, hidden_size: int, vocab_size: int, real_tokens: int, num_texts: int) -> float:
    """``2 P_body T_real + 2 d V N``: the body for every real token, ``lm_head`` once per text."""
    return 2.0 * body_params * real_tokens + 2.0 * hidden_size * vocab_size * num_texts
