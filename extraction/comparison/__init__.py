"""Strategies against single-sample extraction: the comparison, the per-strategy record, the
causes derived from the layout and what the model reads, and ``--strategy auto`` (its choice and cost model).
"""
