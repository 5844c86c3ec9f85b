"""Across runs: does a measure order trained models the way their generalization gaps are ordered?

The evaluation protocol of the generalization-measure literature, as pure functions of one value
per run (the measure at the final checkpoint, say), the runs' generalization gaps and their
hyperparameters (one row per run, one column per hyperparameter axis):

* ``kendall_gap``: Kendall's τ between measure and gap over all runs (Jiang et al. 2020, Eq. 2);
* ``granulated_kendall``: ψ, the τ within groups of runs that differ in one axis only, averaged
  over groups and then over axes (Jiang et al. 2020, Eq. 3);
* ``sign_error``: the robust sign-error of Dziugaite et al. 2020 over environments (pairs of
  settings that differ in one hyperparameter), mean and worst case;
* ``conditional_mutual_information``: Jiang et al. 2020's conditional independence score, the
  smallest normalized CMI between the pairwise orderings given up to two hyperparameters.

Every τ here is the sign average of Jiang et al.: pairs tied in either variable contribute 0, so
a measure that is constant within a group scores 0 there (it orders nothing), never NaN.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InvalidSettingError


def _vector(values: object, name: str, n: int | None = None) -> np.ndarray:
    v = np.asarray(values, dtype=float).reshape(-1)
    if n is not None and len(v) != n:
        raise InvalidSettingError(f"{name} has {len(v)} values; expected one per run ({n}).")
    if not np.isfinite(v).all():
        bad = np.nonzero(~np.isfinite(v))[0].tolist()
        raise InvalidSettingError(f"{name} has non-finite values at runs {bad}; drop those runs first.")
    return v


def _frame(hyperparameters: pd.DataFrame, n: int) -> pd.DataFrame:
    if not isinstance(hyperparameters, pd.DataFrame):
        raise InvalidSettingError(
            f"hyperparameters must be a pandas DataFrame (one row per run); got {type(hyperparameters).__name__}."
        )
    if len(hyperparameters) != n:
        raise InvalidSettingError(f"hyperparameters has {len(hyperparameters)} rows; expected one per run ({n}).")
    return hyperparameters.reset_index(drop=True)


def sign_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Jiang et al.'s τ: the mean of sgn(x_i - x_j) sgn(y_i - y_j) over pairs i != j (ties count 0)."""
    if len(x) < 2:
        return float("nan")
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    n = len(x)
    return float((sx * sy).sum() / (n * (n - 1)))


def kendall_gap(values: object, gap: object) -> dict:
    """Kendall's τ between a measure and the generalization gap over runs.

    ``tau``: Jiang et al.'s sign average (ties count 0); ``tau_b`` and its ``p`` (scipy): the
    test of H0 "measure and gap are independent across runs", which assumes the runs are
    independent draws.
    """
    x = _vector(values, "values")
    y = _vector(gap, "gap", len(x))
    if len(x) < 3:
        raise InvalidSettingError(f"kendall_gap needs at least 3 runs; got {len(x)}.")
    res = stats.kendalltau(x, y) if np.ptp(x) > 0 and np.ptp(y) > 0 else (np.nan, np.nan)
    return {"tau": sign_tau(x, y), "tau_b": float(res[0]), "p": float(res[1]), "n": len(x)}


def _complete_grid(hp: pd.DataFrame) -> list[str]:
    """The varying axes; refuses an incomplete grid or a grid cell with more than one run."""
    axes = [c for c in hp.columns if hp[c].nunique() > 1]
    if not axes:
        raise InvalidSettingError("hyperparameters vary along no axis; nothing to granulate.")
    counts = hp.groupby(axes, dropna=False).size()
    dup = counts[counts > 1]
    if len(dup):
        raise InvalidSettingError(
            f"{len(dup)} hyperparameter settings appear more than once (e.g. {dup.index[0]!r}); "
            "granulated Kendall needs one run per setting: average replicate runs (seeds) first."
        )
    cells = math.prod(hp[c].nunique() for c in axes)
    if len(hp) != cells:
        raise InvalidSettingError(
            f"granulated Kendall needs a complete grid: {cells} settings of {axes}, but {len(hp)} runs."
        )
    return axes


def granulated_kendall(values: object, gap: object, hyperparameters: pd.DataFrame) -> dict:
    """Jiang et al. 2020's granulated Kendall coefficient ψ over a complete hyperparameter grid.

    For axis i, the runs are grouped by the values of every other axis; each group varies only
    axis i. ψ_i is the mean over groups of the sign-average τ (a group where the measure or the
    gap is constant counts 0), and ψ the mean of ψ_i over axes. Returns ``psi`` and ``axes``, a
    DataFrame (axis, tau, groups, degenerate): ``degenerate`` counts groups scored 0 because the
    measure or the gap is constant in them.
    """
    x = _vector(values, "values")
    y = _vector(gap, "gap", len(x))
    hp = _frame(hyperparameters, len(x))
    axes = _complete_grid(hp)
    rows = []
    for axis in axes:
        others = [c for c in axes if c != axis]
        groups = list(hp.groupby(others, dropna=False).indices.values()) if others else [np.arange(len(hp))]
        taus = [sign_tau(x[idx], y[idx]) for idx in groups]
        degenerate = sum(np.ptp(x[idx]) == 0 or np.ptp(y[idx]) == 0 for idx in groups)
        rows.append({"axis": axis, "tau": float(np.mean(taus)), "groups": len(groups),
                     "degenerate": int(degenerate)})
    table = pd.DataFrame(rows, columns=["axis", "tau", "groups", "degenerate"])
    return {"psi": float(table["tau"].mean()), "axes": table}


def environments(hyperparameters: pd.DataFrame, seed: str | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Dziugaite et al.'s environments: pairs of settings that differ in exactly one axis.

    Each item is (axis, runs of the first setting, runs of the second). With a ``seed`` column,
    that column is not a hyperparameter and a setting's runs are its seeds.
    """
    axes = [c for c in hyperparameters.columns if c != seed and hyperparameters[c].nunique() > 1]
    if not axes:
        raise InvalidSettingError("hyperparameters vary along no axis; there are no environments.")
    settings = hyperparameters.groupby(axes, dropna=False).indices
    keys = list(settings)
    out = []
    for a, b in itertools.combinations(keys, 2):
        a_t, b_t = (a,) if len(axes) == 1 else a, (b,) if len(axes) == 1 else b
        differ = [ax for ax, u, v in zip(axes, a_t, b_t) if u != v]
        if len(differ) == 1:
            out.append((differ[0], settings[a], settings[b]))
    return out


def sign_error(values: object, gap: object, hyperparameters: pd.DataFrame, *, seed: str | None = None,
               min_gap_difference: float = 0.0) -> dict:
    """Dziugaite et al. 2020's robust sign-error of a measure over environments.

    In an environment (two settings differing in one hyperparameter), the sign-error of a pair
    of runs is ½(1 - sgn(Δmeasure) sgn(Δgap)): 1 when the measure orders the two gaps wrongly,
    ½ on a tie, 0 when right; with a ``seed`` column, pairs with equal seeds are averaged.
    Environments whose mean |Δgap| is at most ``min_gap_difference`` are skipped (the gap
    difference is noise). Returns ``mean`` and ``worst`` (max) over environments, the number of
    ``environments`` and a per-environment DataFrame ``table``.
    """
    x = _vector(values, "values")
    y = _vector(gap, "gap", len(x))
    hp = _frame(hyperparameters, len(x))
    if seed is not None and seed not in hp.columns:
        raise InvalidSettingError(f"seed column {seed!r} is not among the hyperparameters {list(hp.columns)}.")
    rows = []
    for axis, runs_a, runs_b in environments(hp, seed):
        if seed is None:
            pairs = [(i, j) for i in runs_a for j in runs_b]
        else:
            pairs = [(i, j) for i in runs_a for j in runs_b if hp.at[i, seed] == hp.at[j, seed]]
        if not pairs:
            continue
        i, j = np.array(pairs).T
        if np.abs(y[i] - y[j]).mean() <= min_gap_difference:
            continue
        err = 0.5 * (1 - np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]))
        rows.append({"axis": axis, "runs_a": list(map(int, runs_a)), "runs_b": list(map(int, runs_b)),
                     "pairs": len(pairs), "sign_error": float(err.mean())})
    table = pd.DataFrame(rows, columns=["axis", "runs_a", "runs_b", "pairs", "sign_error"])
    if table.empty:
        raise InvalidSettingError("No environment left: no two settings differ in exactly one hyperparameter "
                                  "with a gap difference above min_gap_difference.")
    return {"mean": float(table["sign_error"].mean()), "worst": float(table["sign_error"].max()),
            "environments": len(table), "table": table}


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def conditional_mutual_information(values: object, gap: object, hyperparameters: pd.DataFrame,
                                   max_conditioning: int = 2) -> dict:
    """Jiang et al. 2020's conditional-independence score of a measure (their §4).

    Over ordered pairs of runs (i, j), V_μ = sgn(μ_i - μ_j) and V_g = sgn(g_i - g_j). For every
    set S of at most ``max_conditioning`` axes, U_S is the pair's values of those axes, and
    Î_S = I(V_μ; V_g | U_S) / H(V_g | U_S) (sets where the axes determine V_g are skipped). The
    score ``cmi`` is the minimum over S: near 0, some hyperparameters explain the measure's
    agreement with the gap; 1, the measure orders the gaps exactly even given them. Entropies
    in nats from empirical frequencies. Returns ``cmi``, the minimizing ``conditioning`` set and
    ``table`` (conditioning, cmi).
    """
    x = _vector(values, "values")
    y = _vector(gap, "gap", len(x))
    hp = _frame(hyperparameters, len(x))
    if len(x) < 3:
        raise InvalidSettingError(f"conditional_mutual_information needs at least 3 runs; got {len(x)}.")
    i, j = np.nonzero(~np.eye(len(x), dtype=bool))
    vm, vg = np.sign(x[i] - x[j]).astype(int), np.sign(y[i] - y[j]).astype(int)
    axes = [c for c in hp.columns if hp[c].nunique() > 1]
    codes = {c: pd.factorize(hp[c])[0] for c in axes}
    rows = []
    for size in range(max_conditioning + 1):
        for subset in itertools.combinations(axes, size):
            if subset:
                u = np.stack([codes[c][i] for c in subset] + [codes[c][j] for c in subset], axis=1)
                strata = np.unique(u, axis=0, return_inverse=True)[1].reshape(-1)
            else:
                strata = np.zeros(len(i), dtype=int)
            mi = h = 0.0
            for s in np.unique(strata):
                m = strata == s
                w = m.mean()
                joint = pd.crosstab(vm[m], vg[m]).to_numpy().astype(float)
                hg = _entropy(joint.sum(0))
                mi += w * (_entropy(joint.sum(1)) + hg - _entropy(joint.ravel()))
                h += w * hg
            if h > 1e-12:
                rows.append({"conditioning": ",".join(subset) or "(none)", "cmi": max(mi, 0.0) / h})
    table = pd.DataFrame(rows, columns=["conditioning", "cmi"])
    if table.empty:
        raise InvalidSettingError("The hyperparameters determine every gap ordering; the CMI is undefined.")
    best = table.loc[table["cmi"].idxmin()]
    return {"cmi": float(best["cmi"]), "conditioning": best["conditioning"], "table": table}
