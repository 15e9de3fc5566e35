"""Is a difference between two rows more than seed noise?

:func:`compare_seeds` takes one value per seed of each row and tests the difference of the means:
Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``, two-sided) when SciPy is installed, else
a bootstrap of the difference under the null hypothesis (both samples shifted to the pooled mean,
10,000 resamples with replacement, fixed generator seed, two-sided p). A difference is
"distinguishable from seed noise" when p < :data:`ALPHA`. Fewer than two seeds on either side: no
test (p is None).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Comparison:
    delta: float  # mean(a) - mean(b)
    n: tuple[int, int]
    p: float | None  # two-sided p-value, None without a test
    method: str | None  # the test's name, None without a test
    note: str = ""  # why there is no test

    @property
    def distinguishable(self) -> bool | None:
        return None if self.p is None else self.p < ALPHA

    def describe(self) -> str:
        """"p = 0.031 (Welch's t-test, n = 3, 3): distinguishable from seed noise" or why not."""
        if self.p is None:
            return self.note
        verdict = "distinguishable from seed noise" if self.distinguishable else "not distinguishable from seed noise"
        return f"p = {self.p:.3g} ({self.method}, n = {self.n[0]}, {self.n[1]}): {verdict}"


def _scipy_welch(a: np.ndarray, b: np.ndarray) -> float | None:
    try:
        from scipy import stats
    except ImportError:
        return None
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def bootstrap_p(a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> float:
    """Two-sided bootstrap p-value of mean(a) - mean(b) under the null of equal means."""
    rng = np.random.default_rng(seed)
    observed = abs(a.mean() - b.mean())
    pooled = np.concatenate([a, b]).mean()
    a0, b0 = a - a.mean() + pooled, b - b.mean() + pooled
    da = rng.choice(a0, size=(resamples, a0.size)).mean(axis=1)
    db = rng.choice(b0, size=(resamples, b0.size)).mean(axis=1)
    return float((np.abs(da - db) >= observed - 1e-12).mean())


def compare_seeds(a, b, same_run: bool = False) -> Comparison:
    """Difference of the means of ``a`` and ``b`` (one value per seed) and its p-value."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    delta = float(a.mean() - b.mean())
    n = (int(a.size), int(b.size))
    if same_run:
        return Comparison(delta, n, None, None, "the two rows are one training run")
    if min(n) < 2:
        return Comparison(delta, n, None, None, "one seed each: no test" if max(n) == 1 else "one seed on one side: no test")
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        p = 1.0 if delta == 0 else 0.0
        return Comparison(delta, n, p, "no seed variance", "")
    p = _scipy_welch(a, b)
    if p is not None and not np.isnan(p):
        return Comparison(delta, n, p, "Welch's t-test")
    return Comparison(delta, n, bootstrap_p(a, b), f"bootstrap, {BOOTSTRAP_RESAMPLES} resamples")
