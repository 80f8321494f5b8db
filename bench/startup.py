"""Cold start: seconds to ``import extraction.models`` and ``load_model`` in a fresh
process (:mod:`bench.children.load`), with the converted cache present and with none."""

from __future__ import annotations

import tempfile

from bench.processes import child_env, child_failure, run_child

LOAD_CHILD = "bench.children.load"


def cold_start(model: str, dtype: str = "float32", cache: bool = True, repeats: int = 2) -> dict:
    """Seconds to ``import extraction.models`` and ``load_model`` in a fresh process.

    ``cache=True``: the user's converted cache (run once beforehand so that it exists);
    the best of ``repeats`` runs is reported with all of them. ``cache=False``: an empty
    temporary ``XDG_CACHE_HOME``, so the embedded GGUF is converted from scratch (once).
    """
    runs = []
    if cache:
        run_child(["-m", LOAD_CHILD, model, dtype])  # makes sure the cache exists
        for _ in range(repeats):
            runs.append(run_child(["-m", LOAD_CHILD, model, dtype]))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as empty:
            runs.append(run_child(["-m", LOAD_CHILD, model, dtype], env=child_env(XDG_CACHE_HOME=empty)))
    failed = [run for run in runs if run.returncode != 0]
    if failed:
        return {"error": child_failure(failed[0], "loading the model")}
    records = [{**run.last_json(), "process_seconds": run.wall_seconds} for run in runs]
    best = min(records, key=lambda r: r.get("ready_seconds", float("inf")))
    return {**best, "runs": records}
