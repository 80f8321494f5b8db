"""Memory marks of a child process: the resident set right after the model is loaded, then
the peak from there on.

Loading alone can peak well above the model (safetensors pages mapped while the weights
are copied), so the high-water mark is reset through ``/proc/self/clear_refs`` ("5",
Linux >= 4.0) once ``load_model`` returns. Where ``/proc`` is missing the marks are
absent and the parent falls back on the whole process's peak.
"""

from __future__ import annotations

import gc
import json


def status_bytes(key: str) -> int | None:
    """A ``/proc/self/status`` field given in kB (``VmRSS``, ``VmHWM``), in bytes; None if unreadable."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def mark_loaded(marks: dict) -> None:
    """Record the resident set now (the model just loaded) and reset the high-water mark."""
    gc.collect()
    marks["rss_after_load_bytes"] = status_bytes("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        marks["peak_reset"] = True
    except OSError:
        marks["peak_reset"] = False


def print_marks(marks: dict) -> None:
    """Add the peak since :func:`mark_loaded` (where it could be reset) and print the marks
    as the last JSON line of stdout."""
    if marks.get("peak_reset"):
        marks["peak_after_load_bytes"] = status_bytes("VmHWM")
    print(json.dumps(marks))
