"""Every hub dataset the paper specs declare, loaded and converted for real from a hub-layout
cache holding a few rows in its real schema: the spec's own declaration (config, split, type,
format) must select data the hub has and convert it to the stage's row format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from psft_orchestrator.spec.errors import SpecError

from .hubcache import add_repo, plan_rows, write_spec
from .paper_datasets import PAPER_DATASETS, UNSUPPORTED

REPO = Path(__file__).resolve().parents[2]


def declared() -> dict[str, tuple[str, dict]]:
    """Unique hub declarations of the shipped specs: id -> (dataset name, declaration)."""
    out: dict[str, tuple[str, dict]] = {}
    for spec in sorted([*REPO.glob("specs/*.yaml"), *REPO.glob("pipelines/*.yaml")]):
        for name, decl in (yaml.safe_load(spec.read_text()).get("datasets") or {}).items():
            if decl.get("hf_id") and not decl.get("path") and not decl.get("toy"):
                out.setdefault(json.dumps(decl, sort_keys=True), (name, decl))
    return {f"{name}:{decl['hf_id']}": (name, decl) for name, decl in out.values()}


DECLARED = declared()


def test_every_paper_dataset_has_a_fixture():
    assert {d["hf_id"] for _, d in DECLARED.values()} <= set(PAPER_DATASETS)


@pytest.mark.parametrize("key", sorted(DECLARED))
def test_paper_dataset_loads_and_converts(key: str, cache: Path, tmp_path: Path):
    name, decl = DECLARED[key]
    configs, rows, expected = PAPER_DATASETS[decl["hf_id"]]
    add_repo(
        cache, decl["hf_id"], {c: dict.fromkeys(splits, rows) for c, splits in configs.items()}
    )
    spec = write_spec(tmp_path, json.dumps(decl), decl["type"])
    if name in UNSUPPORTED:
        with pytest.raises(
            SpecError, match=UNSUPPORTED[name].replace("[", r"\[").replace("]", r"\]")
        ):
            plan_rows(spec, tmp_path / "ws")
        return
    converted, _ = plan_rows(spec, tmp_path / "ws")
    assert len(converted) == len(rows)
    first = converted[0]
    assert {k: first[k] for k in expected} == expected
    if "Correct Answer" in rows[0]:  # GPQA: the four options in a fixed shuffled order
        assert sorted(first["choices"]) == sorted(["Paris", "Rome", "Madrid", "Berlin"])
