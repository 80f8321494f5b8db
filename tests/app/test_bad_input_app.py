"""Bad input in the app under AppTest: failed model loads, bad texts uploads and bad stored
states uploads each give one error box, then a good run works in the same session."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from extraction.models import load_model
from extraction.texts import tokenize_texts
from tests.bad_input_cases import ODD_TEXTS, STATE_CASES, STATE_TEXTS, fake_gguf, remote_code_folder, state_file

REPO = Path(__file__).resolve().parents[2]


# --- the app after failures --------------------------------------------------------------


def test_app_survives_several_failed_loads_then_runs(tmp_path, monkeypatch):
    """Each failed load shows its reason in an error box; nothing is cached or run; then a
    good model works in the same session. The app never turns remote code on."""
    from streamlit.testing.v1 import AppTest

    import ui

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "remote").mkdir()
    bad_models = {
        "padding-audit-tests/no-such-model": "not found locally and the hub is offline",
        fake_gguf(tmp_path): "not a GGUF file",
        remote_code_folder(tmp_path / "remote"): "needs remote code",
    }
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value(ui.OTHER_MODEL).run()
    at.multiselect(key="home.strategies").set_value(["right", "right-naive"])
    at.text_area(key="home.texts").input("a short text\na somewhat longer text than that")
    for name, reason in bad_models.items():
        at.text_input(key=ui.KEY_MODEL_CUSTOM).input(name)
        at.button(key="home.run").click().run()
        assert not at.exception, [e.value for e in at.exception]
        errors = [error.value for error in at.error]
        assert len(errors) == 1 and "Could not load the model" in errors[0] and reason in errors[0], errors
        assert ui.KEY_RUN not in at.session_state
    assert not (tmp_path / "remote" / "remote-code-ran").exists()

    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value("tiny-random-llama")
    at.button(key="home.run").click().run()
    assert not at.exception and not at.error
    report = at.session_state[ui.KEY_RUN].report
    assert report.model == "tiny-random-llama"
    assert report.strategies["right"].verdict == "exact" and report.strategies["right-naive"].verdict == "corrupted"


# --- bad uploads in the app: one error box each, then a good run in the same session --------

#: Odd characters for the home page's text box (no character that is a line break to Unicode).
BOX_TEXTS = [*ODD_TEXTS[:5], "control: tab\there, escape \x1b[31mred\x1b[0m, bell \x07, DEL \x7f"]
PAGE_STATE_CASES = ["wrong-rank", "hidden-size", "nan", "integer", "several-no-key", "pickled-code", "npy-objects"]


def test_audit_page_refuses_each_bad_states_upload_then_audits_a_good_one(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import ui
    from extraction.extract import extract_states

    page = REPO / "pages" / "4_Audit.py"
    assert page.is_file(), f"{page} is missing: was the Audit page renamed?"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(str(page), default_timeout=300).run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value("tiny-random-llama")
    at.file_uploader(key="audit.texts").set_value(("t.txt", ("\n".join(STATE_TEXTS) + "\n").encode(), "text/plain"))
    for case in PAGE_STATE_CASES:
        path, _ = state_file(tmp_path, case)
        at.file_uploader(key="audit.states").set_value((path.name, path.read_bytes(), "application/octet-stream"))
        at.button(key="audit.run").click().run()
        assert not at.exception, (case, [e.value for e in at.exception])
        errors = [error.value for error in at.error]
        assert len(errors) == 1 and re.search(STATE_CASES[case], errors[0]), (case, errors)
        assert "audit.result" not in at.session_state
    assert not (tmp_path / "code-ran").exists()

    # The same session then audits a correct file: single-sample states of the last layer.
    from safetensors.torch import save

    loaded = load_model("tiny-random-llama", device="cpu")
    tokenized = tokenize_texts(loaded.tokenizer, STATE_TEXTS)
    good = extract_states(loaded, tokenized, "single", layers=[loaded.num_hidden_layers], keep_logits=False)
    at.file_uploader(key="audit.states").set_value(("good.safetensors", save({"h": good.hidden[:, 0]}), "x"))
    at.button(key="audit.run").click().run()
    assert not at.exception and not at.error
    assert at.session_state["audit.result"]["report"].verdict == "exact"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bin.txt", bytes(range(256)), "binary file"),
        ("latin.txt", "caf\xe9\n".encode("latin-1"), "not UTF-8"),
        ("t.jsonl", b'{"text": "a"}\n{"text": }\n', "line 2 is not valid JSON"),
        ("t.csv", b"id,body\n1,x\n", "no 'text' column"),
    ],
)
def test_home_page_bad_texts_upload_is_one_error_then_the_text_box_runs(monkeypatch, name, content, message):
    from streamlit.testing.v1 import AppTest

    import ui

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at.selectbox(key=ui.KEY_MODEL_CHOICE).set_value("tiny-random-llama")
    at.multiselect(key="home.strategies").set_value(["right"])
    at.text_area(key="home.texts").input("\n".join(BOX_TEXTS))
    at.file_uploader(key="home.upload").set_value((name, content, "application/octet-stream"))
    at.button(key="home.run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [error.value for error in at.error]
    assert len(errors) == 1 and message in errors[0], errors
    assert ui.KEY_RUN not in at.session_state

    at.file_uploader(key="home.upload").set_value(None)  # back to the text box, odd characters and all
    at.button(key="home.run").click().run()
    assert not at.exception and not at.error
    report = at.session_state[ui.KEY_RUN].report
    assert report.texts == BOX_TEXTS
    assert report.strategies["right"].verdict == "exact"
