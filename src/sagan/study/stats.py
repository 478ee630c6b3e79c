"""The study's statistics: per-variant means with 95% confidence intervals over seeds, and each
variant's paired difference against the baseline variant, seed by seed.

Intervals are Student-t intervals (scipy.stats.t): mean +- t(0.975, n-1) x std / sqrt(n), with the
sample std (ddof=1). Pairing by seed removes what a seed does to every cell alike (the data order,
the initialisation, the noise), so a paired interval is narrower than the two cells' own intervals
suggest. With one seed there is no interval (NaN): nothing is resolved.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    std: float  # sample std, ddof=1 (NaN for n = 1)
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)


def t_interval(values) -> Interval:
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return Interval(n, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half)


def summarise(results: pd.DataFrame, metric: str, baseline: str) -> pd.DataFrame:
    """One row per variant (its seeds pooled): the metric's interval over seeds, and the interval
    of its paired difference against the `baseline` variant with the same seed (NaN for the
    baseline itself). `results` has one row per cell: variant, seed and the metric."""
    rows = []
    base = results[results["variant"] == baseline].set_index("seed")[metric]
    for variant, group in results.groupby("variant", sort=False):
        own = t_interval(group[metric].dropna())
        row = {"variant": variant, "metric": metric, "n_seeds": own.n,
               "mean": own.mean, "std": own.std, "ci_low": own.low, "ci_high": own.high}
        if variant != baseline:
            paired = group.set_index("seed")[metric].sub(base).dropna()
            diff = t_interval(paired)
            row |= {"n_pairs": diff.n, "diff_mean": diff.mean, "diff_ci_low": diff.low, "diff_ci_high": diff.high}
        rows.append(row)
    columns = ["variant", "metric", "n_seeds", "mean", "std", "ci_low", "ci_high",
               "n_pairs", "diff_mean", "diff_ci_low", "diff_ci_high"]
    return pd.DataFrame(rows, columns=columns)
