"""IFEval-style rules on hand-written responses: strict reads the response as written, loose
also accepts it without markdown stars or without its first/last line."""

from __future__ import annotations

import pytest

from psft_orchestrator.data.toy.checks import check, follows

UP = {"type": "uppercase"}
LOW = {"type": "lowercase"}
PERIOD = {"type": "ends_with", "value": "."}
PREFIX = {"type": "starts_with", "value": "Answer:"}
QUOTES = {"type": "quotation"}
NO_COMMA = {"type": "no_comma"}


@pytest.mark.parametrize(
    ("response", "rule", "ok"),
    [
        ("RED BLUE", UP, True),
        ("RED blue", UP, False),
        ("123", UP, False),  # no letters: not upper case
        ("red, blue", LOW, True),
        ("Red, blue", LOW, False),
        ("red blue.", PERIOD, True),
        ("red blue. ", PERIOD, True),  # trailing whitespace is ignored
        ("red blue!", PERIOD, False),
        ("Answer: red", PREFIX, True),
        ("answer: red", PREFIX, True),  # case-insensitive, as IFEval
        ("The answer: red", PREFIX, False),
        ('"red blue"', QUOTES, True),
        ('"red blue', QUOTES, False),
        ('"', QUOTES, False),
        ("red blue", NO_COMMA, True),
        ("red, blue", NO_COMMA, False),
        ("red blue green", {"type": "word_count", "value": 3}, True),
        ("red, blue, green.", {"type": "word_count", "value": 3}, True),
        ("red blue", {"type": "word_count", "value": 3}, False),
        ("red blue", {"type": "word_count", "value": 3, "relation": "less_than"}, True),
        ("a b c d", {"type": "word_count", "value": 3, "relation": "at_least"}, True),
        ("CAT, dog", {"type": "contains", "value": "cat"}, True),
        ("catalog", {"type": "contains", "value": "cat"}, False),  # whole words only
    ],
)
def test_single_rules(response: str, rule: dict, ok: bool) -> None:
    assert follows(response, rule) is ok


def test_all_rules_must_hold() -> None:
    assert check("RED BLUE.", [UP, PERIOD]) == (True, True)
    assert check("RED BLUE", [UP, PERIOD]) == (False, False)
    assert check("anything", []) == (True, True)


def test_loose_forgives_a_preamble_line() -> None:
    response = "Sure, here it is:\nRED BLUE."
    assert check(response, [UP, PERIOD]) == (False, True)


def test_loose_forgives_a_trailing_remark() -> None:
    assert check("red blue\nHope this helps!", [LOW, NO_COMMA]) == (False, True)


def test_loose_strips_markdown_stars() -> None:
    assert check("**Answer:** red", [PREFIX]) == (False, True)


def test_loose_is_per_instruction_but_not_a_free_pass() -> None:
    # Each rule may be satisfied by a different relaxed variant (IFEval's loose mode) ...
    assert check("HERE:\nred blue", [LOW, UP]) == (False, True)
    # ... but a rule no variant satisfies still fails.
    assert check("Here:\nred, blue\nok", [NO_COMMA, UP]) == (False, False)


def test_strict_implies_loose_even_for_empty_response() -> None:
    assert check("", [NO_COMMA]) == (True, True)


def test_unknown_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown check type"):
        check("x", [{"type": "telepathy"}])
