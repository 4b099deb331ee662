"""`resources:` as Ray understands it: bad values are refused at --plan (file:line, exit 2,
nothing written); the placement check's verdicts on a described cluster."""

from __future__ import annotations

import pytest

from psft_orchestrator.configs.stages import Resources
from psft_orchestrator.run.cluster import ClusterNode, demand, ray_options, why_unplaceable

from .conftest import SMALL, psft_run


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (
            "{custom: {CPU: 1}}",
            "'CPU' is not a custom resource; use cpus:, gpus: or accelerator_type:",
        ),
        ("{custom: {big_mem: -1}}", "custom resource 'big_mem': amount must be > 0"),
        ("{custom: {'bad name': 1}}", "custom resource name 'bad name' must start with"),
        ("{accelerator_type: 'H 100'}", "accelerator_type"),
        ("{tpus: 1}", "tpus"),
    ],
)
def test_bad_resources_are_refused_at_plan_with_file_and_line(
    tmp_path, fake_env, resources, message
):
    text = SMALL.read_text().replace(
        "    matrix: {method: [SFT, PSFT]}\n",
        f"    matrix: {{method: [SFT, PSFT]}}\n    resources: {resources}\n",
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    line = text.splitlines().index(f"    resources: {resources}") + 1
    for args in (["--plan"], []):
        proc = psft_run(str(spec), "--workspace", str(tmp_path / "ws"), *args, env=fake_env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"{spec}:{line}" in proc.stderr and message in proc.stderr, proc.stderr
    assert not (tmp_path / "ws").exists()


HEAD = ClusterNode(
    "a" * 56, "head", "10.0.0.1", {"CPU": 8.0, "GPU": 4.0, "accelerator_type:A100": 1.0}
)
SIDE = ClusterNode("b" * 56, "side", "10.0.0.2", {"CPU": 2.0, "big_mem": 1.0})


@pytest.mark.parametrize(
    ("resources", "verdict"),
    [
        ({"gpus": 4, "cpus": 8}, None),
        ({"custom": {"big_mem": 1}}, None),
        ({"accelerator_type": "A100", "gpus": 2}, None),
        ({"gpus": 8}, "stage sft asks for 8 GPUs; the largest node has 4"),
        ({"cpus": 16}, "stage sft asks for 16 CPUs; the largest node has 8"),
        (
            {"custom": {"big_mem": 2}},
            "asks for 2 of custom resource 'big_mem'; the largest node has 1",
        ),
        (
            {"accelerator_type": "H100"},
            "asks for accelerator_type H100; the cluster's nodes have A100",
        ),
        ({"gpus": 1, "custom": {"big_mem": 1}}, "no node has all of it"),
    ],
)
def test_placement_verdicts(resources, verdict):
    why = why_unplaceable("sft", demand(Resources(**resources)), [HEAD, SIDE])
    assert (why is None) if verdict is None else (verdict in why), why


def test_ray_options_carry_custom_resources_and_accelerator_type():
    options = ray_options(Resources(cpus=2, custom={"big_mem": 1}, accelerator_type="H100"), 1.0)
    assert options == {
        "num_cpus": 2.0,
        "num_gpus": 1.0,
        "resources": {"big_mem": 1.0},
        "accelerator_type": "H100",
    }
    assert why_unplaceable("x", demand(Resources()), []) == (
        "stage x cannot run: the Ray cluster has no alive node"
    )
