"""A declared hub dataset missing from the cache fails --plan at its declaration's file:line.

Found by the spec fuzzer: deleting a toy profile's override left `hf_id: google/IFEval`, and the
message named no line."""

import subprocess
import sys


def test_missing_hub_dataset_names_its_line(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\n"
        "models:\n"
        "  m: {toy: micro}\n"
        "datasets:\n"
        "  bench: {hf_id: nobody/not-in-this-cache, type: benchmark}\n"
        "stages:\n"
        "  - name: eval\n"
        "    kind: eval\n"
        "    model: m\n"
        "    suites: [{type: rules, benchmarks: [bench]}]\n"
    )
    env_cache = tmp_path / "hf"
    env_cache.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "psft_orchestrator.cli.run", str(spec), "--plan",
         "--workspace", str(tmp_path / "ws")],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(env_cache),
             "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"{spec}:5: datasets.bench" in proc.stderr, proc.stderr
    assert "huggingface-cli download nobody/not-in-this-cache" in proc.stderr
    assert not (tmp_path / "ws").exists()
