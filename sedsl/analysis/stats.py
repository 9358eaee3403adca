"""Statistics over seeds for `sedsl compare`, in pure Python (no scipy): the mean and sample
standard deviation of a point's accuracies, and the paired difference between two points with a
Student-t confidence interval.

The t quantile is the inverse of the t distribution's CDF, written with the regularised
incomplete beta function (a continued fraction, as in Numerical Recipes' betacf) and inverted by
bisection to double precision; the tests hold it to scipy.stats.t.ppf."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # the sample standard deviation (ddof = 1); 0 for one value


@dataclass(frozen=True)
class Difference:
    """The mean of paired differences b_i - a_i and its two-sided confidence interval."""

    n: int
    mean: float
    std: float  # of the differences (ddof = 1)
    level: float
    low: float | None  # None with fewer than two pairs: no interval
    high: float | None

    @property
    def excludes_zero(self) -> bool | None:
        """True when the interval lies wholly above or below 0; None without an interval."""
        if self.low is None or self.high is None:
            return None
        return self.low > 0 or self.high < 0


def summary(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("no values")
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return Summary(n, mean, math.sqrt(var))


def paired_difference(a: Sequence[float], b: Sequence[float],
                      level: float = 0.95) -> Difference:
    """b - a, pair by pair (the same seed in both), with the t interval over the pairs:
    mean ± t(1 - (1 - level) / 2, n - 1) · sd / √n."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} and {len(b)} values cannot be paired")
    s = summary([y - x for x, y in zip(a, b, strict=True)])
    if s.n < 2:
        return Difference(s.n, s.mean, s.std, level, None, None)
    half = t_quantile(1 - (1 - level) / 2, s.n - 1) * s.std / math.sqrt(s.n)
    return Difference(s.n, s.mean, s.std, level, s.mean - half, s.mean + half)


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    if df <= 0:
        raise ValueError("df must be > 0")
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t such that P(T <= t) = p, by bisection on t_cdf (to double precision)."""
    if not 0 < p < 1:
        raise ValueError("p must lie in (0, 1)")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if not 0 <= x <= 1:
        raise ValueError("x must lie in [0, 1]")
    if x in (0, 1):
        return x
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    # the continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry
    # I_x(a, b) = 1 - I_{1-x}(b, a) otherwise
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < eps:
            break
    return h
