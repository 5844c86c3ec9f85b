"""Correlations between measures and a target (test loss) along training, done honestly.

Training curves are strongly autocorrelated and trend together, so the naive p-value of a
correlation between two of them is far too small (two independent random walks come out
'significant' most of the time). Here:

* r is the correlation of the levels (Pearson, Spearman or Kendall);
* its 95% interval comes from a moving-block bootstrap of the (measure, target) pairs
  (Künsch 1989; block length by the AR(1) plug-in rule, 999 resamples, percentile interval);
* the p-value tests the same method on first differences, which removes shared trends
  (the Granger & Newbold 1974 remedy for spurious correlation);
* Holm's correction across measures (statsmodels ``multipletests``) gives ``p_adjusted``;
* ``granger_p``: does the measure's past help predict the target's change beyond the target's
  own past (statsmodels Granger test, lag 1, on first differences)?
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

METHODS = {
    "pearson": lambda x, y: stats.pearsonr(x, y),
    "spearman": lambda x, y: stats.spearmanr(x, y),
    "kendall": lambda x, y: stats.kendalltau(x, y),
}
COLUMNS = ["run", "measure", "target", "method", "n", "r", "ci_low", "ci_high", "p", "p_adjusted",
           "granger_p"]


def batch_corr(method: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The correlation of each row of ``x`` with the same row of ``y`` (NaN where undefined).

    Pearson; Spearman as Pearson on average ranks; Kendall's tau-b from pairwise signs. The
    same numbers as scipy's, computed for many resamples at once.
    """
    x, y = np.atleast_2d(x).astype(float), np.atleast_2d(y).astype(float)
    if method == "spearman":
        x, y = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    if method in ("pearson", "spearman"):
        xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
        den = np.sqrt((xc**2).sum(1) * (yc**2).sum(1))
        num = (xc * yc).sum(1)
    elif method == "kendall":
        sx = np.sign(x[:, :, None] - x[:, None, :])
        sy = np.sign(y[:, :, None] - y[:, None, :])
        num = (sx * sy).sum((1, 2))
        den = np.sqrt(np.abs(sx).sum((1, 2)) * np.abs(sy).sum((1, 2)))
    else:
        raise ValueError(f"unknown method {method!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _corr(method: str, x: np.ndarray, y: np.ndarray) -> float:
    return float(batch_corr(method, x, y)[0])


def block_length(x: np.ndarray, y: np.ndarray) -> int:
    """Block length for the moving-block bootstrap: the AR(1) plug-in rule
    l = (2φ / (1 - φ²))^(2/3) n^(1/3) (Bühlmann & Künsch 1999), φ the larger lag-1
    autocorrelation of the two series; at least n^(1/3), at most n / 3."""
    n = len(x)

    def lag1(v: np.ndarray) -> float:
        v = v - v.mean()
        denom = float((v * v).sum())
        return float((v[:-1] * v[1:]).sum()) / denom if denom > 0 else 0.0

    phi = min(max(lag1(x), lag1(y), 0.0), 0.95)
    rule = (2 * phi / (1 - phi**2)) ** (2 / 3) * n ** (1 / 3)
    return int(min(max(math.ceil(rule), math.ceil(n ** (1 / 3)), 1), max(1, n // 3)))


def block_bootstrap_ci(x: np.ndarray, y: np.ndarray, method: str, *, level: float = 0.95,
                       resamples: int = 999, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the correlation under a moving-block bootstrap of the pairs."""
    n = len(x)
    block = block_length(x, y)
    starts = np.arange(n - block + 1)
    rng = np.random.default_rng(seed)
    per = math.ceil(n / block)
    idx = (rng.choice(starts, (resamples, per))[:, :, None] + np.arange(block)).reshape(resamples, -1)[:, :n]
    values = batch_corr(method, x[idx], y[idx])
    values = values[np.isfinite(values)]
    if len(values) < resamples / 2:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def difference_p(x: np.ndarray, y: np.ndarray, method: str) -> float:
    """p-value of the correlation of first differences (shared trends removed)."""
    dx, dy = np.diff(x), np.diff(y)
    if len(dx) < 3 or np.ptp(dx) == 0 or np.ptp(dy) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(METHODS[method](dx, dy)[1])


def granger_p(measure: np.ndarray, target: np.ndarray, lag: int = 1) -> float:
    """p-value (F test) that the measure's past changes help predict the target's changes."""
    from statsmodels.tsa.stattools import grangercausalitytests

    d = np.column_stack([np.diff(target), np.diff(measure)])
    if len(d) < 3 * lag + 5 or np.ptp(d[:, 0]) == 0 or np.ptp(d[:, 1]) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = grangercausalitytests(d, maxlag=[lag])
    return float(res[lag][0]["ssr_ftest"][1])


def correlate(x: np.ndarray, y: np.ndarray, method: str, seed: int = 0) -> dict:
    """One correlation with its block-bootstrap interval and its difference-based p-value."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 4:
        return {"n": len(x), "r": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
    lo, hi = block_bootstrap_ci(x, y, method, seed=seed)
    return {"n": len(x), "r": _corr(method, x, y), "ci_low": lo, "ci_high": hi, "p": difference_p(x, y, method)}


def correlation_table(series: dict[str, dict[str, np.ndarray]], targets: dict[str, np.ndarray],
                      target: str, methods: tuple[str, ...], seed: int = 0) -> pd.DataFrame:
    """Rows per run, measure and method; Holm-adjusted p across measures within run x method."""
    from statsmodels.stats.multitest import multipletests

    rows = []
    for run, measures in series.items():
        y = targets[run]
        for name, x in measures.items():
            ok = np.isfinite(x) & np.isfinite(y)
            g = granger_p(x[ok], y[ok]) if ok.sum() >= 8 else np.nan
            for method in methods:
                rows.append({"run": run, "measure": name, "target": target, "method": method,
                             **correlate(x, y, method, seed), "granger_p": g})
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "p_adjusted"])
    df["p_adjusted"] = np.nan
    for _, idx in df.groupby(["run", "method"]).groups.items():
        p = df.loc[idx, "p"]
        fin = p[np.isfinite(p)]
        if len(fin):
            df.loc[fin.index, "p_adjusted"] = multipletests(fin.to_numpy(), method="holm")[1]
    return df[COLUMNS]


def granulated_kendall(values: pd.Series, gap: pd.Series, hyperparameters: pd.DataFrame) -> pd.DataFrame:
    """Jiang et al. 2020's granulated Kendall coefficient across runs.

    For each hyperparameter axis, Kendall's τ between measure and generalization gap within
    every group of runs that differ only in that axis, averaged over groups; ``psi`` is the
    mean over axes. ``values``, ``gap``: one number per run; ``hyperparameters``: one row per run.
    """
    rows = []
    axes = [c for c in hyperparameters.columns if hyperparameters[c].nunique() > 1]
    for axis in axes:
        others = [c for c in axes if c != axis]
        if others:
            keys = others[0] if len(others) == 1 else others
            groups = list(hyperparameters.groupby(keys).groups.values())
        else:
            groups = [hyperparameters.index]
        taus = []
        for idx in groups:
            if len(idx) >= 2:
                t = _corr("kendall", values[idx].to_numpy(), gap[idx].to_numpy())
                if math.isfinite(t):
                    taus.append(t)
        rows.append({"axis": axis, "tau": float(np.mean(taus)) if taus else np.nan, "groups": len(taus)})
    out = pd.DataFrame(rows, columns=["axis", "tau", "groups"])
    return out
