"""The lm-eval backend: an eval node whose suites are all `lmeval` suites, run by
lm-evaluation-harness inside the backend's subprocess. All lm-eval code is in `evals.lmeval`.
"""

from __future__ import annotations

from typing import Any

from psft_orchestrator.configs.evals import EvalConfig
from psft_orchestrator.contract import Job, config_for


def run(job: Job) -> dict[str, Any]:
    """Backend entry point: an eval node whose suites are all lmeval suites."""
    cfg = config_for(job, EvalConfig)
    other = [s.type for s in cfg.suites if s.type != "lmeval"]
    if other:
        raise ValueError(
            f"the lmeval backend runs only lmeval suites; got {other} (use the native backend)"
        )
    from psft_orchestrator.evals.run import run_eval

    return run_eval(job)
