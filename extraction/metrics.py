"""Pure metric functions comparing extracted hidden states and logits.

Every function takes tensors and returns tensors; none touches a model. Comparisons
are computed in float64 so that the metric itself adds no rounding of its own.
"""

from __future__ import annotations

import torch


def _as_f64(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(device="cpu", dtype=torch.float64)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity along ``dim``: ``a.b / max(|a| |b|, eps)``.

    Two identical vectors give 1, the zero vector included (``0/0`` would otherwise
    read as 0, "unrelated"). NaN or inf in either input gives NaN (never silently 0 or 1).
    """
    a64, b64 = _as_f64(a), _as_f64(b)
    dot = (a64 * b64).sum(dim)
    norms = a64.norm(dim=dim) * b64.norm(dim=dim)
    out = dot / norms.clamp(min=eps)
    out = out.masked_fill((a64 == b64).all(dim), 1.0)
    bad = ~(torch.isfinite(a64).all(dim) & torch.isfinite(b64).all(dim))
    return out.masked_fill(bad, float("nan"))


def relative_l2_error(
    estimate: torch.Tensor, reference: torch.Tensor, dim: int = -1, eps: float = 1e-12
) -> torch.Tensor:
    """Relative L2 error along ``dim``: ``|estimate - reference| / max(|reference|, eps)``."""
    est, ref = _as_f64(estimate), _as_f64(reference)
    return (est - ref).norm(dim=dim) / ref.norm(dim=dim).clamp(min=eps)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Largest absolute elementwise difference along ``dim``: ``max_i |a_i - b_i|``."""
    return (_as_f64(a) - _as_f64(b)).abs().amax(dim)


def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """KL(p || q) in nats, with ``p = softmax(logits_p)`` and ``q = softmax(logits_q)``.

    ``sum_i p_i (log p_i - log q_i)``, computed from log-softmax for stability.
    """
    log_p = torch.log_softmax(_as_f64(logits_p), dim=dim)
    log_q = torch.log_softmax(_as_f64(logits_q), dim=dim)
    return (log_p.exp() * (log_p - log_q)).sum(dim)


def top1_agrees(
    logits: torch.Tensor, reference_logits: torch.Tensor, atol: float = 1e-4, rtol: float = 1e-5
) -> torch.Tensor:
    """Whether ``argmax(logits)`` is the reference's top-1 token, a near-tie counting as agreement.

    A token ``t = argmax(logits)`` agrees when, in the reference, its logit is within
    ``atol + rtol * |max(reference)|`` of the reference maximum: then the two
    distributions differ only by which of two (numerically) tied tokens is ranked first.
    Random models have near-uniform logits, where exact argmax equality would be noise.
    Rows with NaN/inf in either input never agree. Shapes: ``(..., V) -> (...)`` bool.
    """
    # argmax, max and gather pick values without arithmetic, so they run in the inputs' own
    # dtype (no float64 copy of the (..., V) tensors); only the picked values go to float64.
    logits, reference_logits = logits.detach().cpu(), reference_logits.detach().cpu()
    chosen = logits.argmax(-1, keepdim=True)  # (..., 1)
    ref_max = reference_logits.amax(-1).double()
    ref_at_chosen = reference_logits.gather(-1, chosen).squeeze(-1).double()
    tolerance = atol + rtol * ref_max.abs()
    agree = (ref_max - ref_at_chosen) <= tolerance
    # A row is finite when its max and min are: max is NaN if any entry is NaN, +inf if any
    # is; min is -inf if any is. Two reductions instead of a (..., V) bool tensor.
    finite = torch.isfinite(ref_max) & torch.isfinite(reference_logits.amin(-1))
    finite &= torch.isfinite(logits.amax(-1)) & torch.isfinite(logits.amin(-1))
    return agree & finite


def nonfinite_count(x: torch.Tensor) -> int:
    """Number of NaN or +-inf entries in ``x``."""
    return int((~torch.isfinite(x)).sum().item())


def per_text_token_metrics(
    rows: torch.Tensor, offsets: torch.Tensor, reference_rows: torch.Tensor, reference_offsets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Token rows of ``N`` texts against the reference's, reduced per text and layer.

    ``rows`` ``(R, L, d)`` with ``offsets`` ``(N + 1,)`` (text i owns ``rows[offsets[i]:
    offsets[i + 1]]``), and the same for the reference. Each text's rows are compared
    position by position over the rows both have; returns ``cosine`` (N, L) the worst over
    the text's rows, ``relative_l2`` and ``max_abs`` (N, L) the largest, and
    ``rows_differ`` (N,) bool: the text has another row count than the reference's (its
    extra rows match nothing; a count mismatch is itself a defect, judged by the caller).
    A text without common rows gets NaN.
    """
    n = len(offsets) - 1
    if len(reference_offsets) - 1 != n:
        raise ValueError(f"{n} texts against {len(reference_offsets) - 1} in the reference")
    num_layers = rows.shape[1]
    out = {
        key: torch.full((n, num_layers), float("nan"), dtype=torch.float64)
        for key in ("cosine", "relative_l2", "max_abs")
    }
    counts, reference_counts = offsets.diff(), reference_offsets.diff()
    for i in range(n):
        common = int(min(counts[i], reference_counts[i]))
        if common == 0:
            continue
        a = rows[int(offsets[i]) : int(offsets[i]) + common]  # (m, L, d)
        b = reference_rows[int(reference_offsets[i]) : int(reference_offsets[i]) + common]
        out["cosine"][i] = cosine_similarity(a, b).amin(0)
        out["relative_l2"][i] = relative_l2_error(a, b).amax(0)
        out["max_abs"][i] = max_abs_diff(a, b).amax(0)
    out["rows_differ"] = counts != reference_counts
    return out
