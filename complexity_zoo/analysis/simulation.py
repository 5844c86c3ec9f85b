"""Known-truth series for checking the analyses: noise families × schedules × curve shapes.

Used by the fast tests (a few cells) and by ``benchmarks/analysis_simulation.py`` (the grid).
Noise families include ones the noise models were not built around (``t3``, ``ar2``,
``mixed``, ``index_walk`` on uneven schedules), so a method is checked where it is
misspecified too. All generators are seeded and vectorized over replicates (rows).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..errors import InvalidSettingError
from .smooth import coordinate

SCHEDULES = ("even", "geometric", "random", "dense_sparse", "pythia")
FAMILIES = ("white", "white_growing", "ar1", "ou", "brownian", "t3", "ar2", "mixed", "index_walk")
SHAPES = ("flat", "linear", "logistic", "power_law", "exponential")


def schedule(kind: str, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """n checkpoint steps of a named schedule (strictly increasing floats)."""
    if kind == "even":
        return 100.0 * np.arange(1, n + 1)
    if kind == "geometric":
        return 10 * 1.15 ** np.arange(n)
    if kind == "random":
        rng = rng or np.random.default_rng(0)
        return np.sort(rng.choice(np.arange(1, 100 * n + 1), n, replace=False)).astype(float)
    if kind == "dense_sparse":  # every 10 steps for the first half, then every 1,000
        k = n // 2
        return np.concatenate([10.0 * np.arange(1, k + 1), 10.0 * k + 1000.0 * np.arange(1, n - k + 1)])
    if kind == "pythia":  # 1, 2, 4, ..., then evenly to 143,000 (Biderman et al. 2023)
        k = min(10, n // 3)
        return np.concatenate([2.0 ** np.arange(k), np.linspace(1000, 143000, n - k)])
    raise InvalidSettingError(f"Unknown schedule {kind!r}; choose from {SCHEDULES}.")


def shape(kind: str, steps: np.ndarray) -> np.ndarray:
    """A smooth curve of range about 1 along ``steps`` (in the schedule's coordinate u)."""
    u = coordinate(steps)
    if kind == "flat":
        return np.zeros_like(u)
    if kind == "linear":
        return u
    if kind == "logistic":
        return 1 / (1 + np.exp(-(u - 0.3) / 0.08))
    if kind == "power_law":
        v = 2 + 5 * steps**-0.3
        return (v - v.min()) / np.ptp(v)
    if kind == "exponential":
        return np.exp(-5 * u)
    raise InvalidSettingError(f"Unknown shape {kind!r}; choose from {SHAPES}.")


def staged_curve(steps: np.ndarray, plateau: float, peak: float, trough: float) -> tuple[np.ndarray, dict]:
    """A curve with stage boundaries near known steps that moves on log time, whatever the
    schedule (the LLC curves of Hoogland et al.): a fast rise into a near-plateau centred at
    ``plateau`` (0.2 decades at a slope under 1/8 of the rises beside it), a rise to a peak at
    ``peak``, a dip to a trough at ``trough``, a rise over a further 0.3 decades, then almost
    flat. Piecewise linear in log10 step, smoothed by a Gaussian of 0.03 decades; range about 2.3.
    Returns the values at ``steps`` and the truth: the smoothed curve's flattest point of the
    plateau, its maximum and its minimum (smoothing moves the corners slightly).
    Needs steps[0] < plateau / 10^0.1 and steps[-1] > trough · 10^0.3."""
    x = np.log10(np.asarray(steps, float))
    p, k, t = np.log10([plateau, peak, trough])
    if not x[0] < p - 0.1 < p + 0.1 < k < t < t + 0.3 < x[-1]:
        raise InvalidSettingError("staged_curve needs first step < plateau/10^0.1, plateau·10^0.1 < peak < "
                                  "trough and trough·10^0.3 < last step.")
    fine = np.linspace(x[0], x[-1], 4000)
    knots = ([x[0], p - 0.1, p + 0.1, k, t, t + 0.3, x[-1]], [0, 1, 1.03, 1.9, 1.8, 2.3, 2.33])
    smooth = gaussian_filter1d(np.interp(fine, *knots), 0.03 / (fine[1] - fine[0]), mode="nearest")
    slope = np.gradient(smooth, fine)

    def at(lo: float, hi: float, score: np.ndarray) -> float:
        inside = np.nonzero((fine > lo) & (fine < hi))[0]
        return float(10 ** fine[inside[np.argmin(score[inside])]])

    truth = {"plateau": at(p - 0.1, p + 0.1, slope), "peak": at(p + 0.1, t, -smooth), "trough": at(k, t + 0.3, smooth)}
    return np.interp(x, fine, smooth), truth


def turning_step(steps: np.ndarray, values: np.ndarray, lo: float, hi: float, kind: str) -> float:
    """The step of a noise-free series' maximum (``kind="peak"``) or minimum (``"trough"``)
    between steps lo and hi: the vertex of the parabola, in log step, through the extreme
    checkpoint and its two neighbours (the truth that stage finders are judged against)."""
    s = np.asarray(steps, float)
    x, v = np.log10(s), np.asarray(values, float) * (1 if kind == "trough" else -1)
    inside = np.nonzero((s > lo) & (s < hi))[0]
    i = int(np.clip(inside[np.argmin(v[inside])], 1, len(x) - 2))
    a, b, _ = np.polyfit(x[i - 1:i + 2], v[i - 1:i + 2], 2)
    return float(10 ** (-b / (2 * a)))


def _ar(e: np.ndarray, phi: float, rng: np.random.Generator, phi2: float = 0.0) -> np.ndarray:
    """Stationary AR(1) or AR(2) along the last axis from innovations ``e``, scaled to unit
    variance (50 burn-in innovations drawn from ``rng``)."""
    full = np.concatenate([rng.standard_normal((e.shape[0], 50)), e], axis=1)
    out = np.zeros_like(full)
    for t in range(full.shape[1]):
        out[:, t] = full[:, t] + (phi * out[:, t - 1] if t else 0) + (phi2 * out[:, t - 2] if t > 1 else 0)
    var = (1 - phi2) / ((1 + phi2) * ((1 - phi2) ** 2 - phi**2))
    return out[:, 50:] / np.sqrt(var)


def noise(family: str, steps: np.ndarray, e: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise of unit typical scale from standard-normal innovations ``e`` (rows are replicates).

    Two series built from innovations correlated ρ have noise whose innovations correlate ρ.
    """
    n = e.shape[1]
    gaps = np.diff(steps)
    if family == "white":
        return e
    if family == "white_growing":  # sd grows fivefold along the schedule
        return e * (1 + 4 * coordinate(steps))
    if family == "ar1":
        return _ar(e, 0.7, rng)
    if family == "ou":  # relaxation time a tenth of the run, in steps
        tau = (steps[-1] - steps[0]) / 10
        phi = np.concatenate([[0.0], np.exp(-gaps / tau)])
        out = np.empty_like(e)
        out[:, 0] = e[:, 0]
        for t in range(1, n):
            out[:, t] = phi[t] * out[:, t - 1] + np.sqrt(1 - phi[t] ** 2) * e[:, t]
        return out
    if family == "brownian":
        root = np.sqrt(np.concatenate([[gaps.min()], gaps]) / (steps[-1] - steps[0]))
        return (e * root).cumsum(1) * 2
    if family == "t3":
        return e * np.sqrt(3 / rng.chisquare(3, e.shape)) / np.sqrt(3)
    if family == "ar2":
        return _ar(e, 0.5, rng, 0.3)
    if family == "mixed":  # white evaluation noise on top of a slow AR(1) wander
        return 0.7 * e + 0.7 * _ar(rng.standard_normal(e.shape), 0.9, rng)
    if family == "index_walk":  # a random walk in checkpoint index, whatever the gaps
        return e.cumsum(1) / np.sqrt(n) * 2
    raise InvalidSettingError(f"Unknown noise family {family!r}; choose from {FAMILIES}.")


def pairs(family: str, schedule_kind: str, n: int, reps: int, seed: int, rho: float = 0.0,
          shapes: tuple[str, str] = ("logistic", "power_law"), scale: float = 0.05
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, steps): two trends plus noise of sd ``scale`` whose innovations correlate ``rho``."""
    rng = np.random.default_rng(seed)
    steps = schedule(schedule_kind, n, rng)
    e1 = rng.standard_normal((reps, n))
    e2 = rho * e1 + np.sqrt(1 - rho**2) * rng.standard_normal((reps, n))
    if family == "mixed":  # correlate both components
        n1, n2 = noise_pair_mixed(steps, e1, e2, rho, rng)
    else:
        n1, n2 = noise(family, steps, e1, rng), noise(family, steps, e2, rng)
    return shape(shapes[0], steps) + scale * n1, shape(shapes[1], steps) + scale * n2, steps


def noise_pair_mixed(steps: np.ndarray, e1: np.ndarray, e2: np.ndarray, rho: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The ``mixed`` family for a pair: both the white and the AR(1) parts correlate ρ."""
    f1 = rng.standard_normal(e1.shape)
    f2 = rho * f1 + np.sqrt(1 - rho**2) * rng.standard_normal(e1.shape)
    return 0.7 * e1 + 0.7 * _ar(f1, 0.9, rng), 0.7 * e2 + 0.7 * _ar(f2, 0.9, rng)
