"""Correlations between a measure and a target (test loss) along training, done honestly.

Training curves are autocorrelated, trend together and are usually checkpointed unevenly, so
the naive interval and p-value of a correlation between two of them mean little. Each row
answers two questions, each with its own statistic, interval and hypothesis:

* **Levels** (``r``, ``ci_low``, ``ci_high``): how strongly do the two curves co-trend? The
  interval is Fisher's z on an effective sample size: Bartlett's variance of r under
  independence in matrix form, n_eff - 1 = tr(Σx) tr(Σy) / tr(Σx Σy) with Σ the centred
  covariance of each series (Bartlett 1935; Pyper & Peterman 1998). Each Σ comes from the
  better (AIC) of two fitted models: a stationary AR(1) in checkpoint index (where this is the
  familiar n (1 - φx φy) / (1 + φx φy)) and a Brownian motion in steps, which captures that on
  a log-spaced schedule the last few checkpoints carry most of a drifting curve's variance.
  The interval describes co-trending; no p-value is given for it, since two independent
  trending curves are correlated in every sample.
* **Innovations** (``r_diff``, its interval and ``p``): do the curves move together beyond their
  trends? Each series gets a noise model (``noise_models``: white, white with growing variance,
  white weighted by the given stderr, AR(1) in index, Ornstein–Uhlenbeck in steps, Brownian
  in steps), each around a P-spline trend, fitted jointly by REML and chosen by AIC
  (``noise_model`` names the pair; ``noise=`` forces one). ``r_diff`` is the correlation of
  the two GLS-whitened residual series and ``p`` tests H0 "no co-movement beyond each series'
  trend under its noise model" with a t reference on Bartlett's effective n for the two
  residual-makers (``n_eff_diff``). Where several models are within 2 AIC units of the best,
  the largest of their p-values is reported. ``p_reliable`` is False where a chosen model
  does not fit (Ljung–Box p < 0.05 on its whitened residuals), its trend is at the least
  smoothness allowed, or n < 10: the table then leaves the p blank and says why.
  ``p_adjusted``: Holm over the whole table by default (``attrs["p_family"]``).
* The levels' n_eff is also capped by Bartlett's (Σvx)(Σvy)/Σ(vx vy) for the noise variance
  profiles of the chosen models (growing variance or stderr weights), so the interval widens
  where a few late checkpoints carry most of the noise.
* Flags: ``signs_disagree`` (levels and innovations correlate with opposite signs at p < 0.05:
  the level correlation comes from the trends) and ``shared_curvature`` (both whitened residual
  series still follow a quadratic in position at p < 0.05: the trends were not fully removed).
* ``granger_p``: does the measure's last innovation help predict the target's next one beyond
  the target's own (F test, lag one checkpoint; its denominator degrees of freedom less the
  target trend's edf)? On uneven schedules a lag spans different
  numbers of steps; ``granger_reliable`` is False when the largest gap is more than twice the
  smallest.

Fisher-z standard errors: 1/√(n-3) for Pearson, √(1.06/(n-3)) for Spearman and √(0.437/(n-4))
for Kendall (Fieller, Hartley & Pearson 1957), with n the effective n. Type-I error, power and
coverage are checked by simulation in ``tests/test_correlation_simulation.py`` (fast cells) and
``benchmarks/analysis_simulation.py`` (the grid).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ComplexityZooWarning, InvalidSettingError
from .noise_models import NoiseFit, comovement, fit_noise
from .smooth import coordinate

METHODS = ("pearson", "spearman", "kendall")
COLUMNS = ["run", "measure", "target", "method", "n", "n_eff", "r", "ci_low", "ci_high", "n_eff_diff",
           "r_diff", "r_diff_ci_low", "r_diff_ci_high", "p", "p_adjusted", "p_reliable", "noise_model", "trend_edf",
           "ljung_box_p", "signs_disagree", "shared_curvature", "granger_p", "granger_reliable"]
HYPOTHESES = ("levels r [CI]: how strongly the curves co-trend (an interval, no test); "
              "innovations r [CI] and p: H0 no co-movement beyond each series' trend under its noise model "
              "(noise_model), valid where p_reliable")
_FISHER = {"pearson": (1.0, 3), "spearman": (1.06, 3), "kendall": (0.437, 4)}


class ShortSeriesWarning(ComplexityZooWarning):
    """A correlation was asked of a series too short or too constant to give one."""


def batch_corr(method: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The correlation of each row of ``x`` with the same row of ``y`` (NaN where undefined).

    Pearson; Spearman as Pearson on average ranks; Kendall's tau-b from pairwise signs.
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
        raise InvalidSettingError(f"Unknown correlation method {method!r}; choose from {METHODS}.")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-300, num / np.where(den > 1e-300, den, 1), np.nan)


def _model_covariance(v: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Covariance of one series under the better (AIC) of AR(1)-in-index and Brownian-in-steps."""
    n = len(v)
    design = np.column_stack([np.ones(n - 1), v[:-1]])
    coef = np.linalg.lstsq(design, v[1:], rcond=None)[0]
    rss = float(((v[1:] - design @ coef) ** 2).sum())
    gaps, inc = np.diff(steps), np.diff(v)
    drift = inc.sum() / gaps.sum()
    scale = float(((inc - drift * gaps) ** 2 / gaps).sum()) / (n - 1)
    if rss <= 0 or scale <= 0:
        return np.eye(n)
    aic_ar = (n - 1) * math.log(rss / (n - 1)) + 6
    aic_bm = (n - 1) * math.log(scale) + float(np.log(gaps).sum()) + 4
    if aic_ar <= aic_bm:
        index = np.arange(n)
        return float(np.clip(coef[1], -0.99, 0.99)) ** np.abs(index[:, None] - index[None, :])
    t = steps - steps[0] + gaps.min()
    return np.minimum(t[:, None], t[None, :])


def effective_n(x: np.ndarray, y: np.ndarray, steps: np.ndarray | None = None) -> float:
    """The levels' effective sample size (see the module docstring), between 1 and n."""
    n = len(x)
    s = np.arange(n, dtype=float) if steps is None else np.asarray(steps, float)
    center = np.eye(n) - 1.0 / n
    sx = center @ _model_covariance(x, s) @ center
    sy = center @ _model_covariance(y, s) @ center
    cross = float(np.trace(sx @ sy))
    if cross <= 0:
        return float(n)
    return float(min(max(np.trace(sx) * np.trace(sy) / cross + 1, 1.0), n))


def fisher_interval(r: np.ndarray, n_eff: np.ndarray, method: str, level: float = 0.95,
                    extra: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fisher-z interval of a correlation at effective sample size ``n_eff`` (minus ``extra``
    regressors partialled out); [-1, 1] when too few effective samples remain."""
    var, lost = _FISHER[method]
    dof = np.asarray(n_eff, float) - lost - extra
    q = stats.norm.ppf(0.5 + level / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12))
        half = q * np.sqrt(var / np.where(dof > 0, dof, np.nan))
        lo, hi = np.tanh(z - half), np.tanh(z + half)
    lo = np.where(dof > 0, lo, -1.0)
    hi = np.where(dof > 0, hi, 1.0)
    bad = ~np.isfinite(r)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def correlation_p(r: np.ndarray, n_eff: np.ndarray, method: str, extra: int = 0) -> np.ndarray:
    """Two-sided p of H0 ρ = 0 at effective sample size ``n_eff`` (``extra`` regressors removed)."""
    ne = np.asarray(n_eff, float) - extra
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "kendall":
            z = r / np.sqrt(2 * (2 * ne + 5) / (9 * ne * (ne - 1)))
            p = 2 * stats.norm.sf(np.abs(z))
        else:
            dof = ne - 2
            t = r * np.sqrt(dof / np.maximum(1 - r * r, 1e-300))
            p = 2 * stats.t.sf(np.abs(t), np.where(dof > 0, dof, np.nan))
    return np.where(ne > 3, p, np.nan)


def _pair_p(fx: NoiseFit, fy: NoiseFit, method: str) -> tuple[float, float, float]:
    """(r, n_eff, p) of the co-movement test on two fitted series (see noise_models.comovement)."""
    r, n_eff = comovement(fx, fy)
    if method != "pearson":
        r = float(batch_corr(method, fx.z, fy.z)[0])
    return r, n_eff, float(correlation_p(np.array([r]), np.array([n_eff + 1]), method)[0])


def _innovations_test(x: np.ndarray, y: np.ndarray, steps: np.ndarray | None, method: str, level: float,
                      noise: str | None, stderr_x: np.ndarray | None, stderr_y: np.ndarray | None) -> dict:
    """The co-movement columns of one pair: each series' noise model, its innovations, the test."""
    fits_x = fit_noise(x, steps, stderr_x, noise)
    fits_y = fit_noise(y, steps, stderr_y, noise)
    fx, fy = fits_x[0], fits_y[0]
    r, n_eff, p = _pair_p(fx, fy, method)
    # a fragile choice: every model within 2 AIC of the best is as plausible; report the largest p
    for a in fits_x[:3]:
        for b in fits_y[:3]:
            if a is not fx or b is not fy:
                p = max(p, _pair_p(a, b, method)[2])
    lo, hi = fisher_interval(np.array([r]), np.array([n_eff + 1]), method, level)
    n = len(x)
    fitted = min(fx.ljung_box_p, fy.ljung_box_p) >= 0.05 and not (fx.saturated or fy.saturated)
    return {"fx": fx, "fy": fy, "r_diff": r, "n_eff_diff": n_eff, "r_diff_ci_low": float(lo[0]),
            "r_diff_ci_high": float(hi[0]), "p": p, "p_reliable": bool(n >= 10 and fitted and np.isfinite(p)),
            "noise_model": f"{fx.model} / {fy.model}", "trend_edf": f"{fx.trend_edf:.1f} / {fy.trend_edf:.1f}",
            "ljung_box_p": min(fx.ljung_box_p, fy.ljung_box_p)}


def _variance_profile(fit: NoiseFit, steps: np.ndarray, stderr: np.ndarray | None) -> np.ndarray:
    """Relative noise variance at each checkpoint under a fitted model (ones unless heteroscedastic)."""
    n = len(fit.z)
    if fit.model == "white_growing":
        u = coordinate(steps)
        return np.exp(fit.param * (u - u.mean()))
    if fit.model == "white_stderr" and stderr is not None:
        return stderr**2
    return np.ones(n)


def _curvature_p(u: np.ndarray) -> float:
    """p of an F test that a quadratic in position explains a (residual) series."""
    m = len(u)
    t = np.linspace(-1, 1, m)
    basis = np.column_stack([t, t * t - (t * t).mean()])
    fit = basis @ np.linalg.lstsq(basis, u, rcond=None)[0]
    rss1, rss0 = float(((u - fit) ** 2).sum()), float((u**2).sum())
    dof = m - 3
    if dof <= 0 or rss0 <= 0 or rss1 <= 0:
        return 1.0
    return float(stats.f.sf(((rss0 - rss1) / 2) / (rss1 / dof), 2, dof))


def _granger(u: np.ndarray, v: np.ndarray, edf: float = 0.0) -> float:
    """F-test p that u[t-1] predicts v[t] beyond v[t-1], on residual series.

    ``edf``: the degrees of freedom the target's trend already took from ``v`` (its residuals
    span only n − edf dimensions), deducted from the F test's denominator degrees of freedom;
    without it the residual variance is underestimated and the test is liberal.
    """
    y, own, other = v[1:], v[:-1], u[:-1]
    m = len(y)
    dof = m - 3 - edf
    if m < 8 or dof < 2:
        return float("nan")
    x1 = np.column_stack([np.ones(m), own])
    x2 = np.column_stack([x1, other])
    rss1 = float(((y - x1 @ np.linalg.lstsq(x1, y, rcond=None)[0]) ** 2).sum())
    rss2 = float(((y - x2 @ np.linalg.lstsq(x2, y, rcond=None)[0]) ** 2).sum())
    return float(stats.f.sf((rss1 - rss2) / (rss2 / dof), 1, dof)) if rss2 > 0 else float("nan")


def _one(x: np.ndarray, y: np.ndarray, steps: np.ndarray | None, method: str, level: float, granger: bool,
         noise: str | None, stderr_x: np.ndarray | None, stderr_y: np.ndarray | None) -> dict:
    n = len(x)
    s = np.arange(n, dtype=float) if steps is None else np.asarray(steps, float)
    r = float(batch_corr(method, x, y)[0])
    test = _innovations_test(x, y, s, method, level, noise, stderr_x, stderr_y)
    fx, fy = test.pop("fx"), test.pop("fy")
    vx, vy = _variance_profile(fx, s, stderr_x), _variance_profile(fy, s, stderr_y)
    hetero = float(vx.sum() * vy.sum() / (vx * vy).sum())  # Bartlett's n for unequal variances
    n_eff = min(effective_n(x, y, steps), hetero)
    lo, hi = fisher_interval(np.array([r]), np.array([n_eff]), method, level)
    out = {"n": n, "n_eff": n_eff, "r": r, "ci_low": float(lo[0]), "ci_high": float(hi[0]), **test}
    out["signs_disagree"] = bool(np.sign(r) * np.sign(out["r_diff"]) < 0 and out["p"] < 0.05)
    out["shared_curvature"] = bool(_curvature_p(fx.z) < 0.05 and _curvature_p(fy.z) < 0.05)
    if granger:
        gaps = np.diff(s)
        out["granger_p"] = _granger(fx.z, fy.z, fy.trend_edf)
        out["granger_reliable"] = bool(gaps.max() <= 2 * gaps.min())
    return out


def correlate_batch(x: np.ndarray, y: np.ndarray, steps: np.ndarray | None = None, method: str = "pearson",
                    level: float = 0.95, granger: bool = True, noise: str | None = None) -> dict[str, np.ndarray]:
    """``correlate`` for many replicate pairs (rows of ``x`` and ``y``; no NaN), as column arrays."""
    if method not in METHODS:
        raise InvalidSettingError(f"Unknown correlation method {method!r}; choose from {METHODS}.")
    x, y = np.atleast_2d(np.asarray(x, float)), np.atleast_2d(np.asarray(y, float))
    rows = [_one(a, b, steps, method, level, granger, noise, None, None) for a, b in zip(x, y)]
    return {k: np.array([row[k] for row in rows]) for k in rows[0]}


def correlate(x: object, y: object, steps: object = None, method: str = "pearson", level: float = 0.95, *,
              noise: str | None = None, stderr_x: object = None, stderr_y: object = None) -> dict:
    """One correlation of a measure ``x`` with a target ``y`` along checkpoints at ``steps``.

    Keys: n, n_eff, r, ci_low, ci_high (levels: co-trending); n_eff_diff, r_diff,
    r_diff_ci_low, r_diff_ci_high, p (innovations: H0 no co-movement beyond each series' trend
    under its noise model), noise_model ("x model / y model"), trend_edf, ljung_box_p,
    p_reliable, signs_disagree, shared_curvature, granger_p, granger_reliable (see the module
    docstring). ``noise`` forces one noise model for both series (noise_models.MODELS);
    ``stderr_x``/``stderr_y``: per-value standard errors (adds the ``white_stderr`` candidate).
    Pairs with a non-finite value are dropped; fewer than 5 left, or a constant series, give
    NaN statistics and a ShortSeriesWarning.
    """
    x, y = np.asarray(x, float).reshape(-1), np.asarray(y, float).reshape(-1)
    if x.shape != y.shape:
        raise InvalidSettingError(f"x and y must have the same length; got {len(x)} and {len(y)}.")
    s = None if steps is None else np.asarray(steps, float).reshape(-1)
    if s is not None and s.shape != x.shape:
        raise InvalidSettingError(f"steps must have one entry per value; got {len(s)} for {len(x)}.")
    if s is not None and (np.diff(s) <= 0).any():
        raise InvalidSettingError("steps must be strictly increasing.")
    if method not in METHODS:
        raise InvalidSettingError(f"Unknown correlation method {method!r}; choose from {METHODS}.")
    errs = [None if e is None else np.asarray(e, float).reshape(-1) for e in (stderr_x, stderr_y)]
    for e in errs:
        if e is not None and e.shape != x.shape:
            raise InvalidSettingError(f"a stderr must have one entry per value; got {len(e)} for {len(x)}.")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, s = x[ok], y[ok], (None if s is None else s[ok])
    errs = [None if e is None else e[ok] for e in errs]
    if len(x) < 5 or np.ptp(x) == 0 or np.ptp(y) == 0:
        why = f"{len(x)} finite pairs" if len(x) < 5 else "a constant series"
        warnings.warn(f"No correlation from {why}: at least 5 non-constant pairs are needed.",
                      ShortSeriesWarning, stacklevel=2)
        nan = float("nan")
        return {"n": len(x), "n_eff": nan, "r": nan, "ci_low": nan, "ci_high": nan, "n_eff_diff": nan,
                "r_diff": nan, "r_diff_ci_low": nan, "r_diff_ci_high": nan, "p": nan, "p_reliable": False,
                "noise_model": "", "trend_edf": "", "ljung_box_p": nan, "signs_disagree": False,
                "shared_curvature": False, "granger_p": nan, "granger_reliable": False}
    return _one(x, y, s, method, level, True, noise, errs[0], errs[1])


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of p-values (NaN kept as NaN)."""
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    fin = np.nonzero(np.isfinite(p))[0]
    if len(fin):
        order = fin[np.argsort(p[fin])]
        m = len(order)
        adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
        out[order] = np.minimum(adj, 1.0)
    return out


def correlation_table(series: dict[str, dict[str, np.ndarray]], targets: dict[str, np.ndarray],
                      target: str, methods: tuple[str, ...] = ("pearson",),
                      steps: dict[str, np.ndarray] | None = None,
                      stderr: dict[str, dict[str, np.ndarray]] | None = None, adjust: str = "table") -> pd.DataFrame:
    """Rows per run, measure and method, with Holm-adjusted p.

    ``adjust``: "table" (default) adjusts over every row of the table, "run" within each run ×
    method. The family is named in ``table.attrs["p_family"]`` (export puts it in the caption).
    ``stderr``: per run and measure, the values' standard errors (the ``white_stderr`` model).
    """
    if adjust not in ("table", "run"):
        raise InvalidSettingError(f"adjust must be 'table' or 'run'; got {adjust!r}.")
    rows = []
    for run, measures in series.items():
        for name, x in measures.items():
            err = None if stderr is None else stderr.get(run, {}).get(name)
            for method in methods:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ShortSeriesWarning)
                    row = correlate(x, targets[run], None if steps is None else steps[run], method, stderr_x=err)
                if caught:
                    warnings.warn(f"{run}/{name} vs {target}: {caught[0].message}", ShortSeriesWarning, stacklevel=2)
                rows.append({"run": run, "measure": name, "target": target, "method": method, **row})
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "p_adjusted"])
    df["p_adjusted"] = np.nan
    keys = ["run", "method"] if adjust == "run" else []
    groups = df.groupby(keys).groups.items() if keys else [((), df.index)]
    for _, idx in groups:
        df.loc[idx, "p_adjusted"] = holm(df.loc[idx, "p"].to_numpy())
    tests = int(np.isfinite(df["p"]).sum())
    df.attrs["p_family"] = (f"p adjusted by Holm over all {tests} tests of the table" if adjust == "table"
                            else "p adjusted by Holm within each run and method")
    df.attrs["hypotheses"] = HYPOTHESES
    return df[COLUMNS]
