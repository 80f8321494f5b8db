"""The conformance matrix: every strategy on a tiny random model of each causal-LM architecture
transformers registers (``matrix``), and its Markdown/JSON report (``report``).

Modules: :mod:`.matrix` (:func:`run_matrix`, one row per architecture) and :mod:`.report`
(docs/conformance.md and .json).
"""
