"""Noise models of a series along checkpoints, as data: named candidates, chosen by likelihood.

A measured series is y = trend + noise. The trend is a regression spline (``smooth.bspline_basis``,
2 to 28 columns) in the schedule's coordinate or in the other one of step / log step; the
noise is one of

* ``white``: independent, constant variance (a stochastic estimate re-drawn at each checkpoint);
* ``white_growing``: independent, variance exp(b u) growing (or shrinking) along the run;
* ``white_stderr``: independent, variance proportional to the per-checkpoint stderr² given;
* ``ar1``: stationary AR(1) in checkpoint index;
* ``ou``: Ornstein–Uhlenbeck in steps (AR(1) with coefficient exp(-gap / τ): irregular spacing);
* ``brownian``: Brownian motion in steps (independent increments of variance ∝ gap).

Each candidate is a whitening map W (Σ = σ² W⁻¹W⁻ᵀ) with at most one free parameter. The
trend and the noise parameters are fitted jointly by Gaussian maximum likelihood (GLS with the
variance profiled out; the one parameter by bounded scalar search) and the pair (trend size,
model) with the smallest AIC is chosen. ``fit_noise`` returns the GLS-whitened residuals
``z`` (under the model: N(0, σ² M), M the residual-maker of the whitened trend basis), which the
correlation table tests for co-movement, and a Ljung–Box check of z (statsmodels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar

from ..errors import InvalidSettingError
from .smooth import bspline_basis, coordinate

MODELS = ("white", "white_growing", "white_stderr", "ar1", "ou", "brownian")
TREND_SIZES = (2, 3, 4, 6, 8, 11, 15, 20, 28)
_LOG2PI = math.log(2 * math.pi)


@dataclass
class NoiseFit:
    """One fitted (trend size, noise model) pair of a series."""

    model: str
    trend_size: int
    param: float
    aic: float
    loglik: float
    z: np.ndarray = field(repr=False)  # whitened GLS residuals
    whitened_trend: np.ndarray = field(repr=False)  # W X, for the residual-maker M
    sigma2: float = 0.0
    ljung_box_p: float = float("nan")
    candidates: list = field(default_factory=list, repr=False)  # (aic, model, trend size, coordinate)
    trend_coordinate: str = "schedule"

    @property
    def residual_maker_basis(self) -> np.ndarray:
        """An orthonormal basis of the whitened trend's column space."""
        q, _ = np.linalg.qr(self.whitened_trend)
        return q


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


def _fit_one(model: str, y: np.ndarray, basis: np.ndarray, steps: np.ndarray, u: np.ndarray,
             stderr: np.ndarray | None) -> tuple[float, float]:
    """(max log-likelihood, parameter) of one model with the trend ``basis``."""
    if model in ("white", "white_stderr", "brownian"):
        return _gls(model, 0.0, y, basis, steps, u, stderr)[0], 0.0
    if model == "ou":
        gaps = np.diff(steps)
        bounds = (math.log(gaps.min() / 5), math.log(5 * (steps[-1] - steps[0])))
    else:
        bounds = _BOUNDS[model]
    # the parameter by restricted likelihood (unbiased next to a flexible trend), the fit's
    # likelihood for the comparison of models by ML
    res = minimize_scalar(lambda t: -_gls(model, t, y, basis, steps, u, stderr, reml=True)[0], bounds=bounds,
                          method="bounded", options={"xatol": 1e-3 * (bounds[1] - bounds[0])})
    return _gls(model, float(res.x), y, basis, steps, u, stderr)[0], float(res.x)


def trend_coordinates(steps: np.ndarray) -> np.ndarray:
    """The coordinate that ``smooth.coordinate`` did not choose (step if it chose log step, log
    step otherwise), rescaled to [0, 1]: trends are tried in both (a power law in steps is
    smooth in log step even on an even schedule)."""
    gaps = np.diff(steps)
    if gaps.max() >= 10 * gaps.min():
        v = steps
    else:
        v = np.log(steps - steps[0] + gaps.min())
    return (v - v[0]) / (v[-1] - v[0])


def trend_cap(n: int) -> int:
    """The largest trend size tried for n checkpoints: (n - 2) / 2, at least 2."""
    return max(2, (n - 2) // 2)


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


def fit_noise(y: object, steps: object = None, stderr: object = None, noise: str | None = None,
              trend_sizes: tuple[int, ...] | None = None) -> list[NoiseFit]:
    """Every (trend size, model) fit of one series, best (smallest AIC) first.

    ``noise`` forces one model. The trend sizes tried are those of TREND_SIZES up to
    ``trend_cap(n)``. The first item also carries the Ljung–Box p of its whitened residuals
    (lags min(10, n // 5), degrees of freedom reduced by the model's parameter).
    """
    from statsmodels.stats.diagnostic import acorr_ljungbox

    y = np.asarray(y, float).reshape(-1)
    n = len(y)
    s = np.arange(n, dtype=float) if steps is None else np.asarray(steps, float).reshape(-1)
    u = coordinate(s)
    coords = {"schedule": u, "other": trend_coordinates(s)}
    err = None if stderr is None else np.asarray(stderr, float).reshape(-1)
    if err is not None and not (np.isfinite(err).all() and (err > 0).all()):
        err = None
    models = candidate_models(s, err) if noise is None else [noise]
    if noise is not None and noise not in MODELS:
        raise InvalidSettingError(f"Unknown noise model {noise!r}; choose from {MODELS}.")
    if noise == "white_stderr" and err is None:
        raise InvalidSettingError("noise='white_stderr' needs a finite, positive stderr per value.")
    sizes = [k for k in (trend_sizes or TREND_SIZES) if k <= trend_cap(n)]
    fits = []
    for name, c in coords.items():
        for k in sizes if name == "schedule" else [k for k in sizes if k > 2]:
            basis = bspline_basis(c, k)
            for m in models:
                ll, param = _fit_one(m, y, basis, s, u, err)
                dof = k + 1 + (m in ("white_growing", "ar1", "ou"))
                fits.append((-2 * ll + math.log(n) * dof, m, k, param, ll, name))
    fits.sort(key=lambda f: f[0])
    table = [(f[0], f[1], f[2], f[5]) for f in fits]
    out = []
    for aic, m, k, param, ll, name in fits:
        if aic - fits[0][0] > 2 and out:
            break
        _, z, wx, s2 = _gls(m, param, y, bspline_basis(coords[name], k), s, u, err)
        out.append(NoiseFit(m, k, param, aic, ll, z, wx, s2, candidates=table, trend_coordinate=name))
    lags = max(2, min(10, n // 5))
    best = out[0]
    if n >= 8:
        df = int(best.model in ("white_growing", "ar1", "ou"))
        best.ljung_box_p = float(acorr_ljungbox(best.z, lags=[lags], model_df=df)["lb_pvalue"].iloc[0])
    return out


def comovement(fx: NoiseFit, fy: NoiseFit) -> tuple[float, float]:
    """Correlation of two series' whitened residuals and its effective n under independence.

    Under H0 the residuals are N(0, σx² Mx) and N(0, σy² My), independent, so
    Var(zx·zy) = σx²σy² tr(MxMy) and n_eff = tr(Mx) tr(My) / tr(MxMy) (Bartlett's formula for
    projections); for equal trends it is n - p, the partial correlation's.
    """
    zx, zy = fx.z, fy.z
    den = math.sqrt(float(zx @ zx) * float(zy @ zy))
    r = float(zx @ zy) / den if den > 0 else float("nan")
    qx, qy = fx.residual_maker_basis, fy.residual_maker_basis
    n = len(zx)
    px, py = qx.shape[1], qy.shape[1]
    cross = n - px - py + float(((qx.T @ qy) ** 2).sum())
    n_eff = (n - px) * (n - py) / cross if cross > 0 else float("nan")
    return r, n_eff
