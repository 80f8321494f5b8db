"""The helpers of the ``ui`` package that need no model and no script run: texts from the inputs,
the verdict badges and card numbers, and the lock that lets one session run the model."""

from __future__ import annotations

import io
import threading

import pytest
import streamlit as st

import ui
from extraction.chat import Chat
from extraction.texts import TextsError


class _Upload:
    def __init__(self, name: str, data: bytes):
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def test_texts_from_inputs():
    assert ui.texts_from_inputs(" a \n\n b\n") == (["a", "b"], "text box")
    jsonl = _Upload("t.jsonl", b'{"text": "x y"}\n{"text": "z"}\n')
    assert ui.texts_from_inputs("ignored", jsonl) == (["x y", "z"], "t.jsonl")
    csv = _Upload("t.csv", io.BytesIO(b"id,text\n1,hello\n").getvalue())
    assert ui.texts_from_inputs("", csv) == (["hello"], "t.csv")
    messages = _Upload("c.jsonl", b'{"messages": [{"role": "user", "content": "Hi"}]}\n{"text": "plain"}\n')
    assert ui.texts_from_inputs("", messages) == ([Chat((("user", "Hi"),)), "plain"], "c.jsonl")
    with pytest.raises(TextsError, match="no texts"):
        ui.texts_from_inputs("   \n")
    with pytest.raises(TextsError, match="binary"):
        ui.texts_from_inputs("", _Upload("t.txt", b"\x00\x01\x02"))
    with pytest.raises(TextsError, match="unsupported"):
        ui.texts_from_inputs("", _Upload("t.pdf", b"%PDF"))


def test_verdict_badge_says_the_word():
    for verdict in ("exact", "drift", "corrupted"):
        badge = ui.verdict_badge(verdict)
        assert verdict in badge and "background:" in badge
    assert len({ui.verdict_badge(v) for v in ("exact", "drift", "corrupted")}) == 3


def test_card_numbers_show_both_headline_values():
    html = ui.card_numbers(-0.82923, 0.3)
    assert "-0.829230" in html and "30%" in html and "min cosine" in html and "top-1 agreement" in html
    assert "NaN" in ui.card_numbers(float("nan"), 0.0)


def test_card_numbers_show_relative_l2_beside_cosine():
    html = ui.card_numbers(0.995, 1.0, 0.5213)
    assert "max rel. L2" in html and "0.5213" in html and "0.995000" in html
    assert "max rel. L2" not in ui.card_numbers(0.995, 1.0)


def test_model_in_use_lets_one_session_run_the_model_at_a_time():
    entered, release = threading.Event(), threading.Event()

    def other_session():
        with ui.model_in_use():
            entered.set()
            release.wait(30)

    thread = threading.Thread(target=other_session)
    thread.start()
    assert entered.wait(30)
    assert not ui.MODEL_LOCK.acquire(blocking=False)  # held by the other session
    release.set()
    thread.join(30)
    with ui.model_in_use():
        assert ui.MODEL_LOCK.locked()
    assert not ui.MODEL_LOCK.locked()


def test_card_numbers_say_not_applicable_without_top1():
    html = ui.card_numbers(0.99, None, 0.01)
    assert ">n/a<" in html and "last token only" in html
    assert ">n/a<" not in ui.card_numbers(0.99, 1.0, 0.01)


def test_cause_message_is_an_error_only_for_corrupted_states(monkeypatch):
    shown: list[str] = []
    for kind in ("success", "warning", "error"):
        monkeypatch.setattr(st, kind, lambda *args, kind=kind, **kwargs: shown.append(kind))
    ui.cause_message(None, "matches")
    ui.cause_message("kernels", "float32 rounding of another build", "drift")
    ui.cause_message("unknown", "nothing explains it", "corrupted")
    ui.cause_message("right-naive", "pads counted", "corrupted")
    assert shown == ["success", "warning", "warning", "error"]
