"""Worst-case sharpness (Jiang et al. 2020, §A eqs. 50–52 and 58–60; Keskar et al. 2017).

α′ is the largest box radius in which the worst perturbation that projected sign-gradient ascent
finds lowers training accuracy by at most ``target_deviation`` (0.1); bisection on [0, 2] as for
the PAC-Bayes σ (:mod:`.flatness`). From α′: the flatness 1/α′² and the sharpness-based PAC-Bayes
bound terms (eqs. 50/51)

    ‖w − w_ref‖² log(2ω) / (4α′²) + log(m/σ′) + 10,   σ′ = α′ / √(2 log(2ω)),

w the layer weights (tensors with ≥ 2 dims, biases out, as the reference code takes them), ω
their number, m the training examples, w_ref the initialization (``sharpness_init``) or the
origin (``sharpness_orig``). σ′ is the Gaussian scale whose ω coordinates all stay within α′
(Jiang et al.'s step from a worst case to a PAC-Bayes posterior, there σ′ = α′/√(2 log(2ω/δ)));
δ is dropped here, as it is in every measure of the paper. The reference code
(nitarshan/robust-generalization-measures) implements none of the sharpness measures.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._settings import at_least
from ..data import Data
from ..measure import Convention, MeasureResult
from ..registry import register_measure
from .curvature import _Functional
from .flatness import _PerturbationSearch, draw, generator, layer_weights, train_accuracy


def worst_case_deviation(model: nn.Module, data: Data, radius: dict[str, Tensor], steps: int,
                         gen: torch.Generator, base: float) -> float:
    """Training-accuracy drop at the perturbation u, |u_i| <= radius_i, that projected sign-gradient
    ascent on the training loss finds in ``steps`` steps (step 2.5 radius / steps; Madry et al. 2018).

    Device-agnostic: u, its gradients and the radius live on the parameters' device; the one
    host read is the final accuracy.
    """
    params = {k: p.detach() for k, p in model.named_parameters()}
    u = {k: (draw("rand", p, gen) * 2 - 1) * radius[k] for k, p in params.items()}
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


def sharpness_convention(eq: str) -> Convention:
    """No reference code: the reference implementation of Jiang et al. 2020 has no sharpness measure, so
    there is no σ convention to switch (the noise-sd quirk is the PAC-Bayes search's, :mod:`.flatness`)."""
    return Convention(paper=f"Jiang et al. 2020, eq. {eq}", code="none (not in the reference code)",
                      default="projected sign-gradient ascent, 10 steps per radius; bisection as for σ")


class _Sharpness(_PerturbationSearch):
    limits = {**_PerturbationSearch.limits, "ascent_steps": at_least(1)}
    ascent_steps: int = 10

    def search(self, model: nn.Module, data: Data) -> tuple[float, float, list[dict]]:
        """α′ by bisection: the radius, the bracket's remaining half-width and the trace.

        One host read per bisection step (the deviation decides the next bracket)."""
        base = train_accuracy(model, data)
        gen = generator(0 if self.seed is None else self.seed, next(model.parameters()).device)
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
        return alpha, (upper - lower) / 2, trace  # the half-width: the search's resolution

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        sub = self.sample(data)
        alpha, half, trace = self.search(model, sub)
        return MeasureResult(1 / alpha**2, stderr=2 * half / alpha**3,
                             extras={"alpha": alpha, "alpha_half_width": half, "search": trace, **self.record(sub)})


@register_measure("sharpness_flatness")
class SharpnessFlatness(_Sharpness):
    """1/α², α the largest box radius in which the worst perturbation found by projected gradient
    ascent lowers training accuracy by at most 0.1 (Jiang et al. 2020, eq. 52; Keskar et al. 2017).

    Bisection as for σ (15 steps on [0, 2], tolerance 0.01); 10 ascent steps per radius (our
    choice). The stderr is the bisection's remaining half-width carried to 1/α² (the ascent is a
    lower bound on the true worst case, so α is an upper bound).
    """

    convention = sharpness_convention("52")


@register_measure("sharpness_mag_flatness")
class SharpnessMagFlatness(_Sharpness):
    """1/α'², box |u_i| <= α'|θ_i| + 10⁻³ (magnitude-aware; Jiang et al. 2020, eq. 60)."""

    convention = sharpness_convention("60")

    magnitude_aware = True


def sharpness_bound(ref_sq: float, omega: int, alpha: float, m: int) -> tuple[float, float, float]:
    """‖w − w_ref‖² log(2ω)/(4α′²) + log(m/σ′) + 10 with σ′ = α′/√(2 log 2ω); returns the value,
    σ′ and the derivative in α′ (for the stderr)."""
    log2w = math.log(2 * omega)
    sigma = alpha / math.sqrt(2 * log2w)
    value = ref_sq * log2w / (4 * alpha**2) + math.log(m / sigma) + 10
    return value, sigma, -ref_sq * log2w / (2 * alpha**3) - 1 / alpha


class _SharpnessBound(_Sharpness):
    def bound(self, model: nn.Module, data: Data, ref: dict[str, Tensor]) -> MeasureResult:
        m = data.n("train")  # the bound's m is the whole training set, whatever the search saw
        sub = self.sample(data)
        alpha, half, trace = self.search(model, sub)
        omega = sum(t.numel() for t in layer_weights(ref).values())
        ref_sq = float(sum((t * t).sum() for t in layer_weights(ref).values()))
        value, sigma, slope = sharpness_bound(ref_sq, omega, alpha, m)
        return MeasureResult(value, stderr=abs(slope) * half,
                             extras={"alpha": alpha, "alpha_half_width": half, "sigma_prime": sigma,
                                     "omega": omega, "ref_sq_norm": ref_sq, "search": trace, **self.record(sub)})


@register_measure("sharpness_orig")
class SharpnessOrig(_SharpnessBound):
    """Sharpness-based PAC-Bayes term ‖w‖² log(2ω)/(4α′²) + log(m/σ′) + 10, σ′ = α′/√(2 log 2ω)
    (Jiang et al. 2020, eq. 51; α′ as in ``sharpness_flatness``, same search and seed)."""

    convention = sharpness_convention("51")

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        return self.bound(model, data, {k: p.detach() for k, p in model.named_parameters()})


@register_measure("sharpness_init")
class SharpnessInit(_SharpnessBound):
    """Sharpness-based PAC-Bayes term ‖w − w⁰‖² log(2ω)/(4α′²) + log(m/σ′) + 10 with the
    initialization as prior mean (Jiang et al. 2020, eq. 50)."""

    convention = sharpness_convention("50")

    needs_init = True

    def compute(self, model: nn.Module, data: Data, init: dict[str, Tensor]) -> MeasureResult:
        return self.bound(model, data, {k: p.detach() - init[k].to(p) for k, p in model.named_parameters()})
