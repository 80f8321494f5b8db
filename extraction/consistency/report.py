"""The self-consistency check's result: :class:`SelfCheckReport`, an
:class:`~extraction.audit.AuditReport` (the same verdict, cause, evidence and JSON keys) with the
noise floor and the calls made, and no model."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..audit.report import AuditReport
from .floor import NoiseFloor

#: ``likely_cause`` values of the self-consistency check besides None (exact), with their cause kind
#: (:data:`~extraction.verdicts.CAUSE_KINDS`).
SELF_CAUSES: dict[str, str] = {
    "padding": "pad-state",
    "packing": "cross-text",
    "order": "other-row",
    "duplicate-rows": "other-row",
    "rounding": "rounding",
    "kernels": "kernels",
    "not-repeatable": "unknown",
    "unknown": "unknown",
}
#: What the report says where the audit names a model.
NO_MODEL = "no model: extract_fn batched against extract_fn one text at a time (self-consistency)"


@dataclass
class SelfCheckReport(AuditReport):
    """:func:`~extraction.consistency.self_check`'s report. ``model`` and ``dtype`` are None (there
    is no model); the ground truth of text i is ``extract_fn([text_i])``. Hypotheses are the
    behavioural probes (:mod:`extraction.consistency.probes`), ``likely_cause`` one of
    :data:`SELF_CAUSES`."""

    noise_floor: NoiseFloor | None = None
    calls: list[str] = field(default_factory=list)  # what each call of extract_fn was, in order

    def to_dict(self) -> dict:
        """The audit's keys (``model``/``dtype`` None), plus ``check: "self-consistency"``,
        ``noise_floor`` (:meth:`NoiseFloor.to_dict`), ``calls`` and ``n_calls``."""
        out = super().to_dict()
        out |= {
            "check": "self-consistency",
            "model": None,
            "dtype": None,
            "noise_floor": None if self.noise_floor is None else self.noise_floor.to_dict(),
            "calls": self.calls,
            "n_calls": len(self.calls),
        }
        return out
