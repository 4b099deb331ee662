from concurrent.futures import ThreadPoolExecutor

import pytest

from psft_orchestrator.data.answers import extract_boxed, verify, verify_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{5}", "5"),
        (r"\boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\left\{ 1, 2 \right\}}", r"\left\{ 1, 2 \right\}"),
        (r"\boxed{\sqrt{\frac{a}{b}}} done", r"\sqrt{\frac{a}{b}}"),
        (r"\fbox{42}", "42"),
        (r"\boxed {7}", "7"),
        (r"\boxed{3} and a truncated \boxed{\frac{1}{", "3"),
        ("no box, answer 5", None),
        ("", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


# (completion, reference, verdict): equivalent forms must match, wrong answers must not.
CASES = [
    (r"The answer is \boxed{\frac{1}{2}}.", "0.5", True),
    (r"\boxed{1/2}", r"\frac12", True),
    (r"\boxed{\dfrac{3}{4}}", "0.75", True),
    (r"\boxed{0.75}", r"\frac{3}{4}", True),
    (r"\boxed{5 \text{ cm}}", "5", True),
    (r"\boxed{5}", "5 cm", True),
    (r"\boxed{5\,\mathrm{cm}}", "5", True),
    (r"\boxed{(1,2]}", "(1, 2]", True),
    (r"\boxed{[1,2)}", "(1,2]", False),
    (r"\boxed{\{1,2\}}", r"\{2, 1\}", True),
    (r"\boxed{\{1,3\}}", r"\{1, 2\}", False),
    (r"\boxed{x=3}", "3", True),
    (r"\boxed{\frac{\sqrt{2}}{2}}", r"\sqrt{2}/2", True),
    (r"\boxed{1,000}", "1000", True),
    (r"\boxed{\text{B}}", "B", True),
    (r"first \boxed{4}, corrected: \boxed{5}", "5", True),
    (r"first \boxed{5}, corrected: \boxed{4}", "5", False),
    (r"\boxed{4}", "5", False),
    (r"\boxed{\frac{1}{3}}", "0.5", False),
    (r"\boxed{-5}", "5", False),
    ("The answer is 5.", "5", False),  # no \boxed{}
    (r"\boxed{}", "5", False),
]


@pytest.mark.parametrize(("completion", "reference", "expected"), CASES)
def test_verify_table(completion, reference, expected):
    assert verify(completion, reference) is expected


def test_verify_in_worker_threads_matches_main_thread():
    """Math-Verify's signal timeouts only work in the main thread; verify must not fail elsewhere."""
    verify_answer.cache_clear()
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda c: verify(c[0], c[1]), CASES))
    assert threaded == [c[2] for c in CASES]


def test_huge_answer_is_wrong_not_slow():
    assert verify(r"\boxed{" + "9" * 5000 + "}", "9") is False
