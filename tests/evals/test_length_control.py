"""LC win rate against the `alpaca_eval` library's own `get_length_controlled_winrate`.

The library reads AlpacaEval's instruction difficulties from a hub file at run time; the
fixture puts a small one into a local Hugging Face cache (offline), so the library computes
its number on our fixture without a network.
"""

from __future__ import annotations

import math
import random

import pytest

from psft_orchestrator.evals.length_control import lc_win_rate

pytest.importorskip("alpaca_eval")


def _fixture(n: int = 40, seed: int = 0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ref_len = rng.randint(50, 400)
        model_len = rng.randint(50, 800)
        difficulty = rng.uniform(-1.5, 1.5)
        # A length-biased judge: longer model answers win more often.
        p_win = 1 / (1 + math.exp(-(0.004 * (model_len - ref_len) - 0.5 * difficulty - 0.3)))
        u = rng.random()
        pref = 1.0 if u < p_win else 0.5 if u < p_win + 0.05 else 0.0
        rows.append((i, pref, model_len, ref_len, difficulty))
    return rows


def _hub_cache(tmp_path, rows):
    """A local HF cache holding tatsu-lab/alpaca_eval's df_gamed.csv for the fixture's indices."""
    snap = tmp_path / "hub" / "datasets--tatsu-lab--alpaca_eval"
    commit = "0" * 40
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text(commit)
    files = snap / "snapshots" / commit
    files.mkdir(parents=True)
    lines = ["model,index,instruction_difficulty,preference,not_gamed_baseline"]
    lines += [f"gamed,{i},{d},1.5,False" for i, _, _, _, d in rows]
    (files / "df_gamed.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "hub"


def _library(rows, glm_name, monkeypatch, tmp_path):
    import pandas as pd

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(_hub_cache(tmp_path, rows)))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    from alpaca_eval.metrics.glm_winrate import get_length_controlled_winrate

    df = pd.DataFrame(
        {
            "index": [i for i, *_ in rows],
            # the library's encoding: 1 = output_1 (reference) wins, 2 = output_2 (model), 1.5 tie
            "preference": [1.0 + p for _, p, *_ in rows],
            "output_1": ["r" * r for *_, r, _ in rows],
            "output_2": ["m" * m for _, _, m, _, _ in rows],
            "generator_1": "reference",
            "generator_2": "model",
        }
    )
    return get_length_controlled_winrate(
        df, glm_name=glm_name, save_weights_dir=None, is_warn_extreme_changes=False
    )


@pytest.mark.parametrize("with_difficulty", [True, False])
def test_lc_win_rate_matches_the_library(with_difficulty, monkeypatch, tmp_path):
    rows = _fixture()
    ours = lc_win_rate(
        [p for _, p, *_ in rows],
        [m for _, _, m, _, _ in rows],
        [r for *_, r, _ in rows],
        [d for *_, d in rows] if with_difficulty else None,
    )
    glm = "length_controlled_noreg" if with_difficulty else "length_controlled_minimal"
    theirs = _library(rows, glm, monkeypatch, tmp_path)
    assert ours.glm == glm
    assert ours.win_rate == pytest.approx(theirs["win_rate"], abs=1e-9)
    assert ours.lc_win_rate == pytest.approx(theirs["length_controlled_winrate"], abs=1e-6)
    assert ours.lc_stderr == pytest.approx(theirs["lc_standard_error"], abs=1e-6)
    # the fixture's judge is length-biased and the model writes longer answers: LC < raw
    assert ours.lc_win_rate < ours.win_rate


def test_lc_needs_enough_rows_and_equal_lengths():
    few = lc_win_rate([1.0, 0.0], [10, 20], [10, 20])
    assert few.lc_win_rate is None and few.win_rate == 50.0
    with pytest.raises(ValueError, match="differ in number"):
        lc_win_rate([1.0], [1, 2], [1])
