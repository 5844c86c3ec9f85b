"""The rate–distortion Kolmogorov complexity estimator of DeMoss et al. 2024.

K(θ) ≈ min over coarse-grainings (Δ, τ) of the lossless size of the coarse-grained weights,
subject to L_train(coarse) ≤ L_train(θ) + ε (arXiv 2412.09810; authors' code
``bayes_optimize_svd_quantization``). The search evaluates the training loss of candidate
coarse-grainings; that is the expensive part, so SVDs are computed once per checkpoint and
evaluated losses are cached.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from ..data import Data
from ..errors import DataError, MissingDependencyError
from ..measure import Measure, MeasureResult
from ..registry import register_measure
from ._coarse_grain import CODERS, CoarseGrainer, coded_bits, entropy_bits, exact_bits, log_grid
from .compression import naive_bits

SEARCHES = ("frontier", "bayes")
# Errors of the model that the bits describe, recorded with every result (for bounds).
DESCRIBED = ("coarse_train_loss", "coarse_train_error", "coarse_test_loss", "coarse_test_error", "n_train")
# τ values scanned by the frontier search; fine near 1, where most matrices start to lose rank.
TAU_GRID = (1.0, 0.98, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)


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

    def __init__(self, model: nn.Module, data: Data, coder: str) -> None:
        self.grainer = CoarseGrainer(model)
        self.model = copy.deepcopy(model)  # coarse weights are loaded here, never into the caller's model
        self.data = data
        self.coder = coder
        self.base_eval = self.evaluate(self.grainer.params)
        self.base_loss = self.base_eval["loss"]
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

    def weights(self, cand: _Candidate) -> dict[str, torch.Tensor]:
        return self.grainer.weights(cand.delta, self.stored(cand))

    def stored(self, cand: _Candidate) -> list:
        return self.grainer.stored(cand.delta, cand.ranks, cand.sides)

    def evaluation(self, cand: _Candidate) -> dict[str, float]:
        if cand.key not in self.evals:
            self.evals[cand.key] = self.evaluate(self.weights(cand))
        return self.evals[cand.key]

    def loss(self, cand: _Candidate) -> float:
        return self.evaluation(cand)["loss"]

    def feasible(self, cand: _Candidate, epsilon: float) -> bool:
        value = self.loss(cand)
        return math.isfinite(value) and value <= self.base_loss + epsilon

    def bits(self, cand: _Candidate) -> int:
        if cand.key not in self.sizes:
            self.sizes[cand.key] = coded_bits(self.stored(cand), cand.delta, self.coder)
        return self.sizes[cand.key]


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
            return problem.feasible(_Candidate(deltas[k], prof.tau, prof.ranks), epsilon)

        i = _largest_feasible(feasible_at, hint, top, may_grow=fresh)
        if prof.tau is None:  # quantization alone: the first truncated profile may go either way
            hint, fresh = (i if i is not None else top), True
        else:
            fresh = False
            if i is None:
                break  # every coarser profile fails too
            hint = i
        if i is not None:
            cand = _Candidate(deltas[i], prof.tau, prof.ranks)
            frontier.append((entropy_bits(problem.stored(cand)), i, cand))
    if not frontier:
        return None
    cutoff = min(f[0] for f in frontier) * (1 + margin)
    _, i, best = min((f for f in frontier if f[0] <= cutoff), key=lambda f: problem.bits(f[2]))
    if i + 1 < len(deltas):  # bisect log Δ between the winner and the next, coarser grid point
        lo_d, hi_d = best.delta, deltas[i + 1]
        for _ in range(refine_steps):
            mid = _Candidate(math.sqrt(lo_d * hi_d), best.tau, best.ranks)
            if problem.feasible(mid, epsilon):
                lo_d = mid.delta
                if problem.bits(mid) <= problem.bits(best):
                    best = mid
            else:
                hi_d = mid.delta
    return best


def _search_bayes(problem: _Problem, epsilon: float, bounds: tuple[float, float], seed: int,
                  init_points: int, n_iter: int, penalty: float) -> _Candidate | None:
    """The paper's search: Bayesian optimization of -size over normalized (log Δ, τ)."""
    try:
        from bayes_opt import BayesianOptimization
    except ImportError as e:
        raise MissingDependencyError(
            "search='bayes' needs bayes_opt; install it with: pip install 'complexity-zoo[paper]'"
        ) from e
    lo, hi = math.log(bounds[0]), math.log(bounds[1])

    def candidate(u: float, t: float) -> _Candidate:
        tau = float(min(max(t, 0.0), 1.0))
        return _Candidate(math.exp(lo + u * (hi - lo)), tau, problem.grainer.ranks(tau))

    def objective(bin_size_normalized: float, threshold_normalized: float) -> float:
        cand = candidate(bin_size_normalized, threshold_normalized)
        # The paper scores an infeasible candidate -3e5 bytes; a penalty tied to the model's own
        # exact size keeps that below every feasible score for models of any size.
        return -float(problem.bits(cand)) if problem.feasible(cand, epsilon) else -penalty

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


@register_measure("kolmogorov")
class Kolmogorov(Measure):
    """Rate–distortion estimate of Kolmogorov complexity: bits of the coarsest weights within ε.

    DeMoss et al. 2024 (arXiv 2412.09810). One quantization step Δ (log range ``delta_range``,
    paper [1e-3, 1]) and one SVD threshold τ in [0, 1] for all tensors; feasible when the mean
    training loss (nats) of the coarse model is at most the original's + ``epsilon`` (paper: 1).
    ``search``: "frontier" (default, deterministic: traces the feasibility frontier over a Δ x τ
    grid, skipping what a size model rules out) or "bayes" (the paper's:
    2 probes + 10 random + 50 Bayesian-optimization steps). ``coder``: "lzma-codes" (default: integer codes, LZMA) or
    "bz2-pickle" (the paper's). ``max_examples``: evaluate the loss on a seeded subset of the
    training set (the paper used its last minibatch, <= 512 examples); None = all of it.
    The value is never above exact (lossless float32) storage in the same coder.
    """

    unit = "bits"
    needs_data = True
    version = 2  # 2: extras record the described model's train/test errors and the S side
    epsilon: float = 1.0
    search: str = "frontier"
    coder: str = "lzma-codes"
    delta_range: tuple[float, float] = (1e-3, 1.0)
    num_deltas: int = 31
    max_examples: int | None = None
    bayes_init_points: int = 10
    bayes_iterations: int = 50
    seed: int = 0
    presets = {
        "paper": {"search": "bayes", "coder": "bz2-pickle", "max_examples": 512},
        "fast": {"num_deltas": 16},
    }

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, (int, float)) and self.epsilon >= 0):
            raise self._setting_error("epsilon", "a non-negative number of nats", self.epsilon)
        if self.search not in SEARCHES:
            raise self._setting_error("search", f"one of {SEARCHES}", self.search)
        if self.coder not in CODERS:
            raise self._setting_error("coder", f"one of {CODERS}", self.coder)
        lo, hi = self.delta_range
        if not (0 < lo < hi):
            raise self._setting_error("delta_range", "(low, high) with 0 < low < high", self.delta_range)
        if self.max_examples is not None and self.max_examples < 1:
            raise self._setting_error("max_examples", "None or a positive integer", self.max_examples)

    def _data(self, data: Data) -> Data:
        if self.max_examples is None or data.n("train") <= self.max_examples:
            return data
        if not isinstance(data.train, tuple):
            raise DataError("max_examples needs a train split of tensors, not a DataLoader.")
        idx = torch.randperm(data.n("train"), generator=torch.Generator().manual_seed(self.seed))
        idx = idx[: self.max_examples]
        return Data(train=tuple(t[idx] for t in data.train), loss=data.loss, batch_size=data.batch_size)

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        return self._solve(_Problem(model, self._data(data), self.coder), self.epsilon, data)

    def _solve(self, problem: _Problem, epsilon: float, data: Data) -> MeasureResult:
        before = len(problem.evals)
        exact = exact_bits(problem.grainer.params, self.coder)
        if self.search == "frontier":
            deltas = log_grid(*self.delta_range, self.num_deltas)
            best = _search_frontier(problem, epsilon, deltas)
        else:
            best = _search_bayes(problem, epsilon, self.delta_range, self.seed,
                                 self.bayes_init_points, self.bayes_iterations, penalty=2.0 * exact)
        bits = problem.bits(best) if best is not None else exact
        use_exact = best is None or exact <= bits
        coarse_loss = problem.base_loss if use_exact else problem.loss(best)
        naive = float(sum(naive_bits(problem.grainer.params).values()))
        value = float(min(bits, exact))
        described = _described_errors(problem, None if use_exact else best, data)
        truncated = [] if use_exact else [k for k, v in best.ranks.items() if v is not None]
        extras = {
            "delta": None if use_exact else best.delta,
            "tau": None if use_exact else best.tau,
            "ranks": {} if use_exact else {k: v for k, v in best.ranks.items()},
            # Which factor carries the singular values of each truncated matrix (see SIDES).
            "s_side": {k: (best.sides or {}).get(k, "left") for k in truncated},
            "stored_exactly": use_exact,
            "exact_bits": exact,
            "original_loss": problem.base_loss,
            "coarse_loss": coarse_loss,
            "distortion": coarse_loss - problem.base_loss,
            "loss_evaluations": len(problem.evals) - before + (1 if before == 0 else 0),
            "naive_bits": naive,
            "naive_ratio": naive / value,
            **described,
            # Two-part code (the paper's Fig. 4): model bits + bits of the training labels
            # under the described model, n * mean CE / ln 2, on the whole training set.
            "data_bits": described["n_train"] * described["coarse_train_loss"] / math.log(2),
            "coder": self.coder,
            "search": self.search,
        }
        extras["two_part_bits"] = value + extras["data_bits"]
        return MeasureResult(value, extras=extras)


def _described_errors(problem: _Problem, best: _Candidate | None, data: Data) -> dict:
    """Loss and 0-1 error, on the whole train and test splits, of the model the bits describe.

    That is the coarse-grained model, or the original one when it is stored exactly (``best``
    None); one forward pass per split gives both. The search's own evaluation is reused when
    it was on this very training set.
    """
    key = best.key if best is not None else "exact"
    train = None
    if problem.data is data:
        train = problem.base_eval if best is None else problem.evaluation(best)
    weights = None
    if train is None or data.test is not None:
        weights = problem.grainer.params if best is None else problem.weights(best)
    if train is None:
        train = problem.evaluate(weights, data, "train")
    test = None
    if data.test is not None:
        if key not in problem.test_evals:
            problem.test_evals[key] = problem.evaluate(weights, data, "test")
        test = problem.test_evals[key]

    def error(ev: dict | None) -> float | None:
        return 1.0 - ev["acc"] if ev is not None and "acc" in ev else None

    return {
        "coarse_train_loss": train["loss"],
        "coarse_train_error": error(train),
        "coarse_test_loss": test["loss"] if test is not None else None,
        "coarse_test_error": error(test),
        "n_train": data.n("train"),
    }


def rate_distortion(
    model: nn.Module,
    data: Data,
    epsilons: Iterable[float] = (4, 2, 1, 0.5, 0.25, 0.125, 0.0625),
    **settings,
) -> pd.DataFrame:
    """Complexity against distortion bound ε (the paper logs ε = 4 ... 1/16).

    One search state serves every ε (SVDs and evaluated losses are shared). A solution
    feasible at ε is feasible at every larger ε, so the curve is made non-increasing in ε
    by carrying the best solution upward.
    """
    from ..registry import get_measure

    measure = get_measure("kolmogorov", **settings)
    problem = _Problem(model, measure._data(data), measure.coder)
    rows: list[dict] = []
    for eps in sorted(set(float(e) for e in epsilons)):
        r = measure._solve(problem, eps, data)
        row = {"epsilon": eps, "bits": r.value, **{k: r.extras[k] for k in (
            "delta", "tau", "distortion", "loss_evaluations", "stored_exactly", "two_part_bits",
            *DESCRIBED)}}
        if rows and rows[-1]["bits"] < row["bits"]:  # the smaller ε's solution is feasible here too
            row = {**rows[-1], "epsilon": eps, "loss_evaluations": row["loss_evaluations"]}
        rows.append(row)
    return pd.DataFrame(rows[::-1])
