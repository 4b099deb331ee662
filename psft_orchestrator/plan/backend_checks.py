"""Plan-time checks that need a backend's own code (run by `psft-run`, before anything runs).

verl nodes: the rendered Hydra overrides are composed against verl's own config tree and
checked with verl's validation, so a bad key or value is caught before a GPU is asked for.
This imports verl (and torch), a few seconds, so it runs only for plans that have verl nodes.
"""

from __future__ import annotations

import contextlib
import json
import sys

from psft_orchestrator.spec.errors import SpecError

from .planner import Plan


def check_backends(plan: Plan) -> None:
    from .eval_checks import check_eval_nodes

    check_eval_nodes(plan)
    verl_nodes = [n for n in plan.nodes if n.backend == "verl"]
    if not verl_nodes:
        return
    from psft_orchestrator.backends.verl import validate_node_config

    problems, seen = [], {}
    for node in verl_nodes:
        key = json.dumps([node.kind, node.config], sort_keys=True, default=str)
        if key not in seen:
            try:  # verl prints its own progress; keep stdout for the plan (--json)
                with contextlib.redirect_stdout(sys.stderr):
                    validate_node_config(node.kind, node.config)
                seen[key] = None
            except ValueError as e:
                seen[key] = str(e)
        if seen[key]:
            problems.append(
                (node.loc, f"{node.id}", f"verl rejects this {node.kind} config: {seen[key]}")
            )
    if problems:
        raise SpecError(problems)
