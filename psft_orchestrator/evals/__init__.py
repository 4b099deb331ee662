"""Evaluation: answer checking and eval suites (no heavy imports at package import).

config.py    MathSuite | LMEvalSuite | RulesSuite | JudgeSuite, EvalConfig
generate.py  batched, seeded sampling (k completions per prompt), length-grouped
decoders.py  KV-cache decode steps (static buffers for Llama-style models) behind generate.py
math.py      avg@k / pass@k            rules.py  IFEval strict/loose + exact match (exact.py)
judge.py     rule-based and HF-model judges, score + pairwise win rate
lmeval.py    all lm-eval code: task YAMLs, running the harness, result parsing
records.py   benchmark rows in, per-sample audit records out
run.py       run_eval(job) for eval nodes, evaluate_model(...) for in-training evals
"""
