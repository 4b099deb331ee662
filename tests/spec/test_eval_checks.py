"""--plan refuses, with exit 2 at the stage's file:line, what an eval node could only find out
at run time: vLLM missing from its interpreter, a malformed judge URL, an unset API key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from psft_orchestrator.cli.run import main

SPEC = """name: judged
models:
  m: {{toy: micro}}
datasets:
  b: {{toy: ifeval_bench, n: 4}}
{interpreters}
stages:
  - name: eval
    kind: eval
    backend: {backend}
    model: m
    suites:
      - {{type: judge, benchmarks: [b], judge: {judge}}}
"""
NO_VLLM = f"interpreters: {{vllm: {sys.executable}}}"  # the main environment has no vllm


def _plan(
    tmp_path: Path, capsys, backend="native", judge="rules", interpreters=""
) -> tuple[int, str]:
    spec = tmp_path / "judged.yaml"
    spec.write_text(SPEC.format(backend=backend, judge=judge, interpreters=interpreters))
    rc = main([str(spec), "--plan", "--workspace", str(tmp_path / "ws")])
    err = capsys.readouterr().err
    assert not (tmp_path / "ws" / "artifacts").exists()
    return rc, err


def test_vllm_backend_without_vllm_is_refused_at_its_stage(tmp_path, capsys):
    rc, err = _plan(tmp_path, capsys, backend="vllm", interpreters=NO_VLLM)
    assert rc == 2
    assert f"{tmp_path / 'judged.yaml'}:8" in err  # the stage's line
    assert "eval.backend" in err and err.count("error:") == 1 and "has no 'vllm' module" in err


def test_served_judge_without_vllm_is_refused(tmp_path, capsys):
    rc, err = _plan(tmp_path, capsys, judge="{serve: m}", interpreters=NO_VLLM)
    assert rc == 2 and "judge serve needs vLLM" in err


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8000/v1", "ftp://judge.example/v1", "http:///v1", "http://host:port/v1"]
)
def test_malformed_endpoint_is_refused(tmp_path, capsys, url):
    rc, err = _plan(tmp_path, capsys, judge=f"{{endpoint: '{url}', model: j}}")
    assert rc == 2 and "suites[0].judge.endpoint" in err


def test_unset_api_key_env_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PSFT_TEST_JUDGE_KEY", raising=False)
    judge = "{endpoint: 'http://127.0.0.1:9/v1', model: j, api_key_env: PSFT_TEST_JUDGE_KEY}"
    rc, err = _plan(tmp_path, capsys, judge=judge)
    assert rc == 2 and "PSFT_TEST_JUDGE_KEY is not set" in err
    monkeypatch.setenv("PSFT_TEST_JUDGE_KEY", "sk-test")
    rc, _ = _plan(tmp_path, capsys, judge=judge)
    assert rc == 0


def test_judge_needs_one_source(tmp_path, capsys):
    rc, err = _plan(tmp_path, capsys, judge="{model: j}")
    assert rc == 2 and "exactly one of `endpoint`" in err


def test_lmeval_suite_on_vllm_needs_lm_eval_there(tmp_path, capsys):
    # An interpreter that has vllm but no lm_eval, as .venv-vllm is.
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\ncase "$2" in *lm_eval*) exit 1;; *) exit 0;; esac\n')
    python.chmod(0o755)
    spec = tmp_path / "tax.yaml"
    spec.write_text(
        SPEC.format(backend="vllm", judge="rules", interpreters=f"interpreters: {{vllm: {python}}}")
        + "      - {type: lmeval, benchmarks: [b]}\n"
    )
    rc = main([str(spec), "--plan", "--workspace", str(tmp_path / "ws")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{spec}:8: eval.suites" in err, err
    assert "needs lm-eval" in err and "has no 'vllm' module" not in err
