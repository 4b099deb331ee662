"""vLLM for real, in its own environment (.venv-vllm): the eval backend on the toy model against
the native backend's greedy answers, and `vllm serve` as a judge that is stopped even when the
node fails. Slow: vLLM starts in tens of seconds on an idle CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import write_jsonl

from psft_orchestrator.contract import InputRef, Job
from psft_orchestrator.data.toy.tasks import generate
from psft_orchestrator.envs import has_module, vllm_python
from psft_orchestrator.evals.judge_api import ApiChat, server_pids, vllm_server
from psft_orchestrator.evals.judges import LLMJudge, RateItem

pytestmark = pytest.mark.slow
VLLM = vllm_python()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny toy model (head size 32: vLLM's CPU attention has no kernel for micro's 12)."""
    why = has_module(VLLM, "vllm")
    if why:
        pytest.fail(f"the vLLM environment is missing ({why}); build it with `make setup`")
    from psft_orchestrator.data.toy.model import make_tiny_model

    path = tmp_path_factory.mktemp("tiny") / "model"
    make_tiny_model(path, size="tiny", seed=0)
    return path


def _eval_job(tmp_path, model, backend: str) -> Job:
    bench = write_jsonl(tmp_path / "bench.jsonl", list(generate("ifeval_bench", 12, seed=5)))
    node = tmp_path / backend
    node.mkdir()
    suites = [{"type": "rules", "benchmarks": ["ifeval"], "temperature": 0.0, "max_new_tokens": 24}]
    return Job(
        node_id="eval", stage="eval", kind="eval", backend=backend, fingerprint="0" * 64,
        config={"suites": suites}, node_dir=str(node), checkpoint_dir=str(tmp_path / "ckpt"),
        inputs={"model": InputRef(type="model", path=str(model)),
                "benchmarks": [InputRef(type="benchmark", path=str(bench), name="ifeval")]},
        output_type="eval",
    )  # fmt: skip


def _run_worker(python: str, job: Job) -> list[dict]:
    job.save(job.out / "job.json")
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [python, "-m", "psft_orchestrator.backends.worker", str(job.out / "job.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((job.out / "outputs" / "scores.json").read_text())


def test_vllm_greedy_scores_agree_with_native(tiny, tmp_path):
    native = _run_worker(sys.executable, _eval_job(tmp_path, tiny, "native"))
    vllm = _run_worker(VLLM, _eval_job(tmp_path, tiny, "vllm"))
    samples = {}
    for backend in ("native", "vllm"):
        path = tmp_path / backend / "outputs" / "samples" / "ifeval.jsonl"
        samples[backend] = [json.loads(x)["completion"] for x in path.read_text().splitlines()]
    mismatch = sum(a != b for a, b in zip(*samples.values(), strict=True)) / len(samples["native"])
    print(f"greedy completions that differ between native and vLLM: {mismatch:.0%}")
    assert mismatch <= 0.25, f"mismatch rate {mismatch:.0%}"
    by_metric = {s["metric"]: s for s in native}
    for row in vllm:
        assert row["protocol"]["backend"] == "vllm"
        assert row["value"] == pytest.approx(by_metric[row["metric"]]["value"], abs=100 * mismatch)


def test_served_judge_grades_and_is_stopped_when_the_node_fails(tiny, tmp_path):
    pgid = None
    with (
        pytest.raises(RuntimeError, match="the node failed"),
        vllm_server(
            str(tiny), VLLM, tmp_path / "serve.log", extra_args=["--max-model-len", "1024"]
        ) as url,
    ):
        pgid = server_pids[url]
        chat = ApiChat(url, str(tiny), concurrency=4, max_tokens=16)
        chat.probe()
        verdicts = LLMJudge(chat, "Rate the answer.", guided=True).rate(
            [RateItem("Say hi.", "hi")] * 4
        )
        assert all(1.0 <= v.value <= 10.0 for v in verdicts), [v.reply for v in verdicts]
        raise RuntimeError("the node failed")
    assert pgid is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)  # nothing of the server's process group is left
