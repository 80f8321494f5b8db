"""Explicit opt-ins of the dashboard: what a page does only when the app was started with a flag
(``streamlit run app.py -- FLAG``) or an environment variable set to ``1``. The Check page runs
uploaded code (:mod:`.check_page`) and the Audit page reads files by their path on the app's machine
(:mod:`.audit`) only then."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def opted_in(argv: Sequence[str], environ: Mapping[str, str], flag: str, env: str) -> bool:
    """True only with ``flag`` among the app's arguments or ``env`` set to ``"1"`` (no other value)."""
    return flag in argv or environ.get(env) == "1"
