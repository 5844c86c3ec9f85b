"""When does a series change regime? Memorization, generalization, peaks, falls, change points.

Checkpoints are usually log-spaced, so every detector works on the checkpoint index (about
log step) and reports steps. Change points are mean shifts that must beat a smooth null (a
polynomial baseline; see fit_change_points); the named transitions are defined below.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

COLUMNS = ["run", "series", "kind", "step", "strength", "uncertainty", "flag"]


def _interval(steps: np.ndarray, k: int) -> float:
    """Half the gap around checkpoint k: how precisely a transition at k is located."""
    lo = steps[max(k - 1, 0)]
    hi = steps[min(k + 1, len(steps) - 1)]
    return float(hi - lo) / 2


def _crossing(steps: np.ndarray, values: np.ndarray, level: float) -> tuple[float, int] | None:
    """First step where ``values`` reaches ``level``, interpolated in log step."""
    above = np.nonzero(values >= level)[0]
    if len(above) == 0:
        return None
    k = int(above[0])
    if k == 0:
        return float(steps[0]), 0
    s0, s1 = max(steps[k - 1], 1), max(steps[k], 1)
    v0, v1 = values[k - 1], values[k]
    frac = 0.0 if v1 == v0 else (level - v0) / (v1 - v0)
    return float(math.exp(math.log(s0) + frac * (math.log(s1) - math.log(s0)))), k


def memorization(steps: np.ndarray, train_acc: np.ndarray, tol: float = 0.01) -> dict | None:
    """First step where training accuracy is within ``tol`` of its final plateau (max)."""
    plateau = float(np.nanmax(train_acc))
    hit = _crossing(steps, train_acc, plateau - tol)
    if hit is None:
        return None
    return {"kind": "memorization", "step": hit[0], "strength": plateau, "uncertainty": _interval(steps, hit[1])}


def generalization(steps: object, test_acc: object, min_rise: float = 0.2, tail: float = 0.02) -> dict | None:
    """The grokking step: test accuracy crosses halfway from its start to its final level.

    None when it rises by less than ``min_rise`` (no generalization transition). ``still_rising``
    is True when the accuracy gained more than ``tail`` over the last tenth of the checkpoints:
    the final level is then underestimated and the step biased early (a lower bound on the
    halfway step of the completed curve, flagged in ``flag``).
    """
    steps, test_acc = np.asarray(steps, dtype=float), np.asarray(test_acc, dtype=float)
    k = max(2, len(test_acc) // 10)
    start, final = float(test_acc[0]), float(np.nanmax(test_acc[-k:]))
    if final - start < min_rise:
        return None
    hit = _crossing(steps, test_acc, start + (final - start) / 2)
    rising = bool(test_acc[-1] - test_acc[-k] > tail)
    return {"kind": "generalization", "step": hit[0], "strength": final - start,
            "uncertainty": _interval(steps, hit[1]), "still_rising": rising,
            "flag": "still rising at the last checkpoint: the step is biased early" if rising else ""}


def peak_and_fall(steps: np.ndarray, values: np.ndarray, drop: float = 0.1) -> list[dict]:
    """The maximum (when it is interior) and the onset of the fall after it.

    Strength of the peak: how far the series falls after it, as a fraction of its range. The
    fall's onset: the first checkpoint after the peak below peak - ``drop`` x range.
    """
    span = float(np.nanmax(values) - np.nanmin(values))
    k = int(np.nanargmax(values))
    if span == 0 or k in (0, len(values) - 1):
        return []
    fall = float(values[k] - np.nanmin(values[k:])) / span
    rows = [{"kind": "peak", "step": float(steps[k]), "strength": fall, "uncertainty": _interval(steps, k)}]
    below = np.nonzero(values[k:] <= values[k] - drop * span)[0]
    if len(below):
        j = k + int(below[0])
        rows.append({"kind": "fall_onset", "step": float(steps[j]), "strength": fall,
                     "uncertainty": _interval(steps, j)})
    return rows


def fit_change_points(steps: np.ndarray, values: np.ndarray, *, max_points: int = 3, degree: int = 5,
                      noise_floor: float = 0.02, level: float = 0.05, min_size: int | None = None) -> dict:
    """Mean shifts that a smooth curve cannot explain, added greedily to a smooth baseline.

    The baseline is a Chebyshev polynomial in checkpoint position of degree min(``degree``,
    n // 4): it absorbs linear trends, exponential decays, logarithmic rises and gentle
    sigmoids, so only a jump survives. A shift at position k (segments of at least
    ``min_size`` = max(2, ⌈n/10⌉) checkpoints) is kept when its drop in the residual sum of
    squares, in units of the noise variance, exceeds max(3 ln n, the Bonferroni F critical
    value at ``level`` over the candidate positions): with the noise variance estimated from
    the residuals but at least (``noise_floor`` x range)², a pure-noise series gets a false
    change point with probability about ``level``. Returns ``points`` (rows with step,
    strength: |shift| in noise units, uncertainty: half the checkpoint gap around it) and
    ``truncated``: True when ``max_points`` stopped a further accepted point.
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    steps = np.asarray(steps, dtype=float)
    n = len(x)
    size = max(2, math.ceil(n / 10)) if min_size is None else min_size
    if n < 2 * size + 2 or np.ptp(x) == 0:
        return {"points": [], "truncated": False}
    base = np.polynomial.chebyshev.chebvander(np.linspace(-1, 1, n), min(degree, max(1, n // 4)))
    floor = (noise_floor * np.ptp(x)) ** 2
    candidates = range(size, n - size + 1)
    index = np.arange(n)

    def fit(points: list[int]) -> tuple[float, np.ndarray, int]:
        design = np.column_stack([base] + [(index >= k).astype(float) for k in points])
        coef = np.linalg.lstsq(design, x, rcond=None)[0]
        return float(((x - design @ coef) ** 2).sum()), coef, design.shape[1]

    chosen: list[int] = []
    current = fit(chosen)[0]
    truncated = False
    while True:
        best = None
        for k in candidates:
            trial = sorted([*chosen, k])
            if k in chosen or (np.diff([0, *trial, n]) < size).any():
                continue
            rss, coef, params = fit(trial)
            if best is None or rss < best[0]:
                best = (rss, k, params)
        if best is None:
            break
        rss, k, params = best
        dof = max(n - params, 1)
        noise = max(rss / dof, floor)
        penalty = max(3 * math.log(n), float(stats.f.ppf(1 - level / len(candidates), 1, dof)))
        if (current - rss) / noise <= penalty:
            break
        if len(chosen) == max_points:
            truncated = True
            break
        chosen = sorted([*chosen, k])
        current = rss
    rows = []
    if chosen:
        rss, coef, params = fit(chosen)
        noise = math.sqrt(max(rss / max(n - params, 1), floor))
        for k, jump in zip(chosen, coef[base.shape[1]:]):
            rows.append({"kind": "change_point", "step": float(steps[k]), "strength": float(abs(jump) / noise),
                         "uncertainty": _interval(steps, k)})
    return {"points": rows, "truncated": truncated}


def change_points(steps: object, values: object, **options: object) -> list[float]:
    """Steps where ``values`` shifts beyond what a smooth curve explains (see fit_change_points)."""
    return [row["step"] for row in fit_change_points(np.asarray(steps), np.asarray(values), **options)["points"]]


def detect(steps: np.ndarray, series: dict[str, np.ndarray], run: str) -> pd.DataFrame:
    """Every transition of one run: named ones for the metrics, peaks and change points for all."""
    rows = []
    for name, values in series.items():
        ok = np.isfinite(values)
        if ok.sum() < 3:
            continue
        s, v = steps[ok], values[ok]
        found = []
        if name == "train_acc":
            found.append(memorization(s, v))
        if name == "test_acc":
            found.append(generalization(s, v))
        if not name.endswith("_acc"):
            found.extend(peak_and_fall(s, v))
        cps = fit_change_points(s, v)
        if cps["truncated"]:
            for row in cps["points"]:
                row["flag"] = "more change points than the cap: only the strongest were kept"
        found.extend(cps["points"])
        rows += [{"run": run, "series": name, **f} for f in found if f is not None]
    table = pd.DataFrame(rows, columns=COLUMNS + ["still_rising"])
    table["flag"] = table["flag"].astype(object).where(table["flag"].notna(), "")
    return table[COLUMNS]


def lead_lag(transitions: pd.DataFrame, first_step: float, last_step: float) -> pd.DataFrame:
    """Each transition's distance to its run's generalization step (negative: it comes first).

    Adds ``lag_steps`` and ``lag_fraction`` (of the run's step range); NaN in runs that never
    generalize.
    """
    out = transitions.copy()
    gen = out[(out["series"] == "test_acc") & (out["kind"] == "generalization")].set_index("run")["step"]
    ref = out["run"].map(gen)
    out["lag_steps"] = out["step"] - ref
    out["lag_fraction"] = out["lag_steps"] / (last_step - first_step)
    return out
