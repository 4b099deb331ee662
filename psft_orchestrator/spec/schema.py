"""The spec schema: what a pipeline YAML may say, with types, ranges and descriptions.

A pipeline declares models and datasets once, names reusable `methods` (bundles of stage
fields such as `{kind: psft, preset: math_psft}`), and lists `stages`. Stages are validated
one *node* at a time, after presets, methods and the matrix have been applied
(`spec.compose`), by the model for the node's `kind` in `STAGE_MODELS`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from psft_orchestrator.configs.registry import ALL_KINDS, backends_for
from psft_orchestrator.configs.stages import (
    NAME_RE,
    STAGE_MODELS,
    Backend,
    Strict,
)

DataType = Literal["dataset", "preference", "prompts", "corpus", "benchmark"]
# Which backends can run which kind. The first one is the default.
BACKENDS: dict[str, tuple[str, ...]] = {kind: backends_for(kind) for kind in ALL_KINDS}

# What each kind consumes in its `data` slot (None: it takes no data) and whether it needs a model.
DATA_TYPES: dict[str, tuple[str, ...] | None] = {
    "pretrain": ("corpus",),
    "filter": ("dataset", "preference", "prompts"),
    "sft": ("dataset",),
    "psft": ("dataset",),
    "dft": ("dataset",),
    "iwsft": ("dataset",),
    "dpo": ("preference",),
    "grpo": ("prompts",),
    "eval": None,
}
NEEDS_MODEL = {k: k != "filter" for k in BACKENDS}

TYPE_NAMES = {
    "model": "a model",
    "dataset": "an SFT dataset (chat rows)",
    "preference": "a preference dataset (chosen/rejected pairs)",
    "prompts": "an RL prompt set",
    "corpus": "a text corpus",
    "benchmark": "a benchmark",
    "eval": "eval scores",
}


class ModelDecl(Strict):
    """A model declared once and referred to by name.

    Exactly one source is used: `path` (a local HF directory), `toy` (a randomly initialised
    toy-world model), `from` (another stage's output, e.g. in a toy profile) or, when none of
    these is given, `hf_id`, looked up in the local Hugging Face cache (never downloaded).
    With another source, `hf_id` only records where the real model comes from.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    path: str | None = Field(None, description="Local HF model directory (inside a data root).")
    toy: Literal["micro", "tiny", "small"] | None = Field(
        None,
        description="A randomly initialised toy-world Qwen2 model of this size (for `pretrain`).",
    )
    from_: str | None = Field(
        None, alias="from", description="Name of the stage whose output model this name stands for."
    )
    hf_id: str | None = Field(
        None, description="Hub id such as Qwen/Qwen2.5-7B-Instruct (local cache only)."
    )
    revision: str = Field("main", description="Hub revision, with hf_id.")

    @model_validator(mode="after")
    def _one_source(self) -> ModelDecl:
        sources = [k for k in ("path", "toy", "from_") if getattr(self, k) is not None]
        if len(sources) > 1 or (not sources and self.hf_id is None):
            raise ValueError(
                "give exactly one of path:, toy:, from: (or only hf_id:, resolved from the local HF cache)"
            )
        return self


class DatasetDecl(Strict):
    """A dataset declared once: a local file/directory, a toy-world generator, or a hub id.

    As for models, `hf_id` alone means the local HF datasets cache (offline); next to `path`
    or `toy` it only records where the real data comes from.
    """

    path: str | None = Field(
        None, description="Local JSONL / parquet file or HF datasets directory."
    )
    type: DataType | None = Field(
        None, description="What the rows are; required unless toy: says it."
    )
    format: str = Field(
        "auto", description="Row layout (see data.formats); auto-detected by default."
    )
    toy: str | None = Field(
        None, description="Toy-world generator task (see data.toy.tasks.TOY_TASKS)."
    )
    n: int = Field(1000, ge=1, le=10_000_000, description="Rows to generate (toy only).")
    seed: int = Field(0, ge=0, description="Generator seed (toy only).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Extra generator parameters (toy only)."
    )
    hf_id: str | None = Field(
        None, description="Hub dataset id such as open-r1/OpenR1-Math-220k (local cache only)."
    )
    split: str = Field("train", description="Split (hub id or hub-layout directory).")
    config: str | None = Field(
        None, description="Config (subset) of a hub dataset, e.g. gsm8k's `main`."
    )
    revision: str = Field("main", description="Hub revision (branch, tag or commit), with hf_id.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Our field -> source column, for schemas the project does not know (docs/data.md).",
    )

    @field_validator("columns")
    @classmethod
    def _column_fields(cls, v: dict[str, str]) -> dict[str, str]:
        from psft_orchestrator.data.schemas import COLUMN_FIELDS

        unknown = sorted(set(v) - set(COLUMN_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown field(s) {unknown} in columns: (valid: {', '.join(COLUMN_FIELDS)})"
            )
        return v

    @model_validator(mode="after")
    def _one_source(self) -> DatasetDecl:
        if self.path is not None and self.toy is not None:
            raise ValueError("give one of path: or toy:, not both")
        if self.path is None and self.toy is None and self.hf_id is None:
            raise ValueError(
                "give one of path: (a local file), toy: (a toy-world generator) or hf_id:"
            )
        if self.toy is None and self.type is None:
            raise ValueError(
                "a dataset needs type: (dataset, preference, prompts, corpus, benchmark)"
            )
        return self


assert set(STAGE_MODELS) == set(BACKENDS) == set(DATA_TYPES)

# Keys of a raw stage that composition consumes before validation.
COMPOSE_KEYS = ("preset", "matrix", "seeds")


class Pipeline(Strict):
    """The top level of a spec file (after `extends:` and profiles were applied)."""

    name: str = Field(pattern=NAME_RE, description="Pipeline name; run names are `<name>-<hash>`.")
    description: str = Field("", description="Free text.")
    workspace: str = Field(
        "results",
        description="Output directory (artifacts, index, tables); overridden by --workspace.",
    )
    data_roots: list[str] = Field(
        default_factory=list,
        description="Directories that absolute data and model paths must lie in.",
    )
    interpreters: dict[Backend, str] = Field(
        default_factory=dict,
        description="Python interpreter per backend (default: the current one).",
    )
    vars: dict[str, Any] = Field(
        default_factory=dict, description="Values substituted for ${vars.NAME}."
    )
    models: dict[str, ModelDecl] = Field(
        default_factory=dict, description="Models, declared once by name."
    )
    datasets: dict[str, DatasetDecl] = Field(
        default_factory=dict, description="Datasets, declared once by name."
    )
    methods: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named bundles of stage fields, e.g. PSFT: {kind: psft, preset: math_psft}.",
    )
    defaults: dict[str, Any] = Field(
        default_factory=dict, description="Stage fields applied to every stage whose kind has them."
    )
    stages: list[dict[str, Any]] = Field(min_length=1, description="The stages, in any order.")
    tables: list[str] = Field(
        default_factory=list, description="Result tables to print when the run ends."
    )
    max_parallel: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Nodes run at once at most (default: the CPUs available; --max-parallel wins).",
    )
    seeds: list[int] | None = Field(
        None,
        description="Seeds as a matrix axis of every training stage (sft, psft, dft, iwsft, dpo, "
        "grpo); downstream stages pair with their input's seed. A stage's own seeds: wins.",
    )
    claims: bool = Field(
        False, description="Print the paper's four claims, checked on this run, when it ends."
    )
    store: bool = Field(
        True,
        description="Share finished nodes through the store shared across workspaces "
        "($PSFT_STORE, else ~/.cache/psft-orchestrator/store; --store DIR, --no-store): a node "
        "already there is linked in, not recomputed. false: compute everything here.",
    )

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            if not v:
                raise ValueError(
                    "must be a non-empty list of seeds such as [1, 2, 3] (an empty list runs nothing)"
                )
            if any(s < 0 for s in v) or len(set(v)) != len(v):
                raise ValueError("seeds must be distinct non-negative integers")
        return v

    @field_validator("models", "datasets", "methods")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k in v:
            if not re.match(NAME_RE, k):
                raise ValueError(
                    f"name {k!r} must start with a letter and use letters, digits, _ . -"
                )
        return v
