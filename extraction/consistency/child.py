"""The child side of ``check --python``: run by path in the user's own interpreter, it imports the
user's file, then calls its function once per request and writes the rows back as ``.npy`` files.

Self-contained on purpose: it imports only the standard library and numpy (torch only when the
function returns a tensor), never this package, so the user's environment needs nothing of ours
(an older transformers, other pins). The parent is :mod:`extraction.consistency.remote`.

Usage: ``PYTHON child.py WORKDIR FILE.py FUNCTION``. The protocol, one JSON object a line:

* child -> parent, first: ``{"ready": true, "python": "3.11.7 ...", "versions": {"torch": ...}}`` or
  ``{"ok": false, "stage": "import", "error": "ModuleNotFoundError: ..."}`` (then it exits 1);
* parent -> child: ``{"call": K}``: the texts are in ``WORKDIR/call-K.json`` (a JSON list of str);
* child -> parent: ``{"ok": true, "call": K, "parts": [{"file": "call-K-0.npy", "dtype": "bfloat16"}, ...],
  "tuple": false}`` (one part for an array or tensor, two for a ``(rows, offsets)`` tuple), or
  ``{"ok": false, "call": K, "stage": "call", "error": "KeyError: ..."}`` (the traceback goes to stderr);
* end of the parent's input: the child exits 0.

The user's code may print: the child's own stdout is moved to stderr, the protocol keeps the
original descriptor.
"""

import importlib.util
import json
import os
import sys
import traceback

#: Versions reported in the ready line, where the user's environment has them.
REPORTED = ("torch", "transformers", "tokenizers", "numpy")


def _protocol_stream():
    """The original stdout, for the protocol only; fd 1 (the user's prints) goes to stderr."""
    stream = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def _send(stream, message: dict) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def _failure(stage: str, error: BaseException, **extra) -> dict:
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    sys.stderr.flush()
    return {"ok": False, "stage": stage, "error": f"{type(error).__name__}: {error}", **extra}


def _load(path: str, name: str):
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    stem = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"padding_audit_user_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, name, None)
    if function is None or not callable(function):
        raise AttributeError(f"{path} has no function {name!r}")
    return function


def _array(value, numpy):
    """``(numpy array, dtype name as returned)``; a bfloat16 tensor travels as float32 (exact)."""
    if type(value).__module__.split(".")[0] == "torch":
        import torch

        if isinstance(value, torch.Tensor):
            dtype = str(value.dtype).removeprefix("torch.")
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:
                value = value.float()
            return value.numpy(), dtype
    if isinstance(value, numpy.ndarray):
        return value, str(value.dtype)
    raise TypeError(
        f"extract_fn returned a {type(value).__name__}: expected a numpy array or torch tensor of shape "
        "(N, d), or (N, L, d) with layers="
    )


def _serve(stream, workdir: str, function, numpy) -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        call = int(json.loads(line)["call"])
        try:
            with open(os.path.join(workdir, f"call-{call}.json"), encoding="utf-8") as handle:
                texts = json.load(handle)
            value = function(list(texts))
        except Exception as error:  # noqa: BLE001 - the user's failure goes back as one message
            _send(stream, _failure("call", error, call=call))
            continue
        try:
            is_tuple = isinstance(value, (tuple, list)) and len(value) == 2
            parts = []
            for k, part in enumerate(value if is_tuple else [value]):
                array, dtype = _array(part, numpy)
                name = f"call-{call}-{k}.npy"
                numpy.save(os.path.join(workdir, name), numpy.ascontiguousarray(array), allow_pickle=False)
                parts.append({"file": name, "dtype": dtype})
        except Exception as error:  # noqa: BLE001 - an unusable return is one message too
            _send(stream, _failure("return", error, call=call))
            continue
        _send(stream, {"ok": True, "call": call, "parts": parts, "tuple": is_tuple})


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        del sys.path[0]  # this folder holds modules of ours: the user's imports must not find them
    stream = _protocol_stream()
    workdir, path, name = argv
    try:
        import numpy

        function = _load(path, name)
    except BaseException as error:  # noqa: BLE001 - SystemExit in the user's file included
        _send(stream, _failure("import", error))
        return 1
    versions = {}
    for package in REPORTED:
        module = sys.modules.get(package)
        if module is not None:
            versions[package] = getattr(module, "__version__", "?")
    _send(stream, {"ready": True, "python": sys.version.split()[0], "executable": sys.executable, "versions": versions})
    _serve(stream, workdir, function, numpy)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
