"""Smooth fits of a series along its checkpoints: the schedule's coordinate, spline bases, P-splines.

Every smooth-vs-abrupt decision (change points, stages, the trends of the correlation table)
works in the schedule's own coordinate: log step when the checkpoints span a wide range of
gaps (geometric, dense-then-sparse, Pythia-style schedules), the step itself otherwise. The
spline knots sit at quantiles of that coordinate, so every segment holds about the same number
of checkpoints. The penalized spline (Eilers & Marx 1996: cubic B-splines, second-difference
penalty) chooses its smoothness λ by generalized cross-validation (Craven & Wahba 1979), or by
restricted maximum likelihood (Wood 2011); ``curvature_penalty`` penalizes ∫f''² in the
coordinate itself instead (O'Sullivan 1986), for fits whose null space must be the lines in it.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import BSpline

from ..errors import InvalidSettingError


def coordinate(steps: object) -> np.ndarray:
    """The schedule's own coordinate: log(step - first + smallest gap) when the largest gap is
    at least 10 times the smallest (log-like schedules), else the step; rescaled to [0, 1]."""
    s = np.asarray(steps, dtype=float).reshape(-1)
    if len(s) < 2:
        return np.zeros(len(s))
    gaps = np.diff(s)
    if (gaps <= 0).any() or not np.isfinite(s).all():
        raise InvalidSettingError("steps must be finite and strictly increasing.")
    u = np.log(s - s[0] + gaps.min()) if gaps.max() >= 10 * gaps.min() else s
    return (u - u[0]) / (u[-1] - u[0])


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


EVEN_KNOTS = 0.5  # weight of evenly spaced knots blended into the quantile ones (``bspline_basis``)


def choose_coordinate(steps: np.ndarray, y: np.ndarray, size: int, weights: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The spline fit of ``y`` in step or in log step, whichever fits better by GCV: returns the
    coordinate, its ``size`` cubic B-splines (knots blending quantiles and even spacing,
    ``EVEN_KNOTS``), their curvature penalty (∫f''² in that coordinate, lines free) and the fit.
    Change points and stages both smooth this way: a curve may move on log time between evenly
    spaced checkpoints, or on step between log-spaced ones."""
    options = []
    for u in (coordinate(steps), trend_coordinates(steps)):
        base, penalty = bspline_basis(u, size, even=EVEN_KNOTS), curvature_penalty(u, size, even=EVEN_KNOTS)
        options.append((u, base, penalty, pspline(None, y, weights=weights, base=base, penalty=penalty)))
    return min(options, key=lambda c: c[3]["gcv"])


def _knots(u: np.ndarray, size: int, degree: int, even: float = 0.0) -> np.ndarray:
    at = np.linspace(0, 1, size - degree + 1)[1:-1]
    inner = (1 - even) * np.quantile(u, at) + even * (u[0] + at * (u[-1] - u[0]))
    inner = np.maximum.accumulate(inner + 1e-9 * np.arange(len(inner)))  # repeated quantiles apart
    return np.concatenate([[u[0]] * (degree + 1), inner, [u[-1]] * (degree + 1)])


def bspline_basis(u: np.ndarray, size: int, at: np.ndarray | None = None, even: float = 0.0) -> np.ndarray:
    """``size`` cubic B-spline columns with interior knots at quantiles of ``u`` (in [0, 1]),
    evaluated at ``u`` or at the points ``at``. Size 1 is the constant, 2 adds a line; the
    columns sum to one (the constant is in their span). ``even``: the weight of evenly spaced
    knots blended into the quantiles, so sparse stretches of an uneven schedule keep some."""
    u = np.asarray(u, float)
    x = u if at is None else np.asarray(at, float)
    if size <= 2:
        return np.column_stack([np.ones_like(x), x][:size])
    degree = min(3, size - 1)
    return BSpline.design_matrix(np.clip(x, u[0], u[-1]), _knots(u, size, degree, even), degree).toarray()


def pspline(u: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, size: int | None = None,
            lam: float | None = None, extra: np.ndarray | None = None, base: np.ndarray | None = None,
            select: str = "gcv", floor: float = 0.0, penalty: np.ndarray | None = None) -> dict:
    """Penalized cubic spline fit of ``y`` on ``u``, λ by GCV (``select="reml"``: by restricted
    maximum likelihood, the spline as a Gaussian random effect, Wood 2011; ``"ml"``: by maximum
    likelihood, returned as ``ml``) unless given.

    ``weights``: inverse variances (relative). ``extra``: unpenalized columns fitted with the
    spline (e.g. a step at a candidate jump). ``base``: the spline columns, when already built
    (then ``u`` is not used). ``penalty``: the spline's penalty matrix (default: second
    differences of the coefficients, Eilers & Marx; ``curvature_penalty``: ∫f''² du).
    ``floor``: a variance added to the residual variance of the restricted likelihood (noise-free curves).
    Returns fitted ``values``, ``rss`` (weighted),
    ``edf`` (trace of the hat matrix), ``lam``, ``coef``, ``basis``, ``sigma2`` (weighted
    residual variance, rss / (n - edf)), ``reml`` (the restricted log-likelihood at the chosen λ,
    Wood 2011's, constants dropped) and ``cov`` (the Bayesian posterior covariance of the
    coefficients in units of sigma2, Wahba 1983), and ``gcv``.
    """
    y = np.asarray(y, float)
    n = len(y)
    size = size or int(np.clip(n // 2, 4, 30))
    base = bspline_basis(np.asarray(u, float), min(size, n)) if base is None else base
    k = base.shape[1]
    design = base if extra is None else np.column_stack([base, extra])
    w = np.ones(n) if weights is None else np.asarray(weights, float) / np.mean(weights)
    diff = np.diff(np.eye(k), 2, axis=0) if k > 2 else np.zeros((0, k))
    pen = np.zeros((design.shape[1], design.shape[1]))
    pen[:k, :k] = diff.T @ diff if penalty is None else penalty
    gram = design.T @ (design * w[:, None])
    # all λ at once (Demmler–Reinsch): with gram = L Lᵀ and L⁻¹ S L⁻ᵀ = U diag(d) Uᵀ, the fit at λ
    # shrinks the coordinates b = Uᵀ L⁻¹ Dᵀ W y by 1 / (1 + λ d)
    # λ's grid and the ridge scale with the spline's own columns, so the units of an extra column
    # change neither
    scale = np.trace(gram[:k, :k]) / max(np.trace(pen), 1e-12)
    chol = np.linalg.cholesky(gram + 1e-9 * np.trace(gram[:k, :k]) * np.eye(len(gram)))
    linv = np.linalg.inv(chol)
    d, vecs = np.linalg.eigh(linv @ pen @ linv.T)
    d = np.maximum(d, 0.0)
    to_coef = linv.T @ vecs
    b_ = to_coef.T @ (design.T @ (w * y))
    yy = float((w * y * y).sum())
    lams = np.array([lam]) if lam is not None else scale * np.logspace(-8, 4, 49)
    shrink = 1 / (1 + lams[:, None] * d[None, :])
    rss = np.maximum(yy - 2 * (shrink * b_**2).sum(1) + (shrink**2 * b_**2).sum(1), 0.0)
    edf = shrink.sum(1)
    gcv = n * rss / np.maximum(n - edf, 1e-3) ** 2
    prss = np.maximum(yy - (shrink * b_**2).sum(1), 0.0)  # penalized rss
    restricted = _restricted_loglik(lams, d, prss, n, floor)
    loss = {"gcv": gcv, "reml": -restricted}
    if select == "ml":
        loss["ml"] = -_marginal_loglik(lams, base * np.sqrt(w)[:, None], pen[:k, :k], prss, n, floor)
    i = int(np.argmin(loss[select]))
    coef = to_coef @ (shrink[i] * b_)
    best = {"values": design @ coef, "rss": float(rss[i]), "edf": float(edf[i]), "lam": float(lams[i]),
            "coef": coef, "basis": design, "gcv": float(gcv[i]),
            "reml": float(restricted[i]) - float(np.log(np.diag(chol)).sum()), "cov": (to_coef * shrink[i]) @ to_coef.T}
    if select == "ml":
        best["ml"] = -float(loss["ml"][i])
    best["sigma2"] = best["rss"] / max(n - best["edf"], 1.0)
    return best


def curvature_penalty(u: np.ndarray, size: int, even: float = 0.0) -> np.ndarray:
    """∫ B_i''(u) B_j''(u) du over the ``bspline_basis(u, size)`` columns (O'Sullivan 1986): a
    penalty on curvature in u itself, whose null space is the lines in u however unevenly the
    quantile knots fall (the difference penalty's null space is linear in knot index)."""
    u = np.asarray(u, float)
    if size <= 3:
        return np.zeros((size, size))
    knots = _knots(u, size, 3, even)
    edges = np.unique(knots)
    half = np.diff(edges) / 2
    mid = edges[:-1] + half
    node = 1 / np.sqrt(3)  # two-point Gauss-Legendre: exact for the piecewise quadratic B_i'' B_j''
    at = np.concatenate([mid - node * half, mid + node * half])
    wts = np.concatenate([half, half])
    second = np.column_stack([BSpline(knots, np.eye(size)[i], 3).derivative(2)(at) for i in range(size)])
    return second.T @ (second * wts[:, None])


def _marginal_loglik(lams: np.ndarray, base: np.ndarray, penalty: np.ndarray, prss: np.ndarray, n: int,
                     floor: float = 0.0) -> np.ndarray:
    """Maximum (not restricted) log-likelihood at each λ, σ² and the unpenalized coefficients
    profiled out, constants dropped: -(n log σ̂² + log|I + Z (λS₊)⁻¹ Zᵀ|) / 2, with Z the spline's
    penalized directions (``base``, rows scaled by √weight). Unlike the restricted likelihood it
    does not depend on the scale of unpenalized columns, so it compares models that differ in
    them: adding one can only raise it (nested models)."""
    s, vecs = np.linalg.eigh(penalty)
    pos = s > 1e-10 * max(float(s.max()), 1e-300)
    z = base @ (vecs[:, pos] / np.sqrt(s[pos]))
    m = np.maximum(np.linalg.eigvalsh(z.T @ z), 0.0)
    return -0.5 * (n * np.log((prss + n * floor + 1e-300) / n) + np.log1p(m[None, :] / lams[:, None]).sum(1))


def _restricted_loglik(lams: np.ndarray, d: np.ndarray, prss: np.ndarray, n: int, floor: float = 0.0) -> np.ndarray:
    """Restricted log-likelihood (σ² profiled out, constants dropped) at each λ, from the
    Demmler–Reinsch coordinates: ``prss`` the penalized rss yy - Σ b²/(1 + λd), log|G + λS| - log|λS|₊ =
    Σ log(1 + λd) - r log λ over the r penalized directions; n - (unpenalized dimension) degrees
    of freedom."""
    pos = d > 1e-10 * max(float(d.max()), 1e-300)
    free = n - (len(d) - int(pos.sum()))
    prss = prss + free * floor + 1e-300
    logdet = np.log1p(lams[:, None] * d[None, pos]).sum(1) - pos.sum() * np.log(lams)
    return -0.5 * (free * np.log(prss / free) + logdet)


def derivative_basis(u: np.ndarray, size: int, at: np.ndarray, even: float = 0.0) -> np.ndarray:
    """First derivatives (in u) of the ``bspline_basis(u, size, even=even)`` columns at the points ``at``."""
    eps = 1e-5
    lo, hi = np.clip(at - eps, u[0], u[-1]), np.clip(at + eps, u[0], u[-1])
    return (bspline_basis(u, size, hi, even) - bspline_basis(u, size, lo, even)) / (hi - lo)[:, None]
