"""Noise models of a series along checkpoints, as data: named candidates, chosen by likelihood.

A measured series is y = trend + noise. The trend is a P-spline (``trend_size(n)`` cubic
B-splines, second-difference penalty; Eilers & Marx 1996) in the schedule's coordinate or in
the other one of step / log step; the noise is one of

* ``white``: independent, constant variance (a stochastic estimate re-drawn at each checkpoint);
* ``white_growing``: independent, variance exp(b u) growing (or shrinking) along the run;
* ``white_stderr``: independent, variance proportional to the per-checkpoint stderr² given;
* ``ar1``: stationary AR(1) in checkpoint index;
* ``ou``: Ornstein–Uhlenbeck in steps (AR(1) with coefficient exp(-gap / τ): irregular spacing);
* ``brownian``: Brownian motion in steps (independent increments of variance ∝ gap).

Each candidate is a whitening map W (Σ = σ² W⁻¹W⁻ᵀ) with at most one free parameter. The
trend's smoothness and the noise parameter are fitted jointly by restricted maximum likelihood
(the spline as a Gaussian random effect, Wood 2011: the smoothness is not confounded with the
noise's autocorrelation as a GCV or AIC choice of the trend is), σ² profiled out; the model
with the smallest AIC is chosen. ``fit_noise`` returns the whitened residuals ``z``, their
residual-maker (for the effective n of a co-movement test) and a Ljung–Box check of z
(against Q's distribution for residuals of that fit). ``_gls`` is the plain ML fit with a
fixed trend basis, kept as the check of the whitening maps against a dense multivariate normal density (tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar

from ..errors import InvalidSettingError
from .smooth import bspline_basis, coordinate, trend_coordinates

MODELS = ("white", "white_growing", "white_stderr", "ar1", "ou", "brownian")
_LOG2PI = math.log(2 * math.pi)


@dataclass
class NoiseFit:
    """One fitted noise model of a series, with its penalized-spline trend."""

    model: str
    param: float
    lam: float
    aic: float
    loglik: float
    z: np.ndarray = field(repr=False)  # whitened residuals
    residual_maker: np.ndarray = field(repr=False)  # M = I - H in whitened space: z = M W y
    sigma2: float = 0.0
    trend_edf: float = 0.0
    saturated: bool = False  # the trend took its smallest smoothness: it wants more flexibility
    trend_coordinate: str = "schedule"
    ljung_box_p: float = float("nan")
    candidates: list = field(default_factory=list, repr=False)  # (aic, model, coordinate) of all fits


def _whitener(model: str, param: float, steps: np.ndarray, u: np.ndarray, stderr: np.ndarray | None):
    """(apply, logdet): W applied to the rows of an (n,) or (n, k) array, and log det(Σ/σ²)."""
    n = len(steps)
    gaps = np.diff(steps)
    if model == "white":
        return (lambda a: a), 0.0
    if model in ("white_growing", "white_stderr"):
        if model == "white_growing":
            logv = param * (u - u.mean())
        else:
            logv = 2 * np.log(stderr) - 2 * np.log(stderr).mean()
        sd = np.exp(logv / 2)
        return (lambda a: a / (sd if a.ndim == 1 else sd[:, None])), float(logv.sum())
    if model == "brownian":
        scale = np.sqrt(np.concatenate([[gaps.min()], gaps]) / np.median(gaps))

        def apply(a: np.ndarray) -> np.ndarray:
            out = np.concatenate([a[:1], np.diff(a, axis=0)])
            return out / (scale if a.ndim == 1 else scale[:, None])

        return apply, float(2 * np.log(scale).sum())
    if model == "ar1":
        phi = np.full(n - 1, param)
    elif model == "ou":
        phi = np.exp(-gaps / math.exp(param))
    else:
        raise InvalidSettingError(f"Unknown noise model {model!r}; choose from {MODELS}.")
    innov = np.sqrt(np.maximum(1 - phi**2, 1e-12))

    def apply(a: np.ndarray) -> np.ndarray:
        ph, inn = (phi, innov) if a.ndim == 1 else (phi[:, None], innov[:, None])
        return np.concatenate([a[:1], (a[1:] - ph * a[:-1]) / inn])

    return apply, float(2 * np.log(innov).sum())


def _gls(model: str, param: float, y: np.ndarray, basis: np.ndarray, steps: np.ndarray, u: np.ndarray,
         stderr: np.ndarray | None, reml: bool = False) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Profile log-likelihood (restricted, with ``reml``), whitened residuals, whitened basis
    and σ² of one model."""
    apply, logdet = _whitener(model, param, steps, u, stderr)
    wy, wx = apply(y), apply(basis)
    coef = np.linalg.lstsq(wx, wy, rcond=None)[0]
    z = wy - wx @ coef
    n, p = len(y), basis.shape[1]
    if reml:
        s2 = max(float(z @ z) / (n - p), 1e-300)
        sign, gram = np.linalg.slogdet(wx.T @ wx)
        return -0.5 * ((n - p) * (_LOG2PI + math.log(s2) + 1) + logdet + gram), z, wx, s2
    s2 = max(float(z @ z) / n, 1e-300)
    return -0.5 * (n * (_LOG2PI + math.log(s2) + 1) + logdet), z, wx, s2


_BOUNDS = {"ar1": (-0.95, 0.995), "white_growing": (-12.0, 12.0)}


_LAMBDAS = (-6.0, 8.0)  # log10 λ relative to the basis scale


def _reml(model: str, param: float, loglam: float, y: np.ndarray, basis: np.ndarray, pen: np.ndarray,
          steps: np.ndarray, u: np.ndarray, stderr: np.ndarray | None, full: bool = False):
    """Restricted log-likelihood of y = B β + noise with penalty λ β'Sβ (a P-spline trend as a
    Gaussian random effect with an unpenalized line, Wood 2011), σ² profiled out."""
    apply, logdet = _whitener(model, param, steps, u, stderr)
    wy, wb = apply(y), apply(basis)
    gram = wb.T @ wb
    lam = 10.0**loglam * np.trace(gram) / np.trace(pen)
    a = gram + lam * pen
    chol = np.linalg.cholesky(a + 1e-12 * np.trace(a) * np.eye(len(a)))
    coef = np.linalg.solve(a, wb.T @ wy)
    res = wy - wb @ coef
    n, k = len(y), basis.shape[1]
    rank = k - 2
    s2 = max((float(res @ res) + lam * float(coef @ pen @ coef)) / (n - 2), 1e-300)
    ll = -0.5 * ((n - 2) * (_LOG2PI + math.log(s2) + 1) + logdet + 2 * np.log(np.diag(chol)).sum()
                 - rank * math.log(lam))
    if not full:
        return ll
    hat = wb @ np.linalg.solve(a, wb.T)
    return ll, res, np.eye(n) - hat, s2, float(np.trace(hat))


def _fit_one(model: str, y: np.ndarray, basis: np.ndarray, pen: np.ndarray, steps: np.ndarray, u: np.ndarray,
             stderr: np.ndarray | None) -> tuple[float, float, float]:
    """(max restricted log-likelihood, parameter, log10 λ) of one model."""
    def best_lambda(param: float) -> tuple[float, float]:
        res = minimize_scalar(lambda t: -_reml(model, param, t, y, basis, pen, steps, u, stderr),
                              bounds=_LAMBDAS, method="bounded", options={"xatol": 0.05})
        return -float(res.fun), float(res.x)

    if model in ("white", "white_stderr", "brownian"):
        ll, loglam = best_lambda(0.0)
        return ll, 0.0, loglam
    if model == "ou":
        gaps = np.diff(steps)
        bounds = (math.log(gaps.min() / 5), math.log(5 * (steps[-1] - steps[0])))
    else:
        bounds = _BOUNDS[model]
    res = minimize_scalar(lambda t: -best_lambda(t)[0], bounds=bounds, method="bounded",
                          options={"xatol": 2e-3 * (bounds[1] - bounds[0])})
    ll, loglam = best_lambda(float(res.x))
    return ll, float(res.x), loglam


def trend_size(n: int) -> int:
    """The P-spline trend's number of B-splines for n checkpoints: n / 3, between 4 and 50.

    The cap is what a trend observed almost without noise needs: Brownian or OU noise on a
    schedule whose gaps span many decades (10·1.15^k at n = 150) is tiny at the first
    checkpoints, and a trend of 25 columns left an approximation error there that the whitening
    amplified (those models were never chosen and the check failed in every draw)."""
    return int(np.clip(n // 3, 4, 50))


def trend_basis(c: np.ndarray, size: int) -> np.ndarray:
    """The trend's ``size`` B-splines on the coordinate ``c`` (in [0, 1]), interior knots at
    quantiles of an equal mixture of the checkpoints' distribution and the uniform one.

    Knots at quantiles of the checkpoints alone starve a stretch of the coordinate that holds
    few of them: on a Pythia-style schedule the first ten checkpoints (1 to 512) cover half of
    log step with one or two knots, and a curve rising there saturated the trend (23.5-23.9 of
    25 degrees of freedom), so a wrong noise model was chosen. The mixture gives every part of
    the coordinate at least half its uniform share of knots, and dense parts still more."""
    grid = np.linspace(c[0], c[-1], len(c))
    return bspline_basis(np.sort(np.concatenate([c, grid])), size, at=c)


def candidate_models(steps: np.ndarray, stderr: np.ndarray | None) -> list[str]:
    """The models that apply: ``ou`` only on uneven schedules (on even ones it is ``ar1``),
    ``white_stderr`` only with a stderr."""
    gaps = np.diff(steps)
    out = ["white", "white_growing", "ar1", "brownian"]
    if stderr is not None:
        out.insert(2, "white_stderr")
    if np.ptp(gaps) > 1e-9 * gaps.max():
        out.insert(-1, "ou")
    return out


def fit_noise(y: object, steps: object = None, stderr: object = None, noise: str | None = None) -> list[NoiseFit]:
    """Every model's fit of one series, best (smallest AIC on the restricted likelihood) first,
    down to the last within 2 AIC units of the best.

    ``noise`` forces one model. The trend is a P-spline (``trend_size(n)`` cubic B-splines,
    second-difference penalty) in the schedule's coordinate or the other one of step / log
    step, its smoothness fitted with the noise by REML. The first item carries the Ljung–Box
    p of its whitened residuals (``ljung_box_p``, lags max(2, min(10, n // 5))).
    """
    y = np.asarray(y, float).reshape(-1)
    n = len(y)
    s = np.arange(n, dtype=float) if steps is None else np.asarray(steps, float).reshape(-1)
    u = coordinate(s)
    coords = {"schedule": u, "other": trend_coordinates(s)}
    err = None if stderr is None else np.asarray(stderr, float).reshape(-1)
    if err is not None and not (np.isfinite(err).all() and (err > 0).all()):
        err = None
    if noise is not None and noise not in MODELS:
        raise InvalidSettingError(f"Unknown noise model {noise!r}; choose from {MODELS}.")
    if noise == "white_stderr" and err is None:
        raise InvalidSettingError("noise='white_stderr' needs a finite, positive stderr per value.")
    models = candidate_models(s, err) if noise is None else [noise]
    k = trend_size(n)
    diff = np.diff(np.eye(k), 2, axis=0)
    pen = diff.T @ diff
    bases = {name: trend_basis(c, k) for name, c in coords.items()}
    fits = []
    for name, basis in bases.items():
        for m in models:
            ll, param, loglam = _fit_one(m, y, basis, pen, s, u, err)
            fits.append((-2 * ll + 2 * (m in ("white_growing", "ar1", "ou")), m, name, param, loglam, ll))
    fits.sort(key=lambda f: f[0])
    table = [(f[0], f[1], f[2]) for f in fits]
    out = []
    for aic, m, name, param, loglam, ll in fits:
        if aic - fits[0][0] > 2 and out:
            break
        _, z, resid, s2, edf = _reml(m, param, loglam, y, bases[name], pen, s, u, err, full=True)
        out.append(NoiseFit(m, param, 10.0**loglam, aic, ll, z, resid, s2, edf,
                            saturated=loglam < _LAMBDAS[0] + 0.5, trend_coordinate=name, candidates=table))
    best = out[0]
    if n >= 8:
        best.ljung_box_p = ljung_box_p(best.z, best.residual_maker, max(2, min(10, n // 5)))
    return out


def ljung_box_q(z: np.ndarray, lags: int) -> np.ndarray:
    """Ljung–Box Q = n(n+2) Σₖ r_k²/(n−k), k = 1..lags, of each row of ``z`` (autocorrelations
    of the demeaned rows, as statsmodels' ``acorr_ljungbox``; vectorized over rows)."""
    z = np.atleast_2d(z)
    n = z.shape[1]
    c = z - z.mean(axis=1, keepdims=True)
    den = (c * c).sum(axis=1)
    r = np.stack([(c[:, k:] * c[:, :-k]).sum(axis=1) for k in range(1, lags + 1)], axis=1) / den[:, None]
    return n * (n + 2) * (r**2 / (n - np.arange(1, lags + 1))).sum(axis=1)


def ljung_box_p(z: np.ndarray, residual_maker: np.ndarray, lags: int, draws: int = 400) -> float:
    """Ljung–Box p of whitened residuals z = M ε against Q's distribution for residuals of that
    fit: Q of M ε for white Gaussian ε (``draws``, seeded), not χ²(lags).

    The residuals of a penalized trend are not white even when the model holds: M = I − H
    removes the slow part of the noise, leaving negative autocorrelation at short lags, so the
    χ² reference rejects a correct model far more often than its level (white noise, even
    schedule, n = 60: 15-25% per series instead of 5%). The noise model's own parameter is not
    re-estimated in the reference, which makes the test somewhat conservative for it.
    """
    eps = np.random.default_rng(0).standard_normal((draws, len(z)))
    ref = ljung_box_q(eps @ residual_maker.T, lags)
    return float((1 + (ref >= ljung_box_q(z, lags)[0]).sum()) / (draws + 1))


def comovement(fx: NoiseFit, fy: NoiseFit) -> tuple[float, float]:
    """Correlation of two series' whitened residuals and its effective n under independence.

    Under H0 the residuals are zx = Mx εx and zy = My εy with independent white ε, so
    Var(zx·zy) = σx²σy² tr(CxCy) with C = M Mᵀ, and n_eff = tr(Cx) tr(Cy) / tr(CxCy)
    (Bartlett's formula); for a trend that is a projection on p columns it is n - p.
    """
    zx, zy = fx.z, fy.z
    den = math.sqrt(float(zx @ zx) * float(zy @ zy))
    r = float(zx @ zy) / den if den > 0 else float("nan")
    cx, cy = fx.residual_maker @ fx.residual_maker.T, fy.residual_maker @ fy.residual_maker.T
    cross = float((cx * cy).sum())
    n_eff = float(np.trace(cx) * np.trace(cy) / cross) if cross > 0 else float("nan")
    return r, n_eff
