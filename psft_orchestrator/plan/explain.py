"""`psft-run SPEC --plan --explain NODE`: what a node's fingerprint is made of, and why it is not
cached when another node of the same stage is (the fields and inputs that differ)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from psft_orchestrator.identity import mark

from .planner import Node, Plan, fingerprint_payload_of


def explain(plan: Plan, node: Node) -> str:
    payload = fingerprint_payload_of(node)
    done = node.is_done(plan.workspace)
    lines = [
        f"{node.id}  fingerprint {node.fingerprint[:16]}  ({'cached' if done else 'not cached'})",
        f"  kind {payload['kind']}, backend {payload['backend']} ({payload['backend_version']})",
        "  fields in the fingerprint:",
        *(f"    {k} = {_show(v)}" for k, v in payload["config"].items()),
        "  parents: " + (_pairs(payload["parents"]) or "none"),
        "  declared inputs (content hash): " + (_pairs(payload["inputs"]) or "none"),
        "  left out (settings): " + ", ".join(_settings(node)),
    ]
    if not done:
        lines += _closest_cached(plan.workspace, node, payload)
    return "\n".join(lines)


def _settings(node: Node) -> list[str]:
    fields = type(node.stage_model).model_fields
    return [name for name, info in fields.items() if mark(info) is False]


def _closest_cached(ws: Path, node: Node, payload: dict[str, Any]) -> list[str]:
    """The cached node of the same stage that differs from `node` in the fewest places."""
    best: tuple[int, str, list[str]] | None = None
    for done in sorted((ws / "artifacts" / node.stage).glob("*/_SUCCESS")):
        manifest = _read(done.parent / "manifest.json")
        if not manifest:
            continue
        diffs = _differences(payload, manifest)
        if best is None or len(diffs) < len(best[2]):
            best = (len(diffs), str(manifest.get("node_id", done.parent.name)), diffs)
    if best is None:
        return [f"  no node of stage {node.stage!r} is cached in {ws}"]
    _, other, diffs = best
    return [
        f"  closest cached node of stage {node.stage!r}: {other}; differs in:",
        *(f"    {d}" for d in diffs or ["nothing in the fingerprint (an older version?)"]),
    ]


def _differences(payload: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    theirs_config = manifest.get("config") or {}
    out = [
        f"{k}: {_show(theirs_config.get(k))} (cached) -> {_show(v)} (this node)"
        for k, v in payload["config"].items()
        if theirs_config.get(k) != v
    ]
    theirs_parents = {p.get("slot"): p.get("fingerprint") for p in manifest.get("parents") or []}
    for slot, fp in payload["parents"].items():
        if theirs_parents.get(slot) != fp:
            out.append(f"parent {slot}: {str(theirs_parents.get(slot))[:16]} -> {fp[:16]}")
    theirs_inputs = manifest.get("input_hashes") or {}
    for slot, h in payload["inputs"].items():
        if theirs_inputs.get(slot) != h:
            out.append(f"input {slot}: content changed")
    if manifest.get("backend") != payload["backend"]:
        out.append(f"backend: {manifest.get('backend')} -> {payload['backend']}")
    version = (manifest.get("versions") or {}).get("backend")
    if version != payload["backend_version"]:
        out.append(f"backend version: {version} -> {payload['backend_version']}")
    return out


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in mapping.items())


def _short(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(str(x)[:16] for x in v) + "]"
    return str(v)[:16]


def _show(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
