"""Audit stored hidden states: are they what the model computes, and if not, why not?

:func:`audit_states` re-extracts a sample of the texts (single-sample extraction, the ground
truth, or by default the batched layout ``--strategy auto`` verified exact against it on this
model: :mod:`.reference`) and compares the stored rows with it:

* cosine similarity per checked row and stored layer, its minimum and mean, and the
  fraction of rows whose worst layer is below :data:`~extraction.verdicts.DRIFT_COSINE`;
* ``lm_head`` top-1 accuracy on the stored states against the model's own next-token
  prediction, beside the same on the fresh states. The stored last layer is taken as
  ``hidden_states[-1]`` is returned by transformers (after the final norm), so it goes
  through ``lm_head`` alone; a stored intermediate layer goes through the final norm
  and then ``lm_head`` (logit lens), and the report says so;
* a verdict, with the words and thresholds of :mod:`extraction.verdicts`: ``exact``,
  ``drift`` or ``corrupted``.

When the verdict is not exact, forensics try to *reproduce* the stored vectors under
each known defect, on the worst few rows (:data:`FORENSIC_ROWS`), and name the best
match. A hypothesis reproduces a row when the cosine between the stored row and its
reproduction, at every stored layer, is at least :data:`REPRODUCE_COSINE`, and the
reproduction is clearly closer than the fresh state (``1 - cos_repro <=``
:data:`CLOSER_FACTOR` ``* (1 - cos_fresh)``). Hypotheses, each searched within fixed
bounds:

* ``right-naive``: right padding read at position -1. With a causal model the state at
  the last pad position depends only on the text and the padded length P, so one
  forward pass of the text followed by pads gives the reproduction for every P at once;
  the inferred P per row is then checked against batch sizes in input order and in
  length order (which batchings would produce exactly those padded lengths);
* ``left-naive``: left padding to a length P without position ids (the text's tokens sit
  at positions P-n..P-1); P searched over the texts' lengths. Skipped on models with
  relative positions, where it changes nothing;
* ``packed-naive``: the text concatenated after the texts before it in input order,
  without a mask; the pack start is searched up to :data:`MAX_PACK_LOOKBACK` texts back
  (an exact checked row is a pack start, which bounds the search), and pack sizes that
  give those starts are reported;
* ``order``: the rows are other texts' correct states, found from one matrix of cosines
  between the checked texts' fresh states and every stored row (:mod:`.order`; the
  length-sorted order is named);
* ``duplicate-rows``: rows identical to another text's row (:mod:`.duplicates`);
* ``truncated``: texts longer than N tokens cut to N, N bounded by the rows that match and
  those that differ, the side named (:mod:`.truncation`);
* ``special-tokens``: a special token added or dropped at the start or end (:mod:`.special_tokens`);
* ``chat-template``: the chat template applied (with or without the generation prompt) or
  not (:mod:`.chat_template`);
* ``dtype``: single-sample extraction with the model cast to bfloat16 / float16 (and
  whether every stored value is exactly representable in that dtype);
* ``pre-norm``: the stored last layer is the last block's output before the final norm;
* ``wrong-layer``: the stored layer(s) match other (neighbouring) hidden states;
* ``read-position``: the state at another position of the text (-2, the first token), from one
  pass of the text with every position kept (:mod:`.positions`).

``right-naive`` and ``packed-naive`` each try the variants people write: right padding
with the attention mask and without one (pads attended), packing with position ids reset
per text and running on. When no single hypothesis reproduces the rows, the layout ones are
tried again on the texts with a special token added at the start (:mod:`.compound`:
TransformerLens' defaults, a BOS and unmasked right padding): the layout defect is named, the
token listed in its evidence's ``also``. docs/forensics.md lists each cause, its evidence and
its JSON keys.

If no hypothesis reproduces every tested row, the likely cause is ``"unknown"``: the
audit does not guess.

Modules: :mod:`.report` (the result dataclasses), :mod:`.reference` (which layout makes the
fresh rows), :mod:`.check` (stored rows against fresh ones), :mod:`.reproduce` (forward passes
on custom layouts), :mod:`.batching` (which batch and pack sizes fit, pure), :mod:`.evidence`
and :mod:`.forensics` (the hypotheses) and :mod:`.run` (:func:`audit_states`, which ties them
together); one module per further hypothesis.
"""

from __future__ import annotations

from .batching import consistent_batchings, consistent_pack_sizes, describe_batchings
from .check import check_rows, lm_head_note, sample_indices, state_cosine, subset
from .forensics import FORENSIC_ROWS, HYPOTHESES, likely_cause, run_forensics
from .report import CAUSES, REPRODUCE_COSINE, AuditProgress, AuditReport, Hypothesis, HypothesisStatus
from .reproduce import pre_norm_states, states_at
from .row_check import RowCheck
from .run import audit_states

__all__ = [
    "CAUSES",
    "FORENSIC_ROWS",
    "HYPOTHESES",
    "REPRODUCE_COSINE",
    "AuditProgress",
    "AuditReport",
    "Hypothesis",
    "HypothesisStatus",
    "RowCheck",
    "audit_states",
    "check_rows",
    "consistent_batchings",
    "consistent_pack_sizes",
    "describe_batchings",
    "likely_cause",
    "lm_head_note",
    "pre_norm_states",
    "run_forensics",
    "sample_indices",
    "state_cosine",
    "states_at",
    "subset",
]
