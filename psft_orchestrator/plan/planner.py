"""Spec -> Plan: validate every node, build the DAG, check artifact types, fingerprint.

A stage that takes `{from: other}` fans out over the other stage's matrix: if `train` has
`matrix: {method: [SFT, PSFT]}`, then `eval` with `model: {from: train}` becomes
`eval[method=SFT]` and `eval[method=PSFT]`. Coordinates shared by two parents must agree, so
a stage fed by `train[method=...,seed=...]` and `data[seed=...]` pairs them by seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from psft_orchestrator.configs.stages import STAGE_MODELS, FromRef, StageBase
from psft_orchestrator.contract import OUTPUT_PATHS, InputRef
from psft_orchestrator.hashing import content_hash
from psft_orchestrator.spec.compose import RawNode, expand_stages, load_document, node_id
from psft_orchestrator.spec.errors import Loc, SpecError, did_you_mean, key_path
from psft_orchestrator.spec.schema import (
    BACKENDS,
    COMPOSE_KEYS,
    DATA_TYPES,
    NEEDS_MODEL,
    TYPE_NAMES,
    DatasetDecl,
    ModelDecl,
    Pipeline,
)
from psft_orchestrator.spec.yamlsrc import Doc

from .fingerprint import (
    backend_version,
    canonical,
    fingerprint_payload,
    node_fingerprint,
    sha256,
)

if TYPE_CHECKING:
    from psft_orchestrator.data.prepare import PreparedInput

MAX_NODES = 2000


@dataclass
class Node:
    """One executable unit of the plan."""

    id: str
    stage: str
    kind: str
    backend: str
    coords: dict[str, Any]
    labels: dict[str, Any]
    stage_model: StageBase
    output_type: str
    parents: dict[str, Node] = field(default_factory=dict)  # slot -> producing node
    inputs: dict[str, InputRef | list[InputRef]] = field(default_factory=dict)  # resolved paths
    input_hashes: dict[str, Any] = field(
        default_factory=dict
    )  # slot -> content hash(es) of declared inputs
    fingerprint: str = ""
    backend_version: str = ""  # of the environment that runs it (plan.fingerprint.backend_version)
    loc: Loc = field(default_factory=lambda: Loc(""))
    resources_loc: Loc = field(default_factory=lambda: Loc(""))  # where `resources:` was set

    @property
    def fp16(self) -> str:
        return self.fingerprint[:16]

    @cached_property
    def config(self) -> dict[str, Any]:
        """The resolved stage fields as JSON data, dumped once (the stage model is final once
        the node exists): what `job.json`, the manifest and the fingerprint are made from."""
        return self.stage_model.model_dump(mode="json", by_alias=True)

    def artifact_dir(self, workspace: Path) -> Path:
        return workspace / "artifacts" / self.stage / self.fp16

    def output_path(self, workspace: Path) -> Path:
        return self.artifact_dir(workspace) / OUTPUT_PATHS[self.output_type]

    def is_done(self, workspace: Path) -> bool:
        return (self.artifact_dir(workspace) / "_SUCCESS").exists()


@dataclass
class ToyInput:
    """A toy-world model or dataset that the run layer materialises before use."""

    what: str  # "model" or "dataset"
    decl: ModelDecl | DatasetDecl
    key: str  # content-defining hash
    type: str

    def path(self, workspace: Path) -> Path:
        if self.what == "model":
            return workspace / "inputs" / "toy-models" / self.key[:16]
        return workspace / "inputs" / "toy-data" / f"{self.key[:16]}.jsonl"


@dataclass
class Plan:
    spec_path: Path
    pipeline: Pipeline
    workspace: Path
    nodes: list[Node]  # topological order
    toy_inputs: dict[str, ToyInput]  # declared name -> toy input to materialise
    # declared name -> hub (or column-mapped) dataset to convert into the workspace
    prepared_inputs: dict[str, PreparedInput] = field(default_factory=dict)
    plan_hash: str = ""

    def node(self, node_id_or_prefix: str) -> Node:
        for n in self.nodes:
            if n.id == node_id_or_prefix or n.fingerprint.startswith(node_id_or_prefix):
                return n
        raise KeyError(node_id_or_prefix)

    def find(self, name: str) -> Node:
        """The node with this id or fingerprint prefix (`--explain NODE`), or a SpecError."""
        hits = [
            n
            for n in self.nodes
            if n.id == name or (len(name) >= 6 and n.fingerprint.startswith(name))
        ]
        if len(hits) != 1:
            why = (
                "matches no node id or fingerprint prefix" if not hits else "matches several nodes"
            )
            raise SpecError.one(
                None, f"--explain {name}", why + did_you_mean(name, [n.id for n in self.nodes])
            )
        return hits[0]

    def forced(self, names: list[str]) -> set[str]:
        """Ids of the nodes `--force NAME...` reruns: the matches and everything downstream."""
        roots = set()
        for name in names:
            hits = [
                n.id
                for n in self.nodes
                if name in (n.id, n.stage) or (len(name) >= 6 and n.fingerprint.startswith(name))
            ]
            if not hits:
                raise SpecError.one(
                    None,
                    f"--force {name}",
                    "matches no node id, stage name or fingerprint prefix of the plan"
                    + did_you_mean(
                        name, [*{n.stage for n in self.nodes}, *(n.id for n in self.nodes)]
                    ),
                )
            roots.update(hits)
        return self.downstream(roots)

    def downstream(self, roots: set[str]) -> set[str]:
        """Node ids of `roots` and everything that depends on them."""
        out = set(roots)
        for n in self.nodes:  # topological order: parents come first
            if any(p.id in out for p in n.parents.values()):
                out.add(n.id)
        return out


# ---------------------------------------------------------------- entry point


def build_plan(
    spec_path: str | Path,
    workspace: str | Path | None = None,
    profile: str | None = None,
    overrides: list[str] | None = None,
) -> Plan:
    """Load, compose, validate and fingerprint a spec. Raises SpecError on any bad input."""
    spec_path = Path(spec_path)
    doc = load_document(spec_path, profile, overrides)
    pipeline = _validate(Pipeline, doc.data, doc.loc, "", what="spec")
    _check_defaults(pipeline, doc)
    ws = Path(workspace or os.environ.get("PSFT_WORKSPACE") or pipeline.workspace)
    spec_dir = spec_path.resolve().parent
    roots = [spec_dir, ws.resolve(), *(_root(r, spec_dir) for r in pipeline.data_roots)]

    raw_nodes = expand_stages(doc, spec_path)
    _check_unique_stage_names(doc)
    validated = [(raw, _dealias(_validate_node(raw), raw, pipeline)) for raw in raw_nodes]
    by_stage: dict[str, list[tuple[RawNode, StageBase]]] = {}
    for raw, model in validated:
        by_stage.setdefault(raw.stage, []).append((raw, model))

    order = _stage_order(by_stage, pipeline)
    toy_inputs: dict[str, ToyInput] = {}
    prepared_inputs: dict[str, PreparedInput] = {}
    declared_inputs: dict[str, tuple[InputRef, str]] = {}  # name -> (ref, content hash)

    def declared(name: str, slot: str, raw: RawNode, path: tuple) -> tuple[InputRef, str]:
        if name not in declared_inputs:
            declared_inputs[name] = _resolve_declared(
                name, pipeline, roots, spec_dir, ws, toy_inputs, prepared_inputs, raw, path, doc
            )
        return declared_inputs[name]

    nodes: dict[str, list[Node]] = {}
    for stage in order:
        nodes[stage] = []
        for raw, model in by_stage[stage]:
            nodes[stage].extend(_fan_out(raw, model, pipeline, nodes, declared))
        if sum(len(v) for v in nodes.values()) > MAX_NODES:
            raise SpecError.one(
                by_stage[stage][0][0].stage_loc, stage, f"the plan has more than {MAX_NODES} nodes"
            )
        ids = [n.id for n in nodes[stage]]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise SpecError.one(
                by_stage[stage][0][0].stage_loc,
                stage,
                f"two nodes would share the id {sorted(dupes)[0]!r}; add a matrix axis that tells them apart",
            )
    ordered = [n for stage in order for n in nodes[stage]]
    plan = Plan(spec_path, pipeline, ws, ordered, toy_inputs, prepared_inputs)
    plan.plan_hash = sha256(canonical(sorted(n.fingerprint for n in ordered)))
    from .data_checks import check_data  # needs Plan: imported here, not at the top

    check_data(plan)
    return plan


# ---------------------------------------------------------------- validation helpers


def _validate(
    model: type[BaseModel], data: Any, locate, prefix: str, what: str, kind: str | None = None
):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            path = tuple(
                p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))
            )
            # Union members show up as extra path parts ('str', 'FromRef'); drop them for display.
            path = tuple(p for p in path if p not in ("str", "FromRef", "str-enum", "list[str]"))
            path, owner = _walk(model, path)
            problems.append(
                (
                    locate(path),
                    prefix + key_path(path) if path else prefix.rstrip("."),
                    _message(owner, err, path, kind),
                )
            )
        raise SpecError(problems) from None


def _message(owner: type[BaseModel] | None, err: dict, path: tuple, kind: str | None) -> str:
    etype = err["type"]
    if etype == "extra_forbidden":
        key = path[-1]
        fields = _field_names(owner) if owner else []
        stage_level = kind and len(path) == 1
        if stage_level:
            fields += COMPOSE_KEYS  # consumed before validation, but valid in a stage
        what = f"a {kind} stage" if stage_level else (owner.__name__ if owner else "this mapping")
        return f"unknown key {key!r} for {what}{did_you_mean(str(key), fields)}"
    if etype == "missing":
        return "missing required key"
    msg = err["msg"]
    if (
        "input" in err
        and etype not in ("model_type", "dict_type")
        and not isinstance(err["input"], dict | list)
    ):
        msg += f" (got {err['input']!r})"
    return msg.replace("Value error, ", "")


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside a type (through list, dict, Optional, Union, Annotated)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _union_tag(model: type[BaseModel]) -> Any:
    """The value of a discriminated union member's `type` field (e.g. 'math' for MathSuite)."""
    f = model.model_fields.get("type")
    return f.default if f is not None else None


def _walk(model: type[BaseModel], path: tuple) -> tuple[tuple, type[BaseModel] | None]:
    """`path` without discriminated-union tags, and the model that owns its last key.

    pydantic puts the tag in error paths (`suites.0.math.max_tokens`); the spec has no such key.
    """
    clean: list[Any] = []
    candidates, owner = [model], None
    for part in path:
        if isinstance(part, int):
            clean.append(part)
            continue
        tagged = [c for c in candidates if _union_tag(c) == part]
        if len(candidates) > 1 and tagged:
            candidates = tagged
            continue
        clean.append(part)
        owner = candidates[0] if len(candidates) == 1 else None
        field = next(
            (
                f
                for c in candidates
                for name, f in c.model_fields.items()
                if part in (name, f.alias)
            ),
            None,
        )
        candidates = _models_in(field.annotation) if field is not None else []
    return tuple(clean), owner


def _check_defaults(pipeline: Pipeline, doc: Doc) -> None:
    known = {f for m in STAGE_MODELS.values() for f in m.model_fields}
    for key in pipeline.defaults:
        if key not in known or key in ("name", "kind", "model", "data"):
            raise SpecError.one(
                doc.loc(("defaults", key)),
                f"defaults.{key}",
                f"no stage kind has a field {key!r}{did_you_mean(key, known)}",
            )


def _check_unique_stage_names(doc: Doc) -> None:
    seen: dict[str, int] = {}
    for i, s in enumerate(doc.data["stages"]):
        name = s["name"]
        if name in seen:
            raise SpecError.one(
                doc.loc(("stages", i, "name")),
                f"stages[{i}].name",
                f"duplicate stage name {name!r} (first used at stages[{seen[name]}])",
            )
        seen[name] = i


def _validate_node(raw: RawNode) -> StageBase:
    kind = raw.data.get("kind")
    prefix = f"{raw.node_id}."
    if kind is None:
        _check_kindless_keys(raw)
        raise SpecError.one(
            raw.stage_loc,
            raw.node_id,
            f"missing kind: (one of {', '.join(STAGE_MODELS)}), or a method: that sets it",
        )
    if not isinstance(kind, str) or kind not in STAGE_MODELS:
        raise SpecError.one(
            raw.loc(("kind",)),
            prefix + "kind",
            f"unknown stage kind {kind!r}{did_you_mean(str(kind), STAGE_MODELS)}",
        )
    data = dict(raw.data)
    data.setdefault("backend", BACKENDS[kind][0])
    model = _validate(STAGE_MODELS[kind], data, raw.loc, prefix, what="stage", kind=kind)
    if model.backend not in BACKENDS[kind]:
        raise SpecError.one(
            raw.loc(("backend",)),
            prefix + "backend",
            f"a {kind} stage cannot run on {model.backend!r}; supported: {', '.join(BACKENDS[kind])}",
        )
    return model


def _check_kindless_keys(raw: RawNode) -> None:
    """Without a kind, a misspelled key (often `matirx:`) is the likelier mistake: name it."""
    known = {k for m in STAGE_MODELS.values() for k in _field_names(m)} | set(COMPOSE_KEYS)
    for key in raw.data:
        if key not in known:
            raise SpecError.one(
                raw.loc((key,)),
                f"{raw.node_id}.{key}",
                f"unknown stage key {key!r}{did_you_mean(str(key), known)}",
            )


def _dealias(model: StageBase, raw: RawNode, pipeline: Pipeline) -> StageBase:
    """`model: qwen7b` where qwen7b is declared `{from: pretrain}` becomes `{from: pretrain}`."""
    name = model.model
    if isinstance(name, str) and name in pipeline.models and pipeline.models[name].from_:
        raw.aliases["model"] = name
        return model.model_copy(update={"model": FromRef(**{"from": pipeline.models[name].from_})})
    return model


# ---------------------------------------------------------------- graph


def _refs(model: StageBase) -> list[tuple[str, FromRef]]:
    return [
        (slot, getattr(model, slot))
        for slot in ("model", "data")
        if isinstance(getattr(model, slot), FromRef)
    ]


def _stage_order(
    by_stage: dict[str, list[tuple[RawNode, StageBase]]], pipeline: Pipeline
) -> list[str]:
    """Topological order of stages; unknown references and cycles are errors."""
    deps: dict[str, set[str]] = {}
    for stage, cells in by_stage.items():
        deps[stage] = set()
        for raw, model in cells:
            for slot, ref in _refs(model):
                if ref.from_ not in by_stage:
                    hint = did_you_mean(ref.from_, by_stage)
                    if ref.from_ in pipeline.models or ref.from_ in pipeline.datasets:
                        hint = (
                            f" ({ref.from_!r} is declared: write {slot}: {ref.from_} without from:)"
                        )
                    raise SpecError.one(
                        raw.loc((slot, "from")),
                        f"{raw.node_id}.{slot}.from",
                        f"unknown stage {ref.from_!r}{hint}",
                    )
                if ref.from_ == stage:
                    raise SpecError.one(
                        raw.loc((slot, "from")),
                        f"{raw.node_id}.{slot}.from",
                        "a stage cannot take its own output",
                    )
                deps[stage].add(ref.from_)
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(s: str, trail: list[str]) -> None:
        if state.get(s) == 2:
            return
        if state.get(s) == 1:
            cycle = [*trail[trail.index(s) :], s]
            raw = by_stage[s][0][0]
            raise SpecError.one(raw.stage_loc, s, f"dependency cycle: {' -> '.join(cycle)}")
        state[s] = 1
        for d in sorted(deps[s]):
            visit(d, [*trail, s])
        state[s] = 2
        order.append(s)

    for s in by_stage:  # declaration order, so independent stages keep the author's order
        visit(s, [])
    return order


def _matches(value: Any, wanted: Any) -> bool:
    return value in wanted if isinstance(wanted, list) else value == wanted


def _fan_out(
    raw: RawNode, model: StageBase, pipeline: Pipeline, nodes: dict[str, list[Node]], declared
) -> list[Node]:
    """One stage cell -> one node per consistent combination of its parents' nodes."""
    kind = model.kind
    combos: list[tuple[dict[str, Any], dict[str, Node]]] = [({}, {})]
    for slot, ref in _refs(model):
        for k in ref.where:
            if not any(k in p.coords for p in nodes[ref.from_]):
                raise SpecError.one(
                    raw.loc((slot, "where")),
                    f"{raw.node_id}.{slot}.where",
                    f"stage {ref.from_!r} has no matrix axis {k!r}{did_you_mean(k, nodes[ref.from_][0].coords)}",
                )
        parents = [
            p
            for p in nodes[ref.from_]
            if all(_matches(p.coords.get(k), v) for k, v in ref.where.items())
        ]
        if not parents:
            raise SpecError.one(
                raw.loc((slot, "where")),
                f"{raw.node_id}.{slot}.where",
                f"no node of stage {ref.from_!r} matches {ref.where}",
            )
        new = []
        for coords, ps in combos:
            for p in parents:
                if all(coords.get(k, v) == v for k, v in p.coords.items()):
                    new.append(({**coords, **p.coords}, {**ps, slot: p}))
        if not new:
            raise SpecError.one(
                raw.loc((slot,)),
                f"{raw.node_id}.{slot}",
                f"no node of {ref.from_!r} has coordinates consistent with the stage's other inputs",
            )
        combos = new
    combos = _pair_seeds(combos, raw, model)
    out = []
    for inherited, parents in combos:
        clash = (set(inherited) & set(raw.coords)) - raw.paired
        if clash:
            axis = sorted(clash)[0]
            raise SpecError.one(
                raw.loc((axis,)),
                f"{raw.stage}.matrix.{axis}",
                f"axis {axis!r} is already set by an upstream stage; remove it here or use where: to pick",
            )
        coords = {**inherited, **raw.coords}
        node = Node(
            id=node_id(raw.stage, coords),
            stage=raw.stage,
            kind=kind,
            backend=model.backend,
            coords=coords,
            labels={},
            stage_model=model,
            output_type="",
            parents=parents,
            loc=raw.stage_loc,
            resources_loc=raw.loc(("resources",)),
        )
        _resolve_inputs(node, raw, model, pipeline, declared)
        _type_check(node, raw, model)
        node.labels = _labels(node, model, raw)
        node.backend_version = backend_version(node.backend, pipeline.interpreters)
        node.fingerprint = node_fingerprint(fingerprint_payload_of(node))
        out.append(node)
    return out


def _pair_seeds(combos: list, raw: RawNode, model: StageBase) -> list:
    """A cell seeded by `seeds:` takes only the upstream nodes of its own seed, if they have one."""
    paired = [a for a in raw.paired if any(a in coords for coords, _ in combos)]
    if not paired:
        return combos
    kept = [c for c in combos if all(c[0].get(a, raw.coords[a]) == raw.coords[a] for a in paired)]
    if not kept:
        axis = paired[0]
        upstream = sorted({str(c[0][axis]) for c in combos if axis in c[0]})
        raise SpecError.one(
            raw.loc((axis,)),
            f"{raw.node_id}.seeds",
            f"{axis} {raw.coords[axis]} has no upstream node to pair with: the stage's inputs "
            f"were made with {axis}s {', '.join(upstream)}",
        )
    return kept


def fingerprint_payload_of(node: Node) -> dict[str, Any]:
    """The inputs of `node`'s fingerprint (printed by `--plan --explain`)."""
    return fingerprint_payload(
        node.kind,
        node.backend,
        type(node.stage_model),
        node.config,
        {slot: p.fingerprint for slot, p in sorted(node.parents.items())},
        node.input_hashes,
        node.backend_version or None,
    )


def _resolve_inputs(
    node: Node, raw: RawNode, model: StageBase, pipeline: Pipeline, declared
) -> None:
    for slot in ("model", "data"):
        value = getattr(model, slot)
        if value is None:
            continue
        if isinstance(value, FromRef):
            parent = node.parents[slot]
            node.inputs[slot] = InputRef(type=parent.output_type, path="", name=parent.id)
            continue
        node.inputs[slot], node.input_hashes[slot] = declared(value, slot, raw, (slot,))
    suites = model.suites if model.kind == "eval" else getattr(model, "eval_suites", [])
    if model.kind == "eval" or suites:
        names = list(
            dict.fromkeys(
                [
                    *getattr(model, "benchmarks", []),
                    *(b for s in suites for b in getattr(s, "benchmarks", [])),
                    *(
                        s.reference for s in suites if getattr(s, "reference", None)
                    ),  # judge references
                ]
            )
        )
        _declared_list(node, raw, declared, names, "benchmarks", "benchmark", ("benchmarks",))
        # models that judges serve (`judge: {serve: NAME}`) are inputs: hashed, materialised
        served = [
            s.judge.serve for s in suites if getattr(getattr(s, "judge", None), "serve", None)
        ]
        _declared_list(node, raw, declared, served, "judges", "model", ("suites",))


def _declared_list(
    node: Node, raw: RawNode, declared, names: list[str], slot: str, want: str, path: tuple
) -> None:
    """Declared inputs of one type under `slot` (a list), with their content hashes."""
    refs, hashes = [], []
    for name in dict.fromkeys(names):
        ref, chash = declared(name, slot, raw, path)
        if ref.type != want:
            raise SpecError.one(
                raw.loc(path),
                f"{node.id}.{slot}",
                f"{name!r} is {TYPE_NAMES[ref.type]}, not {TYPE_NAMES[want]}",
            )
        refs.append(ref)
        hashes.append(chash)
    if refs:
        node.inputs[slot] = refs
        node.input_hashes[slot] = hashes


def _type_check(node: Node, raw: RawNode, model: StageBase) -> None:
    kind = model.kind
    want = DATA_TYPES[kind]
    if NEEDS_MODEL[kind] and "model" not in node.inputs:
        raise SpecError.one(
            raw.stage_loc,
            f"{node.id}.model",
            f"a {kind} stage needs model: (a declared model or {{from: stage}})",
        )
    if "model" in node.inputs and node.inputs["model"].type != "model":
        got = node.inputs["model"]
        raise SpecError.one(
            raw.loc(("model",)),
            f"{node.id}.model",
            f"{got.name!r} is {TYPE_NAMES[got.type]}, not a model",
        )
    if want is None:
        if "data" in node.inputs:
            raise SpecError.one(
                raw.loc(("data",)),
                f"{node.id}.data",
                f"a {kind} stage takes no data: (use benchmarks:)",
            )
    else:
        if "data" not in node.inputs:
            raise SpecError.one(
                raw.stage_loc,
                f"{node.id}.data",
                f"a {kind} stage needs data: ({' or '.join(TYPE_NAMES[t] for t in want)})",
            )
        got = node.inputs["data"]
        if got.type not in want:
            raise SpecError.one(
                raw.loc(("data",)),
                f"{node.id}.data",
                f"{got.name!r} provides {TYPE_NAMES[got.type]}, but a {kind} stage needs {' or '.join(TYPE_NAMES[t] for t in want)}",
            )
    if kind == "eval" and not node.inputs.get("benchmarks"):
        raise SpecError.one(
            raw.stage_loc,
            f"{node.id}.suites",
            "an eval stage needs at least one benchmark (declared dataset of type benchmark)",
        )
    node.output_type = {
        "filter": node.inputs.get("data", InputRef(type="dataset", path="")).type,
        "eval": "eval",
    }.get(kind, "model")


def _labels(node: Node, model: StageBase, raw: RawNode) -> dict[str, Any]:
    """Labels for result tables: upstream labels, then coordinates, then the stage's own."""
    labels: dict[str, Any] = {}
    for p in node.parents.values():
        labels.update(p.labels)
    if "model" in node.inputs and "model" not in node.parents:
        labels["model"] = node.inputs["model"].name
    labels.update(
        raw.coords
    )  # own matrix cell only: inherited coordinates are in the parents labels
    if "model" in raw.aliases:
        labels["model"] = raw.aliases["model"]
    if model.method:
        labels["method"] = model.method
    labels.setdefault("method", {"eval": "Original", "filter": "data"}.get(model.kind, model.kind))
    labels["stage"] = node.stage
    for key, value in model.labels.items():
        # "{method}->DPO": a label may be built from the labels it inherits.
        try:
            labels[key] = value.format(**labels) if isinstance(value, str) else value
        except (KeyError, IndexError, ValueError) as e:
            raise SpecError.one(
                raw.loc(("labels", key)),
                f"{node.id}.labels.{key}",
                f"cannot fill {value!r} from the inherited labels {sorted(labels)}: {e}",
            ) from None
    return labels


# ---------------------------------------------------------------- declared inputs and paths


def _root(r: str, spec_dir: Path) -> Path:
    p = Path(r)
    return (p if p.is_absolute() else spec_dir / p).resolve()


def _resolve_declared(
    name: str,
    pipeline: Pipeline,
    roots: list[Path],
    spec_dir: Path,
    ws: Path,
    toy_inputs: dict[str, ToyInput],
    prepared_inputs: dict[str, PreparedInput],
    raw: RawNode,
    path: tuple,
    doc: Doc,
) -> tuple[InputRef, str]:
    if name in pipeline.models:
        decl: ModelDecl | DatasetDecl = pipeline.models[name]
        what, typ, section = "model", "model", "models"
    elif name in pipeline.datasets:
        decl = pipeline.datasets[name]
        what, section = "dataset", "datasets"
        typ = decl.type or _toy_type(
            decl.toy, doc.loc((section, name, "toy")), f"datasets.{name}.toy"
        )
    else:
        hint = did_you_mean(name, [*pipeline.models, *pipeline.datasets])
        raise SpecError.one(
            raw.loc(path),
            f"{raw.node_id}.{key_path(path)}",
            f"unknown model or dataset {name!r}{hint}; declare it under models: or datasets:, or write {{from: STAGE}}",
        )
    # Problems with the declaration itself point at the declaration.
    loc, kp = doc.loc((section, name, "path")), f"{section}.{name}.path"
    if decl.toy is not None:
        if what == "dataset" and decl.type and decl.type != typ:
            raise SpecError.one(
                loc, kp, f"declared type {decl.type} does not match toy task {decl.toy!r}"
            )
        key = sha256(
            canonical(
                {"what": what, "decl": decl.model_dump(mode="json"), "version": _toy_version()}
            )
        )
        toy = ToyInput(what, decl, key, typ)
        toy_inputs[name] = toy
        return InputRef(type=typ, path=str(toy.path(ws.resolve())), name=name), key
    if what == "model" and decl.path is None:  # hf_id alone: from the local HF cache at run time
        ref_id = f"{decl.hf_id}@{decl.revision}"
        return InputRef(type=typ, path=f"hf:{ref_id}", name=name), sha256(f"hf:{ref_id}")
    p = None if decl.path is None else _safe_path(decl.path, roots, spec_dir, loc, kp, name)
    if what == "dataset":
        from psft_orchestrator.data.prepare import needs_preparing

        if needs_preparing(decl, p):
            prepared = _prepared(name, decl, typ, p, doc)
            prepared_inputs[name] = prepared
            path = str(prepared.path(ws.resolve()))
            return InputRef(type=typ, path=path, name=name), prepared.key
    return InputRef(
        type=typ, path=str(p), name=name, format=getattr(decl, "format", "auto")
    ), content_hash(p)


def _prepared(name: str, decl: DatasetDecl, typ: str, p: Path | None, doc: Doc) -> PreparedInput:
    """A hub (or hub-layout, or column-mapped) dataset, resolved and its first row converted."""
    from psft_orchestrator.data.formats import FormatError
    from psft_orchestrator.data.hub import HubError
    from psft_orchestrator.data.prepare import plan_input

    source_key = "hf_id" if p is None else "path"
    try:
        prepared = plan_input(name, decl, typ, p)
        return replace(prepared, declared_at=doc.loc(("datasets", name, source_key)))
    except HubError as e:
        bad = "split" if "no split" in str(e) else "config" if decl.config else source_key
        raise SpecError.one(
            doc.loc(("datasets", name, bad)),
            f"datasets.{name}.{bad}",
            f"dataset {name!r}: {e}",
        ) from None
    except FormatError as e:
        raise SpecError.one(
            doc.loc(("datasets", name, source_key)),
            f"datasets.{name}",
            f"dataset {name!r} cannot be read as {typ}: {e}",
        ) from None


def _safe_path(value: str, roots: list[Path], spec_dir: Path, loc: Loc, kp: str, name: str) -> Path:
    if ".." in Path(value).parts:
        raise SpecError.one(
            loc,
            kp,
            f"path of {name!r} contains '..'; paths must stay inside the workspace or a data root",
        )
    p = Path(value)
    p = (p if p.is_absolute() else spec_dir / p).resolve()
    if not any(p == r or r in p.parents for r in roots):
        raise SpecError.one(
            loc,
            kp,
            f"path {value!r} of {name!r} is outside the spec directory, the workspace and data_roots: add its directory to data_roots:",
        )
    if not p.exists():
        raise SpecError.one(loc, kp, f"path {value!r} of {name!r} does not exist ({p})")
    return p


def _toy_type(task: str | None, loc: Loc, kp: str) -> str:
    from psft_orchestrator.data.toy.tasks import TOY_TASKS

    if task not in TOY_TASKS:
        raise SpecError.one(
            loc, kp, f"unknown toy task {task!r}{did_you_mean(str(task), TOY_TASKS)}"
        )
    return TOY_TASKS[task]


def _toy_version() -> str:
    from psft_orchestrator.data.toy.tasks import GENERATOR_VERSION

    return str(GENERATOR_VERSION)
