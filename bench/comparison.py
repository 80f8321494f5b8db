"""The app's comparison: ``compare_strategies`` over every strategy on the sample texts
(the dashboard's default run), split into extraction and everything else."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from extraction.models import LoadedModel


def app_comparison(loaded: LoadedModel, batch_size: int = 4) -> dict:
    """Seconds of ``compare_strategies`` over every strategy on the sample texts (the
    app's default run), split into extraction and everything else (metrics, logit lens)."""
    from extraction.comparison.compare import compare_strategies
    from extraction.samples import SAMPLE_TEXTS

    start = time.perf_counter()
    report = compare_strategies(loaded, SAMPLE_TEXTS, batch_size=batch_size)
    total = time.perf_counter() - start
    extraction = sum(comp.extraction.seconds for comp in report.strategies.values())
    return {
        "texts": len(SAMPLE_TEXTS),
        "tokens": sum(report.tokenized.lengths),
        "batch_size": batch_size,
        "seconds": total,
        "extraction_seconds": extraction,
        "metrics_seconds": total - extraction,
        "verdicts": {name: comp.verdict for name, comp in report.strategies.items()},
    }
