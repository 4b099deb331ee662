import pytest
from pydantic import TypeAdapter, ValidationError

from psft_orchestrator.configs.evals import (
    EvalConfig,
    JudgeSuite,
    LMEvalSuite,
    MathSuite,
    RulesSuite,
    Suite,
)


def test_suites_are_discriminated_on_type():
    cfg = EvalConfig.model_validate(
        {
            "suites": [
                {"type": "math", "benchmarks": ["aime"]},
                {"type": "lmeval", "tasks": ["gsm8k_cot"]},
                {"type": "rules", "benchmarks": ["ifeval"], "k": 8},
                {"type": "judge", "benchmarks": ["alpaca"], "judge": "/models/judge"},
            ]
        }
    )
    assert [type(s) for s in cfg.suites] == [MathSuite, LMEvalSuite, RulesSuite, JudgeSuite]
    math = cfg.suites[0]
    assert (math.k, math.temperature, math.top_p, math.max_new_tokens, math.seed) == (
        8,
        0.7,
        0.95,
        10240,
        0,
    )
    assert (
        math.system_prompt
        == "Please reason step by step, and put your final answer within \\boxed{}."
    )
    assert cfg.suites[2].max_new_tokens == 4096


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "math", "benchmarks": ["a"], "temprature": 0.5},  # typo -> extra field
        {"type": "math", "benchmarks": []},
        {"type": "math", "benchmarks": ["a"], "top_p": 0},
        {"type": "math", "benchmarks": ["a"], "k": 0},
        {"type": "lmeval"},  # nothing to run
        {"type": "lmeval", "tasks": ["x"], "backend": "sglang"},
        {"type": "bleu", "benchmarks": ["a"]},
    ],
)
def test_invalid_suites_are_rejected(bad):
    with pytest.raises(ValidationError):
        TypeAdapter(Suite).validate_python(bad)


def test_every_field_is_documented():
    for model in (MathSuite, LMEvalSuite, RulesSuite, JudgeSuite):
        for name, field in model.model_fields.items():
            assert name == "type" or field.description, (
                f"{model.__name__}.{name} has no description"
            )
