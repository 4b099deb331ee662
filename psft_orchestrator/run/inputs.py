"""Materialise declared inputs before nodes use them: toy-world data and models, hub datasets,
hub model references.

Toy inputs are generated deterministically into this machine's cache (`envs.cache_dir()`), and
copied from there, and hub (or column-mapped) datasets converted to our row format
(`data.prepare`), into `<workspace>/inputs/` under a content key, so they are made once and
shared by every run. `hf:` model references resolve from the local Hugging Face cache
only; nothing is ever downloaded.
"""

from __future__ import annotations

import os
import shutil
from importlib.metadata import version
from pathlib import Path

from psft_orchestrator.contract import InputRef
from psft_orchestrator.envs import cache_dir
from psft_orchestrator.plan.planner import Plan, ToyInput


class MissingInput(Exception):
    pass


def check_prepared(plan: Plan) -> None:
    """SpecError (exit 2 before anything runs) naming every declared dataset not in the cache."""
    from psft_orchestrator.spec.errors import SpecError

    problems = [
        (p.declared_at, f"datasets.{name}", f"dataset {name!r}: {p.missing}")
        for name, p in sorted(plan.prepared_inputs.items())
        if p.missing
    ]
    if problems:
        raise SpecError(problems)


def materialize_prepared(plan: Plan, names: set[str]) -> None:
    """Convert each needed hub dataset into the workspace once (streamed, atomic)."""
    from psft_orchestrator.data.formats import FormatError
    from psft_orchestrator.data.prepare import write_prepared
    from psft_orchestrator.spec.errors import SpecError

    for name in sorted(names):
        prepared = plan.prepared_inputs[name]
        if prepared.missing:
            raise MissingInput(f"dataset {name!r}: {prepared.missing}")
        path = prepared.path(plan.workspace.resolve())
        if path.exists():
            continue
        try:
            write_prepared(prepared, path)
        except FormatError as e:  # bad input found past the first row: nothing was written
            raise SpecError.one(None, f"datasets.{name}", str(e)) from None


def materialize_toy(plan: Plan, names: set[str]) -> None:
    """Each needed toy input, copied into the workspace from this machine's cache (made there
    first if missing): a new workspace does not pay torch's and transformers' imports, seconds
    of start-up, for a toy model the machine has already written."""
    for name in sorted(names):
        toy = plan.toy_inputs[name]
        path = toy.path(plan.workspace.resolve())
        if path.exists():
            continue
        cached = machine_cached(toy)
        if not cached.exists():
            _make(toy, cached)
        _copy_atomic(cached, path)


def machine_cached(toy: ToyInput) -> Path:
    """Where this machine keeps the toy input: under its content key and, for a model (whose
    random initial weights come from torch's and transformers' code), their versions."""
    root = cache_dir() / "toy-inputs"
    if toy.what == "model":
        root = root / f"torch-{version('torch')}-transformers-{version('transformers')}"
    return root / toy.path(Path("/")).name


def _make(toy: ToyInput, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if toy.what == "dataset":
        from psft_orchestrator.data.toy.tasks import write_toy_data

        decl = toy.decl
        write_toy_data(decl.toy, decl.n, decl.seed, path, **decl.params)  # atomic inside
        return
    from psft_orchestrator.data.toy.model import make_tiny_model

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    make_tiny_model(tmp, size=toy.decl.toy, seed=0)
    _rename_or_keep(tmp, path)


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    if src.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    _rename_or_keep(tmp, dst)


def _rename_or_keep(tmp: Path, final: Path) -> None:
    """Move `tmp` into place; when a concurrent run got there first, keep its (identical) copy."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_hub(ref: InputRef) -> InputRef:
    """`hf:org/name@revision` -> the local snapshot directory, or a clear error."""
    if not ref.path.startswith("hf:"):
        return ref
    repo, _, rev = ref.path[3:].partition("@")
    try:
        from huggingface_hub import snapshot_download

        repo_type = "model" if ref.type == "model" else "dataset"
        local = snapshot_download(
            repo,
            repo_type=repo_type,
            revision=rev if repo_type == "model" else None,
            local_files_only=True,
        )
    except Exception as e:
        raise MissingInput(
            f"{ref.name}: {repo} is not in the local Hugging Face cache and nothing is downloaded here "
            f"({type(e).__name__}); put it there, or declare `path:` to a local copy"
        ) from None
    return ref.model_copy(update={"path": local})
