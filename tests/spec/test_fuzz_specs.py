"""Property-based fuzzing of the shipped specs: no mutation may crash `psft-run --plan`.

Each example takes a spec from specs/, applies a few mutations to its text (delete, duplicate
or retype a key, swap two values, insert unicode or control characters, truncate the file) and
plans it through the CLI's `main`. It must either plan (exit 0) or exit 2 with a message that
names the file and line; never a traceback, never exit 1, and never a file written.

PSFT_FUZZ_EXAMPLES (default 60) sets how many examples; PSFT_FUZZ_SEED makes a run repeatable.
The examples it found are kept below as regular cases (`FOUND`).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from psft_orchestrator.cli.run import main

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "specs").glob("*.yaml"))
KEY_LINE = re.compile(r"^(\s*(?:- )?[\w.-]+:\s+)(\S.*)$")
VALUES = ["[]", "{}", "-1", "0", "1e309", "'text'", "true", "null", "~", "[1, 2]", "{a: 1}",
          ".nan", "99999999999999999999", "!!binary aGVsbG8=", "&a 1", "*a", "${vars.nope}",
          "'{method}->X'", "- x", ": :", "[", "{", "'", '"\\x"', "-1e-3"]  # fmt: skip
ODD_CHARS = "\x00\x01\x07\x08\x0b\x0c\x1b\x7f\x85\xa0\u2028\u2029\u202e\ufeff\ufffdé😀𝔘\t\r\n:#&*!|>%@`'\"{}[],-"


def key_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if KEY_LINE.match(line)]


@st.composite
def mutation(draw, text: str) -> str:
    """One mutation of a spec's text."""
    lines = text.splitlines(keepends=True)
    keyed = key_lines(lines)
    op = draw(st.sampled_from(["delete", "duplicate", "retype", "swap", "insert", "truncate"]))
    if op in ("delete", "duplicate", "retype", "swap") and keyed:
        i = draw(st.sampled_from(keyed))
        head, value = KEY_LINE.match(lines[i].rstrip("\n")).groups()
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i + 1, lines[i])
        elif op == "retype":
            lines[i] = head + draw(st.sampled_from(VALUES)) + "\n"
        else:
            j = draw(st.sampled_from(keyed))
            head_j, value_j = KEY_LINE.match(lines[j].rstrip("\n")).groups()
            lines[i], lines[j] = head + value_j + "\n", head_j + value + "\n"
        return "".join(lines)
    pos = draw(st.integers(0, len(text)))
    if op == "truncate":
        return text[:pos]
    return text[:pos] + draw(st.text(alphabet=ODD_CHARS, min_size=1, max_size=4)) + text[pos:]


@st.composite
def mutated_spec(draw) -> tuple[str, str, list[str]]:
    """(spec name, mutated text, profile flags)."""
    path = draw(st.sampled_from(SPECS))
    text = path.read_text()
    for _ in range(draw(st.integers(1, 3))):
        text = draw(mutation(text))
    # Without a profile, the math specs plan verl nodes (verl's own config checks: slow).
    profiles = (
        [["--profile", "toy"]] if path.stem.startswith("math_") else [[], ["--profile", "toy"]]
    )
    return path.name, text, draw(st.sampled_from(profiles))


def plan_text(tmp: Path, name: str, text: str, flags: list[str]) -> None:
    """Plan `text` as specs/<name> through the CLI; assert the outcome is allowed."""
    spec = tmp / name
    spec.write_bytes(text.encode("utf-8", "surrogateescape"))  # \udcff: a lone 0xff byte
    ws = tmp / "ws"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(spec), "--plan", "--workspace", str(ws), *flags])
    message = err.getvalue()
    assert code in (0, 2), f"exit {code}\n{message}"
    assert "Traceback" not in message, message
    if code == 2:
        assert message.startswith("error: "), message
        # The line is in the spec, or in a preset or template it names.
        where = re.search(r"\S+\.ya?ml:\d+", message)
        assert where or (str(spec) in message and not _has_content(text)), message
    assert sorted(p.name for p in tmp.iterdir()) == [name], "planning wrote a file"
    spec.unlink()


def _has_content(text: str) -> bool:
    """Anything but blank lines and comments (an empty spec has no line to point at)."""
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


FUZZ = settings(
    max_examples=int(os.environ.get("PSFT_FUZZ_EXAMPLES", "60")),
    deadline=None,
    database=None,
    # No shrinking: on these texts it takes minutes, and 1-3 mutations are readable as they are.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def repeatable(test):
    """PSFT_FUZZ_SEED=N: the same examples every time."""
    n = os.environ.get("PSFT_FUZZ_SEED")
    return seed(int(n))(test) if n else test


@repeatable
@FUZZ
@given(case=mutated_spec())
def test_mutated_specs_plan_or_exit_2(case, tmp_path_factory):
    plan_text(tmp_path_factory.mktemp("fuzz"), *case)


# Examples the fuzzer found (each once crashed planning), kept as regular cases:
# (spec, line substring to find, replacement line or None to delete, profile flags).
TOY = ["--profile", "toy"]
FOUND: list[tuple[str, str, str | None, list[str]]] = [
    # a stage named by a list: the profile's merge by stage name raised TypeError
    ("ablations.yaml", "  - name: clip", "  - name: []", TOY),
    # a mapping as the kind: TypeError (unhashable) in the planner
    ("math_psft.yaml", "    kind: filter", "    kind: {hf_id: allenai/ai2_arc}", TOY),
    # a profile that is not a mapping: AttributeError in the merge
    ("demo.yaml", "  toy: {}", "  toy: ${vars.nope}", TOY),
    # vars that are not a mapping (here from the profile): AttributeError
    ("ablations.yaml", "    vars: {k: 2}", "    vars: [1, 2]", TOY),
    # a control character: YAML's reader error had a position, no line
    ("alignment_dpo.yaml", "name: alignment_dpo", "name: align\x07ment_dpo", []),
    # a NUL byte, and bytes that are not UTF-8: no line either
    ("demo.yaml", "name: demo", "name: de\x00mo", []),
    ("demo.yaml", "name: demo", "name: de\udcffmo", []),
]


@pytest.mark.parametrize("spec,find,replace,flags", FOUND)
def test_found_examples(tmp_path: Path, spec: str, find: str, replace: str | None, flags):
    lines = (REPO / "specs" / spec).read_text().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if find in line)
    lines[i : i + 1] = [] if replace is None else [replace + "\n"]
    plan_text(tmp_path, spec, "".join(lines), flags)
