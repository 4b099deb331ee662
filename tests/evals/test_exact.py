import pytest

from psft_orchestrator.evals.exact import gold_index, grade, picked_index

LETTERS = ["A", "B", "C", "D"]


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("tac", "tac", True),
        ("  tac.\n", "tac", True),
        ("Reversed:\ntac", "tac", True),
        ("The answer is \\boxed{3}", "3", True),
        ("tca", "tac", False),
        ("tac tac", "tac", False),
        ("cat, dog, fish", "cat, dog, fish", True),
        ("cat dog fish", "cat, dog, fish", False),
    ],
)
def test_exact_match(completion, answer, expected):
    assert grade(completion, answer) is expected


@pytest.mark.parametrize(
    ("completion", "picked"),
    [
        ("B", 1),
        ("B. 42", 1),
        ("(C)", 2),
        ("The answer is D.", 3),
        ("Answer: a", 0),
        ("\\boxed{B}", 1),
        ("I am not sure", None),
        ("Because 42 is largest", None),
    ],
)
def test_picked_letter(completion, picked):
    assert picked_index(completion, LETTERS) == picked


def test_choice_texts_and_answer_forms():
    choices = ["Paris", "Rome", "Oslo"]
    assert gold_index("Rome", choices) == gold_index("B", choices) == gold_index(1, choices) == 1
    assert grade("Rome", "B", choices) and grade("b", "Rome", choices)
    assert not grade("Oslo", "Rome", choices)
    with pytest.raises(ValueError):
        gold_index("Madrid", choices)
