"""PAC-Bayes flatness (Jiang et al. 2020, §A eqs. 48–61; Dziugaite et al. 2020).

σ is the largest standard deviation of a Gaussian perturbation of all parameters such that the
expected training accuracy drops by ``target_deviation`` (0.1), found as the reference code
does (github nitarshan/robust-generalization-measures, ``measures.py: _pacbayes_sigma``, after
Jiang et al.'s): bisection on [0, 2] for ``search_depth`` = 15 steps, ``montecarlo_samples``
= 10 draws per step, stopping early when the deviation is within ``tolerance`` = 0.01 of the
target. The magnitude-aware perturbation of parameter θ_i has variance σ'² θ_i² + ε², ε = 1e-3
(the paper's definition; the reference code passes that variance as the standard deviation).
From σ: flatness 1/σ² and the PAC-Bayes bound term ‖w − w_ref‖²/(4σ²) + log(m/σ) + 10 (w the
layer weights, biases out, as in the code; m training examples). These are stochastic: a
``seed`` fixes the draws; the stderr of σ is the Monte-Carlo error of the deviation at the
final σ divided by the deviation's slope there (delta method; the slope from the nearest other
σ tried), at least the bisection's remaining half-width when the search ran out of steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .._settings import at_least
from ..data import Data
from ..errors import DataError
from ..measure import Measure, MeasureResult
from ..registry import register_measure
from .curvature import _Functional
from .norms import layer_matrices


@torch.no_grad()
def train_accuracy(model: nn.Module, data: Data, params: dict[str, Tensor] | None = None) -> float:
    """Accuracy over the training split, of the model or of ``params`` in it."""
    if data.loss_name != "cross_entropy":
        raise DataError("PAC-Bayes σ is defined here through training accuracy: it needs cross-entropy data.")
    correct, n = 0.0, 0
    device = next(model.parameters()).device
    for batch in data.batches("train", device=device):
        logits = model(batch[0]) if params is None else functional_call(model, params, (batch[0],))
        hits = (logits.argmax(-1) == batch[1]).double()
        correct += float(hits.reshape(hits.shape[0], -1).mean(1).sum())
        n += hits.shape[0]
    return correct / n


@torch.no_grad()
def pacbayes_sigma(model: nn.Module, data: Data, *, magnitude_eps: float | None, seed: int,
                   search_depth: int = 15, montecarlo_samples: int = 10, target_deviation: float = 0.1,
                   tolerance: float = 1e-2, upper: float = 2.0) -> tuple[float, float, list[dict]]:
    """σ by bisection (see the module docstring); returns σ, its stderr and the search trace."""
    base = train_accuracy(model, data)
    params = {k: p.detach() for k, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(seed)
    lower, sigma, trace = 0.0, upper / 2, []
    for _ in range(search_depth):
        sigma = (lower + upper) / 2
        accs = []
        for _ in range(montecarlo_samples):
            noisy = {}
            for k, p in params.items():
                std = sigma if magnitude_eps is None else torch.sqrt(sigma**2 * p**2 + magnitude_eps**2)
                noisy[k] = p + torch.randn(p.shape, generator=gen).to(p) * std
            accs.append(train_accuracy(model, data, noisy))
        acc = torch.tensor(accs, dtype=torch.float64)
        deviation = abs(float(acc.mean()) - base)
        sd = float(acc.std() / math.sqrt(len(accs))) if len(accs) > 1 else 0.0
        trace.append({"sigma": sigma, "deviation": deviation, "stderr": sd})
        if abs(deviation - target_deviation) < tolerance:
            return sigma, _sigma_stderr(trace, sigma, 0.0), trace
        if deviation > target_deviation:
            upper = sigma
        else:
            lower = sigma
    return sigma, _sigma_stderr(trace, sigma, (upper - lower) / 2), trace


def _sigma_stderr(trace: list[dict], sigma: float, half_width: float) -> float:
    final = trace[-1]
    others = [t for t in trace[:-1] if t["sigma"] != sigma]
    if not others:
        return half_width
    near = min(others, key=lambda t: abs(t["sigma"] - sigma))
    slope = abs(final["deviation"] - near["deviation"]) / abs(final["sigma"] - near["sigma"])
    return max(half_width, final["stderr"] / slope) if slope > 0 else max(half_width, abs(near["sigma"] - sigma))


class _PerturbationSearch(Measure):
    """Settings shared by the searches for the largest perturbation within a target deviation."""

    needs_data = True
    stochastic = True
    limits = {"search_depth": at_least(1)}
    search_depth: int = 15
    target_deviation: float = 0.1
    tolerance: float = 1e-2
    seed: int | None = None
    magnitude_aware = False
    magnitude_eps = 1e-3


class _PacBayes(_PerturbationSearch):
    limits = {**_PerturbationSearch.limits, "montecarlo_samples": at_least(1)}
    montecarlo_samples: int = 10

    def __post_init__(self) -> None:
        if not (isinstance(self.target_deviation, (int, float)) and 0 < self.target_deviation < 1):
            raise self._setting_error("target_deviation", "a number in (0, 1)", self.target_deviation)

    def sigma(self, model: nn.Module, data: Data) -> tuple[float, float, list[dict]]:
        return pacbayes_sigma(model, data, magnitude_eps=self.magnitude_eps if self.magnitude_aware else None,
                              seed=0 if self.seed is None else self.seed, search_depth=self.search_depth,
                              montecarlo_samples=self.montecarlo_samples, target_deviation=self.target_deviation,
                              tolerance=self.tolerance)


@register_measure("pacbayes_flatness")
class PacBayesFlatness(_PacBayes):
    """1/σ², σ the largest isotropic Gaussian perturbation keeping training accuracy within 0.1
    (Jiang et al. 2020, eq. 53; reference-code search defaults). σ and its search in extras."""

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        s, se, trace = self.sigma(model, data)
        return MeasureResult(1 / s**2, stderr=2 * se / s**3, extras={"sigma": s, "sigma_stderr": se, "search": trace})


@register_measure("pacbayes_mag_flatness")
class PacBayesMagFlatness(_PacBayes):
    """1/σ'², σ' of the magnitude-aware perturbation N(0, σ'²θ_i² + ε²), ε = 1e-3 (Jiang et al.
    2020, eq. 61; Keskar et al. 2017's magnitude-aware view)."""

    magnitude_aware = True

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        s, se, trace = self.sigma(model, data)
        return MeasureResult(1 / s**2, stderr=2 * se / s**3, extras={"sigma": s, "sigma_stderr": se, "search": trace})


def _weights_sq(tensors: dict[str, Tensor]) -> float:
    return float(sum((w * w).sum() for w in layer_matrices(tensors).values()))


@register_measure("pacbayes_orig")
class PacBayesOrig(_PacBayes):
    """PAC-Bayes bound term ‖w‖²/(4σ²) + log(m/σ) + 10 with the origin as prior mean (Jiang et al.
    2020, eq. 49; Neyshabur et al. 2017). m: training examples; w: layer weights (biases out)."""

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        s, se, trace = self.sigma(model, data)
        w2 = _weights_sq(dict(model.named_parameters()))
        value = w2 / (4 * s**2) + math.log(data.n("train") / s) + 10
        stderr = abs(-w2 / (2 * s**3) - 1 / s) * se
        return MeasureResult(value, stderr=stderr, extras={"sigma": s, "sigma_stderr": se, "search": trace})


@register_measure("pacbayes_init")
class PacBayesInit(_PacBayes):
    """PAC-Bayes bound term ‖w − w⁰‖²/(4σ²) + log(m/σ) + 10 with the initialization as prior mean
    (Jiang et al. 2020, eq. 48; Dziugaite & Roy 2017)."""

    needs_init = True

    def compute(self, model: nn.Module, data: Data, init: dict[str, Tensor]) -> MeasureResult:
        s, se, trace = self.sigma(model, data)
        diff = {k: p.detach() - init[k] for k, p in model.named_parameters()}
        d2 = _weights_sq(diff)
        value = d2 / (4 * s**2) + math.log(data.n("train") / s) + 10
        stderr = abs(-d2 / (2 * s**3) - 1 / s) * se
        return MeasureResult(value, stderr=stderr, extras={"sigma": s, "sigma_stderr": se, "search": trace})


def worst_case_deviation(model: nn.Module, data: Data, radius: dict[str, Tensor], steps: int,
                         gen: torch.Generator, base: float) -> float:
    """Training-accuracy drop at the perturbation u, |u_i| <= radius_i, that projected sign-gradient
    ascent on the training loss finds in ``steps`` steps (step 2.5 radius / steps; Madry et al. 2018)."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    u = {k: (torch.rand(p.shape, generator=gen).to(p) * 2 - 1) * radius[k] for k, p in params.items()}
    device = next(model.parameters()).device
    for _ in range(steps):
        leaves = {k: t.clone().requires_grad_(True) for k, t in u.items()}
        grads = {k: torch.zeros_like(t) for k, t in u.items()}
        with torch.enable_grad():
            for batch in data.batches("train", device=device):
                noisy = {k: params[k] + leaves[k] for k in params}
                loss = data.per_example_loss(_Functional(model, noisy), batch).sum()
                for k, g in zip(leaves, torch.autograd.grad(loss, list(leaves.values()))):
                    grads[k] += g
        u = {k: torch.clamp(u[k] + 2.5 * radius[k] / steps * torch.sign(grads[k]), -radius[k], radius[k])
             for k in u}
    return abs(train_accuracy(model, data, {k: params[k] + u[k] for k in params}) - base)


class _Sharpness(_PerturbationSearch):
    limits = {**_PerturbationSearch.limits, "ascent_steps": at_least(1)}
    ascent_steps: int = 10

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        base = train_accuracy(model, data)
        gen = torch.Generator().manual_seed(0 if self.seed is None else self.seed)
        lower, upper, trace = 0.0, 2.0, []
        alpha = 1.0
        for _ in range(self.search_depth):
            alpha = (lower + upper) / 2
            radius = {k: (alpha * p.detach().abs() + self.magnitude_eps) if self.magnitude_aware
                      else torch.full_like(p.detach(), alpha) for k, p in model.named_parameters()}
            dev = worst_case_deviation(model, data, radius, self.ascent_steps, gen, base)
            trace.append({"alpha": alpha, "deviation": dev})
            if abs(dev - self.target_deviation) < self.tolerance:
                upper = lower = alpha
                break
            if dev > self.target_deviation:
                upper = alpha
            else:
                lower = alpha
        half = (upper - lower) / 2  # the bracket left: the search's resolution
        return MeasureResult(1 / alpha**2, stderr=2 * half / alpha**3,
                             extras={"alpha": alpha, "alpha_half_width": half, "search": trace})


@register_measure("sharpness_flatness")
class SharpnessFlatness(_Sharpness):
    """1/α², α the largest box radius in which the worst perturbation found by projected gradient
    ascent lowers training accuracy by at most 0.1 (Jiang et al. 2020, eq. 52; Keskar et al. 2017).

    Bisection as for σ (15 steps on [0, 2], tolerance 0.01); 10 ascent steps per radius (our
    choice). The stderr is the bisection's remaining half-width carried to 1/α² (the ascent is a
    lower bound on the true worst case, so α is an upper bound).
    """


@register_measure("sharpness_mag_flatness")
class SharpnessMagFlatness(_Sharpness):
    """1/α'², box |u_i| <= α'|θ_i| + 10⁻³ (magnitude-aware; Jiang et al. 2020, eq. 60)."""

    magnitude_aware = True
