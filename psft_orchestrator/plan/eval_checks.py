"""Plan-time checks of eval nodes that would otherwise fail at run time (exit 2 at --plan):

- `backend: vllm`, or a judge that serves a model with `vllm serve`, while the vLLM interpreter
  (`interpreters.vllm`, else the project's .venv-vllm) cannot import vllm;
- a judge `endpoint` that is not an http(s) URL, or whose `api_key_env` variable is unset.

An endpoint that is well-formed but unreachable is found by the node itself, at once (a short
probe before any judge request), not here: --plan stays offline and fast.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from psft_orchestrator.spec.errors import Loc, SpecError

from .planner import Plan

Problem = tuple[Loc | None, str, str]


def check_eval_nodes(plan: Plan) -> None:
    problems: list[Problem] = []
    for node in plan.nodes:
        for i, suite in enumerate(getattr(node.stage_model, "suites", None) or []):
            judge = getattr(suite, "judge", None)
            if judge is not None and not isinstance(judge, str):
                problems += _judge_problems(judge, node.loc, f"{node.id}.suites[{i}].judge")
    problems += _vllm_problems(plan)
    problems += _lmeval_in_vllm_problems(plan)
    if problems:
        raise SpecError(problems)


def _judge_problems(judge: Any, loc: Loc, key: str) -> list[Problem]:
    out: list[Problem] = []
    if judge.endpoint is not None:
        url = urlparse(judge.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            out.append(
                (
                    loc,
                    f"{key}.endpoint",
                    f"{judge.endpoint!r} is not an http(s) URL such as http://127.0.0.1:8000/v1",
                )
            )
        else:
            try:
                url.port  # noqa: B018 - raises on a malformed port
            except ValueError as e:
                out.append((loc, f"{key}.endpoint", f"{judge.endpoint!r}: {e}"))
    if judge.api_key_env and not os.environ.get(judge.api_key_env):
        out.append(
            (
                loc,
                f"{key}.api_key_env",
                f"environment variable {judge.api_key_env} is not set (it must hold the judge's API key)",
            )
        )
    return out


def _vllm_problems(plan: Plan) -> list[Problem]:
    from psft_orchestrator.envs import has_module, vllm_python

    users = [n for n in plan.nodes if n.backend == "vllm" or _serves_a_judge(n)]
    if not users:
        return []
    python = vllm_python(plan.pipeline.interpreters)
    why = has_module(python, "vllm")
    if why is None:
        return []
    hint = "build the vLLM environment with `make setup` (.venv-vllm) or set interpreters.vllm"
    out: dict[tuple[str, str], Problem] = {}  # one line per stage, not per matrix cell
    for n in users:
        what = "backend vllm" if n.backend == "vllm" else "judge serve"
        key = f"{n.stage}.backend" if n.backend == "vllm" else f"{n.stage}.suites"
        out.setdefault((str(n.loc), key), (n.loc, key, f"{what} needs vLLM, but {why}; {hint}"))
    return list(out.values())


def _lmeval_in_vllm_problems(plan: Plan) -> list[Problem]:
    """An lm-eval suite on a vllm eval stage runs in the vLLM environment, which has no lm-eval."""
    from psft_orchestrator.envs import has_module, vllm_python

    users = [
        n
        for n in plan.nodes
        if n.backend == "vllm"
        and any(getattr(s, "type", None) == "lmeval" for s in n.stage_model.suites or [])
    ]
    if not users:
        return []
    why = has_module(vllm_python(plan.pipeline.interpreters), "lm_eval")
    if why is None:
        return []
    out: dict[str, Problem] = {}  # one line per stage
    for n in users:
        msg = f"an lmeval suite on backend vllm needs lm-eval, but {why}; run it in its own eval stage"
        out.setdefault(str(n.loc), (n.loc, f"{n.stage}.suites", msg))
    return list(out.values())


def _serves_a_judge(node: Any) -> bool:
    suites = getattr(node.stage_model, "suites", None) or []
    return any(getattr(getattr(s, "judge", None), "serve", None) for s in suites)
