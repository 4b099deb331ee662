"""Fields of the `filter` stage (the spec schema inherits this model; `data.filter` reads it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from psft_orchestrator.identity import param, setting

InputFormat = Literal["auto", "chat", "problem_solution", "prompt_chosen_rejected", "rl_prompt"]


class FilterConfig(BaseModel):
    """Convert a source dataset to the project's row format and drop rows that should not be trained on."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    input_format: InputFormat = param(
        "auto",
        description="Row layout of the source; auto = detect from the first row's keys (data.formats).",
    )
    verify_answers: bool = param(
        True,
        description="Drop rows whose final \\boxed{} answer Math-Verify cannot match to the row's reference answer "
        "(rows without a reference answer are kept).",
    )
    max_length: int | None = param(
        None,
        ge=1,
        le=10_000_000,
        description="Drop rows longer than this many tokens (model's tokenizer + chat template); needs a `model` input.",
    )
    dedupe: bool = param(
        True, description="Drop exact duplicates (after conversion and system prompt)."
    )
    system_prompt: str | None = param(
        None, description="System message prepended to every conversation that has none."
    )
    keep_dropped_samples: int = param(
        20,
        ge=0,
        le=100_000,
        description="Dropped rows kept per reason in dropped_samples.jsonl, for auditing.",
    )
    num_workers: int | None = setting(
        None, ge=1, le=1024, description="Worker processes (None = all cores; 1 = in-process)."
    )
    chunk_size: int = param(512, ge=1, le=1_000_000, description="Rows per task sent to a worker.")
    limit: int | None = param(
        None, ge=1, description="Read only the first N source rows (smoke runs)."
    )
