"""Judged suites: generate answers, grade them with a judge (evals/judges.py), by protocol.

- `score` (default): each answer rated 1-10 (reported x10, 0-100) and, when reference answers
  exist, a pairwise win rate against them.
- `mt_bench`: MT-Bench single-answer grading of turn 1 and of turn 2; turn 2 is generated with
  the turn-1 exchange in context and graded with MT-Bench's multi-turn template. Rows give their
  two user turns as `turns: [q1, q2]` (or a `prompt` list of two strings); per-turn rules for
  the rule judge as `turn_checks: [[...], [...]]`. Metrics `turn1`, `turn2`, `score` on 1-10.
- `arena_hard`: every answer against the baseline model's answer (the `reference` benchmark
  or the row's `reference`), asked in both orders; each order is one game. Metric `win_rate`.
- `alpaca_eval`: against the reference answers, both orders averaged per instruction; metrics
  `win_rate` and `lc_win_rate` (evals/length_control.py).

LLM judges also report `unparsed` (percent of replies without a verdict). Every judge prompt and
reply is stored per sample in outputs/samples/<benchmark>.jsonl; every ScoreRow carries the
protocol (backend, sampling, k, judge kind/model, versions).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from psft_orchestrator.configs.evals import JudgeAPI, JudgeSuite
from psft_orchestrator.contract import ScoreRow
from psft_orchestrator.evals.generate import as_messages, generate, sampling_params

# Re-exported: the parsers are part of this module's interface.
from psft_orchestrator.evals.judges import (  # noqa: F401
    HFChat,
    Judge,
    LLMJudge,
    PairItem,
    RateItem,
    RuleJudge,
    Verdict,
    parse_score,
    parse_verdict,
)
from psft_orchestrator.evals.records import SampleWriter, prompt_text, read_benchmark


class ServedJudges:
    """The `vllm serve` judges of one eval node. Suites that name the same served model with the
    same arguments share one server, started when a suite first needs it; every server is
    stopped, with its process group, when the block ends (failed or not)."""

    def __init__(self, judge_models: dict[str, str], work_dir: Path | None):
        self.judge_models = judge_models
        self.work_dir = work_dir
        self._stack = contextlib.ExitStack()
        self._started: dict[tuple[str, tuple[str, ...]], tuple[str, str]] = {}

    def __enter__(self) -> ServedJudges:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def endpoint(self, spec: JudgeAPI) -> tuple[str, str]:
        """(base URL, served model path) of `spec`'s server, started on first use."""
        key = (str(spec.serve), tuple(spec.serve_args))
        if key not in self._started:
            self._started[key] = self._start(spec)
        return self._started[key]

    def _start(self, spec: JudgeAPI) -> tuple[str, str]:
        from psft_orchestrator.envs import vllm_python
        from psft_orchestrator.evals.judge_api import vllm_server

        model = self.judge_models.get(str(spec.serve))
        if model is None:
            raise ValueError(f"judge: served model {spec.serve!r} is not among the node's inputs")
        model = model.removeprefix("hf:").split("@")[0]  # a hub id resolved from the local cache
        log = Path(self.work_dir or ".") / "vllm_serve.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        server = vllm_server(model, vllm_python(), log, extra_args=spec.serve_args)
        return self._stack.enter_context(server), model


@contextlib.contextmanager
def open_judge(
    suite: JudgeSuite,
    judge_models: dict[str, str],
    work_dir: Path | None,
    servers: ServedJudges | None = None,
) -> Iterator[tuple[Judge, dict[str, Any]]]:
    """The suite's judge and its protocol record. A served judge comes from `servers` (the
    node's, shared by its suites), else from servers of this block alone."""
    spec = suite.judge
    if spec == "rules":
        yield RuleJudge(), {"kind": "rules"}
        return
    if isinstance(spec, str):
        chat = HFChat(spec, suite.judge_max_new_tokens)
        yield LLMJudge(chat, suite.rubric), {"kind": "local-hf", "model": Path(spec).name}
        return
    with contextlib.ExitStack() as stack:
        if servers is None and spec.serve:
            servers = stack.enter_context(ServedJudges(judge_models, work_dir))
        base_url, model, api_key = _api_endpoint(spec, servers)
        from psft_orchestrator.evals.judge_api import ApiChat

        chat = ApiChat(
            base_url,
            model,
            api_key,
            spec.concurrency,
            spec.timeout_s,
            spec.retries,
            suite.judge_max_new_tokens,
        )
        chat.probe()
        info = {"kind": spec.kind, "model": spec.serve or spec.model, "guided": spec.guided}
        if spec.serve:  # the vLLM that serves it, from its own environment
            from psft_orchestrator.envs import installed_version, vllm_python

            info["server"] = f"vllm-{installed_version(vllm_python(), 'vllm')}"
        yield LLMJudge(chat, suite.rubric, guided=spec.guided), info


def _api_endpoint(spec: JudgeAPI, servers: ServedJudges | None) -> tuple[str, str, str]:
    """(base URL, model name, API key) of an endpoint judge or of a served one."""
    import os

    if spec.endpoint is not None:
        key = os.environ.get(spec.api_key_env, "") if spec.api_key_env else "EMPTY"
        if spec.api_key_env and not key:
            raise ValueError(f"judge: environment variable {spec.api_key_env} is not set")
        return spec.endpoint, str(spec.model), key
    assert servers is not None
    url, model = servers.endpoint(spec)
    return url, model, "EMPTY"


# ---------------------------------------------------------------- protocols


def _grading(row: dict[str, Any], turn: int = 0) -> dict[str, Any]:
    """The rule judge's rule for one turn of a row."""
    if row.get("turn_checks"):
        return {"checks": row["turn_checks"][turn]}
    if turn:
        return {}
    return {k: row[k] for k in ("checks", "answer", "choices") if k in row}


def _mean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _row(suite: str, bench: str, metric: str, per_row: list[float], scale: float, step: Any):
    """ScoreRow of the mean of per-row values (NaN rows left out), times `scale`."""
    vals = [v for v in per_row if not math.isnan(v)]
    n = len(vals)
    mean = sum(vals) / n if n else math.nan
    var = sum((x - mean) ** 2 for x in vals) / (n - 1) if n > 1 else 0.0
    return ScoreRow(
        suite=suite,
        benchmark=bench,
        metric=metric,
        value=scale * mean if n else 0.0,
        n=n,
        stderr=scale * math.sqrt(var / n) if n else None,
        step=step,
    )


def _games(judge: Judge, questions: list[str], answers: list[str], refs: list[str], rows):
    """Both orders of every (answer, reference) pair: [(model-first, model-second)] verdicts, with
    the second game's value turned to the model's side."""
    first = judge.compare(
        [
            PairItem(q, a, r, _grading(g))
            for q, a, r, g in zip(questions, answers, refs, rows, strict=True)
        ]
    )
    second = judge.compare(
        [
            PairItem(q, r, a, _grading(g))
            for q, a, r, g in zip(questions, answers, refs, rows, strict=True)
        ]
    )
    return [
        (v1, Verdict(1.0 - v2.value, v2.prompt, v2.reply))
        for v1, v2 in zip(first, second, strict=True)
    ]


def _transcript(*verdicts: Verdict) -> list[dict[str, Any]]:
    return [{"prompt": v.prompt, "reply": v.reply} for v in verdicts if v.prompt is not None]


class _Bench:
    """One benchmark of a judged suite: its rows, prompts and the generator to answer them."""

    def __init__(self, model, tokenizer, suite: JudgeSuite, name: str, rows, references, step):
        self.model, self.tokenizer, self.suite, self.name = model, tokenizer, suite, name
        self.rows, self.step = rows, step
        self.questions = [prompt_text(_turns(r)[0]) for r in rows]
        self.refs = [
            references.get(q, r.get("reference")) for q, r in zip(self.questions, rows, strict=True)
        ]

    def answer(self, conversations: list[list[dict[str, str]]], k: int | None = None):
        params = sampling_params(self.suite)
        if k is not None:
            from dataclasses import replace

            params = replace(params, k=k)
        return generate(self.model, self.tokenizer, conversations, params)

    def first_turn(self) -> list[list[dict[str, str]]]:
        return [as_messages(_turns(r)[0], self.suite.system_prompt) for r in self.rows]

    def score(self, metric: str, per_row: list[float], scale: float = 100.0) -> ScoreRow:
        return _row(self.suite.label, self.name, metric, per_row, scale, self.step)


def _turns(row: dict[str, Any]) -> list[Any]:
    """A row's user turns: `turns`, a `prompt` list of strings, or the single `prompt`."""
    if row.get("turns"):
        return list(row["turns"])
    p = row["prompt"]
    if isinstance(p, list) and p and all(isinstance(t, str) for t in p):
        return list(p)
    return [p]


def _by_row(n_rows: int, where: list[tuple[int, int, str]], values: list[float]) -> list[float]:
    """Mean per row of per-sample values (NaN left out; NaN for a row without any)."""
    groups: list[list[float]] = [[] for _ in range(n_rows)]
    for (i, _, _), v in zip(where, values, strict=True):
        groups[i].append(v)
    return [_mean(g) for g in groups]


def _flat(answers: list[list[str]]) -> list[tuple[int, int, str]]:
    return [(i, j, a) for i, outs in enumerate(answers) for j, a in enumerate(outs)]


def _nan_share(*verdicts: Verdict) -> float:
    return sum(math.isnan(v.value) for v in verdicts) / len(verdicts)


def _score_protocol(b: _Bench, judge: Judge):
    """Rating of every answer (0-100) and, with references, the win rate vs them."""
    first = b.first_turn()
    where = _flat(b.answer(first))
    ratings = judge.rate(
        [RateItem(b.questions[i], a, [], _grading(b.rows[i])) for i, _, a in where]
    )
    has_ref = [k for k, (i, _, _) in enumerate(where) if b.refs[i] is not None]
    games = dict(zip(has_ref, _pair_games(b, judge, [where[k] for k in has_ref]), strict=True))
    outcomes = [
        (games[k][0].value + games[k][1].value) / 2 if k in games else math.nan
        for k in range(len(where))
    ]
    records = [
        {
            "index": i,
            "sample": j,
            "prompt": first[i],
            "completion": a,
            "rating": ratings[k].value,
            "reference": b.refs[i],
            "outcome": outcomes[k],
            "judge": _transcript(ratings[k], *games.get(k, ())),
        }
        for k, (i, j, a) in enumerate(where)
    ]
    scores = [b.score("score", _by_row(len(b.rows), where, [v.value / 10 for v in ratings]))]
    if games:
        scores.append(b.score("win_rate", _by_row(len(b.rows), where, outcomes)))
    unparsed = _by_row(len(b.rows), where, [_nan_share(v) for v in ratings])
    return scores, records, unparsed


def _pair_games(b: _Bench, judge: Judge, where: list[tuple[int, int, str]]):
    return _games(
        judge,
        [b.questions[i] for i, _, _ in where],
        [a for _, _, a in where],
        [str(b.refs[i]) for i, _, _ in where],
        [b.rows[i] for i, _, _ in where],
    )


def _mt_bench(b: _Bench, judge: Judge):
    """Turn 1, then turn 2 with the turn-1 exchange in context; both graded 1-10."""
    first = b.first_turn()
    where = _flat(b.answer(first))
    convs = [turn_two(first[i], a1, _second_turn(b, i)) for i, _, a1 in where]
    answers2 = [outs[0] for outs in b.answer(convs, k=1)]
    rate1 = judge.rate(
        [RateItem(b.questions[i], a1, [], _grading(b.rows[i])) for i, _, a1 in where]
    )
    rate2 = judge.rate(
        [
            RateItem(conv[-1]["content"], a2, _history(conv), _grading(b.rows[i], 1))
            for (i, _, _), conv, a2 in zip(where, convs, answers2, strict=True)
        ]
    )
    records = [
        {
            "index": i,
            "sample": j,
            "prompt": first[i],
            "completion": a1,
            "turn2_prompt": convs[k],
            "turn2_completion": answers2[k],
            "rating_turn1": rate1[k].value,
            "rating_turn2": rate2[k].value,
            "judge": _transcript(rate1[k], rate2[k]),
        }
        for k, (i, j, a1) in enumerate(where)
    ]
    n = len(b.rows)
    t1 = _by_row(n, where, [v.value for v in rate1])
    t2 = _by_row(n, where, [v.value for v in rate2])
    both = _by_row(
        n, where, [_mean([v1.value, v2.value]) for v1, v2 in zip(rate1, rate2, strict=True)]
    )
    scores = [b.score("turn1", t1, 1.0), b.score("turn2", t2, 1.0), b.score("score", both, 1.0)]
    unparsed = _by_row(n, where, [_nan_share(v1, v2) for v1, v2 in zip(rate1, rate2, strict=True)])
    return scores, records, unparsed


def _second_turn(b: _Bench, i: int) -> str:
    turns = _turns(b.rows[i])
    if len(turns) < 2:
        raise ValueError(f"mt_bench: row {i} of {b.name} has no second turn (`turns: [q1, q2]`)")
    return prompt_text(turns[1])


def turn_two(first: list[dict[str, str]], answer1: str, question2: str) -> list[dict[str, str]]:
    """The turn-2 conversation: the turn-1 prompt, the model's own answer, the follow-up."""
    return [
        *first,
        {"role": "assistant", "content": answer1},
        {"role": "user", "content": question2},
    ]


def _history(conv: list[dict[str, str]]) -> list[dict[str, str]]:
    """The turns before the last question, without the system prompt (what the judge sees)."""
    return [m for m in conv[:-1] if m["role"] != "system"]


def _pairwise_protocol(b: _Bench, judge: Judge, lc: bool):
    """Arena-Hard (lc=False: each order one game) / AlpacaEval (lc=True: orders averaged per
    instruction, plus the length-controlled win rate)."""
    missing = [i for i, r in enumerate(b.refs) if r is None]
    if missing:
        raise ValueError(
            f"{b.suite.protocol}: rows {missing[:5]} of {b.name} have no reference/baseline answer"
        )
    first = b.first_turn()
    where = _flat(b.answer(first))
    games = _pair_games(b, judge, where)
    per_sample = [_mean([g1.value, g2.value]) for g1, g2 in games]
    records = [
        {
            "index": i,
            "sample": j,
            "prompt": first[i],
            "completion": a,
            "reference": b.refs[i],
            "outcome_model_first": games[k][0].value,
            "outcome_model_second": games[k][1].value,
            "judge": _transcript(*games[k]),
        }
        for k, (i, j, a) in enumerate(where)
    ]
    n = len(b.rows)
    unparsed = _by_row(n, where, [_nan_share(*g) for g in games])
    if not lc:  # Arena-Hard: every game counts once
        one_game_each = [(i, 0, "") for i, _, _ in where for _ in (0, 1)]
        values = [v.value for g in games for v in g]
        return [b.score("win_rate", _by_row(n, one_game_each, values))], records, unparsed
    prefs = _by_row(n, where, per_sample)
    return _alpaca_scores(b, where, prefs), records, unparsed


def _alpaca_scores(b: _Bench, where, prefs: list[float]) -> list[ScoreRow]:
    from psft_orchestrator.evals.length_control import lc_win_rate

    first_answer = {i: a for i, j, a in where if j == 0}
    keep = [i for i, p in enumerate(prefs) if not math.isnan(p)]
    difficulty = [b.rows[i].get("instruction_difficulty") for i in keep]
    result = lc_win_rate(
        [prefs[i] for i in keep],
        [len(first_answer[i]) for i in keep],
        [len(str(b.refs[i])) for i in keep],
        difficulty if keep and all(d is not None for d in difficulty) else None,
    )
    scores = [b.score("win_rate", prefs)]
    if result.lc_win_rate is not None:
        scores.append(
            ScoreRow(
                suite=b.suite.label,
                benchmark=b.name,
                metric="lc_win_rate",
                value=result.lc_win_rate,
                n=result.n,
                stderr=result.lc_stderr,
                step=b.step,
            )
        )
    return scores


PROTOCOLS = {
    "score": _score_protocol,
    "mt_bench": _mt_bench,
    "arena_hard": lambda b, judge: _pairwise_protocol(b, judge, lc=False),
    "alpaca_eval": lambda b, judge: _pairwise_protocol(b, judge, lc=True),
}


def run_judge_suite(
    model: Any,
    tokenizer: Any,
    suite: JudgeSuite,
    benchmarks: dict[str, str | Path],
    step: int | None = None,
    samples: SampleWriter | None = None,
    judge_models: dict[str, str] | None = None,
    work_dir: Path | None = None,
    backend: str = "native",
    servers: ServedJudges | None = None,
) -> list[ScoreRow]:
    """`servers`: the node's served judges, shared by its suites (default: this suite's own)."""
    from psft_orchestrator.evals.protocol import suite_protocol

    samples = samples or SampleWriter(None)
    references: dict[str, str] = {}
    if suite.reference is not None:
        references = {
            prompt_text(_turns(r)[0]): str(r["answer"])
            for r in read_benchmark(benchmarks[suite.reference])
        }
    scores: list[ScoreRow] = []
    with open_judge(suite, judge_models or {}, work_dir, servers) as (judge, judge_info):
        protocol = {
            **suite_protocol(suite, backend),
            "protocol": suite.protocol,
            "judge": judge_info,
        }
        for name in suite.benchmarks:
            rows = read_benchmark(benchmarks[name], suite.limit)
            bench = _Bench(model, tokenizer, suite, name, rows, references, step)
            rows_scores, records, unparsed = PROTOCOLS[suite.protocol](bench, judge)
            if judge_info["kind"] != "rules":
                rows_scores.append(bench.score("unparsed", unparsed))
            for rec in records:
                rec.update(suite=suite.label, protocol=suite.protocol, step=step)
            samples.write(name, records)
            scores += [s.model_copy(update={"protocol": protocol}) for s in rows_scores]
    return scores
