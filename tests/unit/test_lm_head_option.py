"""When a check runs lm_head (and so the whole pass), the one wording when it does not, and the
``--lm-head/--no-lm-head`` option of the commands that have it. No model is loaded."""

import pytest

from extraction.cli import build_parser
from extraction.extract import LM_HEAD_NOT_RUN, lm_head_not_run, wants_lm_head


@pytest.mark.parametrize(
    ("asked", "layers", "expected"),
    [(None, [1, 2], False), (None, [2, 4], True), (None, [4], True), (True, [1], True), (False, [1, 4], False)],
)
def test_lm_head_runs_by_default_only_when_the_last_layer_is_asked(asked, layers, expected):
    assert wants_lm_head(asked, layers, num_states=5) is expected


def test_one_wording_for_lm_head_not_run():
    assert lm_head_not_run([3, 12, 7]) == LM_HEAD_NOT_RUN.format(deepest=12)
    assert LM_HEAD_NOT_RUN.format(deepest=12) == "lm_head not run: layers up to 12 asked for"


@pytest.mark.parametrize("command", ["audit", "probe", "extract"])
def test_the_lm_head_option_is_true_false_or_unset(command):
    required = {"audit": ["--texts", "t.txt", "--states", "s.npy"], "probe": [],
                "extract": ["--texts", "t.txt", "--out", "o.safetensors"]}[command]  # fmt: skip
    parser = build_parser()
    assert parser.parse_args([command, *required]).lm_head is None
    assert parser.parse_args([command, *required, "--lm-head"]).lm_head is True
    assert parser.parse_args([command, *required, "--no-lm-head"]).lm_head is False
