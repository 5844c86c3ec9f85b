"""When does a series change regime? Memorization, generalization, peaks, falls, change points.

Every row carries an interval (``low``, ``high``) for its step and, where a test stands
behind it, a ``significance``. Change points are jumps in level that a penalized spline in the
schedule's own coordinate cannot explain (see fit_change_points); memorization and
generalization intervals include the binomial noise of an accuracy measured on n examples;
``stages`` (stages.py) are the critical points of the smoothed curve.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import InvalidSettingError

COLUMNS = ["run", "series", "kind", "step", "strength", "uncertainty", "flag", "low", "high", "significance"]


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


def examples_behind(acc: np.ndarray, largest: int = 100_000) -> int | None:
    """The smallest n such that every accuracy is a multiple of 1/n (None if none up to ``largest``):
    the number of examples an accuracy was measured on, read from the data."""
    a = np.asarray(acc, float)
    a = a[np.isfinite(a)]
    if len(a) == 0 or ((a > 0) & (a < 1)).sum() == 0:
        return None
    n = np.arange(1, largest + 1)[:, None]
    for chunk in np.array_split(n, 50):
        off = np.abs(chunk * a - np.round(chunk * a)).max(axis=1)
        hit = np.nonzero(off < 1e-9 * chunk[:, 0])[0]
        if len(hit):
            return int(chunk[hit[0], 0])
    return None


def examples_measured_on(acc: object, n: int | None) -> int | None:
    """How many examples an accuracy series was measured on: ``n`` (a split's size) when every
    accuracy is a multiple of 1/n to 1e-4 (float32-logged metrics included: the metrics came from
    that split), else what :func:`examples_behind` reads from their granularity (None when it
    reads nothing: intervals then come from the checkpoint gaps)."""
    finite = np.asarray(acc, float)
    finite = finite[np.isfinite(finite)]
    if n and np.allclose(finite * n, np.round(finite * n), rtol=0, atol=1e-4):
        return int(n)
    return examples_behind(finite)


def _binomial_interval(steps: np.ndarray, acc: np.ndarray, n_examples: int | None, locate, estimate: float,
                       k: int, level: float = 0.95, reps: int = 400) -> tuple[float, float]:
    """(low, high) of a step located by ``locate`` (index ``k``: the first checkpoint past it).

    Always at least the checkpoint gap around the estimate (where between two checkpoints the
    curve crossed is not observed). With ``n_examples`` also a parametric bootstrap (seeded):
    accuracies re-drawn Binomial(n, p̂)/n from the monotone (isotonic) fit p̂ of the observed ones,
    ``locate`` applied to each. The interval is the union of the percentile interval of the
    re-drawn steps and the basic (pivotal) one, in log step: the offsets θ* − θ(p̂) estimate the
    estimator's bias and spread, since the bootstrap world's true step is the fit's own crossing.
    A first crossing is pulled early by noise, which the percentile interval misses; the basic
    one alone undercovers where the fit (flattened by pooling) makes the re-drawn crossings less
    variable than the real ones. Simulated coverage: benchmarks/transition_simulation.py.
    """
    lo, hi = min(float(steps[max(k - 1, 0)]), estimate), max(float(steps[k]), estimate)
    if not n_examples:
        return lo, hi
    from scipy.optimize import isotonic_regression

    rng = np.random.default_rng(0)
    fit = np.clip(isotonic_regression(np.nan_to_num(acc)).x, 0, 1)
    sims = rng.binomial(n_examples, fit, (reps, len(acc))) / n_examples
    hits = np.array([h for h in (locate(row) for row in sims) if h is not None])
    if not len(hits):
        return lo, hi
    tail = [(1 - level) / 2, (1 + level) / 2]
    q = np.quantile(hits, tail)
    lo, hi = min(lo, float(q[0])), max(hi, float(q[1]))
    truth = locate(fit)
    if truth is not None:
        d = np.quantile(np.log(np.maximum(hits, 1)) - math.log(max(truth, 1)), tail)
        centre = math.log(max(estimate, 1))
        lo, hi = min(lo, math.exp(centre - d[1])), max(hi, math.exp(centre - d[0]))
    return lo, hi


def _monotone(acc: np.ndarray) -> np.ndarray:
    """The isotonic (non-decreasing least-squares) fit of the finite accuracies; NaN stays NaN."""
    from scipy.optimize import isotonic_regression

    out = np.array(acc, float)
    ok = np.isfinite(out)
    if ok.any():
        out[ok] = isotonic_regression(out[ok]).x
    return out


def memorization(steps: np.ndarray, train_acc: np.ndarray, tol: float = 0.01,
                 n_examples: int | str | None = None) -> dict | None:
    """First step where the monotone (isotonic) fit of training accuracy is within ``tol`` of
    its final plateau (its maximum).

    The fit, not the raw accuracies: the first raw accuracy within ``tol`` of the raw maximum
    is a minimum over many noisy checkpoints, pulled early by single examples when ``tol`` is
    near the accuracy's granularity (1/n). ``low``/``high``: a 95% interval from the checkpoint
    gap and the binomial noise of an accuracy on ``n_examples`` ("infer": read from the
    accuracies' granularity; None: gap only), the same rule applied to each re-drawn series.
    """
    steps, train_acc = np.asarray(steps, float), np.asarray(train_acc, float)

    def crossing(acc: np.ndarray) -> tuple[float, int] | None:
        fit = _monotone(acc)
        return _crossing(steps, fit, float(np.nanmax(fit)) - tol)

    def locate(acc: np.ndarray) -> float | None:
        hit = crossing(acc)
        return None if hit is None else hit[0]

    plateau = float(np.nanmax(train_acc))
    hit = crossing(train_acc)
    if hit is None:
        return None
    n = examples_behind(train_acc) if n_examples == "infer" else n_examples
    lo, hi = _binomial_interval(steps, train_acc, n, locate, hit[0], hit[1])
    return {"kind": "memorization", "step": hit[0], "strength": plateau, "uncertainty": (hi - lo) / 2,
            "low": lo, "high": hi}


def generalization(steps: object, test_acc: object, min_rise: float = 0.2, tail: float = 0.02,
                   n_examples: int | str | None = None) -> dict | None:
    """The grokking step: test accuracy crosses halfway from its start to its final level.

    None when it rises by less than ``min_rise`` (no generalization transition). ``still_rising``
    is True when the accuracy gained more than ``tail`` over the last tenth of the checkpoints
    beyond its binomial noise (one-sided z > 1.645 on ``n_examples``; "infer" reads n from the
    accuracies' granularity; None: no noise): the final level is then underestimated and the
    step biased early (flagged).
    ``low``/``high``: a 95% interval from the checkpoint gap and that binomial noise.
    """
    steps, test_acc = np.asarray(steps, dtype=float), np.asarray(test_acc, dtype=float)
    k = max(2, len(test_acc) // 10)

    def locate(acc: np.ndarray) -> float | None:
        start, final = float(acc[0]), float(np.nanmax(acc[-k:]))
        hit = _crossing(steps, acc, start + (final - start) / 2)
        return None if hit is None or final - start < min_rise else hit[0]

    start, final = float(test_acc[0]), float(np.nanmax(test_acc[-k:]))
    if final - start < min_rise:
        return None
    hit = _crossing(steps, test_acc, start + (final - start) / 2)
    n = examples_behind(test_acc) if n_examples == "infer" else n_examples
    a, b = test_acc[-k], test_acc[-1]
    se = math.sqrt((a * (1 - a) + b * (1 - b)) / n) if n else 0.0
    rising = bool(b - a - tail > 1.645 * se)
    lo, hi = _binomial_interval(steps, test_acc, n, locate, hit[0], hit[1])
    return {"kind": "generalization", "step": hit[0], "strength": final - start, "uncertainty": (hi - lo) / 2,
            "low": lo, "high": hi, "still_rising": rising,
            "flag": "still rising at the last checkpoint: the step is biased early" if rising else ""}


def peak_and_fall(steps: np.ndarray, values: np.ndarray, drop: float = 0.1) -> list[dict]:
    """The maximum (when it is interior) and the onset of the fall after it.

    Strength of the peak: how far the series falls after it, as a fraction of its range; a
    maximum followed by a fall of less than ``drop`` x range is not reported. The fall's
    onset: the first checkpoint after the peak below peak - ``drop`` x range.
    """
    span = float(np.nanmax(values) - np.nanmin(values))
    k = int(np.nanargmax(values))
    if span == 0 or k in (0, len(values) - 1):
        return []
    fall = float(values[k] - np.nanmin(values[k:])) / span
    if fall < drop:  # a maximum that the series never falls from (e.g. [0, 1, 2, 2, 2]) is no peak
        return []
    rows = [{"kind": "peak", "step": float(steps[k]), "strength": fall, "uncertainty": _interval(steps, k)}]
    below = np.nonzero(values[k:] <= values[k] - drop * span)[0]
    if len(below):
        j = k + int(below[0])
        rows.append({"kind": "fall_onset", "step": float(steps[j]), "strength": fall,
                     "uncertainty": _interval(steps, j)})
    return rows


def _lag_one(r: np.ndarray) -> float:
    """Lag-one autocorrelation of residuals, clipped to [0, 0.95]."""
    r = r - r.mean()
    return float(np.clip((r[1:] * r[:-1]).sum() / max((r * r).sum(), 1e-300), 0.0, 0.95))


def _ar_one(z: np.ndarray, phi: float) -> np.ndarray:
    """Stationary AR(1) of unit variance from standard normal innovations ``z``."""
    if phi == 0:
        return z
    from scipy.signal import lfilter

    w = z.copy()
    w[1:] *= math.sqrt(1 - phi**2)
    return lfilter([1.0], [1.0, -phi], w)


def fit_change_points(steps: np.ndarray, values: np.ndarray, *, max_points: int = 3, noise_floor: float = 0.005,
                      level: float = 0.05, min_size: int | None = None, bootstrap: int = 39,
                      changes: tuple[str, ...] = ("level",)) -> dict:
    """Jumps in level (or, opted in, in slope) that a smooth curve cannot explain, added greedily
    to a penalized spline.

    Two models compete at every candidate checkpoint k (segments of at least ``min_size`` =
    max(2, ⌈n/20⌉) checkpoints): a penalized cubic spline alone, in the schedule's own
    coordinate u (``smooth.coordinate``, or the other one of step / log step where it fits better),
    and the spline plus an unpenalized change at k, one of ``changes``: a step in level
    (``"level"``: 1 from k on) or in slope (``"slope"``: the hinge (u - u_k)₊). The penalty is the
    spline's integrated squared second derivative in u (lines in it are free, however unevenly the
    checkpoints fall). Each model chooses its own smoothness by restricted maximum likelihood (the
    spline a Gaussian random effect; (``noise_floor`` × range)² added to the residual variance, so
    noise-free curves are not cut at their approximation error). The statistic is twice the gain
    in restricted log-likelihood, T_k = 2 (ℓ_k - ℓ_0): a smooth curve is explained about as well
    by the spline alone, while under a jump the spline alone must bend and pays for it, and the
    change model stays stiff. Where slope changes are tested, both smoothness and T come from the
    maximum likelihood instead (nested models, T ≥ 0): the restricted one depends on the units of
    the change's column, and hinges at different k differ in scale by orders of magnitude. The
    best (k, change) is kept when the maximum of T over candidates is significant at ``level`` by
    a parametric bootstrap (``bootstrap`` series from the spline-alone fit plus Gaussian noise of
    its residual variance, AR(1) in checkpoint index at the lag-one autocorrelation of the change
    model's residuals where that is positive; seeded): the test assumes noise of constant
    variance around a smooth curve, independent or AR(1); strongly correlated noise is only
    partly allowed for (a flexible trend takes up part of it). Slope changes are not tested by
    default: a cubic spline follows a kink at little cost, so they are found only when large,
    while the wider scan costs time (measured in docs/analysis.md).
    Returns ``points`` (step; change: "level" or "slope"; strength: |jump| in noise sd, or for a
    slope the change in slope in noise sd per unit of u, which spans [0, 1]; low/high: the
    checkpoints whose T is within χ²₁(0.95) of the best for that change; significance: T; p: the
    bootstrap p-value) and ``truncated`` (a further significant point beyond ``max_points``).
    """
    from scipy import stats

    from .smooth import choose_coordinate, pspline

    unknown = set(changes) - {"level", "slope"}
    if unknown or not changes:
        raise InvalidSettingError(f"changes must list 'level' and/or 'slope', not {sorted(unknown) or changes!r}.")
    x = np.asarray(values, dtype=float)
    steps = np.asarray(steps, dtype=float)
    n = len(x)
    size = max(2, math.ceil(n / 20)) if min_size is None else min_size
    if n < 2 * size + 4 or np.ptp(x) == 0:
        return {"points": [], "truncated": False}
    floor = (noise_floor * np.ptp(x)) ** 2
    index = np.arange(n)
    # the smooth null in step or log step, whichever fits better (GCV); curvature penalized in
    # that coordinate itself, not in knot index; knots halfway between quantiles and even spacing,
    # so the sparse stretch of a Pythia-style schedule is not left without (a logistic there got
    # a change point in 8 of 10 draws with 1% noise at n = 150)
    u, base, penalty, _ = choose_coordinate(steps, x, int(np.clip(n // 2, 4, 30)))
    columns = {"level": lambda k: (index >= k).astype(float), "slope": lambda k: np.maximum(u - u[k], 0.0)}
    candidates = [(k, change) for change in changes for k in range(size, n - size + 1)]
    # level steps alone: restricted likelihood (measured more conservative on smooth curves at the
    # same power); hinges need the maximum likelihood, which does not depend on a column's units
    likelihood = "reml" if set(changes) == {"level"} else "ml"

    def fit(y: np.ndarray, points: list[tuple[int, str]]) -> dict:
        extra = np.column_stack([columns[change](k) for k, change in points]) if points else None
        return pspline(None, y, extra=extra, base=base, select=likelihood, floor=floor, penalty=penalty)

    def apart(points: list[tuple[int, str]]) -> bool:
        return not (np.diff([0, *sorted(k for k, _ in points), n]) < size).any()

    def scan(y: np.ndarray, chosen: list[tuple[int, str]]) -> tuple | None:
        """The best further change: ((k, change), T, the fits with each candidate, every T, the null fit)."""
        null = fit(y, chosen)
        trials = {c: fit(y, [*chosen, c]) for c in candidates if apart([*chosen, c])}
        if not trials:
            return None
        stat = {c: 2 * (f[likelihood] - null[likelihood]) for c, f in trials.items()}
        best = max(stat, key=stat.get)
        return best, stat[best], trials, stat, null

    chosen: list[tuple[int, str]] = []
    truncated = False
    rows_info = []
    rng = np.random.default_rng(0)
    current = None
    while True:
        found = scan(x, chosen)
        if found is None or found[1] <= 0:
            break
        best, stat, trials, stats_all, null = found
        # calibrate the maximum over candidates by a parametric bootstrap from the null fit
        sd = math.sqrt(max(null["sigma2"], floor))
        # the bootstrap's noise is AR(1) in checkpoint index at the change model's residual
        # lag-one autocorrelation (0 when negative): white noise keeps its calibration, correlated
        # noise is partly allowed for (a flexible trend takes up part of it, so φ is underestimated)
        phi = _lag_one(x - trials[best]["values"])
        exceed = 0
        for _ in range(bootstrap):
            sim = scan(null["values"] + sd * _ar_one(rng.standard_normal(n), phi), chosen)
            exceed += sim is not None and sim[1] >= stat
            if (exceed + 1) / (bootstrap + 1) > level:
                break
        if (exceed + 1) / (bootstrap + 1) > level:
            break
        if len(chosen) == max_points:
            truncated = True
            break
        near = [k for (k, change), v in stats_all.items() if change == best[1] and stat - v <= stats.chi2.ppf(0.95, 1)]
        rows_info.append((best, min(near), max(near), stat, (exceed + 1) / (bootstrap + 1)))
        chosen.append(best)
        current = trials[best]
    rows = []
    if chosen:
        noise = math.sqrt(max(current["sigma2"], floor))
        sizes = dict(zip(chosen, current["coef"][-len(chosen):]))
        for (k, change), lo, hi, stat, p in sorted(rows_info):
            low, high = float(steps[max(lo - 1, 0)]), float(steps[min(hi + 1, n - 1)])
            rows.append({"kind": "change_point", "step": float(steps[k]), "change": change,
                         "strength": float(abs(sizes[k, change]) / noise), "uncertainty": (high - low) / 2,
                         "low": low, "high": high, "significance": float(stat), "p": p})
    return {"points": rows, "truncated": truncated}


def change_points(steps: object, values: object, **options: object) -> list[float]:
    """Steps where ``values`` shifts beyond what a smooth curve explains (see fit_change_points)."""
    return [row["step"] for row in fit_change_points(np.asarray(steps), np.asarray(values), **options)["points"]]


def detect(steps: np.ndarray, series: dict[str, np.ndarray], run: str,
           stderr: dict[str, np.ndarray] | None = None, n_examples: dict[str, int | None] | None = None
           ) -> pd.DataFrame:
    """Every transition of one run: named ones for the metrics, peaks and change points for all,
    stages (kind "stage", the boundary's kind in ``flag``) for every non-accuracy series."""
    from .stages import stages

    rows = []
    stderr, n_examples = stderr or {}, n_examples or {}
    for name, values in series.items():
        ok = np.isfinite(values)
        if ok.sum() < 3:
            continue
        s, v = steps[ok], values[ok]
        found = []
        if name == "train_acc":
            found.append(memorization(s, v, n_examples=n_examples.get(name)))
        if name == "test_acc":
            found.append(generalization(s, v, n_examples=n_examples.get(name)))
        if not name.endswith("_acc"):
            found.extend(peak_and_fall(s, v))
            err = stderr.get(name)
            for st in stages(s, v, None if err is None else err[ok]):
                found.append({"kind": "stage", "step": st["step"], "strength": np.nan, "low": st["low"],
                              "high": st["high"], "uncertainty": (st["high"] - st["low"]) / 2,
                              "significance": st["significance"], "flag": st["kind"]})
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
