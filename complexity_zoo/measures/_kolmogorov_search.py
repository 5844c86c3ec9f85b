"""The searches of the Kolmogorov estimator: candidate coarse-grainings, their cached losses and sizes.

``_search_frontier`` is the default (deterministic); ``_search_bayes`` is the authors'
Bayesian optimization (``bayes_optimize_svd_quantization`` in their main.py).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data import Data
from ..errors import MissingDependencyError
from ._coarse_grain import SIDES, CoarseGrainer, coded_bits, entropy_bits

# τ values scanned by the frontier search; fine near 1, where most matrices start to lose rank.
TAU_GRID = (1.0, 0.98, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)
# Where the singular values go: chosen per matrix and candidate, the authors' layout, or fixed.
SIDE_POLICIES = ("choose", "paper", *SIDES)


@dataclass
class _Candidate:
    delta: float
    tau: float | None  # None: no matrix truncated (quantization only)
    ranks: dict[str, int | None] = field(repr=False)
    sides: dict[str, str] | None = field(default=None, repr=False)  # None: S on the left factor

    @property
    def key(self) -> tuple:
        return (self.delta, tuple(self.ranks.values()), tuple(sorted((self.sides or {}).items())))


class _Problem:
    """One checkpoint's search state: the weights, their SVDs, and a cache of evaluations."""

    def __init__(self, model: nn.Module, data: Data, coder: str, sides: str = "choose",
                 z: float | None = None, n_total: int | None = None) -> None:
        """``z`` (with ``n_total``, the size of the set ``data`` was drawn from): check ε on the
        upper confidence bound of the paired loss increase (see ``increase_bound``), not the mean."""
        self.grainer = CoarseGrainer(model, paper_numerics=sides == "paper")
        self.z, self.n_total = z, n_total
        self.side_policy = sides
        self._paper_sides = self.grainer.paper_sides()
        self._chosen: dict[tuple, str] = {}
        self.model = copy.deepcopy(model)  # coarse weights are loaded here, never into the caller's model
        self.data = data
        self.coder = coder
        self.base_eval = self.evaluate(self.grainer.params)
        self.base_loss = self.base_eval["loss"]
        if z is not None:  # per-example losses of the original, kept on the model's device
            self.base_losses = self.per_example(self.grainer.params, data)
        self.evals: dict[tuple, dict[str, float]] = {}  # candidate key -> evaluation on self.data
        self.test_evals: dict[object, dict[str, float]] = {}
        self.sizes: dict[tuple, int] = {}

    def evaluate(self, weights: dict[str, torch.Tensor], data: Data | None = None,
                 split: str = "train") -> dict[str, float]:
        """Mean loss (and accuracy) with ``weights`` loaded into the private copy of the model."""
        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for name, w in weights.items():
                params[name].copy_(w)
        return (data or self.data).evaluate(self.model, split)

    def per_example(self, weights: dict[str, torch.Tensor], data: Data) -> torch.Tensor:
        """Per-example training losses (float64, on the model's device) with ``weights`` loaded."""
        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for name, w in weights.items():
                params[name].copy_(w)
            device = next(iter(params.values())).device
            return torch.cat([data.per_example_loss(self.model, b).double()
                              for b in data.batches("train", device=device)])

    def increase(self, weights: dict[str, torch.Tensor], data: Data, base: torch.Tensor) -> dict[str, float]:
        """Paired loss increase over the original on ``data``: mean, its margin and the bound."""
        diff = self.per_example(weights, data) - base
        mean = diff.mean()
        sd = diff.std() if diff.numel() > 1 else diff.new_zeros(())
        mean, sd, mu3 = torch.stack([mean, sd, ((diff - mean) ** 3).mean()]).tolist()  # one transfer
        return increase_bound(mean, sd, mu3, diff.numel(), self.n_total, self.z)

    def candidate(self, delta: float, tau: float | None, ranks: dict[str, int | None]) -> _Candidate:
        """The candidate (Δ, ranks) with the side of S of each truncated matrix set by the policy."""
        sides = {}
        for name, k in ranks.items():
            if k is None:
                continue
            if self.side_policy == "choose":
                key = (name, k, delta)
                if key not in self._chosen:
                    self._chosen[key] = self.grainer.best_side(name, k, delta)
                sides[name] = self._chosen[key]
            else:
                sides[name] = self._paper_sides[name] if self.side_policy == "paper" else self.side_policy
        return _Candidate(delta, tau, ranks, sides)

    def weights(self, cand: _Candidate) -> dict[str, torch.Tensor]:
        return self.grainer.weights(cand.delta, self.stored(cand))

    def stored(self, cand: _Candidate) -> list:
        return self.grainer.stored(cand.delta, cand.ranks, cand.sides)

    def evaluation(self, cand: _Candidate) -> dict[str, float]:
        if cand.key not in self.evals:
            if self.z is None:
                self.evals[cand.key] = self.evaluate(self.weights(cand))
            else:  # one device-to-host transfer: the mean and SD of the paired increase
                inc = self.increase(self.weights(cand), self.data, self.base_losses)
                self.evals[cand.key] = {"loss": self.base_loss + inc["mean"], **inc}
        return self.evals[cand.key]

    def loss(self, cand: _Candidate) -> float:
        return self.evaluation(cand)["loss"]

    def feasible(self, cand: _Candidate, epsilon: float) -> bool:
        if self.z is not None:
            bound = self.evaluation(cand)["bound"]
            return math.isfinite(bound) and bound <= epsilon
        value = self.loss(cand)
        return math.isfinite(value) and value <= self.base_loss + epsilon

    def bits(self, cand: _Candidate) -> int:
        if cand.key not in self.sizes:
            self.sizes[cand.key] = coded_bits(self.stored(cand), cand.delta, self.coder, self.grainer.layout)
        return self.sizes[cand.key]


def increase_bound(mean: float, sd: float, mu3: float, m: int, n: int | None, z: float | None) -> dict[str, float]:
    """Upper confidence bound of the whole-set mean loss increase from a paired subsample.

    ``m`` paired per-example increases (coarse minus original; mean, SD, third central moment
    ``mu3``), drawn without replacement from ``n``. Johnson's (1978, JASA 73:536) skewness-
    corrected t bound: mean + z·se + γ/(6 m) + γ/3 · (z·se)² with γ = mu3/sd², γ scaled by the
    finite-population factor f² and se = sd/√m · f, f² = (n - m)/(n - 1); so at m = n the bound
    is the exact whole-set mean. Losses are right-skewed (a few examples flip), where the plain
    normal bound accepts too often (tests/test_kolmogorov.py). NaN or inf losses: an inf bound.
    """
    f2 = 0.0 if n is None or m >= n else (n - m) / max(n - 1, 1)
    z = z or 0.0
    if m < 2 or not all(math.isfinite(v) for v in (mean, sd, mu3)):
        return {"mean": mean, "se": math.inf, "margin": math.inf, "bound": math.inf}
    se = sd / math.sqrt(m) * math.sqrt(f2)
    skew = mu3 / sd**2 * f2 if sd > 0 else 0.0
    margin = z * se + skew / (6 * m) + skew / (3 * sd**2) * (z * se) ** 2 if sd > 0 else 0.0
    return {"mean": mean, "se": se, "margin": margin, "bound": mean + margin}


def _profiles(problem: _Problem) -> list[_Candidate]:
    """One candidate τ per distinct rank profile on the τ grid, finest first.

    The finest is quantization alone (no truncation; τ = 1 already drops the last singular
    value wherever the factors are smaller), so a bound too tight for any truncation can
    still be met by quantizing.
    """
    untruncated = {name: None for name in problem.grainer.matrices}
    profiles: dict[tuple, _Candidate] = {tuple(untruncated.values()): _Candidate(0.0, None, untruncated)}
    for tau in TAU_GRID:
        ranks = problem.grainer.ranks(tau)
        profiles.setdefault(tuple(ranks.values()), _Candidate(0.0, tau, ranks))
    return list(profiles.values())


def _largest_feasible(feasible, hint: int, top: int, may_grow: bool) -> int | None:
    """Largest i in [0, top] with feasible(i), assuming feasibility falls as i grows.

    Starts at ``hint`` (the neighbouring rank profile's answer): when it holds, the answer is
    ``hint`` itself unless ``may_grow``, in which case it gallops upwards; when it fails, it
    gallops downwards. Either way a good hint costs one to three evaluations.
    """
    if feasible(hint):
        if not may_grow:
            return hint
        lo, step = hint, 1
        while lo < top:
            nxt = min(lo + step, top)
            if not feasible(nxt):
                hi = nxt
                break
            lo, step = nxt, step * 2
        else:
            return top
    else:
        hi, step = hint, 1
        while True:
            nxt = max(hi - step, 0)
            if feasible(nxt):
                lo = nxt
                break
            if nxt == 0:
                return None
            hi, step = nxt, step * 2
    while hi - lo > 1:  # lo feasible, hi infeasible
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if feasible(mid) else (lo, mid)
    return lo


def _search_frontier(problem: _Problem, epsilon: float, deltas: list[float], margin: float = 0.15,
                     refine_steps: int = 3) -> _Candidate | None:
    """Trace the feasibility frontier over a (Δ grid) x (τ grid) and keep its smallest point.

    For quantization alone the largest feasible Δ is searched over the whole grid; the first
    truncated profile (τ = 1) starts from its answer and may move either way. Down the τ grid,
    each rank profile starts at the previous profile's answer and only looks downwards: fewer
    singular values never make a larger Δ feasible (the assumption that makes this cheap: about 1.5 loss evaluations
    per profile). Frontier points are sized exactly; the winner's Δ is refined by
    ``refine_steps`` bisections towards the next grid point. Also assumes the loss does not
    improve as Δ grows at fixed ranks. Only frontier points whose modelled size (code entropy)
    is within ``margin`` of the smallest are compressed for real.
    """
    top = len(deltas) - 1
    frontier: list[tuple[float, int, _Candidate]] = []  # (modelled bits, Δ index, candidate)
    hint, fresh = top, True
    for prof in _profiles(problem):
        def feasible_at(k: int, prof: _Candidate = prof) -> bool:
            return problem.feasible(problem.candidate(deltas[k], prof.tau, prof.ranks), epsilon)

        i = _largest_feasible(feasible_at, hint, top, may_grow=fresh)
        if prof.tau is None:  # quantization alone: the first truncated profile may go either way
            hint, fresh = (i if i is not None else top), True
        else:
            fresh = False
            if i is None:
                break  # every coarser profile fails too
            hint = i
        if i is not None:
            cand = problem.candidate(deltas[i], prof.tau, prof.ranks)
            frontier.append((entropy_bits(problem.stored(cand)), i, cand))
    if not frontier:
        return None
    cutoff = min(f[0] for f in frontier) * (1 + margin)
    _, i, best = min((f for f in frontier if f[0] <= cutoff), key=lambda f: problem.bits(f[2]))
    if i + 1 < len(deltas):  # bisect log Δ between the winner and the next, coarser grid point
        lo_d, hi_d = best.delta, deltas[i + 1]
        for _ in range(refine_steps):
            mid = problem.candidate(math.sqrt(lo_d * hi_d), best.tau, best.ranks)
            if problem.feasible(mid, epsilon):
                lo_d = mid.delta
                if problem.bits(mid) <= problem.bits(best):
                    best = mid
            else:
                hi_d = mid.delta
    return best


def _search_bayes(problem: _Problem, epsilon: float, bounds: tuple[float, float], seed: int,
                  init_points: int, n_iter: int, penalty: float) -> _Candidate | None:
    """The paper's search: Bayesian optimization of -size (bytes) over normalized (log Δ, τ).

    As in the authors' code: probes (0, 1) and (0.1, 0.98) first, then ``init_points`` random
    and ``n_iter`` Bayesian steps of bayes_opt seeded with ``seed`` (their ``int(rng[0])``);
    an infeasible point (loss above the bound, NaN or infinite) scores ``-penalty`` bytes.
    """
    try:
        from bayes_opt import BayesianOptimization
    except ImportError as e:
        raise MissingDependencyError(
            "search='bayes' needs bayes_opt; install it with: pip install 'complexity-zoo[paper]'"
        ) from e
    lo, hi = math.log(bounds[0]), math.log(bounds[1])

    def candidate(u: float, t: float) -> _Candidate:
        tau = float(min(max(t, 0.0), 1.0))
        return problem.candidate(math.exp(lo + u * (hi - lo)), tau, problem.grainer.ranks(tau))

    def objective(bin_size_normalized: float, threshold_normalized: float) -> float:
        cand = candidate(bin_size_normalized, threshold_normalized)
        return -problem.bits(cand) / 8 if problem.feasible(cand, epsilon) else -float(penalty)

    opt = BayesianOptimization(
        f=objective, pbounds={"bin_size_normalized": (0, 1), "threshold_normalized": (0, 1)},
        random_state=seed, verbose=0,
    )
    opt.probe(params={"bin_size_normalized": 0.0, "threshold_normalized": 1.0}, lazy=False)
    opt.probe(params={"bin_size_normalized": 0.1, "threshold_normalized": 0.98}, lazy=False)
    opt.maximize(init_points=init_points, n_iter=n_iter)
    best = opt.max["params"]
    cand = candidate(best["bin_size_normalized"], best["threshold_normalized"])
    return cand if problem.feasible(cand, epsilon) else None
