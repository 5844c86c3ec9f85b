"""When does a series change regime? Memorization, generalization, peaks, falls, change points.

Checkpoints are usually log-spaced, so every detector works on the checkpoint index (about
log step) and reports steps. Change points come from ruptures' PELT (Killick et al. 2012) on
the series standardized by a robust noise estimate (with a floor: see change_points); the
named transitions are defined below.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

COLUMNS = ["run", "series", "kind", "step", "strength", "uncertainty"]


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


def generalization(steps: np.ndarray, test_acc: np.ndarray, min_rise: float = 0.2) -> dict | None:
    """The grokking step: test accuracy crosses halfway from its start to its final level.

    None when it rises by less than ``min_rise`` (no generalization transition).
    """
    start, final = float(test_acc[0]), float(np.nanmax(test_acc[-max(1, len(test_acc) // 10):]))
    if final - start < min_rise:
        return None
    hit = _crossing(steps, test_acc, start + (final - start) / 2)
    return {"kind": "generalization", "step": hit[0], "strength": final - start,
            "uncertainty": _interval(steps, hit[1])}


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


def change_points(steps: np.ndarray, values: np.ndarray, penalty: float | None = None,
                  min_size: int = 2, noise_floor: float = 0.05, max_points: int = 3) -> list[dict]:
    """The strongest changes in the mean (PELT, l2 cost) of the standardized series.

    The noise scale is the median absolute first difference / (0.6745 sqrt 2), but at least
    ``noise_floor`` x the series' range: training curves are often smooth, and a mean-shift
    model cuts a smooth trend into ever more pieces as the noise estimate goes to 0. The
    default penalty 3 ln n (in noise units) is BIC-like. At most ``max_points`` changes are
    kept, the largest jumps (strength: the jump in means, in noise units).
    """
    import ruptures as rpt

    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2 * min_size or np.ptp(x) == 0:
        return []
    noise = max(np.median(np.abs(np.diff(x))) / (0.6745 * math.sqrt(2)), noise_floor * np.ptp(x))
    z = ((x - x.mean()) / noise).reshape(-1, 1)
    pen = penalty if penalty is not None else 3 * math.log(n)
    bkps = rpt.Pelt(model="l2", min_size=min_size, jump=1).fit(z).predict(pen=pen)[:-1]
    rows, edges = [], [0, *bkps, n]
    for a, b, c in zip(edges[:-2], edges[1:-1], edges[2:]):
        jump = float(abs(z[b:c].mean() - z[a:b].mean()))
        rows.append({"kind": "change_point", "step": float(steps[b]), "strength": jump,
                     "uncertainty": _interval(steps, b)})
    strongest = sorted(rows, key=lambda r: -r["strength"])[:max_points]
    return sorted(strongest, key=lambda r: r["step"])


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
        found.extend(change_points(s, v))
        rows += [{"run": run, "series": name, **f} for f in found if f is not None]
    return pd.DataFrame(rows, columns=COLUMNS)


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
