import json

import pytest

from psft_orchestrator.data import formats
from psft_orchestrator.data.formats import FormatError, convert, detect_format, iter_rows

NUMINA = {
    "problem": "What is 2+3?",
    "solution": "2+3=5, so \\boxed{5}.",
    "answer": "5",
    "source": "toy",
}
ULTRA = {
    "prompt": "Say hi",
    "chosen": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}],
    "rejected": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "No."}],
}
VERL_RL = {
    "data_source": "dapo",
    "prompt": [{"role": "user", "content": "What is 2+3?"}],
    "ability": "math",
    "reward_model": {"style": "rule", "ground_truth": "5"},
}
SHAREGPT = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        (NUMINA, "problem_solution"),
        ({"question": "q", "response": "r"}, "problem_solution"),
        (ULTRA, "prompt_chosen_rejected"),
        ({"chosen": "a", "rejected": "b", "prompt": "p"}, "prompt_chosen_rejected"),
        (VERL_RL, "rl_prompt"),
        ({"prompt": "2+3?", "ground_truth": "5"}, "rl_prompt"),
        (SHAREGPT, "chat"),
        (
            {
                **NUMINA,
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": "y"},
                ],
            },
            "chat",
        ),
    ],
)
def test_detect_format(row, fmt):
    assert detect_format(row) == fmt


def test_detect_format_rejects_unknown_layouts():
    with pytest.raises(FormatError):
        detect_format({"text": "just a document"})


def test_problem_solution_to_dataset_row_keeps_answer_and_source():
    assert convert(NUMINA, "auto", "dataset") == {
        "messages": [
            {"role": "user", "content": "What is 2+3?"},
            {"role": "assistant", "content": "2+3=5, so \\boxed{5}."},
        ],
        "answer": "5",
        "source": "toy",
    }


def test_sharegpt_roles_are_normalised():
    assert convert(SHAREGPT, "auto", "dataset")["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]


def test_ultrafeedback_to_preference_row():
    expected = {
        "prompt": [{"role": "user", "content": "Say hi"}],
        "chosen": "Hi!",
        "rejected": "No.",
    }
    assert convert(ULTRA, "auto", "preference") == expected
    no_prompt = {
        k: v for k, v in ULTRA.items() if k != "prompt"
    }  # prompt taken from the chosen conversation
    assert convert(no_prompt, "prompt_chosen_rejected", "preference") == expected


def test_rl_rows_to_prompts_rows():
    assert convert(VERL_RL, "auto", "prompts") == {
        "prompt": [{"role": "user", "content": "What is 2+3?"}],
        "ground_truth": "5",
        "data_source": "dapo",
    }
    assert convert(NUMINA, "auto", "prompts") == {
        "prompt": [{"role": "user", "content": "What is 2+3?"}],
        "ground_truth": "5",
        "data_source": "toy",
    }


@pytest.mark.parametrize(
    ("row", "fmt", "out"),
    [
        ({"problem": "p"}, "problem_solution", "dataset"),  # no solution
        ({"messages": [{"role": "user", "content": "only a question"}]}, "chat", "dataset"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "chat", "dataset"),
        ({"prompt": "p", "answer": None}, "rl_prompt", "prompts"),
        (ULTRA, "prompt_chosen_rejected", "dataset"),
    ],
)
def test_bad_rows_raise_format_error(row, fmt, out):
    with pytest.raises(FormatError):
        convert(row, fmt, out)


def test_system_prompt_is_added_once():
    msgs = [{"role": "user", "content": "q"}]
    with_sys = formats.with_system_prompt(msgs, "S")
    assert with_sys[0] == {"role": "system", "content": "S"}
    assert formats.with_system_prompt(with_sys, "other") == with_sys
    assert formats.with_system_prompt(msgs, None) == msgs


ROWS = [{"problem": f"p{i}", "solution": f"s{i}", "answer": str(i)} for i in range(2500)]


def test_read_jsonl_parquet_and_save_to_disk_dirs(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet", row_group_size=300)
    ds = datasets.Dataset.from_list(ROWS)
    ds.save_to_disk(str(tmp_path / "ds"), max_shard_size="20KB")
    datasets.DatasetDict({"train": ds, "test": ds.select(range(3))}).save_to_disk(
        str(tmp_path / "dd")
    )
    (tmp_path / "many").mkdir()
    for i in range(0, 2500, 1000):
        pq.write_table(
            pa.Table.from_pylist(ROWS[i : i + 1000]), tmp_path / "many" / f"part-{i:05d}.parquet"
        )

    assert len(list((tmp_path / "ds").glob("*.arrow"))) > 1
    for source in ("d.jsonl", "d.parquet", "ds", "dd", "many"):
        assert list(iter_rows(tmp_path / source)) == ROWS, source


def test_iter_rows_streams(tmp_path):
    """The reader is lazy: the first row comes out of a file whose tail is not even valid JSON."""
    (tmp_path / "d.jsonl").write_text(json.dumps(ROWS[0]) + "\n{broken\n")
    rows = iter_rows(tmp_path / "d.jsonl")
    assert next(rows) == ROWS[0]
    with pytest.raises(FormatError, match=":2:"):
        next(rows)
