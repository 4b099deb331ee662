"""The backends: engines that run a node. Each is the module `psft_orchestrator.backends.<name>`
with `run(job) -> summary`, started by `backends.worker` in the backend's interpreter.

Which backends exist, and which stage kinds each runs, is `configs.registry.REGISTRY`.
"""

from __future__ import annotations

from psft_orchestrator.configs.registry import ALL_KINDS, REGISTRY, TEST_ONLY, backends_for

__all__ = ["ALL_KINDS", "REGISTRY", "TEST_ONLY", "backends_for"]
