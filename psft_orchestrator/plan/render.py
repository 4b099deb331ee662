"""Show a plan: a text table in topological order, or JSON."""

from __future__ import annotations

import json
from typing import Any

from .planner import Node, Plan


def node_record(node: Node, plan: Plan, forced: set[str] = frozenset()) -> dict[str, Any]:
    ws = plan.workspace
    status = "done" if node.is_done(ws) else "todo"
    if node.id in forced:
        status = "forced" if status == "done" else status
    record = {
        "id": node.id,
        "stage": node.stage,
        "kind": node.kind,
        "backend": node.backend,
        "labels": node.labels,
        "inputs": {
            slot: ([r.name for r in ref] if isinstance(ref, list) else ref.name)
            for slot, ref in node.inputs.items()
        },
        "parents": {slot: p.id for slot, p in node.parents.items()},
        "output": node.output_type,
        "fingerprint": node.fingerprint,
        "artifact_dir": str(node.artifact_dir(ws)),
        "status": status,
        "resources": node.stage_model.resources.model_dump(),
        "config": node.config,  # resolved: defaults, presets, method, --set and matrix applied
    }
    reward = getattr(node.stage_model, "reward", None)
    if reward is not None:
        record["runs_code"] = f"{reward.path}:{reward.name}"
    return record


def plan_json(plan: Plan, forced: set[str] = frozenset()) -> str:
    return json.dumps(
        {
            "spec": str(plan.spec_path),
            "name": plan.pipeline.name,
            "workspace": str(plan.workspace),
            "plan_hash": plan.plan_hash,
            "forced": sorted(forced),
            "nodes": [node_record(n, plan, forced) for n in plan.nodes],
        },
        indent=2,
    )


def plan_text(plan: Plan, forced: set[str] = frozenset()) -> str:
    records = [node_record(n, plan, forced) for n in plan.nodes]
    done = sum(r["status"] == "done" for r in records)
    rerun = sum(r["status"] == "forced" for r in records)
    lines = [
        f"plan {plan.pipeline.name} ({plan.spec_path}) — {len(records)} nodes, {done} done, "
        f"{len(records) - done} to run"
        + (f" ({rerun} of them done but forced: rerun)" if rerun else "")
        + f"; workspace {plan.workspace}",
        "",
    ]
    rows = [("node", "kind", "backend", "inputs", "fingerprint", "status")]
    for r in records:
        inputs = ", ".join(
            f"{slot}={','.join(v) if isinstance(v, list) else v}" for slot, v in r["inputs"].items()
        )
        rows.append((r["id"], r["kind"], r["backend"], inputs, r["fingerprint"][:16], r["status"]))
    widths = [min(max(len(row[i]) for row in rows), 60) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(w) if i < len(row) - 1 else cell
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    code = [r for r in records if "runs_code" in r]
    if code:
        lines.append("")
        lines.append("user code this plan runs:")
        lines.extend(f"  {r['id']}: {r['runs_code']}" for r in code)
    return "\n".join(lines)
