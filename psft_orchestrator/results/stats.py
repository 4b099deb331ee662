"""Uncertainty for results: a mean over seeds with its t-based CI, and a paired bootstrap.

- `mean_ci(values)`: the mean of independent runs (one per seed) and the half-width of its
  two-sided 95% confidence interval, t-based on n - 1 degrees of freedom (n = 1: no CI).
- `paired_bootstrap(diffs)`: `diffs[s, i]` is method A's score minus method B's on benchmark
  item i under seed s. The estimate is the mean difference; its CI and p-value come from a
  two-level bootstrap that resamples seeds and items (both are sources of variance), with
  the same items drawn for every seed so that the pairing holds.

numpy and scipy are imported on first use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

LEVEL = 0.95
N_BOOT = 2000


@dataclass(frozen=True)
class Estimate:
    """A mean, the half-width of its CI (None with one value), and how many values."""

    mean: float
    ci: float | None
    n: int

    @property
    def low(self) -> float | None:
        return None if self.ci is None else self.mean - self.ci

    @property
    def high(self) -> float | None:
        return None if self.ci is None else self.mean + self.ci


@dataclass(frozen=True)
class Difference:
    """A paired difference A - B with its bootstrap CI and two-sided p-value."""

    diff: float
    low: float
    high: float
    p_value: float
    n_seeds: int
    n_items: int


def t_quantile(level: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, dof))


def mean_ci(values: Sequence[float], level: float = LEVEL) -> Estimate:
    """Mean and t-based CI half-width of independent values (NaN are an error upstream)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci of no values")
    mean = math.fsum(values) / n
    if n == 1:
        return Estimate(mean, None, 1)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return Estimate(mean, t_quantile(level, n - 1) * math.sqrt(var / n), n)


def paired_bootstrap(
    diffs: Any, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> Difference:
    """Mean of a seeds x items matrix of paired differences, with a percentile bootstrap CI.

    The p-value tests "no difference": the share of bootstrap means, centred on the estimate,
    at least as far from zero as the estimate itself (two-sided, +1 smoothed).
    """
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2 or d.size == 0:
        raise ValueError("paired_bootstrap needs a non-empty seeds x items matrix")
    n_seeds, n_items = d.shape
    rng = np.random.default_rng(seed)
    # Counts of how often each seed / item is drawn in each replicate: the replicate's mean is
    # then sum_s sum_i w_s * w_i * d[s, i] / (S * I), without materialising resampled arrays.
    w_seed = _draw_counts(rng, n_boot, n_seeds)
    w_item = _draw_counts(rng, n_boot, n_items)
    boot = ((w_seed @ d) * w_item).sum(axis=1) / (n_seeds * n_items)
    est = float(d.mean())
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    extreme = np.abs(boot - est) >= abs(est) - 1e-12
    p = (1 + int(extreme.sum())) / (n_boot + 1)
    return Difference(est, float(low), float(high), min(1.0, p), n_seeds, n_items)


def _draw_counts(rng: Any, n_boot: int, n: int) -> Any:
    """n_boot rows of multinomial counts: how often each of n units is drawn (n draws)."""
    import numpy as np

    if n == 1:
        return np.ones((n_boot, 1))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
