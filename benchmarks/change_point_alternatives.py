"""Alternatives to change_points' test that were measured and dropped (issue 22, fifth pass).

Each part reproduces a figure in docs/analysis.md ("Fifth pass"):

* ``position``: power of the shipped test for a 4σ jump by its place on the even-schedule
  logistic, n = 50 (8 draws per place);
* ``oracle``: the shipped statistic T on a jump on the logistic's flat top, calibrated by a
  bootstrap from the fitted null and from the true curve (the oracle), 12 draws;
* ``known``: the shipped statistic at the jump's true place only (no scan), calibrated by its own
  bootstrap, beside the shipped test on the same draws: what it finds when it need not search;
* ``studentized``: each candidate's T_k standardized by a bootstrap set before the maximum,
  calibrated by a second set; power on the four issue cells at n = 20 and 50 and false alarms;
* ``local``: a test local to each candidate (both models fitted on the checkpoints within
  ``--frac`` of the run around k), power on the four issue cells at n = 20 and 50;
* ``ml``: the shipped test with both models' smoothness and T from the maximum instead of the
  restricted likelihood, power on the four issue cells at n = 20 and 50, and false alarms with
  1% noise over 5 schedules × 5 shapes at n = 50 (40 draws per cell), beside the shipped test's;
* ``adaptive``: a smoothness that varies along the curve (``--blocks`` penalty blocks, each
  with its own λ chosen by REML by coordinate search, in both models), power at n = 50, and
  false alarms with 1% noise and on noise-free curves, then the shipped test on the same draws.

    OMP_NUM_THREADS=1 python benchmarks/change_point_alternatives.py --part position
    OMP_NUM_THREADS=1 python benchmarks/change_point_alternatives.py --part oracle
    OMP_NUM_THREADS=1 python benchmarks/change_point_alternatives.py --part known
    OMP_NUM_THREADS=1 python benchmarks/change_point_alternatives.py --part studentized
    OMP_NUM_THREADS=1 python benchmarks/change_point_alternatives.py --part local --frac 0.2
    OMP_NUM_THREADS=1 python benchmarks/change_point_alternatives.py --part ml
    OMP_NUM_THREADS=1 python benchmarks/change_point_alternatives.py --part adaptive --blocks 3 --draws 10

These are prototypes for measurement, kept out of the library: ``adaptive`` takes about 6 s
per series with a jump (the shipped test: 0.5 s).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
from scipy.interpolate import BSpline

from complexity_zoo.analysis.simulation import schedule, shape
from complexity_zoo.analysis.smooth import _knots, bspline_basis, choose_coordinate, curvature_penalty, pspline
from complexity_zoo.analysis.transitions import change_points

CELLS = (("geometric", "exponential"), ("even", "logistic"), ("pythia", "power_law"), ("random", "linear"))


def null_basis(steps: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shipped test's spline: coordinate, basis and curvature penalty (step or log step by GCV)."""
    return choose_coordinate(steps, x, int(np.clip(len(x) // 2, 4, 30)))[:3]


def prepare(steps: np.ndarray, x: np.ndarray) -> tuple | None:
    """The shipped test's set-up: (segment size, noise floor, coordinate, basis, penalty), or None
    where it returns no change point at once (too short, or constant)."""
    n = len(x)
    size = max(2, math.ceil(n / 20))
    if n < 2 * size + 4 or np.ptp(x) == 0:
        return None
    return (size, (0.005 * np.ptp(x)) ** 2, *null_basis(steps, x))



def on_shipped_setup(test: Callable) -> Callable:
    """``detect(steps, x, *more)`` that runs ``test(steps, x, *more, size, floor, u, base, penalty)``
    on the shipped test's set-up, and finds nothing where the shipped test stops at once."""
    def detect(steps: np.ndarray, x: np.ndarray, *more: object) -> object:
        setup = prepare(steps, x)
        return [] if setup is None else test(steps, x, *more, *setup)

    return detect

def bootstrap_p(stat: float, scan: Callable[[np.ndarray], float], source: np.ndarray, sd: float,
                draws: int = 39, level: float = 0.05) -> float:
    """The shipped bootstrap p-value of ``stat`` under ``source`` + N(0, sd²), stopped (a lower
    bound, above ``level``) once it cannot reach ``level``."""
    rng, exceed = np.random.default_rng(0), 0
    for _ in range(draws):
        exceed += scan(source + sd * rng.standard_normal(len(source))) >= stat
        if (exceed + 1) / (draws + 1) > level:
            break
    return (exceed + 1) / (draws + 1)


def power(detect: Callable, ns: tuple[int, ...], draws: int, cells=CELLS, place_known: bool = False) -> None:
    """Share of series with a 4σ jump at a random place in the middle half where ``detect(steps,
    values)`` returns a step within two checkpoints of it (``place_known``: where
    ``detect(steps, values, place)`` is True)."""
    rng = np.random.default_rng(11)
    for n in ns:
        out = []
        for sch, sh in cells:
            hits = 0
            for _ in range(draws):
                s = schedule(sch, n, rng)
                v = shape(sh, s) + 0.05 * rng.standard_normal(n)
                at = int(rng.integers(n // 4, 3 * n // 4))
                v[at:] += 0.2
                hits += bool(detect(s, v, at)) if place_known else any(abs(np.searchsorted(s, c) - at) <= 2
                                                                 for c in detect(s, v))
            out.append(hits / draws)
        print(f"power{' with the place known' if place_known else ''} n={n} {[f'{a}/{b}' for a, b in cells]}: {out}",
              flush=True)


def false_alarms(detect: Callable, draws: int) -> None:
    rng = np.random.default_rng(99)
    bad = [(sch, sh, n) for sch in ("even", "geometric", "pythia") for sh in ("linear", "logistic", "power_law",
           "exponential") for n in (20, 50) if detect(schedule(sch, n), shape(sh, schedule(sch, n)))]
    print(f"noise-free curves with a change point: {bad}", flush=True)
    for sch in ("even", "pythia", "random"):
        for sh in ("logistic", "power_law", "linear"):
            rate = np.mean([len(detect(s, shape(sh, s) + 0.01 * rng.standard_normal(50))) > 0
                            for s in [schedule(sch, 50, rng) for _ in range(draws)]])
            print(f"false alarms, 1% noise, {sch} {sh}: {rate:.2f}", flush=True)


def position(draws: int) -> None:
    rng = np.random.default_rng(7)
    s = schedule("even", 50)
    for at in range(12, 38, 2):
        hits = 0
        for _ in range(draws):
            v = shape("logistic", s) + 0.05 * rng.standard_normal(50)
            v[at:] += 0.2
            hits += any(abs(np.searchsorted(s, c) - at) <= 2 for c in change_points(s, v))
        print(f"jump at checkpoint {at}: found in {hits / draws:.2f}", flush=True)


def oracle() -> None:
    n, rng = 50, np.random.default_rng(3)
    s = schedule("even", n)
    truth = shape("logistic", s)
    u, base, pen = null_basis(s, truth)
    index = np.arange(n)

    def scan(y: np.ndarray, floor: float) -> tuple[int, float, dict]:
        null = pspline(None, y, base=base, penalty=pen, select="reml", floor=floor)
        stat = {k: 2 * (pspline(None, y, extra=(index >= k).astype(float)[:, None], base=base, penalty=pen,
                                select="reml", floor=floor)["reml"] - null["reml"]) for k in range(3, n - 2)}
        k = max(stat, key=stat.get)
        return k, stat[k], null

    for at in (30, 32, 34):
        for _ in range(4):
            y = truth + 0.05 * rng.standard_normal(n)
            y[at:] += 0.2
            floor = (0.005 * np.ptp(y)) ** 2
            k, stat, null = scan(y, floor)
            def stat_of(z: np.ndarray, f: float = floor) -> float:
                return scan(z, f)[1]

            p_null = bootstrap_p(stat, stat_of, null["values"], math.sqrt(null["sigma2"]), level=1)
            p_oracle = bootstrap_p(stat, stat_of, truth, 0.05, level=1)
            print(f"jump at {at}, found at {k}: T {stat:.1f}, p from the fitted null {p_null:.3f}, "
                  f"from the true curve {p_oracle:.3f}", flush=True)


def local_test(frac: float) -> Callable:
    @on_shipped_setup
    def detect(steps: np.ndarray, x: np.ndarray, size: int, floor: float, u: np.ndarray, base: np.ndarray,
               pen: np.ndarray) -> list[float]:
        n = len(x)
        h = max(5, round(frac * n))
        windows = {}
        for k in range(size, n - size + 1):
            lo, hi = max(0, k - h), min(n, k + h)
            w = (u[lo:hi] - u[lo]) / (u[hi - 1] - u[lo])
            m = int(np.clip((hi - lo) // 2, 4, 30))
            windows[k] = (lo, hi, bspline_basis(w, m, even=0.5), curvature_penalty(w, m, even=0.5),
                          (np.arange(lo, hi) >= k).astype(float)[:, None])

        def scan(y: np.ndarray) -> tuple[int, float]:
            stats = {k: 2 * (pspline(None, y[lo:hi], extra=step, base=b, penalty=p, select="reml", floor=floor)["reml"]
                             - pspline(None, y[lo:hi], base=b, penalty=p, select="reml", floor=floor)["reml"])
                     for k, (lo, hi, b, p, step) in windows.items()}
            k = max(stats, key=stats.get)
            return k, stats[k]

        k, stat = scan(x)
        if stat <= 0:
            return []
        null = pspline(None, x, base=base, penalty=pen, select="reml", floor=floor)
        p = bootstrap_p(stat, lambda z: scan(z)[1], null["values"], math.sqrt(max(null["sigma2"], floor)))
        return [steps[k]] if p <= 0.05 else []

    return detect



@on_shipped_setup
def known_location(steps: np.ndarray, x: np.ndarray, at: int, size: int, floor: float, u: np.ndarray,
                   base: np.ndarray, pen: np.ndarray) -> bool:
    """The shipped statistic at the jump's true checkpoint only (no scan), calibrated by the
    shipped parametric bootstrap of that same statistic: what it finds when it need not search,
    roughly the most a scan with it could find."""
    step = (np.arange(len(x)) >= at).astype(float)[:, None]

    def stat_of(y: np.ndarray) -> float:
        return 2 * (pspline(None, y, extra=step, base=base, penalty=pen, select="reml", floor=floor)["reml"]
                    - pspline(None, y, base=base, penalty=pen, select="reml", floor=floor)["reml"])

    null = pspline(None, x, base=base, penalty=pen, select="reml", floor=floor)
    stat = stat_of(x)
    return stat > 0 and bootstrap_p(stat, stat_of, null["values"], math.sqrt(max(null["sigma2"], floor))) <= 0.05


def studentized_test(draws: int = 39) -> Callable:
    """The shipped statistic T_k standardized by its own bootstrap mean and sd at each candidate
    k before the maximum is taken (calibrated by the same bootstrap): candidates beside a steep
    stretch of the null, whose T_k is large under the null, no longer set the bar for the rest.
    First change point only; the shipped AR(1) bootstrap noise; ``draws`` replicates to
    standardize and as many to calibrate."""
    from complexity_zoo.analysis.transitions import _ar_one, _lag_one

    @on_shipped_setup
    def detect(steps: np.ndarray, x: np.ndarray, size: int, floor: float, u: np.ndarray, base: np.ndarray,
               pen: np.ndarray) -> list[float]:
        n = len(x)
        ks = list(range(size, n - size + 1))
        columns = [(np.arange(n) >= k).astype(float)[:, None] for k in ks]

        def stats(y: np.ndarray) -> tuple[np.ndarray, dict, list[dict]]:
            null = pspline(None, y, base=base, penalty=pen, select="reml", floor=floor)
            fits = [pspline(None, y, extra=c, base=base, penalty=pen, select="reml", floor=floor) for c in columns]
            return np.array([2 * (f["reml"] - null["reml"]) for f in fits]), null, fits

        t_obs, null, fits = stats(x)
        phi = _lag_one(x - fits[int(np.argmax(t_obs))]["values"])
        sd = math.sqrt(max(null["sigma2"], floor))
        rng = np.random.default_rng(0)
        # one bootstrap set standardizes, a second calibrates: standardizing by a set that also
        # calibrates shrinks each replicate's own z (in-sample) and the test fires too often
        scale, boot = (np.array([stats(null["values"] + sd * _ar_one(rng.standard_normal(n), phi))[0]
                                 for _ in range(draws)]) for _ in range(2))
        mean, spread = scale.mean(axis=0), scale.std(axis=0) + 1e-12
        z_obs, z_boot = (t_obs - mean) / spread, ((boot - mean) / spread).max(axis=1)
        p = (1 + (z_boot >= z_obs.max()).sum()) / (draws + 1)
        return [steps[ks[int(np.argmax(z_obs))]]] if p <= 0.05 else []

    return detect

def block_penalties(u: np.ndarray, size: int, blocks: int) -> list[np.ndarray]:
    """∫ f''² over each of ``blocks`` stretches of u holding equal numbers of checkpoints."""
    knots = _knots(u, size, 3, 0.5)
    edges = np.unique(knots)
    half = np.diff(edges) / 2
    mid = edges[:-1] + half
    node = 1 / np.sqrt(3)
    at = np.concatenate([mid - node * half, mid + node * half])
    wts = np.concatenate([half, half])
    second = np.column_stack([BSpline(knots, np.eye(size)[i], 3).derivative(2)(at) for i in range(size)])
    which = np.searchsorted(np.quantile(u, np.linspace(0, 1, blocks + 1))[1:-1], np.concatenate([mid, mid]))
    return [second[which == b].T @ (second[which == b] * wts[which == b][:, None]) for b in range(blocks)]


def adaptive_test(blocks: int) -> Callable:
    def restricted(y: np.ndarray, design: np.ndarray, pens: list[np.ndarray], loglams: list[float],
                   floor: float) -> float:
        n, m, k = len(y), design.shape[1], pens[0].shape[0]
        pen = sum(math.exp(a) * p for a, p in zip(loglams, pens))
        full = np.zeros((m, m))
        full[:k, :k] = pen
        gram = design.T @ design
        a = gram + full + 1e-9 * np.trace(gram[:k, :k]) * np.eye(m)
        try:
            chol = np.linalg.cholesky(a)
        except np.linalg.LinAlgError:
            return -np.inf
        prss = max(float(y @ y - np.linalg.solve(a, design.T @ y) @ (design.T @ y)), 0.0)
        ev = np.linalg.eigvalsh(pen)
        pos = ev > 1e-10 * ev.max()
        free = n - (m - int(pos.sum()))
        return -0.5 * (free * np.log((prss + free * floor + 1e-300) / free) + 2 * np.log(np.diag(chol)).sum()
                       - np.log(ev[pos]).sum())

    def best(y: np.ndarray, design: np.ndarray, pens: list[np.ndarray], floor: float, start: float):
        cur = [start] * len(pens)
        value = restricted(y, design, pens, cur, floor)
        for moves in (np.arange(-4, 4.01, 1.0), np.arange(-1, 1.01, 0.5)):
            for b in range(len(pens)):
                for d in moves:
                    trial = list(cur)
                    trial[b] = cur[b] + d * math.log(10)
                    v = restricted(y, design, pens, trial, floor)
                    if v > value:
                        value, cur = v, trial
        return value, cur

    def detect(steps: np.ndarray, x: np.ndarray) -> list[float]:
        n = len(x)
        setup = prepare(steps, x)
        if setup is None:
            return []
        size, floor, u, base, pen = setup
        pens = block_penalties(u, base.shape[1], blocks)
        index = np.arange(n)

        def scan(y: np.ndarray) -> tuple[int, float, list[float]]:
            start = math.log(pspline(None, y, base=base, penalty=pen, select="reml", floor=floor)["lam"])
            null, lams = best(y, base, pens, floor, start)
            stats = {k: best(y, np.column_stack([base, index >= k]), pens, floor, start)[0] - null
                     for k in range(size, n - size + 1)}
            k = max(stats, key=stats.get)
            return k, 2 * stats[k], lams

        k, stat, lams = scan(x)
        if stat <= 0:
            return []
        a = base.T @ base + sum(math.exp(a) * p for a, p in zip(lams, pens))
        values = base @ np.linalg.solve(a, base.T @ x)
        edf = np.trace(base @ np.linalg.solve(a, base.T))
        sd = math.sqrt(max(((x - values) ** 2).sum() / max(n - edf, 1), floor))
        return [steps[k]] if bootstrap_p(stat, lambda z: scan(z)[1], values, sd) <= 0.05 else []

    return detect


def maximum_likelihood() -> None:
    """The ``ml`` part: the shipped test, then the same with the restricted likelihood swapped out."""
    import complexity_zoo.analysis.smooth as smooth

    def grid_false() -> None:
        rng = np.random.default_rng(99)
        rates = [np.mean([len(change_points(s, shape(sh, s) + 0.01 * rng.standard_normal(50))) > 0
                          for s in [schedule(sch, 50, rng) for _ in range(40)]])
                 for sch in ("even", "geometric", "pythia", "dense_sparse", "random")
                 for sh in ("flat", "linear", "logistic", "power_law", "exponential")]
        print(f"false alarms, 1% noise, 25 cells x 40 draws: mean {np.mean(rates):.3f}, max {max(rates):.3f}",
              flush=True)

    shipped = smooth.pspline

    def ml(*args, **kwargs):
        if kwargs.get("select") != "reml":
            return shipped(*args, **kwargs)
        fit = shipped(*args, **{**kwargs, "select": "ml"})
        return {**fit, "reml": fit["ml"]}

    for label, fn in (("restricted (shipped)", shipped), ("maximum", ml)):
        smooth.pspline = fn
        print(label, flush=True)
        power(lambda s, v: change_points(s, v), (20, 50), 20)
        grid_false()
    smooth.pspline = shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", required=True,
                        choices=["position", "oracle", "known", "studentized", "local", "ml", "adaptive"])
    parser.add_argument("--draws", type=int, default=None, help="default 8 (position), 20 (local), 10 (adaptive)")
    parser.add_argument("--frac", type=float, default=0.3)
    parser.add_argument("--blocks", type=int, default=3)
    args = parser.parse_args()
    start = time.time()
    if args.part == "position":
        position(args.draws or 8)
    elif args.part == "oracle":
        oracle()
    elif args.part == "known":
        power(known_location, (20, 50), args.draws or 20, place_known=True)
        print("shipped, the same draws", flush=True)
        power(change_points, (20, 50), args.draws or 20)
    elif args.part == "studentized":
        detect = studentized_test()
        power(detect, (20, 50), args.draws or 20)
        false_alarms(detect, args.draws or 20)
    elif args.part == "ml":
        maximum_likelihood()
    elif args.part == "local":
        power(local_test(args.frac), (20, 50), args.draws or 20)
    else:
        cells = (("even", "logistic"), ("random", "linear"), ("geometric", "exponential"), ("pythia", "power_law"))
        print("adaptive", flush=True)
        detect = adaptive_test(args.blocks)
        power(detect, (50,), args.draws or 10, cells)
        false_alarms(detect, args.draws or 10)
        print("shipped, the same draws", flush=True)
        power(change_points, (50,), args.draws or 10, cells)
        false_alarms(change_points, args.draws or 10)
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
