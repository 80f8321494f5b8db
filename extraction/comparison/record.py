"""One strategy measured against ``single``: the record both :mod:`.compare` (which fills it)
and :mod:`.causes` (which explains it) read, kept below both so neither imports the other's
types."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..extract import ExtractionResult
from ..pooling import Pooling
from ..verdicts import CauseKind, Verdict


@dataclass
class StrategyComparison:
    """One strategy measured against ``single`` (N texts, L = num_layers hidden states)."""

    name: str
    extraction: ExtractionResult
    cosine: torch.Tensor  # (N, L) cosine similarity to single, per text and layer
    relative_l2: torch.Tensor  # (N, L) |h - h_single| / |h_single|
    max_abs: torch.Tensor  # (N, L) max_i |h_i - h_single_i|
    # The lm_head measures: defined under ``last`` pooling only (None otherwise).
    top1_same: torch.Tensor | None  # (N,) bool: lm_head(extracted final state) top-1 == single's (near-tie counts)
    kl: torch.Tensor | None  # (N,) KL(single || strategy) of the next-token distributions, nats
    lm_head_reproduces: torch.Tensor | None  # (N,) bool: lm_head(extracted final state) matches its own logits
    logit_lens_agreement: torch.Tensor | None  # (L,) fraction of texts whose logit-lens top-1 matches single's
    nonfinite: int  # NaN/inf entries in this strategy's states and logits
    rows_differ: torch.Tensor | None = None  # (N,) bool under tokens: another row count than single's
    verdict: Verdict = "exact"
    cause: str = ""
    cause_kind: CauseKind = "none"  # which defect the cause names (verdicts.CAUSE_KINDS)
    first_divergent_layer: int | None = None  # first layer with some cosine < EXACT_COSINE

    @property
    def pooling(self) -> Pooling:
        return self.extraction.pooling

    @property
    def min_cosine(self) -> float:
        return float(self.cosine.min()) if not torch.isnan(self.cosine).any() else float("nan")

    @property
    def mean_cosine(self) -> float:
        return float(self.cosine.mean())

    @property
    def max_relative_l2(self) -> float:
        """Largest relative L2 error over texts and layers (NaN when any is NaN)."""
        return float(self.relative_l2.max()) if not torch.isnan(self.relative_l2).any() else float("nan")

    @property
    def per_layer_min_cosine(self) -> list[float]:
        return self.cosine.min(0).values.tolist()

    @property
    def per_layer_mean_cosine(self) -> list[float]:
        return self.cosine.mean(0).tolist()

    @property
    def per_text_min_cosine(self) -> list[float]:
        return self.cosine.min(1).values.tolist()

    @property
    def top1_agreement(self) -> float | None:
        """Fraction of texts with single's top-1 next token (None: not defined for this pooling)."""
        return None if self.top1_same is None else float(self.top1_same.float().mean())

    @property
    def mean_kl(self) -> float | None:
        return None if self.kl is None else float(self.kl.mean())

    def to_dict(self) -> dict:
        """JSON-ready summary (the ``compare --json`` per-strategy record)."""

        def clean(x: float) -> float | None:
            return None if x != x else x

        return {
            "pooling": self.pooling,
            "verdict": self.verdict,
            "cause_kind": self.cause_kind,
            "cause": self.cause,
            "min_cosine": clean(self.min_cosine),
            "max_relative_l2": clean(self.max_relative_l2),
            "mean_cosine": clean(self.mean_cosine),
            "per_layer_min_cosine": [clean(x) for x in self.per_layer_min_cosine],
            "per_layer_mean_cosine": [clean(x) for x in self.per_layer_mean_cosine],
            "top1_agreement": self.top1_agreement,
            "mean_kl": None if self.mean_kl is None else clean(self.mean_kl),
            "lm_head_reproduces_logits": (
                None if self.lm_head_reproduces is None else float(self.lm_head_reproduces.float().mean())
            ),
            "logit_lens_agreement": None if self.logit_lens_agreement is None else self.logit_lens_agreement.tolist(),
            "texts_with_other_row_count": None if self.rows_differ is None else int(self.rows_differ.sum()),
            "first_divergent_layer": self.first_divergent_layer,
            "nonfinite_values": self.nonfinite,
            "per_text_min_cosine": [clean(x) for x in self.per_text_min_cosine],
            "pad_fraction": self.extraction.pad_fraction,
            "forward_passes": self.extraction.forward_passes,
            "seconds": self.extraction.seconds,
            "tokens_per_second": self.extraction.tokens_per_second,
        }

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per (text, layer) with cosine, relative L2 and max abs difference."""
        n, num_layers = self.cosine.shape
        return pd.DataFrame(
            {
                "strategy": self.name,
                "text": torch.arange(n).repeat_interleave(num_layers).numpy(),
                "layer": torch.arange(num_layers).repeat(n).numpy(),
                "cosine": self.cosine.flatten().numpy(),
                "relative_l2": self.relative_l2.flatten().numpy(),
                "max_abs_diff": self.max_abs.flatten().numpy(),
            }
        )
