"""A few rows of every dataset the paper specs name, in its real hub schema (columns and configs
from each dataset card), and the row our conversion must make of the first one."""

from __future__ import annotations

from typing import Any

U, A = "user", "assistant"


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


OPENR1 = {
    "problem": "Find $x$ if $x+2=7$.",
    "solution": "Subtract 2: $x=5$.",
    "answer": "5",
    "problem_type": "Algebra",
    "question_type": "math-word-problem",
    "source": "olympiads",
    "uuid": "0c2b-1",
    "is_reasoning_complete": [True],
    "generations": ["<think>x = 7 - 2</think> \\boxed{5}"],
    "correctness_math_verify": [True],
    "correctness_count": 1,
    "messages": [msg(U, "Find $x$ if $x+2=7$."), msg(A, "<think>x = 7 - 2</think> \\boxed{5}")],
}
ULTRACHAT = {
    "prompt": "Name a primary colour.",
    "prompt_id": "a1",
    "messages": [msg(U, "Name a primary colour."), msg(A, "Red.")],
}
ULTRAFEEDBACK = {
    "prompt": "Say hi.",
    "prompt_id": "b2",
    "chosen": [msg(U, "Say hi."), msg(A, "Hi!")],
    "rejected": [msg(U, "Say hi."), msg(A, "No.")],
    "messages": [msg(U, "Say hi."), msg(A, "Hi!")],
    "score_chosen": 9.0,
    "score_rejected": 2.0,
}
DAPO = {
    "data_source": "math_dapo",
    "prompt": [msg(U, "Solve 3x=12. Answer: $Answer")],
    "ability": "MATH",
    "reward_model": {"ground_truth": "4", "style": "rule-lighteval/MATH_v2"},
    "extra_info": {"index": "9f1"},
}
MATH_ROW = {"problem": "What is $1+1$?", "answer": "2"}
MC = ["Paris", "Rome", "Madrid", "Berlin"]

# repo -> ({config: [splits]}, rows, the converted first row)
PAPER_DATASETS: dict[str, tuple[dict[str, list[str]], list[dict[str, Any]], dict[str, Any]]] = {
    "open-r1/OpenR1-Math-220k": (
        {"default": ["train"], "extended": ["train"]},
        [OPENR1],
        {
            "messages": [msg(U, OPENR1["problem"]), msg(A, OPENR1["solution"])],
            "answer": "5",
            "source": "olympiads",
        },
    ),
    "BytedTsinghua-SIA/DAPO-Math-17k": (
        {"default": ["train"]},
        [DAPO],
        {"prompt": DAPO["prompt"], "ground_truth": "4", "data_source": "math_dapo"},
    ),
    "HuggingFaceH4/ultrachat_200k": (
        {"default": ["train_sft", "test_sft", "train_gen", "test_gen"]},
        [ULTRACHAT],
        {"messages": ULTRACHAT["messages"]},
    ),
    "HuggingFaceH4/ultrafeedback_binarized": (
        {"default": ["train_prefs", "test_prefs", "train_sft", "test_sft"]},
        [ULTRAFEEDBACK],
        {"prompt": [msg(U, "Say hi.")], "chosen": "Hi!", "rejected": "No."},
    ),
    "HuggingFaceH4/aime_2024": (
        {"default": ["train"]},
        [
            {
                "id": 60,
                "problem": "Find $n$.",
                "solution": "...",
                "answer": "204",
                "url": "u",
                "year": "2024",
            }
        ],
        {"prompt": "Find $n$.", "answer": "204", "task": "math"},
    ),
    "yentinglin/aime_2025": (
        {"default": ["train"]},
        [{"id": "I-1", "problem": "Find the sum.", "answer": "70", "url": "u", "year": "2025"}],
        {"prompt": "Find the sum.", "answer": "70", "task": "math"},
    ),
    "AI-MO/aimo-validation-amc": (
        {"default": ["train"]},
        [{"id": 0, "problem": "AMC problem", "answer": 142.0, "url": "u"}],
        {"prompt": "AMC problem", "answer": "142.0", "task": "math"},
    ),
    "HuggingFaceH4/MATH-500": (
        {"default": ["test"]},
        [
            {
                **MATH_ROW,
                "solution": "$\\boxed{2}$",
                "subject": "Algebra",
                "level": 1,
                "unique_id": "t/1.json",
            }
        ],
        {"prompt": "What is $1+1$?", "answer": "2", "task": "math"},
    ),
    "Hothan/OlympiadBench": (
        {"OE_TO_maths_en_COMP": ["train"], "OE_TO_physics_en_COMP": ["train"]},
        [
            {
                "id": 1606,
                "question": "Compute $a$.",
                "solution": ["..."],
                "final_answer": ["$\\frac{1}{2}$"],
                "context": None,
                "modality": "Text-only",
                "difficulty": "Competition",
                "is_multiple_answer": False,
                "unit": None,
                "answer_type": "Numerical",
                "question_type": "Open-ended",
                "subfield": "Algebra",
                "subject": "Math",
                "language": "English",
            }
        ],
        {"prompt": "Compute $a$.", "answer": "\\frac{1}{2}", "task": "math"},
    ),
    "math-ai/minervamath": (
        {"default": ["test"]},
        [{"question": "Compute the mass.", "answer": "4.5e30"}],
        {"prompt": "Compute the mass.", "answer": "4.5e30", "task": "math"},
    ),
    "openai/gsm8k": (
        {"main": ["train", "test"], "socratic": ["train", "test"]},
        [{"question": "How many?", "answer": "6*7=<<6*7=42>>42\n#### 42"}],
        {"prompt": "How many?", "answer": "42", "task": "math"},
    ),
    "truthfulqa/truthful_qa": (
        {"generation": ["validation"], "multiple_choice": ["validation"]},
        [
            {
                "question": "Capital of France?",
                "mc1_targets": {"choices": ["Rome", "Paris"], "labels": [0, 1]},
                "mc2_targets": {"choices": ["Rome", "Paris"], "labels": [0, 1]},
            }
        ],
        {
            "prompt": "Capital of France?",
            "choices": ["Rome", "Paris"],
            "answer": "Paris",
            "task": "truthfulqa",
        },
    ),
    "allenai/ai2_arc": (
        {
            "ARC-Challenge": ["train", "validation", "test"],
            "ARC-Easy": ["train", "validation", "test"],
        },
        [
            {
                "id": "Mercury_1",
                "question": "Capital of France?",
                "choices": {"text": MC, "label": ["A", "B", "C", "D"]},
                "answerKey": "A",
            }
        ],
        {"prompt": "Capital of France?", "choices": MC, "answer": "Paris", "task": "arc"},
    ),
    "TIGER-Lab/MMLU-Pro": (
        {"default": ["test", "validation"]},
        [
            {
                "question_id": 70,
                "question": "Capital of France?",
                "options": MC,
                "answer": "A",
                "answer_index": 0,
                "cot_content": "",
                "category": "geography",
                "src": "ori_mmlu",
            }
        ],
        {"prompt": "Capital of France?", "choices": MC, "answer": "Paris", "task": "mmlu_pro"},
    ),
    "m-a-p/SuperGPQA": (
        {"default": ["train"]},
        [
            {
                "uuid": "u1",
                "question": "Capital of France?",
                "options": MC,
                "answer": "Paris",
                "answer_letter": "A",
                "discipline": "Geography",
                "field": "f",
                "subfield": "s",
                "difficulty": "easy",
                "is_calculation": False,
            }
        ],
        {"prompt": "Capital of France?", "choices": MC, "answer": "Paris", "task": "supergpqa"},
    ),
    "Idavidrein/gpqa": (
        {c: ["train"] for c in ("gpqa_diamond", "gpqa_main", "gpqa_extended", "gpqa_experts")},
        [
            {
                "Question": "Capital of France?",
                "Correct Answer": "Paris",
                "Incorrect Answer 1": "Rome",
                "Incorrect Answer 2": "Madrid",
                "Incorrect Answer 3": "Berlin",
                "Explanation": "...",
                "Subdomain": "Geography",
            }
        ],
        {"prompt": "Capital of France?", "answer": "Paris", "task": "gpqa"},  # choices: shuffled
    ),
    "dvilares/head_qa": (
        {"es": ["train", "validation", "test"], "en": ["train", "validation", "test"]},
        [
            {
                "name": "Cuaderno_2013_1_B",
                "year": "2013",
                "category": "biology",
                "qid": 1,
                "qtext": "Capital of France?",
                "ra": 3,
                "answers": [
                    {"aid": i + 1, "atext": t}
                    for i, t in enumerate(["Rome", "Madrid", "Paris", "Berlin"])
                ],
            }
        ],
        {
            "prompt": "Capital of France?",
            "choices": ["Rome", "Madrid", "Paris", "Berlin"],
            "answer": "Paris",
            "task": "head_qa",
        },
    ),
    "google/IFEval": (
        {"default": ["train"]},
        [
            {
                "key": 1000,
                "prompt": "Write a haiku in lowercase, without commas.",
                "instruction_id_list": [
                    "change_case:english_lowercase",
                    "punctuation:no_comma",
                    "detectable_format:title",
                ],
                "kwargs": [{"num_words": None}, {"num_words": None}, {"num_words": None}],
            }
        ],
        {
            "prompt": "Write a haiku in lowercase, without commas.",
            "checks": [{"type": "lowercase"}, {"type": "no_comma"}],
            "unchecked": ["detectable_format:title"],
            "task": "ifeval",
        },
    ),
    "tatsu-lab/alpaca_eval": (
        {"alpaca_eval": ["eval"], "alpaca_eval_gpt4_baseline": ["eval"]},
        [
            {
                "instruction": "Say hi.",
                "output": "Hello!",
                "generator": "gpt4_1106_preview",
                "dataset": "helpful_base",
            }
        ],
        {"prompt": "Say hi.", "reference": "Hello!", "task": "alpaca_eval"},
    ),
    "lmarena-ai/arena-hard-auto-v0.1": (
        {"default": ["train"]},
        [
            {
                "question_id": "q1",
                "category": "arena-hard-v0.1",
                "cluster": "c",
                "turns": [{"content": "Plan a trip."}],
            }
        ],
        {"prompt": "Plan a trip.", "task": "benchmark"},
    ),
    "HuggingFaceH4/mt_bench_prompts": (
        {"default": ["train"]},
        [
            {
                "prompt": ["Write a poem.", "Now shorten it."],
                "prompt_id": 1,
                "category": "writing",
                "reference": [],
            }
        ],
        {
            "prompt": "Write a poem.",
            "turns": ["Write a poem.", "Now shorten it."],
            "task": "benchmark",
        },
    ),
}

# Declarations the real data cannot satisfy, and what --plan says about them.
UNSUPPORTED = {
    "MTBench_2turn": "no split 'turn2'; it has ['train']",
    # The hub dataset holds the 500 questions only; the baseline answers live in the GitHub repo.
    "ArenaHard_baseline": "no split 'baseline'; it has ['train']",
}
