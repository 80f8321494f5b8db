"""The Check page under AppTest: by default it runs nothing and shows the command; the opt-in is
an explicit flag (or variable), never the default."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from extraction.views.check_page import ALLOW_ENV, ALLOW_FLAG, check_command, code_allowed, load_tokenizer

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "7_Check.py")


def test_code_runs_only_with_the_opt_in():
    assert not code_allowed(["streamlit", "run", "app.py"], {})
    assert not code_allowed([], {ALLOW_ENV: "0"})
    assert code_allowed(["app.py", ALLOW_FLAG], {})
    assert code_allowed([], {ALLOW_ENV: "1"})
    assert check_command("my pipe.py", "extract", python="/v/bin/python") == (
        "padding-audit check 'my pipe.py:extract' --texts texts.txt --python /v/bin/python"
    )


def test_by_default_the_page_shows_the_command_and_no_run_button(monkeypatch):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("padding-audit check pipeline.py:extract --texts texts.txt" in c.value for c in at.code)
    assert not at.button


def test_with_the_opt_in_it_asks_for_a_file(monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "1")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.code and any("Upload a pipeline.py" in i.value for i in at.info)


def test_the_command_names_the_tokenizer_and_a_bad_folder_is_one_message(tmp_path):
    assert check_command("p.py", "extract", tokenizer="tok dir") == (
        "padding-audit check p.py:extract --texts texts.txt --tokenizer 'tok dir'"
    )
    with pytest.raises(ValueError, match=f"tokenizer folder {tmp_path}: cannot load it"):
        load_tokenizer(str(tmp_path))
