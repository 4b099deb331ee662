"""From a spec file to a list of located node dicts, ready for validation.

Precedence for a node's fields, lowest to highest:

    defaults  <  stage preset  <  method preset  <  stage fields  <  method fields
              <  `--set STAGE.FIELD=...`  <  matrix cell

`seeds: [1, 2, 3]` (top level or per stage) adds a `seed` axis to the matrix. A stage's own
`seeds:` wins; the top-level list applies to the training kinds (`SEEDED_KINDS`), not to
pretraining or evals, which inherit the seed of the model they take. A `seed` axis made by
`seeds:` *pairs* with an upstream seed (dpo[seed=2] takes train[seed=2]) instead of clashing.

`extends:` (a template under `pipelines/`), `--profile NAME` (an overlay in the spec's
`profiles:`) and `--set key=value` are applied to the whole document first, in that order;
a `--set` of a stage field is applied to each of the stage's nodes again after the method's
fields, so the user's last word wins (setting a matrix axis that way is an error).
Every value keeps the `Loc` of the file and line it came from, so errors point at the right
place even when the value came from a preset or a template.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import Loc, Path_, SpecError, did_you_mean, key_path
from .yamlsrc import Doc, load_yaml

MAX_CELLS_PER_STAGE = 256
MAX_EXTENDS_DEPTH = 8
VAR_RE = re.compile(r"\$\{vars\.([A-Za-z_][A-Za-z0-9_]*)\}")
TOP_ONLY_KEYS = ("extends", "profiles")
# Kinds that the top-level `seeds:` applies to: training whose result depends on its seed.
SEEDED_KINDS = ("sft", "psft", "dft", "iwsft", "dpo", "grpo")
SEED_AXIS = "seed"


@dataclass
class RawNode:
    """One matrix cell of one stage, before validation: data plus where each key came from."""

    stage: str
    coords: dict[str, Any]
    data: dict[str, Any]
    locs: dict[Path_, Loc] = field(default_factory=dict)
    stage_loc: Loc = field(default_factory=lambda: Loc(""))
    aliases: dict[str, str] = field(default_factory=dict)  # slot -> declared name it was written as
    paired: frozenset[str] = frozenset()  # axes that pair with an upstream axis of that name

    def loc(self, path: Path_) -> Loc:
        for n in range(len(path), 0, -1):
            hit = self.locs.get(tuple(path[:n]))
            if hit:
                return hit
        return self.stage_loc

    @property
    def node_id(self) -> str:
        return node_id(self.stage, self.coords)


def node_id(stage: str, coords: dict[str, Any]) -> str:
    if not coords:
        return stage
    return f"{stage}[{','.join(f'{k}={v}' for k, v in coords.items())}]"


# ---------------------------------------------------------------- search paths


def repo_dir_for(spec_path: Path, sub: str) -> Path:
    """Find `pipelines/` or `stages/`: next to the spec, above it, or in this checkout."""
    env = os.environ.get(f"PSFT_{sub.upper()}_DIR")
    if env:
        return Path(env)
    for d in [spec_path.resolve().parent, *spec_path.resolve().parents]:
        if (d / sub).is_dir():
            return d / sub
    return Path(__file__).resolve().parents[2] / sub


def _named_file(base: Path, name: str, what: str, loc: Loc, key: str) -> Path:
    if (
        not isinstance(name, str)
        or not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$", name)
        or ".." in name.split("/")
    ):
        raise SpecError.one(
            loc, key, f"{what} name {name!r} must be a plain relative name such as 'math_psft'"
        )
    path = base / (name if name.endswith((".yaml", ".yml")) else name + ".yaml")
    if not path.is_file():
        known = (
            sorted(str(p.relative_to(base))[:-5] for p in base.rglob("*.yaml"))
            if base.is_dir()
            else []
        )
        raise SpecError.one(loc, key, f"no {what} {name!r} in {base}{did_you_mean(name, known)}")
    return path


# ---------------------------------------------------------------- document-level composition


def load_document(
    spec_path: str | Path, profile: str | None = None, overrides: list[str] | None = None
) -> Doc:
    """Load a spec with its `extends:` chain, apply a profile and `--set` overrides."""
    spec_path = Path(spec_path)
    doc = _load_with_extends(spec_path, depth=0)
    if not isinstance(doc.data, dict):
        raise SpecError.one(doc.loc(()), "", "a spec must be a mapping with name: and stages:")
    profiles = doc.data.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise SpecError.one(
            doc.loc(("profiles",)), "profiles", "must be a mapping of profile name to overlay"
        )
    if profile:
        if profile not in profiles:
            raise SpecError.one(
                doc.loc(("profiles",)),
                "profiles",
                f"this spec has no profile {profile!r}{did_you_mean(profile, profiles)}",
            )
        if not isinstance(profiles[profile], dict):
            raise SpecError.one(
                doc.loc(("profiles", profile)),
                f"profiles.{profile}",
                "must be a mapping: an overlay of the spec's keys",
            )
        overlay = Doc(profiles[profile], _sublocs(doc, ("profiles", profile)), doc.file)
        doc = merge_docs(doc, overlay)
    for text in overrides or []:
        doc = merge_docs(doc, parse_override(text))
    _substitute_vars(doc)
    return doc


def _sublocs(doc: Doc, prefix: Path_) -> dict[Path_, Loc]:
    n = len(prefix)
    return {p[n:]: loc for p, loc in doc.locs.items() if p[:n] == prefix}


def _load_with_extends(path: Path, depth: int) -> Doc:
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise SpecError.one(doc.loc(()), "", "expected a mapping at the top level")
    parent_name = doc.data.pop("extends", None)
    if parent_name is None:
        return doc
    if depth >= MAX_EXTENDS_DEPTH:
        raise SpecError.one(
            doc.loc(("extends",)),
            "extends",
            f"more than {MAX_EXTENDS_DEPTH} levels of extends (a loop?)",
        )
    base = repo_dir_for(path, "pipelines")
    parent_path = _named_file(
        base, parent_name, "pipeline template", doc.loc(("extends",)), "extends"
    )
    return merge_docs(_load_with_extends(parent_path, depth + 1), doc)


def merge_docs(base: Doc, top: Doc) -> Doc:
    """Deep-merge `top` over `base`. Lists of stages merge by stage name; other lists replace."""
    data = copy.deepcopy(base.data)
    locs = dict(base.locs)
    _merge_into(data, top.data, (), locs, top.locs)
    return Doc(data, locs, top.file or base.file)


def _merge_into(dst: dict, src: dict, path: Path_, locs: dict, src_locs: dict) -> None:
    for key, value in src.items():
        here = (*path, key)
        if (
            path == ()
            and key == "stages"
            and isinstance(value, list)
            and isinstance(dst.get("stages"), list)
        ):
            _merge_stages(dst["stages"], value, locs, src_locs)
            continue
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge_into(dst[key], value, here, locs, src_locs)
            if here in src_locs:
                locs[here] = src_locs[here]
            continue
        dst[key] = copy.deepcopy(value)
        for p in [p for p in locs if p[: len(here)] == here]:
            del locs[p]
        for p, loc in src_locs.items():
            if p[: len(here)] == here:
                locs[p] = loc


def _merge_stages(dst: list, src: list, locs: dict, src_locs: dict) -> None:
    """Stages in an overlay update the stage with the same name, or are appended."""
    # Only a text name can match (anything else is reported when the stage is validated).
    by_name = {s["name"]: i for i, s in enumerate(dst) if isinstance(s, dict) and _text(s)}
    for j, stage in enumerate(src):
        src_sub = {p[2:]: loc for p, loc in src_locs.items() if p[:2] == ("stages", j)}
        name = stage["name"] if isinstance(stage, dict) and _text(stage) else None
        if name is not None and name in by_name:
            i = by_name[name]
            sub_locs = {p[2:]: loc for p, loc in locs.items() if p[:2] == ("stages", i)}
            merged_locs = dict(sub_locs)
            _merge_into(dst[i], stage, (), merged_locs, src_sub)
            for p in [p for p in locs if p[:2] == ("stages", i)]:
                del locs[p]
            locs.update({("stages", i, *p): loc for p, loc in merged_locs.items()})
        else:
            i = len(dst)
            dst.append(copy.deepcopy(stage))
            if name is not None:
                by_name[name] = i
            locs.update({("stages", i, *p): loc for p, loc in src_sub.items()})


def _text(stage: dict) -> bool:
    """Whether the stage's name is text (a list or a mapping cannot key a merge)."""
    return isinstance(stage.get("name"), str)


def parse_override(text: str) -> Doc:
    """`--set train.lr=1e-5` -> {stages: [{name: train, lr: 1e-5}]}; `--set defaults.seed=2` -> top-level."""
    loc = Loc("--set")
    if "=" not in text:
        raise SpecError.one(
            loc, text, "expected KEY=VALUE, e.g. --set train.lr=1e-5 or --set defaults.seed=2"
        )
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise SpecError.one(loc, key, "empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    top_keys = {
        "name",
        "description",
        "workspace",
        "data_roots",
        "interpreters",
        "vars",
        "models",
        "datasets",
        "methods",
        "defaults",
        "tables",
        "seeds",
        "claims",
        "max_parallel",
    }
    if parts[0] in top_keys:
        data: dict[str, Any] = {}
        cur = data
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
        locs = {tuple(parts[:i]): loc for i in range(1, len(parts) + 1)}
        return Doc(data, locs, "--set")
    if len(parts) < 2:
        raise SpecError.one(
            loc,
            key,
            f"name a stage and a field (STAGE.FIELD=VALUE) or a top-level key{did_you_mean(parts[0], top_keys)}",
        )
    stage: dict[str, Any] = {"name": parts[0]}
    cur = stage
    for p in parts[1:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    locs = {("stages", 0, *parts[1:i]): loc for i in range(1, len(parts) + 1)}
    return Doc({"stages": [stage]}, locs, "--set")


def _substitute_vars(doc: Doc) -> None:
    variables = doc.data.get("vars") or {}
    if not isinstance(variables, dict):
        raise SpecError.one(doc.loc(("vars",)), "vars", "must be a mapping of name to value")

    def sub(value: Any, path: Path_) -> Any:
        if isinstance(value, dict):
            return {k: sub(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            names = VAR_RE.findall(value)
            for n in names:
                if n not in variables:
                    raise SpecError.one(
                        doc.loc(path),
                        key_path(path),
                        f"unknown variable ${{vars.{n}}}{did_you_mean(n, variables)}",
                    )
            full = VAR_RE.fullmatch(value)
            if full:
                return copy.deepcopy(variables[full.group(1)])
            return VAR_RE.sub(lambda m: str(variables[m.group(1)]), value)
        return value

    # Variables may use variables (e.g. a suite list using ${vars.k}): resolve them first.
    for _ in range(5):
        resolved = {k: sub(v, ("vars", k)) for k, v in variables.items()}
        if resolved == variables:
            break
        variables = resolved
    doc.data = {k: (variables if k == "vars" else sub(v, (k,))) for k, v in doc.data.items()}


# ---------------------------------------------------------------- node-level composition


def expand_stages(doc: Doc, spec_path: Path) -> list[RawNode]:
    """Apply defaults, presets, methods and the matrix to every stage; one RawNode per cell."""
    stages = doc.data["stages"]
    defaults = doc.data.get("defaults") or {}
    methods = doc.data.get("methods") or {}
    presets_dir = repo_dir_for(spec_path, "stages")
    nodes: list[RawNode] = []
    for i, stage in enumerate(stages):
        sdoc = Doc(stage, _sublocs(doc, ("stages", i)), doc.file)
        if not isinstance(stage, dict):
            raise SpecError.one(
                doc.loc(("stages", i)),
                f"stages[{i}]",
                "each stage must be a mapping with name: and kind:",
            )
        name = stage.get("name")
        if not isinstance(name, str):
            raise SpecError.one(
                doc.loc(("stages", i)),
                f"stages[{i}]",
                "stage has no name: (every stage needs a unique name)",
            )
        nodes.extend(_expand_stage(sdoc, doc, defaults, methods, presets_dir, name))
    return nodes


def _preset(presets_dir: Path, name: Any, loc: Loc, key: str) -> Doc:
    path = _named_file(presets_dir, name, "stage preset", loc, key)
    doc = load_yaml(path, display=str(path))
    if not isinstance(doc.data, dict):
        raise SpecError.one(doc.loc(()), "", "a stage preset must be a mapping of stage fields")
    for bad in ("name", "matrix", "preset", "model", "data"):
        if bad in doc.data:
            raise SpecError.one(
                doc.loc((bad,)),
                bad,
                f"a preset holds hyperparameters only; set {bad}: in the stage",
            )
    return doc


def _expand_stage(
    sdoc: Doc, doc: Doc, defaults: dict, methods: dict, presets_dir: Path, name: str
) -> list[RawNode]:
    stage = dict(sdoc.data)
    matrix = stage.pop("matrix", None)
    cells = _matrix_cells(matrix, sdoc, name) if matrix is not None else [{}]
    cells = _with_seeds(cells, stage.pop("seeds", None), sdoc, doc, methods, name)
    out = []
    for cell, paired in cells:
        method_name = cell.get("method", stage.get("method"))
        method: dict[str, Any] = {}
        method_locs: dict[Path_, Loc] = {}
        if method_name is not None:
            if method_name not in methods:
                where = ("matrix", "method") if "method" in cell else ("method",)
                raise SpecError.one(
                    sdoc.loc(where),
                    f"{name}.{key_path(where)}",
                    f"unknown method {method_name!r}{did_you_mean(method_name, methods)}; declare it under methods:",
                )
            method = dict(methods[method_name] or {})
            method_locs = _sublocs(doc, ("methods", method_name))
        data: dict[str, Any] = {}
        locs: dict[Path_, Loc] = {}
        # defaults apply only where the node's kind has the field (checked in validation)
        kind = cell.get("kind", method.get("kind", stage.get("kind")))
        _apply(data, locs, _defaults_for(defaults, kind), _sublocs(doc, ("defaults",)))
        for src in (stage, method):
            if "preset" in src:
                where = (
                    sdoc.loc(("preset",))
                    if src is stage
                    else method_locs.get(("preset",), Loc(doc.file))
                )
                p = _preset(presets_dir, src["preset"], where, "preset")
                _apply(data, locs, {k: v for k, v in p.data.items() if k != "kind"}, p.locs)
                if "kind" in p.data and kind is not None and p.data["kind"] != kind:
                    raise SpecError.one(
                        p.loc(("kind",)),
                        "kind",
                        f"preset {src['preset']!r} is for {p.data['kind']} stages, not {kind}",
                    )
        _apply(data, locs, {k: v for k, v in stage.items() if k != "preset"}, sdoc.locs)
        _apply(data, locs, {k: v for k, v in method.items() if k != "preset"}, method_locs)
        _overrides_last(data, locs, sdoc, cell, name)
        coords = {}
        for axis, value in cell.items():
            if axis == "method":
                data["method"] = value
            else:
                data[axis] = copy.deepcopy(value)
                locs[(axis,)] = _seeds_loc(sdoc, doc) if paired else sdoc.loc(("matrix", axis))
            coords[axis] = value
        if method_name is not None:
            data["method"] = method_name
        out.append(
            RawNode(
                name,
                coords,
                data,
                locs,
                sdoc.loc(("name",)) if ("name",) in sdoc.locs else sdoc.loc(()),
                paired=frozenset({SEED_AXIS}) if paired else frozenset(),
            )
        )
    return out


def _overrides_last(data: dict, locs: dict, sdoc: Doc, cell: dict, name: str) -> None:
    """Re-apply this stage's `--set` values (located at "--set") over method fields. A `--set`
    of the stage's `matrix:` or `seeds:` is not a field: it made the cells, and is done."""
    paths = [
        p
        for p, loc in sdoc.locs.items()
        if p and loc.file == "--set" and p[0] not in ("matrix", "seeds")
    ]
    leaves = [p for p in paths if not any(len(q) > len(p) and q[: len(p)] == p for q in paths)]
    for path in leaves:
        if path[0] in cell:
            raise SpecError.one(
                Loc("--set"),
                f"{name}.{key_path(path)}",
                f"{path[0]!r} is a matrix axis of stage {name!r}; "
                f"use --set {name}.matrix.{path[0]}=[...] instead",
            )
        value: Any = sdoc.data
        for key in path:
            value = value[key]
        cur = data
        for key in path[:-1]:
            if not isinstance(cur.get(key), dict):
                cur[key] = {}
            cur = cur[key]
        cur[path[-1]] = copy.deepcopy(value)
        locs[path] = Loc("--set")


def _with_seeds(
    cells: list[dict[str, Any]], own: Any, sdoc: Doc, doc: Doc, methods: dict, name: str
) -> list[tuple[dict[str, Any], bool]]:
    """Each matrix cell times the seeds that apply to it; True marks a cell seeded by `seeds:`."""
    top = doc.data.get("seeds")
    if own is not None:
        seeds = check_seeds(own, sdoc.loc(("seeds",)), f"{name}.seeds")
        if any(SEED_AXIS in c for c in cells):
            raise SpecError.one(
                sdoc.loc(("seeds",)),
                f"{name}.seeds",
                "give seeds: or a matrix axis seed:, not both",
            )
    elif top is not None:
        seeds = check_seeds(top, doc.loc(("seeds",)), "seeds")
    else:
        return [(c, False) for c in cells]
    out: list[tuple[dict[str, Any], bool]] = []
    for cell in cells:
        method_name = cell.get("method", sdoc.data.get("method"))
        method = (methods.get(method_name) if isinstance(method_name, str) else None) or {}
        kind = cell.get("kind", method.get("kind", sdoc.data.get("kind")))
        applies = own is not None or (kind in SEEDED_KINDS and SEED_AXIS not in cell)
        out += [({**cell, SEED_AXIS: s}, True) for s in seeds] if applies else [(cell, False)]
    if len(out) > MAX_CELLS_PER_STAGE:
        raise SpecError.one(
            sdoc.loc(("seeds",)) if own is not None else doc.loc(("seeds",)),
            f"{name}.seeds",
            f"with its seeds the stage expands to {len(out):,} nodes; the limit is {MAX_CELLS_PER_STAGE}",
        )
    return out


def _seeds_loc(sdoc: Doc, doc: Doc) -> Loc:
    return sdoc.loc(("seeds",)) if "seeds" in sdoc.data else doc.loc(("seeds",))


def check_seeds(value: Any, loc: Loc, key: str) -> list[int]:
    """A `seeds:` value: a non-empty list of distinct non-negative integers."""
    if not isinstance(value, list) or not value:
        raise SpecError.one(
            loc,
            key,
            "must be a non-empty list of seeds such as [1, 2, 3] (an empty list runs nothing)",
        )
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        raise SpecError.one(loc, key, f"seeds must be non-negative integers (got {bad[0]!r})")
    if len(set(value)) != len(value):
        raise SpecError.one(loc, key, "seeds must be distinct")
    return list(value)


def _apply(data: dict, locs: dict, src: dict, src_locs: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "where":
            data[key] = {**data[key], **copy.deepcopy(value)}
        else:
            data[key] = copy.deepcopy(value)
            for p in [p for p in locs if p[:1] == (key,)]:
                del locs[p]
        for p, loc in src_locs.items():
            if p[:1] == (key,):
                locs[p] = loc


def _defaults_for(defaults: dict, kind: Any) -> dict:
    """Defaults that the kind's model has a field for (validated up front in the planner)."""
    from psft_orchestrator.configs.stages import STAGE_MODELS

    model = STAGE_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return {}
    return {k: v for k, v in defaults.items() if k in model.model_fields}


def _matrix_cells(matrix: Any, sdoc: Doc, name: str) -> list[dict[str, Any]]:
    loc = sdoc.loc(("matrix",))
    if not isinstance(matrix, dict) or not matrix:
        raise SpecError.one(
            loc, f"{name}.matrix", "must be a mapping of axis name to a list of values"
        )
    include = matrix.get("include", [])
    exclude = matrix.get("exclude", [])
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    for axis, values in axes.items():
        if not isinstance(values, list) or not values:
            raise SpecError.one(
                sdoc.loc(("matrix", axis)),
                f"{name}.matrix.{axis}",
                "must be a non-empty list of values",
            )
        if axis in ("name", "kind", "matrix", "preset"):
            raise SpecError.one(
                sdoc.loc(("matrix", axis)),
                f"{name}.matrix.{axis}",
                f"{axis!r} cannot be a matrix axis (use method: to vary the kind)",
            )
        if len({repr(v) for v in values}) != len(values):
            raise SpecError.one(
                sdoc.loc(("matrix", axis)), f"{name}.matrix.{axis}", "values must be distinct"
            )
    for what, items in (("include", include), ("exclude", exclude)):
        if not isinstance(items, list) or not all(isinstance(x, dict) and x for x in items):
            raise SpecError.one(
                sdoc.loc(("matrix", what)),
                f"{name}.matrix.{what}",
                "must be a list of mappings of axis to value",
            )
    for j, ex in enumerate(exclude):
        for axis in ex:
            if axis not in axes:
                raise SpecError.one(
                    sdoc.loc(("matrix", "exclude", j)),
                    f"{name}.matrix.exclude[{j}]",
                    f"unknown axis {axis!r}{did_you_mean(axis, axes)}",
                )
    total = 1
    for values in axes.values():
        total *= len(values)
    if total + len(include) > MAX_CELLS_PER_STAGE:
        raise SpecError.one(
            loc,
            f"{name}.matrix",
            f"expands to {total + len(include):,} nodes; the limit is {MAX_CELLS_PER_STAGE} per stage (split the stage or use exclude:)",
        )
    cells = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    cells = [
        c for c in cells if not any(all(c.get(k) == v for k, v in ex.items()) for ex in exclude)
    ]
    for inc in include:
        if inc not in cells:
            cells.append(dict(inc))
    if not cells:
        raise SpecError.one(loc, f"{name}.matrix", "exclude: removes every cell; nothing would run")
    return cells
