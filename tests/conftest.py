"""Shared fixtures: the models, each loaded once per session and shared read-only.

Tiers (one folder each): ``unit/`` loads no model; ``tiny/`` uses the tiny random models
(seconds; ``make test-fast`` runs these two); ``integration/`` the embedded SmolLM2-135M
(marker ``integration``); ``app/`` the pages under Streamlit's AppTest; ``browser/`` the
served app in headless Chromium (marker ``browser``). ``make test`` runs them all.

A ``LoadedModel`` is read-only by contract (the app shares its cached one between sessions
too), so one instance serves every test that asks for it.
"""

from __future__ import annotations

import os

import pytest

from extraction.comparison.choose import CACHE_ENV
from extraction.models import LoadedModel, load_model


@pytest.fixture(scope="session", autouse=True)
def remembered_choices_of_this_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``auto`` and the audit remember which layouts were exact in a file (``choose.CACHE_ENV``);
    the tests keep theirs in a file of this run, never in the user's cache (a test that needs its
    own file sets the variable itself). Child processes and AppTests inherit it."""
    os.environ.setdefault(CACHE_ENV, str(tmp_path_factory.mktemp("choices") / "strategy-choices.json"))


#: Each tiny model's name and the fixture that holds it.
TINY_FIXTURES = {"tiny-random-llama": "tiny_llama", "tiny-random-gpt2": "tiny_gpt2"}


@pytest.fixture(scope="session")
def tiny_llama() -> LoadedModel:
    """The tiny random Llama (RoPE), float32, default device."""
    return load_model("tiny-random-llama")


@pytest.fixture(scope="session")
def tiny_gpt2() -> LoadedModel:
    """The tiny random GPT-2 (absolute positions), float32, default device."""
    return load_model("tiny-random-gpt2")


@pytest.fixture(scope="session", params=list(TINY_FIXTURES))
def tiny_model(request: pytest.FixtureRequest) -> LoadedModel:
    """Each tiny random model in turn (test ids ``[tiny-random-llama]``, ``[tiny-random-gpt2]``)."""
    return request.getfixturevalue(TINY_FIXTURES[request.param])


@pytest.fixture(scope="session")
def embedded_model() -> LoadedModel:
    """The embedded SmolLM2-135M, float32, default device (converted once, then cached in
    ``~/.cache/padding-audit``). Only tests marked ``integration`` ask for it."""
    return load_model("smollm2-135m")
