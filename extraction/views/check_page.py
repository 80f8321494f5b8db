"""What the dashboard's Check page needs, without streamlit: whether the app may run uploaded code
(only when started with an explicit opt-in) and the command to run instead."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from .opt_in import opted_in

#: ``streamlit run app.py -- --allow-running-code`` lets the Check page run an uploaded pipeline.py.
ALLOW_FLAG = "--allow-running-code"
#: The same as an environment variable (``PADDING_AUDIT_ALLOW_RUNNING_CODE=1``).
ALLOW_ENV = "PADDING_AUDIT_ALLOW_RUNNING_CODE"


def code_allowed(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """True only with the flag among the app's arguments or the variable set to ``1``."""
    return opted_in(argv, environ, ALLOW_FLAG, ALLOW_ENV)


def check_command(
    file_name: str, function: str, texts_file: str = "texts.txt", python: str = "", tokenizer: str = ""
) -> str:
    """The ``padding-audit check`` command that checks ``file_name:function`` from a shell."""
    parts = ["padding-audit", "check", f"{file_name}:{function}", "--texts", texts_file]
    if python:
        parts += ["--python", python]
    if tokenizer:
        parts += ["--tokenizer", tokenizer]
    return shlex.join(parts)


def load_tokenizer(folder: str):
    """``AutoTokenizer.from_pretrained(folder)``, or a ``ValueError`` naming the folder (as ``--tokenizer``)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as error:  # noqa: BLE001 - one message, whatever transformers raised
        raise ValueError(f"tokenizer folder {folder}: cannot load it ({type(error).__name__})") from error
