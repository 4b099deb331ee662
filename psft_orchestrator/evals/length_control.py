"""AlpacaEval 2's length-controlled (LC) win rate (Dubois et al. 2024, arXiv:2404.04475).

A judge prefers longer answers. LC win rate asks: what would the preference be if the model's
and the reference's answers had the same length? It fits a logistic GLM of the judge's
preference on the standardised length difference (through tanh), an optional per-instruction
difficulty, and the model's intercept; then predicts every instruction with the length
difference set to zero and averages.

The GLM fit itself is `alpaca_eval`'s (its design-matrix builder and its cross-validated,
L1-regularised logistic regression with probabilistic targets), so the number is the
library's. What the library's top-level `get_length_controlled_winrate` adds, and we leave
out, is downloading its precomputed AlpacaEval instruction difficulties and "gamed" baselines
from a hub at run time: so we fit its `length_controlled_noreg` formula when every row carries
an `instruction_difficulty`, else `length_controlled_minimal`. tests/evals/test_length_control.py
checks both against the library's own function on a fixture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# alpaca_eval.metrics.glm_winrate.GLM_INFO, by name: same formulas, no regularisation to the
# hub's gamed baselines.
FORMULAS = {
    "length_controlled_noreg": "np.tanh(std_delta_len) + instruction_difficulty + not_gamed_baseline.astype(float) - 1",
    "length_controlled_minimal": "np.tanh(std_delta_len) + not_gamed_baseline.astype(float) - 1",
}
MIN_ROWS = 5  # the GLM's 5-fold cross-validation needs at least one instruction per fold


@dataclass(frozen=True)
class LCResult:
    win_rate: float  # percent: wins + ties / 2
    lc_win_rate: float | None  # percent; None when there are too few rows to fit the GLM
    lc_stderr: float | None
    glm: str
    n: int


def lc_win_rate(
    preferences: list[float],
    model_lengths: list[int],
    reference_lengths: list[int],
    instruction_difficulty: list[float] | None = None,
) -> LCResult:
    """`preferences[i]` is the probability that the model's answer beats the reference on
    instruction i (1 win, 0.5 tie, 0 loss); lengths are in characters, as AlpacaEval's."""
    n = len(preferences)
    if not (n == len(model_lengths) == len(reference_lengths)):
        raise ValueError("length control: preferences and lengths differ in number")
    glm = "length_controlled_noreg" if instruction_difficulty else "length_controlled_minimal"
    win_rate = 100.0 * sum(preferences) / n if n else math.nan
    if n < MIN_ROWS:
        return LCResult(win_rate, None, None, glm, n)
    predicted = _fit_and_predict(
        preferences, model_lengths, reference_lengths, instruction_difficulty, glm
    )
    mean = float(predicted.mean())
    sem = float(predicted.std(ddof=1) / math.sqrt(n))
    return LCResult(win_rate, 100.0 * mean, 100.0 * sem, glm, n)


def _fit_and_predict(
    preferences: list[float],
    model_lengths: list[int],
    reference_lengths: list[int],
    instruction_difficulty: list[float] | None,
    glm: str,
) -> Any:
    import numpy as np
    import pandas as pd
    from alpaca_eval.metrics.glm_winrate import fit_LogisticRegressionCV, make_dmatrix_for_model

    # AlpacaEval's convention: output_1 is the reference, output_2 the model; delta = len1 - len2.
    delta = np.asarray(reference_lengths, float) - np.asarray(model_lengths, float)
    std = delta.std(ddof=1)
    train = pd.DataFrame(
        {
            "preference": np.asarray(preferences, float),
            "std_delta_len": delta / std if std > 0 else np.zeros_like(delta),
            "not_gamed_baseline": True,
        }
    )
    if instruction_difficulty:
        train["instruction_difficulty"] = np.asarray(instruction_difficulty, float)
    test = train.drop(columns=["preference"]).assign(std_delta_len=0.0)
    xy_train, x_test = make_dmatrix_for_model(train, test, formula=FORMULAS[glm])
    model = fit_LogisticRegressionCV(xy_train, "preference", is_ytrue_proba=True, n_splits=5)
    return model.predict_proba(x_test)[:, 1]
