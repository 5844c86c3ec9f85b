"""MCMC convergence diagnostics with ArviZ's definitions (Vehtari et al. 2021).

Rank-normalized split-R̂ and bulk effective sample size for draws shaped (chain, draw); kept
here so that an LLC estimate carries its diagnostics without importing arviz.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _split(x: np.ndarray) -> np.ndarray:
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, -half:]], axis=0)


def _z_scale(x: np.ndarray) -> np.ndarray:
    ranks = stats.rankdata(x, method="average").reshape(x.shape)
    return stats.norm.ppf((ranks - 3 / 8) / (x.size + 1 / 4))  # Blom's back-transform


def _rhat(x: np.ndarray) -> float:
    n = x.shape[1]
    between = n * np.var(x.mean(axis=1), ddof=1)
    within = np.mean(np.var(x, axis=1, ddof=1))
    if within == 0:
        return float("nan")
    return float(np.sqrt(((n - 1) / n * within + between / n) / within))


def rhat(draws: np.ndarray) -> float:
    """Rank-normalized split-R̂: the larger of the bulk and the folded (tail) version."""
    x = _split(np.asarray(draws, dtype=float))
    bulk = _rhat(_z_scale(x))
    tail = _rhat(_z_scale(np.abs(x - np.median(x))))
    return float(max(bulk, tail))


def _autocov(x: np.ndarray) -> np.ndarray:
    n = x.shape[-1]
    size = 2 ** int(np.ceil(np.log2(2 * n)))
    xc = x - x.mean(axis=-1, keepdims=True)
    f = np.fft.rfft(xc, size)
    return np.fft.irfft(f * np.conjugate(f), size)[..., :n] / n


def ess(draws: np.ndarray) -> float:
    """Effective sample size of (chain, draw) draws: Geyer's initial positive, then monotone,
    sequence of autocorrelation pairs, as ArviZ computes it."""
    x = np.asarray(draws, dtype=float)
    m, n = x.shape
    acov = _autocov(x)
    mean_var = np.mean(acov[:, 0]) * n / (n - 1)
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus += np.var(x.mean(axis=1), ddof=1)
    if var_plus == 0:
        return float("nan")

    def rho(t: int) -> float:
        return 1.0 - (mean_var - np.mean(acov[:, t])) / var_plus

    rho_t = np.zeros(n)
    even, odd = 1.0, rho(1)
    rho_t[0], rho_t[1] = even, odd
    t = 1
    while t < n - 3 and even + odd > 0:
        even, odd = rho(t + 1), rho(t + 2)
        if even + odd >= 0:
            rho_t[t + 1], rho_t[t + 2] = even, odd
        t += 2
    max_t = t - 2
    if even > 0:
        rho_t[max_t + 1] = even
    t = 1
    while t <= max_t - 2:
        if rho_t[t + 1] + rho_t[t + 2] > rho_t[t - 1] + rho_t[t]:
            rho_t[t + 1] = rho_t[t + 2] = (rho_t[t - 1] + rho_t[t]) / 2
        t += 2
    tau = -1 + 2 * np.sum(rho_t[: max_t + 1]) + np.sum(rho_t[max_t + 1 : max_t + 2])
    tau = max(tau, 1 / np.log10(m * n))
    return float(m * n / tau)


def ess_bulk(draws: np.ndarray) -> float:
    """Bulk ESS: the ESS of the rank-normalized split chains."""
    return ess(_z_scale(_split(np.asarray(draws, dtype=float))))
