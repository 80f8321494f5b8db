"""What corruption does to a probe: labelled data, each strategy's features, the seeded fit,
the layer sweep, its t-interval and the sentences a sweep ends in.

Modules: :mod:`.labelled` (labelled CSVs, the built-in sets), :mod:`.inputs` (the Probe page's
inputs), :mod:`.features` (each strategy's states, extracted once), :mod:`.fit` (split, train, score),
:mod:`.lm_head` (zero-shot label tokens), :mod:`.probe` (one layer, :func:`run_probe`),
:mod:`.sweep` (layers x seeds, :func:`run_probe_sweep`), :mod:`.interval` (the t-interval) and
:mod:`.findings` (a sweep in sentences).
"""
