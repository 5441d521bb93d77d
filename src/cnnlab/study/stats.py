"""The statistics of a study: one cell's metric over its seeds, and two cells compared.

A study trains one configuration (a cell) over a few seeds, so every number here is about
small samples:

- `summarize`: mean, sample std and the Student-t interval of the mean over the seeds.
- `paired_test`: two cells seed by seed (the same seed pairs the two runs), t-test or Wilcoxon.
- `mcnemar_exact`: two models on the same test images, image by image (exact binomial).
- `holm`: p-values adjusted for the number of comparisons in one study.
- `min_p`, `seeds_note`: what a test over n seeds can and cannot show, in words for the report.

The distributions come from scipy, never written by hand; the tests check each result against
scipy or numpy called directly, and pin the cases a study really meets: NaN from a failed run,
one seed, identical seeds, no difference at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats  # type: ignore[import-untyped]  # scipy ships no py.typed

PAIRED_METHODS = ("t", "wilcoxon")


def _json_float(x: float) -> float | None:
    # JSON has no NaN or Infinity: a missing number is null
    return float(x) if math.isfinite(x) else None


def _check_method(method: str) -> None:
    if method not in PAIRED_METHODS:
        raise ValueError(
            f"unknown paired test {method!r}; choose one of {', '.join(PAIRED_METHODS)}"
        )


@dataclass(frozen=True)
class Summary:
    """One cell's metric over its seeds."""

    n: int  # finite values used (NaN values are ignored)
    mean: float  # nan when n == 0
    std: float  # sample std (ddof=1); nan when n < 2
    ci_low: float  # Student-t interval of the mean; nan when n < 2
    ci_high: float

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean": _json_float(self.mean),
            "std": _json_float(self.std),
            "ci95": [_json_float(self.ci_low), _json_float(self.ci_high)],
        }


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample std and `confidence` Student-t interval of the finite `values`."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    # a failed or diverged run leaves NaN: it is left out, and `n` says how many remain
    x = np.array([v for v in values if math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    if std == 0.0:
        # identical seeds: scipy returns nan for a zero scale, but the interval is the point
        return Summary(n, mean, 0.0, mean, mean)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Summary(n, mean, std, float(low), float(high))


@dataclass(frozen=True)
class McNemar:
    """Two models on the same images: the discordant pairs and the exact two-sided p."""

    only_a: int  # pairs where A is right and B wrong
    only_b: int  # pairs where B is right and A wrong
    p: float  # 1.0 when no pair is discordant

    def to_json(self) -> dict[str, Any]:
        return {"only_a": self.only_a, "only_b": self.only_b, "p": _json_float(self.p)}


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    """Exact McNemar test: under no difference each discordant pair is a fair coin."""
    if len(correct_a) != len(correct_b):
        raise ValueError(
            f"McNemar needs one answer per image from each model: A has {len(correct_a)}, "
            f"B has {len(correct_b)}"
        )
    only_a = sum(1 for a, b in zip(correct_a, correct_b, strict=True) if a and not b)
    only_b = sum(1 for a, b in zip(correct_a, correct_b, strict=True) if b and not a)
    if only_a + only_b == 0:
        return McNemar(0, 0, 1.0)  # the models agree everywhere: no evidence of a difference
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    return McNemar(only_a, only_b, float(p))


@dataclass(frozen=True)
class Paired:
    """Two cells compared seed by seed."""

    method: str  # "t" (scipy.stats.ttest_rel) or "wilcoxon" (scipy.stats.wilcoxon)
    n: int  # pairs with both values finite
    statistic: float  # nan when not computable
    p: float  # nan when n < 2; 1.0 when every difference is zero

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n": self.n,
            "statistic": _json_float(self.statistic),
            "p": _json_float(self.p),
        }


def paired_test(a: Sequence[float], b: Sequence[float], method: str = "t") -> Paired:
    """Paired t-test or Wilcoxon signed-rank test of `a` against `b`, paired by position."""
    _check_method(method)
    if len(a) != len(b):
        raise ValueError(f"a paired test needs one value per seed from each: {len(a)} and {len(b)}")
    # a seed that failed in either cell has no pair: drop the pair, not just the one value
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
    n = len(pairs)
    if n < 2:
        return Paired(method, n, math.nan, math.nan)
    xs = np.array([x for x, _ in pairs], dtype=float)
    ys = np.array([y for _, y in pairs], dtype=float)
    if np.all(xs == ys):
        # scipy gives nan (t) or a warning (wilcoxon) here; identical results are no evidence
        return Paired(method, n, 0.0, 1.0)
    # wilcoxon's method="auto" takes the exact distribution for small n without ties
    res = stats.ttest_rel(xs, ys) if method == "t" else stats.wilcoxon(xs, ys)
    return Paired(method, n, float(res.statistic), float(res.pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order; NaN stays NaN and is not counted."""
    # Holm's step-down is arithmetic on the p-values, not a distribution, so it is written here
    # rather than taken from a library: the k-th smallest of m is multiplied by (m - k), then
    # made monotone (an adjusted p never falls below the one before it) and capped at 1.
    adjusted = [math.nan] * len(pvalues)
    order = sorted(
        (i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i]
    )
    m = len(order)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def min_p(n: int, method: str) -> float:
    """The smallest two-sided p-value a paired test over `n` seeds can reach."""
    _check_method(method)
    if method == "wilcoxon":
        # exact: all n differences of one sign is the most extreme outcome, 1 of 2**n, both tails
        return min(1.0, 2.0 / 2**n) if n >= 1 else math.nan
    # the t statistic is unbounded, so any p is reachable once there is a spread to estimate
    return 0.0 if n >= 2 else math.nan


def seeds_note(n: int, method: str, alpha: float = 0.05) -> str | None:
    """Words for the report when `n` seeds are too few to tell a difference, else None."""
    _check_method(method)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if n < 2:
        return (
            f"{n} seed{'' if n == 1 else 's'} per cell: no spread and no paired test over seeds; "
            "run at least 3 seeds (seeds: [0, 1, 2]) to see the spread."
        )
    if method == "wilcoxon" and min_p(n, method) > alpha:
        needed = n
        while min_p(needed, method) > alpha:
            needed += 1
        return (
            f"with {n} seeds a Wilcoxon test cannot go below p = {min_p(n, method):g}, so it can "
            f"never call a difference significant at {alpha:g}: run at least {needed} seeds, "
            "or use the t-test."
        )
    if method == "t" and n < 5:
        # with 1 to 3 degrees of freedom the t critical value is 12.7 to 3.2 standard errors
        return (
            f"with {n} seeds the t-test sees only large, consistent differences; a difference "
            "not marked may still be real: more seeds narrow the intervals."
        )
    return None


def significant(p: float, alpha: float = 0.05) -> bool:
    """Whether `p` is at or below `alpha`; a p that could not be computed (nan) is not."""
    # p <= alpha, so that a test whose min_p equals alpha can still reach significance
    return not math.isnan(p) and p <= alpha
