"""Streamlit widgets the pages share: download buttons, table column configs, whole-number
inputs, strategy help, and session-state defaults and presets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from extraction.strategies import STRATEGIES

_MIME_TYPES = {".csv": "text/csv", ".json": "application/json", ".html": "text/html"}


def download_button(container, label: str, data, file_name: str, key: str) -> None:
    """A download button in ``container`` (``st`` or a column) for ``file_name``.

    ``data`` is a callable building the content only when the user clicks; the MIME type
    follows the file's suffix (.csv, .json, .html); clicking does not rerun the page.
    """
    suffix = file_name[file_name.rfind(".") :]
    container.download_button(
        label, data=data, file_name=file_name, mime=_MIME_TYPES[suffix], on_click="ignore", key=key
    )


def download_buttons(items: Sequence[tuple[str, Any, str, str]]) -> None:
    """One row of download buttons (:func:`download_button`), one column each: ``(label, data, file_name, key)``."""
    for column, (label, data, file_name, key) in zip(st.columns(len(items)), items, strict=True):
        download_button(column, label, data, file_name, key)


# --- tables ---------------------------------------------------------------------------------


#: ``st.column_config`` builders by the kind named in a column spec.
_COLUMN_KINDS = {
    "number": st.column_config.NumberColumn,
    "text": st.column_config.TextColumn,
    "checkbox": st.column_config.CheckboxColumn,
}


def column_config(specs: dict[str, tuple[str, str, str | None, str | None]]) -> dict[str, Any]:
    """``st.dataframe`` column_config from the package's column specs:
    ``{column: (kind, label, number format, help)}``, kind ``number``, ``text`` or ``checkbox``."""
    config = {}
    for column, (kind, label, number_format, help_text) in specs.items():
        options = {"format": number_format} if number_format else {}
        config[column] = _COLUMN_KINDS[kind](label, help=help_text, **options)
    return config


def whole_number_input(container, label: str, key: str, min_value: int, max_value: int, help: str) -> int:
    """An integer ``number_input`` in ``container`` (``st`` or a column), step 1, its value
    kept for the session across page switches."""
    return container.number_input(
        label, min_value=min_value, max_value=max_value, step=1, key=key, persist_state="session", help=help
    )


def strategies_help(names: Sequence[str]) -> str:
    """Markdown help of a strategy picker: each strategy's name and summary."""
    return "\n\n".join(f"**{name}**: {STRATEGIES[name].summary}" for name in names)


def set_defaults(values: dict[str, Any]) -> None:
    """Give each session-state key of ``values`` its default value, unless it has one already."""
    for key, value in values.items():
        st.session_state.setdefault(key, value)


def apply_preset(values: dict[str, Any]) -> None:
    """Button callback: set every session-state key of ``values`` (widget values, flags)."""
    for key, value in values.items():
        st.session_state[key] = value
