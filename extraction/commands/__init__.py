"""One module per command line command; see :mod:`extraction.cli`."""
