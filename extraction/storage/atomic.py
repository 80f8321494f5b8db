"""Atomic writes: readers see the old file (or folder), or the complete new one, never a part.

One mechanism for every writer in the package: write to a temporary path beside the target,
then rename it onto the target. Temporary files get the mode a plain ``open`` would give
(``mkstemp`` makes them owner-only, which the renamed file would keep).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_file_beside(path: Path) -> Path:
    """A new empty temporary file next to ``path`` with a normal file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    os.chmod(name, 0o666 & ~current_umask())
    return Path(name)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit rename it onto ``path``, on any
    exception (Ctrl-C included) remove it and leave ``path`` as it was."""
    path = Path(path)
    tmp = temp_file_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (flushed and fsynced before the rename)."""
    path = Path(path)
    with atomic_file(path) as tmp, tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def write_json_atomic(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON (NaN refused) to ``path`` atomically."""
    text = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"))


@contextmanager
def atomic_directory(final: str | Path, prefix: str = ".tmp-") -> Iterator[Path]:
    """Yield a temporary folder next to ``final``; on a clean exit rename it to ``final``.

    If ``final`` appeared meanwhile (another process got there first), the rename fails with
    ``OSError`` and the temporary folder is removed; the caller decides whether the existing
    folder will do. On any exception the temporary folder is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{final.name}-", dir=final.parent))
    try:
        yield tmp
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
