"""The one list of backends and the stage kinds each runs.

It lives here, beside the stage models, because the spec schema's `backend:` choices, the
default backend of each stage kind and the version that enters a node's fingerprint all come
from it, so a spec can name only a backend that exists. Adding a backend is its module
`psft_orchestrator.backends.<name>` plus one entry here (tests/backends/test_registry.py checks
that every entry has a module with `run`, and every such module an entry).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendInfo:
    kinds: tuple[str, ...]  # the stage kinds it runs
    package: str | None = None  # distribution whose version enters the fingerprint (None: ours)


ALL_KINDS = ("pretrain", "filter", "sft", "psft", "dft", "iwsft", "dpo", "grpo", "eval")

# The first entry is the default backend of every kind it runs.
REGISTRY: dict[str, BackendInfo] = {
    "native": BackendInfo(ALL_KINDS),
    "verl": BackendInfo(("sft", "psft", "dft", "grpo"), package="verl"),
    "llamafactory": BackendInfo(("dpo",), package="llamafactory"),
    "lmeval": BackendInfo(("eval",), package="lm_eval"),
    # vLLM generation for eval suites, in its own environment (psft_orchestrator/envs.py)
    "vllm": BackendInfo(("eval",), package="vllm"),
}

# Test tool, not a choice in specs: stands in for any backend under PSFT_FAKE_BACKEND=1.
TEST_ONLY = ("fake",)


def backends_for(kind: str) -> tuple[str, ...]:
    """The backends that run `kind`, the default first."""
    return tuple(name for name, info in REGISTRY.items() if kind in info.kinds)
