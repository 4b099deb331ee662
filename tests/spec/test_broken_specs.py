"""The broken-spec corpus: every file under broken/ must fail with its expected message and line.

Each file starts with `# expect: <substring of the message>` and `# line: <N>` (0: no line).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from psft_orchestrator.plan.planner import build_plan
from psft_orchestrator.spec.errors import SpecError

BROKEN = sorted((Path(__file__).parent / "broken").glob("*.yaml"))
# Files that cannot carry a header comment.
HEADERLESS = {"18_binary.yaml": ("binary file (contains NUL bytes)", 0)}


def expectation(path: Path) -> tuple[str, int]:
    if path.name in HEADERLESS:
        return HEADERLESS[path.name]
    text = path.read_text()
    expect = re.search(r"^# expect: (.+)$", text, re.M)
    line = re.search(r"^# line: (\d+)$", text, re.M)
    assert expect and line, f"{path.name} lacks its # expect: / # line: header"
    return expect.group(1), int(line.group(1))


def test_corpus_is_large_enough():
    assert len(BROKEN) >= 30


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_spec_message(path: Path, tmp_path: Path):
    expected, line = expectation(path)
    with pytest.raises(SpecError) as info:
        build_plan(path, workspace=tmp_path / "ws")
    message = info.value.render()
    assert expected in message, message
    if line:
        assert f"{path}:{line}:" in message, f"expected {path}:{line} in:\n{message}"
    assert not (tmp_path / "ws").exists(), "an invalid spec must not write anything"


def test_cli_exit_status_2_and_nothing_written(tmp_path: Path):
    path = next(p for p in BROKEN if p.stem.startswith("03_"))
    ws = tmp_path / "ws"
    proc = subprocess.run(
        [sys.executable, "-m", "psft_orchestrator.cli.run", str(path), "--workspace", str(ws)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "unknown key 'learning_rate'" in proc.stderr
    assert f"{path}:14" in proc.stderr
    assert not ws.exists()
