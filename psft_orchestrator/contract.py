"""The contract between the run layer and a backend: one `Job` in, files in a node directory out.

The run layer writes `job.json` into a fresh node directory and runs
`python -m psft_orchestrator.backends.worker <node_dir>/job.json` with the backend's
interpreter. The backend reads its inputs, and writes into the node directory:

    metrics.jsonl       one JSON object per logged step: {"step": int, "<key>": number, ...}
    outputs/model/      an HF model directory          (artifact type "model")
    outputs/data.jsonl  chat rows {"messages": [...]}   (artifact type "dataset")
    outputs/pairs.jsonl preference rows                 (artifact type "preference")
    outputs/prompts.jsonl RL prompt rows                (artifact type "prompts")
    outputs/scores.json eval scores, see `ScoreRow`     (artifact type "eval")
    summary.json        small dict of final key metrics (shown in the terminal summary)

Exit status of the worker: `EXIT_OK`, `EXIT_DETERMINISTIC` (the same failure would happen again:
do not retry), anything else (may be retried).

The run layer then adds `manifest.json` and `_SUCCESS` and moves the directory into place.
Checkpoints that must survive a crash go under `job.checkpoint_dir`, which is stable across
attempts of the same fingerprint (resume) and deleted once the node succeeded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from psft_orchestrator.configs.stages import StageConfig

EXIT_OK = 0
EXIT_DETERMINISTIC = 3  # the same failure would happen again: the run layer does not retry it
EXIT_RETRYABLE = 1  # anything else: may be retried

# A node's status in the run record and the index. `upstream_failed`: not run, because a node
# it consumes failed (or did not run either).
NodeStatus = Literal["success", "cached", "failed", "upstream_failed"]
NODE_STATUSES: tuple[NodeStatus, ...] = ("success", "cached", "failed", "upstream_failed")

ArtifactType = Literal["model", "dataset", "preference", "prompts", "corpus", "benchmark", "eval"]

# PSFT's clipped-token record (the paper's Fig. 8), next to metrics.jsonl: one row per interval,
# {"step": N, "clipped_tokens": [[token, count], ...], "clipped_total": M}; counts are per interval.
CLIPPED_TOKENS_FILE = "clipped_tokens.jsonl"
CLIPPED_TOKENS_KEY = "clipped_tokens"

# Where each artifact type lives inside a node directory.
OUTPUT_PATHS: dict[str, str] = {
    "model": "outputs/model",
    "dataset": "outputs/data.jsonl",
    "preference": "outputs/pairs.jsonl",
    "prompts": "outputs/prompts.jsonl",
    "corpus": "outputs/corpus.jsonl",
    "benchmark": "outputs/benchmark.jsonl",
    "eval": "outputs/scores.json",
}


class InputRef(BaseModel):
    """One resolved input of a node: what it is and where it lies on disk (absolute path)."""

    type: ArtifactType
    path: str
    name: str = Field("", description="Declared name or producing node id, for logs and labels.")
    format: str = Field("auto", description="Row layout of a data file (see data.formats).")


class Job(BaseModel):
    """Everything a backend needs to run one node. Small and JSON-serialisable."""

    node_id: str
    stage: str
    kind: str
    backend: str
    fingerprint: str
    config: StageConfig = Field(
        description="The stage's resolved fields, typed by its kind (`configs.stages`)."
    )
    inputs: dict[str, InputRef | list[InputRef]] = Field(
        default_factory=dict,
        description="Input slot -> resolved artifact(s), e.g. model, data, benchmarks.",
    )
    labels: dict[str, Any] = Field(
        default_factory=dict, description="Matrix coordinates: method, model, seed..."
    )
    node_dir: str = Field(description="Directory being built for this node (write outputs here).")
    checkpoint_dir: str = Field(description="Resumable state that survives a crash of this node.")
    output_type: ArtifactType

    @model_validator(mode="before")
    @classmethod
    def _config_of_this_kind(cls, data: Any) -> Any:
        """A config given as a dict takes the job's kind and stage name unless it says them
        (test and benchmark jobs give only the hyperparameters); one of another kind is an error."""
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            config = {"kind": data.get("kind"), "name": data.get("stage"), **data["config"]}
            if config["kind"] != data.get("kind"):
                raise ValueError(f"config kind {config['kind']!r} != job kind {data.get('kind')!r}")
            data = {**data, "config": config}
        return data

    @property
    def out(self) -> Path:
        return Path(self.node_dir)

    def config_data(self) -> dict[str, Any]:
        """The config as JSON data, as the spec wrote it (aliases such as `from`)."""
        return self.config.model_dump(mode="json", by_alias=True)

    def output_path(self) -> Path:
        return Path(self.node_dir) / OUTPUT_PATHS[self.output_type]

    def input(self, slot: str) -> InputRef:
        ref = self.inputs[slot]
        if isinstance(ref, list):
            raise TypeError(f"input {slot!r} is a list; use job.inputs[{slot!r}]")
        return ref

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> Job:
        return cls.model_validate(json.loads(Path(path).read_text()))


class ParentRef(BaseModel):
    """A node this one consumed: the input slot it fills and the producing node's identity."""

    model_config = ConfigDict(extra="forbid")

    slot: str
    node_id: str
    fingerprint: str = Field(min_length=1)


class Manifest(BaseModel):
    """`manifest.json`: written by the run layer once a node succeeded, read by results ingest.

    Every field is required (but the placement fields added later, which older manifests lack)
    and no other is allowed, so the writer and the reader cannot drift apart silently: a
    manifest that does not validate is an error, never a row of None.
    """

    model_config = ConfigDict(extra="forbid")

    node_id: str = Field(min_length=1)
    stage: str = Field(min_length=1)
    kind: str
    backend: str
    fingerprint: str = Field(min_length=1)
    run_id: str
    spec_name: str
    spec_path: str
    labels: dict[str, Any] = Field(description="Matrix coordinates: method, model, seed...")
    config: dict[str, Any] = Field(description="The stage's resolved fields, as in job.json.")
    parents: list[ParentRef]
    inputs: dict[str, InputRef | list[InputRef]]
    input_hashes: dict[str, str | list[str]] = Field(
        description="Input slot -> content hash(es) of declared (non-produced) inputs."
    )
    output_type: ArtifactType
    versions: dict[str, str] = Field(description="psft_orchestrator, python, backend, ...")
    host: str = Field(description="Host name of the machine the backend ran on.")
    # Where Ray placed the node. Defaults only so that manifests written before these fields
    # existed still validate; the run layer always sets them.
    ray_node_id: str = Field("", description="Ray node id the backend's Ray task ran on.")
    accelerators: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Accelerator ids Ray assigned to the task, e.g. {'GPU': ['0', '1']}.",
    )
    accelerator_type: str = Field(
        "", description="The Ray node's accelerator type (e.g. H100), '' if it has none."
    )
    reused_from: str = Field(
        "", description="The shared store entry this node was linked from; '' if computed here."
    )
    started_at: AwareDatetime
    ended_at: AwareDatetime
    duration_s: float = Field(ge=0)
    status: Literal["success"] = Field(description="Written only when the node succeeded.")
    attempt: int = Field(ge=1)


class ScoreRow(BaseModel):
    """One number an eval produced; `outputs/scores.json` is a JSON list of these."""

    suite: str
    benchmark: str
    metric: str = Field(description="e.g. avg@8, pass@8, acc, exact_match, win_rate")
    value: float = Field(description="In percent (0-100), as the paper's tables report.")
    n: int = Field(0, description="Number of samples (problems) behind the value.")
    stderr: float | None = None
    step: int | None = Field(
        None, description="Training step for intermediate evals; None = final."
    )
    protocol: dict[str, Any] | None = Field(
        None,
        description="How the score was measured: backend, sampling, k, judge, library versions "
        "(evals/protocol.py). Scores of different protocols are never averaged silently.",
    )


class MetricsWriter:
    """Appends one JSON object per line to metrics.jsonl, flushed at once (crash-safe append)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", buffering=1)

    def log(self, step: int, **values: Any) -> None:
        row = {"step": int(step), **{k: _plain(v) for k, v in values.items()}}
        self._f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plain(v: Any) -> Any:
    """Tensors and numpy scalars -> Python numbers, so json.dumps never fails mid-run."""
    if hasattr(v, "item"):
        return v.item()
    return v


# Keys every stage's config has that the run layer has already acted on (scheduling, labels,
# inputs resolved into `Job.inputs`), so a backend's config model need not declare them.
# tests/backends/test_registry.py checks this against `configs.stages.StageBase`.
STAGE_KEYS = frozenset(
    {"name", "kind", "backend", "description", "method", "model", "data", "labels", "resources"}
    | {"benchmarks"}  # eval: resolved into job.inputs["benchmarks"]
)


def config_for(job: Job, cls: type[BaseModel]) -> Any:
    """The job's stage config as `cls` (e.g. PSFTConfig), leaving out `STAGE_KEYS`.

    A set key that `cls` does not know is an error, never dropped: the backend would silently
    run without it (e.g. a GRPO `reward:` that this backend does not read)."""
    data = job.config_data()
    unknown = sorted(
        k
        for k, v in data.items()
        if k not in cls.model_fields and k not in STAGE_KEYS and v is not None
    )
    if unknown:
        raise ValueError(
            f"{job.node_id}: the {job.backend} backend's {cls.__name__} has no field "
            f"{', '.join(map(repr, unknown))}; it would be ignored"
        )
    return cls.model_validate({k: v for k, v in data.items() if k in cls.model_fields})


def write_progress(node_dir: Path, step: int, total: int) -> None:
    """`progress.json` for the run layer's progress artifact (the UI's progress bar); atomic."""
    import os

    path = Path(node_dir) / "progress.json"
    tmp = path.with_name(f".progress.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"step": int(step), "total": int(total)}))
    os.replace(tmp, path)
