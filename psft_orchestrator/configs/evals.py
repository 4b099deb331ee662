"""Eval suites as typed pydantic models, discriminated on `type`.

An eval stage runs a list of suites over benchmark datasets declared in the spec (rows in the
`benchmark` format, see docs/architecture.md). The spec schema inherits these models, and
`evals.run` reads them. Defaults follow the paper's protocol (shared/reference/methods.md).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from psft_orchestrator.identity import param

MATH_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
ASSISTANT_SYSTEM_PROMPT = "You are a helpful assistant."

DEFAULT_RUBRIC = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Consider helpfulness, relevance, accuracy, "
    "depth and level of detail. Be as objective as possible. After a short explanation, rate the "
    'response on a scale of 1 to 10 by strictly following this format: "Rating: [[5]]".'
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Sampling(_Strict):
    """Generation settings shared by the suites that sample completions themselves."""

    benchmarks: list[str] = Field(
        min_length=1, description="Names of declared benchmark datasets to run."
    )
    name: str | None = Field(None, description="Label of the suite in scores (default: its type).")
    k: int = Field(1, ge=1, le=1024, description="Completions sampled per problem (avg@k, pass@k).")
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(
        10240, ge=1, le=1_000_000, description="Cap on generated tokens per completion."
    )
    seed: int = Field(
        0, ge=0, description="Sampling seed; same model + seed + batch_size = same completions."
    )
    batch_size: int = Field(8, ge=1, le=4096, description="Sequences generated together.")
    system_prompt: str | None = Field(
        None,
        description="System message prepended to prompts that have none (None = no system message).",
    )
    limit: int | None = Field(
        None, ge=1, description="Evaluate only the first N problems of each benchmark."
    )

    @property
    def label(self) -> str:
        return self.name or self.type  # type: ignore[attr-defined]


class MathSuite(_Sampling):
    """In-domain math: k samples per problem, last \\boxed{} checked with Math-Verify; avg@k and pass@k."""

    type: Literal["math"] = Field("math", description="Suite type: math, lmeval, rules or judge.")
    k: int = Field(8, ge=1, le=1024, description="Completions sampled per problem (avg@k, pass@k).")
    system_prompt: str | None = Field(
        MATH_SYSTEM_PROMPT, description="System message for every problem."
    )


class RulesSuite(_Sampling):
    """IFEval-style instruction following (rows with `checks`: strict/loose accuracy) and
    exact-match / multiple-choice rows (rows with `answer`, optional `choices`)."""

    type: Literal["rules"] = Field("rules", description="Suite type: math, lmeval, rules or judge.")
    max_new_tokens: int = Field(
        4096, ge=1, le=1_000_000, description="Cap on generated tokens (paper: 4096)."
    )


class JudgeAPI(_Strict):
    """An LLM judge behind an OpenAI-compatible API: a running server (`endpoint` + `model`), or
    `vllm serve` started for the node (`serve`: a declared model name)."""

    endpoint: str | None = Field(
        None, description="Base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1."
    )
    model: str | None = Field(None, description="Model name the endpoint serves.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key (checked at --plan)."
    )
    serve: str | None = Field(
        None,
        description="Declared model (models:) to serve with `vllm serve` on 127.0.0.1 for this node.",
    )
    serve_args: list[str] = Field(
        default_factory=list, description="Extra `vllm serve` arguments (e.g. --max-model-len)."
    )
    concurrency: int = Field(8, ge=1, le=512, description="Judge requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="Timeout of one judge request.")
    retries: int = Field(3, ge=0, le=20, description="Retries of a failed judge request.")
    guided: bool = Field(
        False,
        description="Constrain replies to the verdict format (vLLM structured outputs); for small judges.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> JudgeAPI:
        if (self.endpoint is None) == (self.serve is None):
            raise ValueError("a judge needs exactly one of `endpoint` (with `model`) or `serve`")
        if self.endpoint is not None and not self.model:
            raise ValueError("a judge `endpoint` needs `model` (the name the server serves)")
        return self

    @property
    def kind(self) -> str:
        return "vllm-serve" if self.serve else "api"


JudgeProtocol = Literal["score", "mt_bench", "arena_hard", "alpaca_eval"]
# What each protocol reports (evals/judge.py); LLM judges add "unparsed".
PROTOCOL_METRICS: dict[str, tuple[str, ...]] = {
    "score": ("score", "win_rate"),
    "mt_bench": ("turn1", "turn2", "score"),
    "arena_hard": ("win_rate",),
    "alpaca_eval": ("win_rate", "lc_win_rate"),
}


class JudgeSuite(_Sampling):
    """Open-ended answers graded by a judge: mean score and, with reference answers, pairwise win rate."""

    type: Literal["judge"] = Field("judge", description="Suite type: math, lmeval, rules or judge.")
    max_new_tokens: int = Field(
        2048, ge=1, le=1_000_000, description="Cap on generated tokens per answer."
    )
    system_prompt: str | None = Field(
        ASSISTANT_SYSTEM_PROMPT, description="System message for every prompt."
    )
    judge: str | JudgeAPI = Field(
        "rules",
        description='"rules" (rule-based grader using each row\'s answer/checks), the path of a local '
        "HF model, or an API judge {endpoint, model, api_key_env} / {serve: MODEL}.",
    )
    protocol: JudgeProtocol = Field(
        "score",
        description="score: rating (0-100) and win rate vs references; mt_bench: 1-10 ratings of "
        "turn 1 and turn 2 (turn 2 asked with turn 1 in context); arena_hard: pairwise win rate "
        "vs baseline answers, judged in both orders; alpaca_eval: win rate and length-controlled "
        "win rate vs reference answers (both orders).",
    )
    reference: str | None = Field(
        None,
        description="Declared benchmark dataset holding reference answers (`prompt`, `answer`) for the win "
        "rate; None = use each row's own `reference` field when present.",
    )
    rubric: str = Field(
        DEFAULT_RUBRIC, description="Instruction given to a model judge for single-answer grading."
    )
    judge_max_new_tokens: int = Field(
        512, ge=1, le=32768, description="Cap on a model judge's output."
    )


class LMEvalSuite(_Strict):
    """Benchmarks run through lm-evaluation-harness 0.4.13 (in the backend's subprocess)."""

    type: Literal["lmeval"] = Field(
        "lmeval", description="Suite type: math, lmeval, rules or judge."
    )
    name: str | None = Field(None, description="Label of the suite in scores (default: its type).")
    tasks: list[str] = Field(
        default_factory=list, description="lm-eval task names from its registry (e.g. gsm8k_cot)."
    )
    benchmarks: list[str] = Field(
        default_factory=list,
        description="Declared local benchmark datasets, wired in as generated task YAMLs.",
    )
    num_fewshot: int | None = Field(
        None, ge=0, le=64, description="Few-shot examples (None = task default)."
    )
    batch_size: int = Field(4, ge=1, le=4096, description="lm-eval batch size.")
    limit: int | None = Field(
        None, ge=1, description="Evaluate only the first N documents of each task."
    )
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="lm-eval model type; vllm needs a GPU."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="Model dtype for lm-eval."
    )
    max_gen_toks: int = Field(
        256, ge=1, le=1_000_000, description="Generation cap of the generated local tasks."
    )
    system_prompt: str | None = Field(None, description="System instruction passed to lm-eval.")
    apply_chat_template: bool = Field(
        True, description="Render prompts with the model's chat template."
    )

    @property
    def label(self) -> str:
        return self.name or self.type

    @model_validator(mode="after")
    def _something_to_run(self) -> LMEvalSuite:
        if not self.tasks and not self.benchmarks:
            raise ValueError("an lmeval suite needs `tasks` or `benchmarks`")
        return self


Suite = Annotated[MathSuite | LMEvalSuite | RulesSuite | JudgeSuite, Field(discriminator="type")]


class EvalConfig(_Strict):
    """The `eval` stage's fields: the suites to run over the declared benchmarks."""

    suites: list[Suite] = param(
        min_length=1, description="Suites run in order; each yields ScoreRows."
    )
