"""What a node computed, as flat fields: its own config and every ancestor's, seed left out.

Tables and comparisons average only nodes that are *replicates*: nodes whose configs (and
their ancestors' configs) differ in the seed alone. Labels cannot tell this: a node label does
not carry hyperparameters, and a node reused from the cache keeps the labels of the spec that
first built it. So the index's `config` column and `lineage` table are read instead.

`signature(fp)` is `{"train.lr": "1e-05", "train.epochs": "3", "eval.suites": "[...]", ...}`:
`<stage>.<field>` for the node and each ancestor, nested fields dotted, values as canonical
JSON. `differing(signatures)` names the fields that tell a set of signatures apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

# Fields that do not change what a node computes (as in plan.fingerprint), plus the seed.
NOT_CONFIG = ("name", "description", "labels", "resources", "method", "model", "data", "seed")
MAX_SHOWN = 3  # differing fields named per row; more are summarised


class Signatures:
    """Config signatures of indexed nodes, computed once per node (ancestors shared)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._nodes = {
            fp: (stage, config)
            for fp, stage, config in con.execute(
                "SELECT fingerprint, stage, config FROM nodes"
            ).fetchall()
        }
        self._parents: dict[str, list[str]] = {}
        for child, parent in con.execute("SELECT child, parent FROM lineage").fetchall():
            self._parents.setdefault(child, []).append(parent)
        self._memo: dict[str, dict[str, str]] = {}

    def __call__(self, fp: str) -> dict[str, str]:
        if fp not in self._memo:
            self._memo[fp] = self._compute(fp)
        return self._memo[fp]

    def _compute(self, fp: str) -> dict[str, str]:
        if fp not in self._nodes:  # an ancestor missing from the index: only its identity
            return {f"ancestor.{fp[:16]}": "not indexed"}
        stage, config = self._nodes[fp]
        out: dict[str, str] = {}
        for parent in sorted(self._parents.get(fp, [])):
            out.update(self(parent))
        raw = json.loads(config) if isinstance(config, str) else (config or {})
        for key, value in flatten(raw).items():
            if key.split(".")[0] not in NOT_CONFIG:
                out[f"{stage}.{key}"] = value
        return out

    def key(self, fp: str) -> tuple[tuple[str, str], ...]:
        """A hashable form of the signature: equal keys = replicates of one configuration."""
        return tuple(sorted(self(fp).items()))


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"kl": {"coef": 0.1}} -> {"kl.coef": "0.1"}; lists and scalars as canonical JSON."""
    out: dict[str, str] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return out


def differing(signatures: Sequence[dict[str, str]]) -> list[str]:
    """Fields whose value is not the same in every signature (absent counts as a value)."""
    keys: set[str] = set().union(*signatures) if signatures else set()
    return sorted(k for k in keys if len({s.get(k) for s in signatures}) > 1)


def describe(signature: dict[str, str], fields: Iterable[str]) -> str:
    """'train.lr=1e-05, train.epochs=3' for the given fields (at most MAX_SHOWN, then '+N more')."""
    fields = list(fields)
    shown = [f"{f}={signature.get(f, '–')}" for f in fields[:MAX_SHOWN]]
    if len(fields) > MAX_SHOWN:
        shown.append(f"+{len(fields) - MAX_SHOWN} more")
    return ", ".join(shown)
