"""The work behind a button: run it guarded (the page stays usable whatever fails), report
progress on an ``st.progress`` bar, keep what it computed for the session.

``run_guarded(work, prefix, hold_model)`` -> ``work()``, or None after an ``st.error``;
``progress_callback(bar)`` reports a strategy-by-strategy extraction on an ``st.progress`` bar;
``session_cache(key, identity)`` is a dict kept while ``identity`` stays the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from ui.messages import show_error
from ui.model import model_in_use

logger = logging.getLogger(__name__)

T = TypeVar("T")


def run_guarded(work: Callable[[], T], prefix: str | None = None, hold_model: bool = False) -> T | None:
    """``work()``, or None after one ``st.error`` (``prefix: message``, never a traceback).

    A ``ValueError`` (``TextsError`` included) is the user's to fix and is shown as it is;
    anything else is logged with its traceback and shown by type, and the page keeps working.
    With ``hold_model`` the work runs inside :func:`model_in_use`.
    """
    try:
        if hold_model:
            with model_in_use():
                return work()
        return work()
    except ValueError as error:
        show_error(error, prefix=prefix)
    except Exception as error:  # noqa: BLE001 - a page must survive any failure
        logger.exception("%s", prefix or "work behind a button failed")
        show_error(error, prefix=prefix)
    return None


def progress_callback(bar, estimates: dict[str, float] | None = None) -> Callable[[str, int, int, int, int], None]:
    """A ``progress(name, number, count, done, total)`` callback of a strategy-by-strategy
    extraction (``compare_strategies``, ``run_probe_sweep``) that fills the ``st.progress`` ``bar``;
    with ``estimates`` (seconds per strategy name) it says the estimate of the strategy running."""

    def progress(name: str, number: int, count: int, done: int, total: int) -> None:
        fraction = ((number - 1) + (done / total if total else 1.0)) / count
        about = f", about {estimates[name]:.0f} s estimated" if estimates and name in estimates else ""
        bar.progress(
            min(fraction, 1.0),
            text=f"Extracting with **{name}** (strategy {number} of {count}): {done}/{total} texts{about}",
        )

    return progress


def session_cache(key: str, identity: Any) -> dict:
    """A dict kept in the session under ``key`` while ``identity`` stays the same; a new
    ``identity`` drops the old dict (one model and data set at a time) and starts an empty one."""
    held_identity, cache = st.session_state.get(key, (None, {}))
    if held_identity != identity:
        cache = {}
        st.session_state[key] = (identity, cache)
    return cache
