"""The rate–distortion Kolmogorov complexity estimator of DeMoss et al. 2024.

K(θ) ≈ min over coarse-grainings (Δ, τ) of the lossless size of the coarse-grained weights,
subject to L_train(coarse) ≤ L_train(θ) + ε (arXiv 2412.09810; authors' code
``bayes_optimize_svd_quantization``). The search evaluates the training loss of candidate
coarse-grainings; that is the expensive part, so SVDs are computed once per checkpoint and
evaluated losses are cached.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .._settings import at_least
from ..data import Data
from ..errors import DataError
from ..measure import Measure, MeasureResult
from ..registry import register_measure
from ._coarse_grain import CODERS, exact_bits, log_grid
from ._kolmogorov_search import SIDE_POLICIES, _Candidate, _Problem, _search_bayes, _search_frontier
from .compression import naive_bits

SEARCHES = ("frontier", "bayes")
# Errors of the model that the bits describe, recorded with every result (for bounds).
DESCRIBED = ("coarse_train_loss", "coarse_train_error", "coarse_test_loss", "coarse_test_error", "n_train")


@register_measure("kolmogorov")
class Kolmogorov(Measure):
    """Rate–distortion estimate of Kolmogorov complexity: bits of the coarsest weights within ε.

    DeMoss et al. 2024 (arXiv 2412.09810). One quantization step Δ (log range ``delta_range``,
    paper [1e-3, 1]) and one SVD threshold τ in [0, 1] for all tensors; feasible when the mean
    training loss (nats) of the coarse model is at most the original's + ``epsilon`` (paper: 1).
    ``search``: "frontier" (default, deterministic: traces the feasibility frontier over a Δ x τ
    grid, skipping what a size model rules out) or "bayes" (the paper's:
    2 probes + 10 random + 50 Bayesian-optimization steps). ``coder``: "lzma-codes" (default: integer codes, LZMA) or
    "bz2-pickle" (the paper's: bzip2 of the pickled float32 arrays of their Flax tree).
    ``s_side``: which factor of a truncated matrix carries the singular values: "choose"
    (default: per matrix and candidate, the side whose quantized factors rebuild it best, or
    S on U everywhere when that search ends smaller),
    "paper" (the authors': the input side of a Linear weight), or "left"/"right"/"split"
    (U S | V^T, U | S V^T, U sqrt(S) | sqrt(S) V^T). ``max_examples``: check ε on a seeded
    subsample of the training set (``Data.subsample``, recorded in extras["sample"]), and record
    the described model's errors on that draw and on a draw of the test split of the same size
    (so every pass stays in the budget; a bound then counts n_train = the draw); None = all
    of it (the exact check); "last-batch" = the authors' practice, the mean on a subset the size of
    their last minibatch (n mod min(512, n // 2), or a full one). On a subsample, ``confidence``
    makes the check honest: a candidate is feasible only if the upper confidence bound of its
    whole-set loss increase (paired per-example increases, mean + z·SE with the finite-population
    correction, z = Φ⁻¹(confidence)) is at most ε, and the winner is re-checked the same way on an
    independent draw (seed + 1; extras["verification"]), else stored exactly; so the bits describe
    a model within ε of the whole-set loss with probability ≈ confidence. ``confidence`` None:
    the plain subset mean, as the authors check it (not valid for bounds). ``bayes_penalty``: the score (bytes)
    of an infeasible point for search="bayes" (None: twice the exact size; paper: 3e5).
    ``log_of_softmax``: loss -log(softmax) in float32 as the authors compute it, so that an
    underflow is an infinite (infeasible) loss. The value is never above exact (lossless
    float32) storage in the same coder.

    ``kolmogorov.paper`` is the authors' ``bayes_optimize_svd_quantization`` as their script
    calls it, down to the bytes: their float32 SVD (LAPACK gesdd through SciPy, the routine JAX
    calls on CPU) of each array as their Flax tree holds it, their float32 quantization, and their
    pickle of the flattened tree (JAX array wrappers and PyTreeDef, written without JAX; the
    modular task's models under the names of the authors' Flax modules). Run beside their code
    (examples/kolmogorov_reference.py) it probes the same 62 points with the same scores and
    returns the same bits. Remaining differences: the loss is torch's float32 forward pass, not
    XLA's (equal to ~1e-6; could flip a point within that of the bound); their loss
    -sum(log(softmax) * one-hot) is NaN when any class underflows, ours only when the label's
    does; the last minibatch's examples (their shuffle, not reproducible from our checkpoints);
    a best point that is infeasible is stored exactly here, while their code reports its size;
    bayes_opt's random path depends on its version (both sides use the installed one); the
    pickle envelope is jax/jaxlib 0.10's (older jaxlib names the PyTreeDef module differently).
    """

    unit = "bits"
    needs_data = True
    # 2: described model's errors; 3: S side, paper's pytree coder; 4: their pickle bytes, float32;
    # 5: the paper preset quantizes as XLA divides, x * (1/Δ); 6: under max_examples the described
    # model's errors are on the draw
    version = 6
    # SVD for s_side="paper"; max_examples as a Data.subsample with a confidence bound
    stochastic = True  # the seeded subset (max_examples) and the bayes search draw random numbers
    limits = {"num_deltas": at_least(2), "bayes_init_points": at_least(1), "bayes_iterations": at_least(0),
              "epsilon": at_least(0)}
    epsilon: float = 1.0
    search: str = "frontier"
    coder: str = "lzma-codes"
    delta_range: tuple[float, float] = (1e-3, 1.0)
    num_deltas: int = 31
    max_examples: int | str | None = None
    s_side: str = "choose"
    bayes_init_points: int = 10
    bayes_iterations: int = 50
    bayes_penalty: float | None = None
    confidence: float | None = 0.95
    log_of_softmax: bool = False
    seed: int | None = None  # None: 0 when called directly; compare() derives one per cell
    presets = {
        "paper": {"search": "bayes", "coder": "bz2-pickle", "max_examples": "last-batch", "s_side": "paper",
                  "bayes_penalty": 3e5, "log_of_softmax": True, "confidence": None},
        "fast": {"num_deltas": 16},
    }

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise self._setting_error("search", f"one of {SEARCHES}", self.search)
        if self.coder not in CODERS:
            raise self._setting_error("coder", f"one of {CODERS}", self.coder)
        lo, hi = self.delta_range
        if not (0 < lo < hi):
            raise self._setting_error("delta_range", "(low, high) with 0 < low < high", self.delta_range)
        if self.max_examples is not None and self.max_examples != "last-batch" and not (
                isinstance(self.max_examples, int) and self.max_examples >= 1):
            raise self._setting_error("max_examples", "None, 'last-batch' or a positive integer", self.max_examples)
        if self.s_side not in SIDE_POLICIES:
            raise self._setting_error("s_side", f"one of {SIDE_POLICIES}", self.s_side)
        if self.confidence is not None and not 0 < self.confidence < 1:
            raise self._setting_error("confidence", "None or a probability in (0, 1)", self.confidence)
        if self.bayes_penalty is not None and not self.bayes_penalty > 0:
            raise self._setting_error("bayes_penalty", "None or a positive number of bytes", self.bayes_penalty)

    def _data(self, data: Data) -> Data:
        """The examples (and loss) the search evaluates: a seeded subset when asked for."""
        n = data.n("train")
        loss = _log_of_softmax if self.log_of_softmax and data.loss_name == "cross_entropy" else data.loss
        if self._budgeted(data):
            sub = data.subsample(self.max_examples, seed=self.seed or 0)
            return sub if loss is data.loss else Data(train=sub.train, test=sub.test, loss=loss,
                                                      batch_size=data.batch_size, sample=sub.sample)
        size = None
        if self.max_examples == "last-batch":  # their get_mini_batches: the remainder, else a full batch
            batch = max(1, min(512, n // 2))
            size = n % batch or batch
        if (size is None or n <= size) and loss is data.loss:
            return data
        if not isinstance(data.train, tuple):
            raise DataError("max_examples needs a train split of tensors, not a DataLoader.")
        train = data.train
        if size is not None and n > size:
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed or 0))[:size]
            train = tuple(t[idx] for t in data.train)
        return Data(train=train, loss=loss, batch_size=data.batch_size)

    def _budgeted(self, data: Data) -> bool:
        """Whether ``max_examples`` cuts a split of ``data`` (then every pass runs on the draw)."""
        return isinstance(self.max_examples, int) and any(
            getattr(data, split) is not None and data.n(split) > self.max_examples for split in ("train", "test"))

    def _z(self, data: Data) -> float | None:
        """z of the confidence bound, when ε is checked on a proper subsample with a confidence."""
        if self.confidence is None or not isinstance(self.max_examples, int) or data.n("train") <= self.max_examples:
            return None
        return statistics.NormalDist().inv_cdf(self.confidence)

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        return self._solve(self._problem(model, data), self.epsilon, data)

    def _problem(self, model: nn.Module, data: Data) -> _Problem:
        return _Problem(model, self._data(data), self.coder, self.s_side, z=self._z(data), n_total=data.n("train"))

    def _verify(self, problem: _Problem, best: _Candidate, epsilon: float, data: Data) -> dict:
        """Re-check the winner on an independent draw (the search's own draw chose it)."""
        fresh = data.subsample(self.max_examples, seed=(self.seed or 0) + 1, splits=("train",))
        fresh = Data(train=fresh.train, loss=problem.data.loss, batch_size=data.batch_size, sample=fresh.sample)
        base = problem.per_example(problem.grainer.params, fresh)
        out = problem.increase(problem.weights(best), fresh, base)
        return {**out, "passed": math.isfinite(out["bound"]) and out["bound"] <= epsilon, "sample": fresh.sample}

    def _solve(self, problem: _Problem, epsilon: float, data: Data) -> MeasureResult:
        before = len(problem.evals)
        exact = exact_bits(problem.grainer.params, self.coder, problem.grainer.layout)
        if self.search == "frontier":
            deltas = log_grid(*self.delta_range, self.num_deltas)
            best = None
            # "choose" picks each matrix's side by how well its factors rebuild it, which is not
            # always the smaller feasible code: the frontier is also traced with S on U, and the
            # smaller of the two kept (ties: the first).
            for policy in (("choose", "left") if self.s_side == "choose" else (self.s_side,)):
                problem.side_policy = policy
                found = _search_frontier(problem, epsilon, deltas)
                if found is not None and (best is None or problem.bits(found) < problem.bits(best)):
                    best = found
            problem.side_policy = self.s_side
        else:
            best = _search_bayes(problem, epsilon, self.delta_range, self.seed or 0,
                                 self.bayes_init_points, self.bayes_iterations,
                                 penalty=self.bayes_penalty or 2.0 * exact / 8)
        verification = None
        if problem.z is not None and best is not None:
            verification = self._verify(problem, best, epsilon, data)
            if not verification["passed"]:
                best = None  # stored exactly: no claim that a coarse model is within ε
        bits = problem.bits(best) if best is not None else exact
        use_exact = best is None or exact <= bits
        coarse_loss = problem.base_loss if use_exact else problem.loss(best)
        naive = float(sum(naive_bits(problem.grainer.params).values()))
        value = float(min(bits, exact))
        # With a budget, the described model's errors are on the draw too (its train split is the
        # search's); a bound then counts n = the draw's size, which it may: the code lengths do not
        # depend on the data, so choosing the model on those examples leaves an Occam bound valid.
        draw = data
        if self._budgeted(data):  # the search's draw where it has the data's own loss, else the same draw again
            draw = problem.data if problem.data.loss is data.loss else data.subsample(self.max_examples,
                                                                                     seed=self.seed or 0)
        described = _described_errors(problem, None if use_exact else best, draw)
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
            # under the described model, n * mean CE / ln 2, on the training set (or its draw).
            "data_bits": described["n_train"] * described["coarse_train_loss"] / math.log(2),
            "coder": self.coder,
            "search": self.search,
            # The data budget: the draw ε was checked on, and how (None: the whole training set).
            "sample": problem.data.sample,
            "confidence": self.confidence if problem.z is not None else None,
            "search_bound": None if problem.z is None or best is None else problem.evaluation(best)["bound"],
            "verification": verification,
        }
        extras["two_part_bits"] = value + extras["data_bits"]
        return MeasureResult(value, extras=extras)


def _log_of_softmax(model: nn.Module, batch: tuple) -> torch.Tensor:
    """-log(softmax(logits))[label] in float32, the authors' loss: an underflow gives inf."""
    logits, y = model(batch[0]).float(), batch[1]
    if logits.ndim == 3:  # they read the last position
        logits, y = logits[:, -1], (y[:, -1] if y.ndim == 2 else y)
    return -torch.log(F.softmax(logits, dim=-1).gather(1, y.reshape(-1, 1))).squeeze(1)


def _described_errors(problem: _Problem, best: _Candidate | None, data: Data) -> dict:
    """Loss and 0-1 error, on ``data``'s train and test splits (whole, or the budget's draw), of the
    model the bits describe.

    That is the coarse-grained model, or the original one when it is stored exactly (``best``
    None); one forward pass per split gives both. The search's own evaluation is reused when
    it was on this very training set.
    """
    key = best.key if best is not None else "exact"
    train = None
    if problem.data is data and (best is None or problem.z is None):  # a confidence search keeps no accuracy
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
    problem = measure._problem(model, data)
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
