"""Uncertainty of evaluation metrics: standard errors, perplexity intervals, paired bootstrap, Welch's t.

Pure functions on per-example values (no models, no files). Letters: N examples (or
perplexity windows), S seeds, R bootstrap resamples.

- A metric is a (weighted) mean of per-example values x_i with weights w_i (1 for accuracies,
  EM, F1, rates and window NLLs; the answer token count for the token-weighted answer NLL).
- Its standard error is the sample standard error of that mean with ddof = 1, as
  lm-evaluation-harness reports it: sd(x) / sqrt(N) for equal weights, and the linearized
  ratio-estimator form sqrt(N / (N - 1) * sum w_i^2 (x_i - mean)^2) / sum w_i in general
  (the same number when all weights are equal).
- Perplexity is exp(mean window NLL) over equal-length windows; its 95% interval is
  exp(mean NLL +- 1.96 se).
- A difference between two reports gets a paired bootstrap interval: examples (by id) are
  resampled with replacement, the same draw for both sides; with several seeds per side the
  seeds are resampled too (independently per side), so the interval covers seed spread as well.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal
MIN_PAIRED = 20  # fewer shared examples than this: the interval is computed, with a warning


def mean_stderr(values: Sequence[float], weights: Sequence[float] | None = None) -> float | None:
    """Sample standard error (ddof = 1) of the weighted mean of `values`; None for fewer than 2 values.

    Args:
        values: (N,) per-example values.
        weights: (N,) positive weights, or None for equal weights (then sd(values, ddof=1) / sqrt(N)).
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 2:
        return None
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != x.shape or (w <= 0).any():
        raise ValueError(f"weights must be {n} positive numbers, got shape {w.shape}")
    mean = (w * x).sum() / w.sum()
    return float(math.sqrt(n / (n - 1) * ((w * (x - mean)) ** 2).sum()) / w.sum())


def ppl_interval(window_nll: Sequence[float], z: float = Z_95) -> tuple[float, float] | None:
    """exp(mean NLL -+ z se) from the (N,) mean NLLs of equal-length windows; None for one window."""
    se = mean_stderr(window_nll)
    if se is None:
        return None
    mean = float(np.mean(window_nll))
    return math.exp(mean - z * se), math.exp(mean + z * se)


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation with ddof = 1); sd is None for one value."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else None)


def _aligned(runs: Sequence[Mapping[str, float]], ids: list[str]) -> np.ndarray:
    return np.array([[run[i] for i in ids] for run in runs], dtype=np.float64)  # (S, N)


def paired_bootstrap(
    a: Sequence[Mapping[str, float]],
    b: Sequence[Mapping[str, float]],
    weights: Mapping[str, float] | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    chunk: int = 250,
) -> dict:
    """Percentile interval of metric(a) - metric(b), paired by example id.

    The metric of one run is transform(weighted mean over examples); with several runs (seeds)
    per side it is the mean of that over the runs. Only the ids every run of both sides has are
    used; fewer than MIN_PAIRED of them, or losing more than a tenth of either side, logs a warning.

    Args:
        a, b: per-seed {example id: value} mappings (S_a and S_b of them).
        weights: {id: weight} (the answer-token counts of a token-weighted NLL), None = equal.
        transform: applied to each run's mean (np.exp for perplexity from window NLLs), None = identity.
        n_resamples: R >= 1000 bootstrap draws from a numpy Generator seeded with `seed`.
    Returns:
        {"difference": point estimate, "low", "high": the interval, "n": shared examples,
        "significant": whether the interval excludes 0}.
    """
    if not a or not b:
        raise ValueError("paired_bootstrap needs at least one run on each side")
    if n_resamples < 1000:
        raise ValueError(f"n_resamples must be >= 1000 for a 95% percentile interval, got {n_resamples}")
    shared = set.intersection(*(set(run) for run in (*a, *b)))
    if weights is not None:
        shared &= set(weights)
    ids = sorted(shared)
    n = len(ids)
    if n == 0:
        raise ValueError("the two reports share no example ids; evaluate both on the same examples (same --limit)")
    smallest = min(len(run) for run in (*a, *b))
    if n < MIN_PAIRED or n < 0.9 * smallest:
        logger.warning("paired bootstrap over only %d shared examples (smallest run has %d)", n, smallest)
    transform = transform or (lambda m: m)
    values_a, values_b = _aligned(a, ids), _aligned(b, ids)  # (S_a, N), (S_b, N)
    w = np.ones(n) if weights is None else np.array([weights[i] for i in ids], dtype=np.float64)  # (N,)

    def metric(values: np.ndarray, counts: np.ndarray) -> np.ndarray:  # (S, N), (R, N) -> (R, S)
        return transform((counts * w) @ values.T / (counts @ w)[:, None])

    point = float(metric(values_a, np.ones((1, n))).mean() - metric(values_b, np.ones((1, n))).mean())
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=r).astype(np.float64)  # (R, N) example draws
        per_seed_a, per_seed_b = metric(values_a, counts), metric(values_b, counts)  # (R, S_a), (R, S_b)
        pick_a = rng.integers(0, len(a), size=(r, len(a)))  # seeds drawn with replacement, per side
        pick_b = rng.integers(0, len(b), size=(r, len(b)))
        rows = np.arange(r)[:, None]
        stats.append(per_seed_a[rows, pick_a].mean(1) - per_seed_b[rows, pick_b].mean(1))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(np.concatenate(stats), [tail, 100 - tail])
    return {"difference": point, "low": float(low), "high": float(high), "n": n,
            "significant": bool(low > 0 or high < 0)}


def welch_t(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's unequal-variance t test of mean(a) - mean(b) (e.g. per-seed perplexities of two rows).

    Returns:
        {"difference", "t", "df" (Welch-Satterthwaite), "p" (two-sided)}; t and p are None when a
        side has fewer than 2 values or both variances are 0.
    """
    (mean_a, sd_a), (mean_b, sd_b) = mean_sd(a), mean_sd(b)
    result = {"difference": mean_a - mean_b, "t": None, "df": None, "p": None}
    if sd_a is None or sd_b is None:
        return result
    va, vb = sd_a**2 / len(a), sd_b**2 / len(b)
    if va + vb == 0:
        return result
    t = (mean_a - mean_b) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return {**result, "t": t, "df": df, "p": student_t_two_sided_p(t, df)}


def difference_test(a: Sequence[float], b: Sequence[float]) -> dict:
    """Test of mean(a) - mean(b): Welch's t when both sides have several values; when one side has a single
    value it is taken as exact (a seed-independent row, e.g. the dense model) and the other side gets a
    one-sample t test against it (df = n - 1).

    Returns the keys of `welch_t`; t and p are None when neither side has a spread.
    """
    if len(a) > 1 and len(b) > 1:
        return welch_t(a, b)
    (mean_a, sd_a), (mean_b, sd_b) = mean_sd(a), mean_sd(b)
    result = {"difference": mean_a - mean_b, "t": None, "df": None, "p": None}
    spread, n = (sd_a, len(a)) if len(a) > 1 else (sd_b, len(b))
    if n < 2 or not spread:
        return result
    t = (mean_a - mean_b) / (spread / math.sqrt(n))
    return {**result, "t": t, "df": float(n - 1), "p": student_t_two_sided_p(t, n - 1)}


def holm_adjust(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values: the family-wise error over all the given tests.

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m - j) * p_(j)); None
    entries (tests that could not be made) are skipped and stay None.
    """
    order = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    return _betainc(df / 2, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (Numerical Recipes' betacf)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1) / (a + b + 2):  # converges faster on the other side
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return math.exp(log_front) * fraction / a
