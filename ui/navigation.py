"""The pages of the app: the numbered files of pages/, and Home (registered by app.py)."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

_home_page = None


def page_files(pages_dir: Path) -> list[Path]:
    """The other pages: ``<number>_<Name>.py`` files of ``pages_dir`` in number order; a new
    file there is a new page."""
    numbered = []
    for path in pages_dir.glob("*.py"):
        match = re.fullmatch(r"(\d+)_\w+\.py", path.name)
        if match:
            numbered.append((int(match.group(1)), path.name, path))
    return [path for _, _, path in sorted(numbered)]


def register_home_page(page) -> None:
    """Called by app.py with its ``st.Page`` for Home, so pages can link back to it."""
    global _home_page
    _home_page = page


def home_page():
    """The ``st.Page`` of Home, once app.py has registered it (None before, e.g. under AppTest of one page)."""
    return _home_page


def leave_pages_folder_mode() -> None:
    """Rerun through app.py's ``st.navigation`` when Streamlit runs a page in its older mode.

    Streamlit 1.67 starts a fresh server in its first multipage mode when a ``pages/`` folder
    sits beside the main script: until a script calls ``st.navigation``, it runs the page of
    the address itself, without app.py, under a menu built from the file names (Home reads
    "app"). That happens when the first visit after a start is a page's address (``/Audit``).
    One rerun, with that mode off, goes through app.py and its menu. A no-op outside a script
    run and once the mode is off; should Streamlit drop the flag, it does nothing.
    """
    if getattr(PagesManager, "uses_pages_directory", False) and get_script_run_ctx(suppress_warning=True):
        PagesManager.uses_pages_directory = False
        st.rerun()
