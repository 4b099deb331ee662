"""The stage models: what one node of a spec is, typed per stage kind.

A stage is the fields every stage has (`StageBase`: name, backend, inputs, labels, resources)
plus its kind's hyperparameters (`configs.training`, `configs.evals`, `configs.filter`). The
spec schema validates each node with the model for its kind, and the same model is the
`Job.config` that the run layer hands a backend (`contract.Job`): `StageConfig` is their
union, discriminated by `kind`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator

from psft_orchestrator.configs.evals import EvalConfig
from psft_orchestrator.configs.filter import FilterConfig
from psft_orchestrator.configs.registry import REGISTRY
from psft_orchestrator.configs.training import (
    DFTConfig,
    DPOConfig,
    GRPOConfig,
    IWSFTConfig,
    PretrainConfig,
    PSFTConfig,
    SFTConfig,
    Strict,
)
from psft_orchestrator.identity import param, setting

# Exactly the backends that exist (see configs.registry).
Backend = Literal[tuple(REGISTRY)]  # type: ignore[valid-type]
Scalar = str | int | float | bool

NAME_RE = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"


class FromRef(Strict):
    """A reference to another stage's output: `{from: stage}` or `{from: stage, where: {method: PSFT}}`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", description="Name of the stage whose output this is.")
    where: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict,
        description="Keep only the producing stage's nodes with these matrix coordinates (a value or a list).",
    )


Ref = str | FromRef


# Ray's own resource names: `cpus`/`gpus` set CPU and GPU, the rest Ray manages itself.
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
CUSTOM_RESOURCE_RE = r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,63}$"


class Resources(Strict):
    """What one node of the plan reserves in Ray; Ray places it on a node that has it all."""

    cpus: float = Field(
        1.0, ge=0.0, le=1024.0, description="CPU cores reserved in Ray for this node."
    )
    gpus: float = Field(0.0, ge=0.0, le=1024.0, description="GPUs reserved in Ray for this node.")
    custom: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources, e.g. {big_mem: 1}: runs only on a Ray node started "
        "with them (`ray start --resources '{\"big_mem\": 1}'`).",
    )
    accelerator_type: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Ray accelerator type, e.g. H100 or A100: runs only on a node with that "
        "accelerator (Ray's `accelerator_type:<name>` resource).",
    )

    @field_validator("custom")
    @classmethod
    def _custom_names(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if name in RAY_BUILTIN_RESOURCES or name.startswith("accelerator_type:"):
                raise ValueError(
                    f"{name!r} is not a custom resource; use cpus:, gpus: or accelerator_type:"
                )
            if not re.match(CUSTOM_RESOURCE_RE, name):
                raise ValueError(
                    f"custom resource name {name!r} must start with a letter or _ and use "
                    "letters, digits, _ . : / -"
                )
            if not 0 < amount <= 1_000_000:
                raise ValueError(f"custom resource {name!r}: amount must be > 0, got {amount}")
        return v


class RewardFn(Strict):
    """A user reward function, named by an explicit path that `--plan` prints."""

    path: str = Field(description="Python file defining the function.")
    name: str = Field(
        "compute_score",
        description="Function name: compute_score(data_source, solution_str, ground_truth, extra_info=None).",
    )


class StageBase(Strict):
    """Fields every stage has. Hyperparameters come from the kind's config model."""

    name: str = setting(
        pattern=NAME_RE, description="Unique stage name; node ids are `name[axis=value,...]`."
    )
    kind: str
    backend: Backend = param("native", description="Which engine runs this stage.")
    description: str = setting("", description="Free text, shown in the plan.")
    method: str | None = setting(
        None, description="Method label (a name from `methods:`) used in result tables."
    )
    model: Ref | None = setting(
        None, description="Input model: a declared model name, or {from: stage}."
    )
    data: Ref | None = setting(
        None, description="Input data: a declared dataset name, or {from: stage}."
    )
    labels: dict[str, Scalar] = setting(
        default_factory=dict, description="Extra labels for result tables."
    )
    resources: Resources = setting(
        default_factory=Resources, description="Ray resources for this node."
    )

    @field_validator("labels")
    @classmethod
    def _label_names(cls, v: dict[str, Scalar]) -> dict[str, Scalar]:
        for k in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
                raise ValueError(f"label name {k!r} must be an identifier")
        return v


KIND_DOC = (
    "Stage kind: pretrain, filter, sft, psft, dft, iwsft, dpo, grpo or eval (or set by method:)."
)


class PretrainStage(StageBase, PretrainConfig):
    kind: Literal["pretrain"] = param(description=KIND_DOC)


class FilterStage(StageBase, FilterConfig):
    kind: Literal["filter"] = param(description=KIND_DOC)


class SFTStage(StageBase, SFTConfig):
    kind: Literal["sft"] = param(description=KIND_DOC)


class PSFTStage(StageBase, PSFTConfig):
    kind: Literal["psft"] = param(description=KIND_DOC)


class DFTStage(StageBase, DFTConfig):
    kind: Literal["dft"] = param(description=KIND_DOC)


class IWSFTStage(StageBase, IWSFTConfig):
    kind: Literal["iwsft"] = param(description=KIND_DOC)


class DPOStage(StageBase, DPOConfig):
    kind: Literal["dpo"] = param(description=KIND_DOC)


class GRPOStage(StageBase, GRPOConfig):
    kind: Literal["grpo"] = param(description=KIND_DOC)
    reward: RewardFn | None = param(
        None, description="Custom reward function; default: Math-Verify answer check."
    )


class EvalStage(StageBase, EvalConfig):
    kind: Literal["eval"] = param(description=KIND_DOC)
    benchmarks: list[str] = param(
        default_factory=list,
        description="Declared benchmark datasets every suite may use (by name).",
    )


STAGE_MODELS: dict[str, type[StageBase]] = {
    "pretrain": PretrainStage,
    "filter": FilterStage,
    "sft": SFTStage,
    "psft": PSFTStage,
    "dft": DFTStage,
    "iwsft": IWSFTStage,
    "dpo": DPOStage,
    "grpo": GRPOStage,
    "eval": EvalStage,
}


StageConfig = Annotated[
    PretrainStage
    | FilterStage
    | SFTStage
    | PSFTStage
    | DFTStage
    | IWSFTStage
    | DPOStage
    | GRPOStage
    | EvalStage,
    Field(discriminator="kind"),
]
