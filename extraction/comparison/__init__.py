"""Strategies against single-sample extraction: the comparison, the per-strategy record, the
causes derived from the layout and what the model reads, and ``--strategy auto`` (its choice and cost model).

Modules: :mod:`.compare` (:func:`compare_strategies`, :class:`ComparisonReport`), :mod:`.record`
(:class:`StrategyComparison`, the record compare and causes read), :mod:`.causes` (the cause kind and
sentence, one function per cause), :mod:`.model_facts` (what the causes know of the model),
:mod:`.inputs_read` (what the forward pass reads, measured), :mod:`.choose` (``--strategy auto``) and
:mod:`.cost` (its cost model).
"""
