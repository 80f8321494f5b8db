"""Child process: seconds to import ``extraction.models`` and to load a model, fresh.

``python -m bench.children.load MODEL DTYPE`` prints ``import_seconds``, ``load_seconds``,
``ready_seconds`` (both) and ``from_cache`` as one JSON line. Nothing from ``extraction``
is imported before the clock starts.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    model, dtype = argv
    start = time.perf_counter()
    from extraction.models import load_model

    imported = time.perf_counter()
    loaded = load_model(model, dtype=dtype)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "import_seconds": imported - start,
                "load_seconds": done - imported,
                "ready_seconds": done - start,
                "from_cache": loaded.from_cache,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
