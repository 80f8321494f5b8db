"""End to end: the ``extract`` command as a user runs it, ``--strategy auto`` against ``single``.

Each run is a fresh ``python -m extraction extract --model M --texts F --out O --force
--strategy S`` process (default verification included), timed from spawn to exit, on the
first 16 and 160 benchmark texts (:data:`E2E_TEXT_COUNTS`). ``auto`` runs twice per size:
*cold*, with an empty file of remembered choices (``PADDING_AUDIT_CHOICES``, so the
probe runs) and *warm*, on the file the cold run wrote (what every later run on this
machine does). The runs of one size are interleaved (single, auto cold, auto warm,
repeated) so that a change of load hits each alike; the best of ``repeats`` is kept.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.processes import child_env, child_failure, run_child

E2E_TEXT_COUNTS = (16, 160)
RUNS = ("single", "auto-cold", "auto-warm")


def _seconds_in(stdout: str, prefix: str) -> float | None:
    """The ``(x.y s)`` figure of the line starting with ``prefix`` in the command's output."""
    for line in stdout.splitlines():
        if line.startswith(prefix) and "(" in line and " s)" in line:
            try:
                return float(line.split("(", 1)[1].split(" s)", 1)[0])
            except ValueError:
                return None
    return None


def end_to_end(
    model: str,
    texts: Sequence[str],
    counts: Sequence[int] = E2E_TEXT_COUNTS,
    dtype: str = "float32",
    repeats: int = 1,
    extra_args: Sequence[str] = (),
    say: Callable[[str], None] = lambda line: None,
) -> dict:
    """``{"runs": [{texts, single_seconds, auto_cold_seconds, auto_warm_seconds,
    choice_seconds_cold, speedup_cold, speedup_warm, load_average}], ...}``."""
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as folder:
        work = Path(folder)
        for count in counts:
            texts_file = work / f"texts-{count}.txt"
            texts_file.write_text("\n".join(texts[:count]) + "\n")
            best: dict[str, float] = {}
            choice_cold = None
            for _ in range(repeats):
                choices = work / f"choices-{count}.json"
                choices.unlink(missing_ok=True)
                for run in RUNS:
                    strategy = "single" if run == "single" else "auto"
                    args = [
                        "-m", "extraction", "extract", "--model", model, "--dtype", dtype,
                        "--texts", str(texts_file), "--out", str(work / "out.safetensors"), "--force",
                        "--strategy", strategy, *extra_args,
                    ]  # fmt: skip
                    say(f"end to end: extract --strategy {strategy} ({run}) on {count} texts")
                    child = run_child(args, env=child_env(PADDING_AUDIT_CHOICES=str(choices)))
                    if child.returncode != 0:
                        return {"error": child_failure(child, f"extract --strategy {strategy} on {count} texts")}
                    best[run] = min(best.get(run, float("inf")), child.wall_seconds)
                    say(
                        f"end to end: {run} on {count} texts: {child.wall_seconds:.1f} s "
                        f"(load {os.getloadavg()[0]:.1f})"
                    )
                    if run == "auto-cold":
                        choice_cold = _seconds_in(child.stdout, "auto (")
            results.append(
                {
                    "texts": count,
                    "single_seconds": best["single"],
                    "auto_cold_seconds": best["auto-cold"],
                    "auto_warm_seconds": best["auto-warm"],
                    "choice_seconds_cold": choice_cold,
                    "speedup_cold": best["single"] / best["auto-cold"],
                    "speedup_warm": best["single"] / best["auto-warm"],
                    "load_average": os.getloadavg()[0],
                }
            )
    return {"model": model, "dtype": dtype, "repeats": repeats, "runs": results}
