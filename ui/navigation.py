"""The pages of the app: the numbered files of pages/, and Home (registered by app.py)."""

from __future__ import annotations

import re
from pathlib import Path

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
