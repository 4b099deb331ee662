"""The API judge without a server: an endpoint where nothing listens fails the node at once,
with a message naming the URL (it never hangs on retries)."""

from __future__ import annotations

import time

import pytest

from psft_orchestrator.configs.evals import JudgeSuite
from psft_orchestrator.evals.judge import open_judge
from psft_orchestrator.evals.judge_api import ApiChat, JudgeUnavailable, free_port


def test_unreachable_endpoint_fails_fast_with_its_url():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    chat = ApiChat(url, "judge", timeout_s=300, retries=5)
    start = time.monotonic()
    with pytest.raises(JudgeUnavailable, match=url.replace(".", r"\.")):
        chat.probe()
    assert time.monotonic() - start < 10  # not 5 retries x 300 s


def test_a_judge_suite_with_a_dead_endpoint_stops_before_grading(tmp_path):
    suite = JudgeSuite(
        benchmarks=["b"],
        judge={"endpoint": f"http://127.0.0.1:{free_port()}/v1", "model": "judge"},
    )
    with pytest.raises(JudgeUnavailable, match="unreachable"), open_judge(suite, {}, tmp_path):
        pytest.fail("the judge must not open")
