"""The benchmark's child processes, one module each, run as ``python -m bench.children.<name>``.

* :mod:`bench.children.load`: import ``extraction.models`` and load a model (cold start).
* :mod:`bench.children.extract`: the ``extract`` command's work on a texts file, with
  memory marks (:mod:`bench.children.marks`).

Each prints one JSON object as the last line of its stdout. This package and ``bench``
itself import nothing heavy, so what a child measures (``import extraction`` included) is
its own work, as in a fresh ``python`` process.
"""
