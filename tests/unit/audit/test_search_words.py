"""The pure parts of the issue-29 search, by hand: position and shift words, the shift found from
which text each row holds, the ids a string became, and the rule that a padding cause needs a batching."""

from extraction.audit import Hypothesis
from extraction.audit.cause import layout_fits, likely_cause
from extraction.audit.order import common_shift, shift_words
from extraction.audit.positions import position_words
from extraction.audit.special_tokens import added_ids


def test_position_words():
    assert position_words(-2) == "position -2: the token before the last"
    assert position_words(0) == "position 0: the first token"
    assert position_words(-3) == "position -3: 2 tokens before the last"


def test_common_shift_with_the_tail_clamped_and_wrapping():
    assert common_shift({0: 1, 1: 2, 2: 3, 3: 4}, 5) == (1, False)
    assert common_shift({0: 2, 1: 3, 2: 4, 3: 4}, 5) == (2, False)  # row 3 clamped to the last text
    assert common_shift({0: 1, 1: 2, 2: 3, 3: 4, 4: 0}, 5) == (1, True)  # torch.roll
    assert common_shift({0: 2, 1: 0, 2: 1}, 3) == (-1, True)
    assert common_shift({0: 3, 1: 0}, 6) == (None, False)
    assert shift_words(1, False) == "rows shifted by 1: row i holds text i+1"


def test_added_ids_at_either_end():
    assert added_ids([5, 6, 7], [5, 6, 7, 8, 9], "end") == [8, 9]
    assert added_ids([5, 6, 7], [1, 2, 5, 6, 7], "start") == [1, 2]
    assert added_ids([5, 6, 7], [1, 4, 6, 7], "start") == [1, 4]  # the first token merged differently


def _made(name, evidence, cosine=1.0):
    return Hypothesis(name, "t", "reproduced", cosine, 0.5, [1], [1], "d", evidence, "pad-state")


def test_a_padding_cause_needs_a_batching():
    unfit = _made("right-naive", {"consistent_batch_sizes": {"input order": [], "ascending length": []}})
    fit = _made("right-naive", {"consistent_batch_sizes": {"input order": [4]}})
    tokens = _made("special-tokens", {}, cosine=0.9995)
    assert not layout_fits(unfit) and layout_fits(fit) and layout_fits(tokens)
    assert likely_cause([unfit, tokens]) is tokens  # though right-naive's cosine is higher
    assert likely_cause([unfit]) is None  # never a padding cause no batching gives
    assert likely_cause([fit, tokens]) is fit
