"""Fault injection: `kill -9` of this run's process group at a named point of the run.

Used by the fault suite (tests/faults) to hit every phase of a run deterministically. Set

    PSFT_KILL_AT=PHASE            the first time any node (or the run) reaches PHASE
    PSFT_KILL_AT=PHASE@TEXT       the first time a node whose id contains TEXT reaches PHASE

PHASE is one of `PHASES`, in the order a node meets them. With the variable unset, a kill
point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "PSFT_KILL_AT"
PHASES = (
    "start",  # the workspace is locked, stale build directories are put aside
    "trained",  # a node's backend returned successfully; nothing committed yet
    "finalize",  # manifest.json and _SUCCESS are in the build directory, not yet renamed
    "moved",  # the node directory is in place; its checkpoints are not yet removed
    "indexing",  # about to write the node into index.duckdb
    "indexed",  # the node's rows are committed; the index file is not yet closed
    "end",  # the run record is written; not yet indexed
)


def kill_point(phase: str, node_id: str = "") -> None:
    """SIGKILL our whole process group here if PSFT_KILL_AT asks for `phase` (and this node)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, text = wanted.partition("@")
    if name == phase and text in node_id:
        os.killpg(os.getpgrp(), signal.SIGKILL)
