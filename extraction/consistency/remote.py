"""A user's function in the user's own interpreter: :class:`ChildFunction`, the parent side of
``check --python`` (the child is :mod:`.child`, run by path).

One child process serves the whole check: it imports the user's file once (the model loads
once), then answers every call of the check (the batch, each text alone, the floor, the probes)
in turn. Texts go in as ``call-K.json`` and rows come back as ``.npy`` files in a temporary
folder, removed on close whatever happened. Any failure of the child (the interpreter missing,
an import error, the function raising, a crash, no answer within ``timeout`` seconds) is one
:class:`ChildProcessFailed` (a ``ValueError``) with the last lines of the child's stderr; the
child is killed and the folder removed first.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

#: The child script, run by path in the user's interpreter.
CHILD_SCRIPT = Path(__file__).with_name("child.py")
#: How many of the child's last stderr lines a failure shows.
STDERR_LINES = 12


class ChildProcessFailed(ValueError):
    """The child failed: ``message`` says how, ``stderr_tail`` its last stderr lines."""

    def __init__(self, message: str, stderr_tail: str = ""):
        self.message = message
        self.stderr_tail = stderr_tail
        tail = f"\nlast lines of its stderr:\n{stderr_tail}" if stderr_tail else ""
        super().__init__(f"{message}{tail}")

    def on(self, what: str) -> ChildProcessFailed:
        """The same failure, naming the call it happened on."""
        return ChildProcessFailed(f"{self.message} (on {what})", self.stderr_tail)


def parse_target(target: str) -> tuple[Path, str]:
    """``FILE.py:FUNCTION`` -> ``(path, name)``, or a ``ValueError`` naming what is wrong."""
    file_part, sep, name = str(target).rpartition(":")
    if not sep or not file_part or not name:
        raise ValueError(f"{target}: expected FILE.py:FUNCTION, e.g. my_pipeline.py:extract")
    path = Path(file_part).expanduser()
    if path.suffix != ".py":
        raise ValueError(f"{path}: not a .py file")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    return path.resolve(), name


def find_interpreter(python: str | os.PathLike) -> str:
    """The interpreter's path (a path, or a name on ``PATH``), or a ``ValueError``."""
    text = str(python)
    found = shutil.which(text) if os.sep not in text else (text if os.access(text, os.X_OK) else None)
    if found is None or not Path(found).is_file():
        raise ValueError(f"python={text}: no such interpreter (give the path of the pipeline's python)")
    return found


class ChildFunction:
    """``FILE.py:FUNCTION`` run by ``python`` in a child process, called like the function
    (``fn(texts)``); a context manager (``with ChildFunction(...) as fn``). ``timeout`` (seconds,
    None: no limit) bounds the import and each call. ``ready`` holds the child's ready line
    (its Python and the versions of torch, transformers, tokenizers, numpy it imported)."""

    def __init__(self, python: str | os.PathLike, target: str, timeout: float | None = None):
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
        self.path, self.function = parse_target(target)
        self.python = find_interpreter(python)
        self.timeout = timeout
        self.__qualname__ = f"{self.path.name}:{self.function}"  # what reports call the function
        self.calls = 0
        self.ready: dict = {}
        self._process: subprocess.Popen | None = None
        self._folder: tempfile.TemporaryDirectory | None = None
        self._lines: queue.Queue = queue.Queue()

    # -- the process -------------------------------------------------------------------------
    def __enter__(self) -> ChildFunction:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="padding-audit-child-")
        self._stderr = open(Path(self._folder.name) / "stderr.txt", "wb")  # noqa: SIM115 - closed in close()
        command = [self.python, str(CHILD_SCRIPT), self._folder.name, str(self.path), self.function]
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, start_new_session=True
            )
        except OSError as error:
            self.close()
            raise ChildProcessFailed(f"cannot start {self.python}: {error}") from None
        threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True).start()
        message = self._answer("importing the file")
        if not message.get("ready"):
            self._fail(f"{self._who()}: importing {self.path.name} raised {message.get('error')}")
        self.ready = message

    def close(self) -> None:
        """Ends the child (its input closed, then killed if it lingers) and removes the folder."""
        process, self._process = self._process, None
        if process is not None:
            try:
                process.stdin.close()
                process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                _kill(process)
        if self._folder is not None:
            self._stderr.close()
            self._folder.cleanup()
            self._folder = None

    # -- calls -------------------------------------------------------------------------------
    def __call__(self, texts: Sequence[str]):
        if self._process is None:
            raise ValueError("the child process is not running: use ChildFunction(...) as a context manager")
        self.calls += 1
        folder = Path(self._folder.name)
        (folder / f"call-{self.calls}.json").write_text(json.dumps(list(texts)), encoding="utf-8")
        try:
            self._process.stdin.write(f'{{"call": {self.calls}}}\n'.encode())
            self._process.stdin.flush()
        except OSError:
            self._fail(f"{self._who()} exited before the call (code {self._process.poll()})")
        message = self._answer("the call")
        if not message.get("ok"):
            stage = "returned something unusable" if message.get("stage") == "return" else "raised"
            self._fail(f"{self._who()} {stage}: {message.get('error')}")
        parts = [self._part(folder, part) for part in message["parts"]]
        for part in message["parts"]:
            (folder / part["file"]).unlink(missing_ok=True)
        return tuple(parts) if message["tuple"] else parts[0]

    @staticmethod
    def _part(folder: Path, part: dict):
        array = np.load(folder / part["file"], allow_pickle=False)
        if part["dtype"] == "bfloat16":  # it travelled as float32 (exactly)
            return torch.from_numpy(array).to(torch.bfloat16)
        return array

    # -- the pipe ----------------------------------------------------------------------------
    def _read(self, stream) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)  # the child closed its end: exited or crashed

    def _answer(self, what: str) -> dict:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self._fail(f"{self._who()} did not answer {what} within the timeout of {self.timeout:g} s; killed")
        if line is None:
            code = self._process.wait(timeout=10) if self._process else None
            self._fail(f"{self._who()} exited (code {code}) during {what}")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            self._fail(f"{self._who()} answered something that is not the protocol: {line[:200]!r}")

    def _who(self) -> str:
        return f"{self.__qualname__} in {self.python}"

    def _fail(self, message: str):
        tail = self._stderr_tail()
        if self._process is not None:
            _kill(self._process)
        self.close()
        raise ChildProcessFailed(message, tail)

    def _stderr_tail(self) -> str:
        if self._folder is None:
            return ""
        self._stderr.flush()
        text = (Path(self._folder.name) / "stderr.txt").read_bytes().decode("utf-8", "replace")
        return "\n".join(line for line in text.rstrip().splitlines()[-STDERR_LINES:])


def _kill(process: subprocess.Popen) -> None:
    """The child's whole process group, at once (it may have started processes of its own)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
