"""Math-Verify reward for verl's main_ppo, passed by path (reward.custom_reward_function.path).

verl loads this file by path inside its reward workers and calls
`compute_score(data_source, solution_str, ground_truth, extra_info)` per response. The score is
1.0 when the response's last \\boxed{} answer is equivalent to the ground truth (the same check as
our evals, `psft_orchestrator.data.answers.verify`), else 0.0, plus `extra_info["format_reward"]`
(GRPOConfig.format_reward, rendered into every row) when a \\boxed{} answer is present at all.
The DAPO reward manager adds the overlong penalty on top.
"""

from __future__ import annotations

from typing import Any


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict[str, Any] | None = None
) -> float:
    from psft_orchestrator.data.answers import extract_boxed, verify

    score = 1.0 if verify(solution_str, str(ground_truth)) else 0.0
    bonus = float((extra_info or {}).get("format_reward", 0.0) or 0.0)
    if bonus and extract_boxed(solution_str) is not None:
        score += bonus
    return score
