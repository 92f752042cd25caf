"""Statistics over a study's seeds: Student-t intervals of a mean and of paired differences, and the
smallest difference a study of that many seeds detects.

A study runs every arm with the same few seeds (typically 5), so the spread between seeds is
estimated from the runs themselves and the Student-t distribution, not the normal, gives the
interval. Differences between two arms pair up by seed: the seed fixes what both arms share
beyond the studied choice (their batch order, for one), and the paired difference cancels what
it does to both alike. Pure functions of numbers; no MLflow, no Keras.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
POWER = 0.8  # the usual power for "the smallest difference a study detects"


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its two-sided Student-t confidence interval (NaN bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """The whole interval lies on one side of 0 (False when it is undefined)."""
        return bool(self.low > 0 or self.high < 0)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of ``values`` and its ``confidence`` Student-t interval: mean +- t_{(1+c)/2, n-1} * sd / sqrt(n).

    One value gives a mean but no interval (NaN bounds): its spread is unknown.
    """
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2:
        return Interval(mean, math.nan, math.nan, len(x))
    half = stats.t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return Interval(mean, mean - half, mean + half, len(x))


def paired_difference(values: Sequence[float], reference: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of ``values[i] - reference[i]`` (pairs: the same seed) and its Student-t interval."""
    if len(values) != len(reference):
        raise ValueError(f"paired values need equal lengths, got {len(values)} and {len(reference)}")
    return t_interval(np.asarray(values, dtype=float) - np.asarray(reference, dtype=float), confidence)


def detectable_difference(differences: Sequence[float], confidence: float = CONFIDENCE, power: float = POWER) -> float:
    """The smallest true mean difference that the paired t-interval excludes from 0 with probability
    ``power``, at the spread of ``differences`` (their standard deviation taken as the true one):
    (t_{(1+c)/2, n-1} + t_{power, n-1}) * sd / sqrt(n), the usual minimum detectable difference.

    The exact answer needs the noncentral t, whose scipy implementation returns NaN for some of
    these arguments; this approximation of it is 1.2% low at 5 differences, 5% low at 3.
    The half-width of the interval alone would be the difference detected only half the time.
    NaN with fewer than 2 differences.
    """
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        return math.nan
    df = len(d) - 1
    t = stats.t.ppf((1 + confidence) / 2, df) + stats.t.ppf(power, df)
    return float(t * d.std(ddof=1) / math.sqrt(len(d)))
