"""Child processes, from the parent's side: run one (``python -m bench.children.<name>``)
with the repository importable and offline, and read its exit status, wall time, peak
resident memory (``wait4``, so other processes never count) and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ChildRun:
    """A child process: exit status, wall time from spawn to exit, peak resident memory."""

    returncode: int
    wall_seconds: float
    peak_rss_bytes: int
    stdout: str
    stderr: str

    def last_json(self) -> dict:
        """The last line of stdout that parses as a JSON object ({} if none)."""
        for line in reversed(self.stdout.splitlines()):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
        return {}


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child: this one, offline, with the repository importable."""
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_child(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 1800) -> ChildRun:
    """Run ``python args...`` in the repository; its own peak RSS comes from ``wait4``
    (``ru_maxrss``, KiB on Linux), so other processes never count."""
    import threading

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, env=env or child_env(), cwd=REPO_ROOT)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(
            proc.returncode,
            wall,
            usage.ru_maxrss * 1024,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def child_failure(run: ChildRun, what: str) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    return f"{what} failed (exit {run.returncode}): {lines[-1] if lines else 'no message'}"
