"""The conformance matrix: every strategy on a tiny random model of each causal-LM architecture
transformers registers (``matrix``), and its Markdown/JSON report (``report``).
"""
