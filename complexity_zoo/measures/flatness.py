"""PAC-Bayes flatness (Jiang et al. 2020, §A eqs. 48–61; Dziugaite et al. 2020).

σ is the largest standard deviation of a Gaussian perturbation of all parameters such that the
expected training accuracy drops by ``target_deviation`` (0.1), found as the reference code
does (github nitarshan/robust-generalization-measures, ``measures.py: _pacbayes_sigma``, after
Jiang et al.'s): bisection on [0, 2] for ``search_depth`` = 15 steps, ``montecarlo_samples``
= 10 draws per step, stopping early when the deviation is within ``tolerance`` = 0.01 of the
target. The magnitude-aware perturbation of parameter θ_i has variance σ'² θ_i² + ε², ε = 1e-3.

``sigma_convention`` names how σ enters the noise. ``"paper"`` (default): the paper's N(0, σ²),
noise sd σ (magnitude-aware: sd √(σ'²θ_i² + ε²)). ``"reference_code"``: the reference code's draw
``torch.normal(0, sigma**2)``, noise sd σ² (magnitude-aware: sd σ'²θ_i² + ε², the variance passed
as the sd), so σ_ref² plays the part of σ_paper (up to Monte-Carlo and bisection error). It also
seeds the generator as the reference code does (``REFERENCE_SEED_OFFSET + seed``), so on the CPU
the draws, the search and σ are the reference code's with the same seed, draw for draw
(tests/test_conventions.py, against a restatement of its search on an MLP;
tests/test_reference_recorded.py, against σ recorded from the reference code on its NiN with
BatchNorm). BatchNorm is folded before the search and the bounds, as in the reference code
(``fold_batchnorm``, default True: the folded network's γ 1 and β 0 are perturbed too, as there);
``fold_batchnorm=False`` searches and measures the network as stored.
For a causal language model (``loss="causal_lm"``) the accuracy is next-token accuracy per
sequence (the share of its counted tokens predicted by the argmax), averaged over sequences.
From σ: flatness 1/σ² and the PAC-Bayes bound term ‖w − w_ref‖²/(4σ²) + log(m/σ) + 10 (w the
layer weights, biases out, as in the code; m training examples); from σ' the magnitude-aware
bound terms (eqs. 56/57, as the reference code computes them). These are stochastic: a
``seed`` fixes the draws; the stderr of σ is the Monte-Carlo error of the deviation at the
final σ divided by the deviation's slope there (delta method; the slope from the nearest other
σ tried), at least the bisection's remaining half-width when the search ran out of steps.

Device-agnostic: noise is drawn by a generator on the parameters' device (on the CPU exactly
the draws of a CPU generator; a CUDA run draws other numbers), accuracies accumulate on the
device, and the host reads one pair of numbers (mean and sd of the draws) per bisection step.
``max_examples`` runs the search on a seeded subsample (``Data.subsample``, in ``extras``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .. import _causal_lm
from .._context import shared_forward
from .._settings import at_least, one_of
from ..data import Data
from ..errors import DataError
from ..measure import Convention, Measure, MeasureResult
from ..registry import register_measure
from ._batchnorm import fold_batchnorm, folded_module, has_batchnorm
from .curvature import _Functional


def generator(seed: int, device: torch.device) -> torch.Generator:
    """A seeded generator on ``device`` (a CPU generator cannot drive CUDA draws)."""
    return torch.Generator(device=device).manual_seed(seed)


def draw(kind: str, like: Tensor, gen: torch.Generator) -> Tensor:
    """``randn`` or ``rand`` numbers shaped as ``like``, drawn on the generator's device, cast to ``like``."""
    fn = torch.randn if kind == "randn" else torch.rand
    return fn(like.shape, generator=gen, device=gen.device).to(like)


def layer_weights(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The tensors with ``ndim >= 2`` (the reference code's weights: biases out), float64."""
    return {n: t.detach().double() for n, t in tensors.items() if t.ndim >= 2}


@torch.no_grad()
def accuracy_tensor(model: nn.Module, data: Data, params: dict[str, Tensor] | None = None) -> Tensor:
    """Training accuracy as a float64 tensor on the model's device (no host read)."""
    if data.loss_name not in ("cross_entropy", "causal_lm"):
        raise DataError("PAC-Bayes σ is defined here through training accuracy: it needs cross-entropy or "
                        f"causal_lm data, not {data.loss_name!r}.")
    device = next(model.parameters()).device
    correct, n = torch.zeros((), dtype=torch.float64, device=device), 0
    for batch in data.batches("train", device=device):
        if data.loss_name == "causal_lm":  # next-token accuracy per sequence, masked positions out
            fn = model if params is None else _Functional(model, params)
            correct += _causal_lm.accuracy(*_causal_lm.forward(fn, batch)).sum()
            n += batch[0].shape[0]
            continue
        logits = model(batch[0]) if params is None else functional_call(model, params, (batch[0],))
        hits = (logits.argmax(-1) == batch[1]).double()
        correct += hits.reshape(hits.shape[0], -1).mean(1).sum()
        n += hits.shape[0]
    return correct / n


def train_accuracy(model: nn.Module, data: Data, params: dict[str, Tensor] | None = None) -> float:
    """Accuracy over the training split, of the model or of ``params`` in it. The model's own (the
    PAC-Bayes and sharpness searches' unperturbed base) is shared within a compare() job
    (:func:`~complexity_zoo._context.shared_forward`)."""
    if params is None:
        return shared_forward("train_accuracy", model, data, "train", lambda: float(accuracy_tensor(model, data)))
    return float(accuracy_tensor(model, data, params))


@torch.no_grad()
def pacbayes_sigma(model: nn.Module, data: Data, *, magnitude_eps: float | None, seed: int,
                   search_depth: int = 15, montecarlo_samples: int = 10, target_deviation: float = 0.1,
                   tolerance: float = 1e-2, upper: float = 2.0,
                   sigma_convention: str = "paper") -> tuple[float, float, list[dict]]:
    """σ by bisection (see the module docstring); returns σ, its stderr and the search trace."""
    base = train_accuracy(model, data)
    params = {k: p.detach() for k, p in model.named_parameters()}
    gen = generator(seed, next(model.parameters()).device)
    lower, sigma, trace = 0.0, upper / 2, []
    for _ in range(search_depth):
        sigma = (lower + upper) / 2
        std = {k: noise_sd(sigma, p, magnitude_eps, sigma_convention) for k, p in params.items()}
        acc = torch.stack([accuracy_tensor(model, data, {k: p + draw("randn", p, gen) * std[k]
                                                         for k, p in params.items()})
                           for _ in range(montecarlo_samples)])
        sd_t = acc.std() / math.sqrt(len(acc)) if len(acc) > 1 else torch.zeros_like(acc[0])
        mean, sd = torch.stack([acc.mean(), sd_t]).tolist()  # the one host read of this step
        deviation = abs(mean - base)
        trace.append({"sigma": sigma, "deviation": deviation, "stderr": sd})
        if abs(deviation - target_deviation) < tolerance:
            return sigma, _sigma_stderr(trace, sigma, 0.0), trace
        if deviation > target_deviation:
            upper = sigma
        else:
            lower = sigma
    return sigma, _sigma_stderr(trace, sigma, (upper - lower) / 2), trace


def noise_sd(sigma: float, p: Tensor, magnitude_eps: float | None, convention: str) -> Tensor | float:
    """The perturbation's standard deviation for parameter p under σ's convention (module docstring)."""
    if magnitude_eps is None:
        return sigma if convention == "paper" else sigma**2
    variance = sigma**2 * p**2 + magnitude_eps**2
    return torch.sqrt(variance) if convention == "paper" else variance


def _sigma_stderr(trace: list[dict], sigma: float, half_width: float) -> float:
    final = trace[-1]
    others = [t for t in trace[:-1] if t["sigma"] != sigma]
    if not others:
        return half_width
    near = min(others, key=lambda t: abs(t["sigma"] - sigma))
    slope = abs(final["deviation"] - near["deviation"]) / abs(final["sigma"] - near["sigma"])
    return max(half_width, final["stderr"] / slope) if slope > 0 else max(half_width, abs(near["sigma"] - sigma))


MAG_BOUND_TESTS = ("tests/test_flatness.py::test_magnitude_aware_bound_terms_match_the_formula_in_numpy",)
SIGMA_TESTS = ("tests/test_conventions.py::test_reference_code_sigma_reproduces_the_reference_search",
               "tests/test_reference_recorded.py::test_reference_code_sigma_equals_the_recorded_search",
               "tests/test_reference_recorded.py::test_reference_code_bounds_equal_the_recorded_reference")


def pacbayes_convention(eq: str, tests: tuple[str, ...] = ()) -> Convention:
    """A PAC-Bayes measure's facts: σ's convention, and the bound formula's test where it has one."""
    return Convention(
        paper=f"Jiang et al. 2020, eq. {eq}", code="github nitarshan/robust-generalization-measures, "
        "data/generation/measures.py (_pacbayes_sigma)", default="sigma_convention='paper': noise sd σ",
        switch="sigma_convention='reference_code' (noise sd σ², its seeding)",
        agreement="reference_code: σ and the search path equal to a restatement of the reference search, draw "
                  "for draw (MLP, CPU); σ equal to σ recorded from the reference code itself and the bound "
                  "terms to 1e-7 relative (its NiN with BatchNorm folded, CPU, seed 0)",
        tests=SIGMA_TESTS + tests)


class _PerturbationSearch(Measure):
    """Settings shared by the searches for the largest perturbation within a target deviation."""

    needs_data = True
    stochastic = True
    limits = {"search_depth": at_least(1), "max_examples": at_least(1)}
    search_depth: int = 15
    target_deviation: float = 0.1
    tolerance: float = 1e-2
    seed: int | None = None
    max_examples: int | None = None
    magnitude_aware = False
    magnitude_eps = 1e-3

    def sample(self, data: Data) -> Data:
        """The training split, or ``max_examples`` of it drawn with the seed (Data.subsample)."""
        return data.subsample(self.max_examples, seed=0 if self.seed is None else self.seed, splits=("train",))

    @staticmethod
    def record(sub: Data) -> dict:
        return {"sample": sub.sample} if sub.sample is not None else {}


#: The reference code's generator seed is this plus the seed (``BIG_NUMBER`` in ``_pacbayes_sigma``).
REFERENCE_SEED_OFFSET = 10348628753


class _PacBayes(_PerturbationSearch):
    limits = {**_PerturbationSearch.limits, "montecarlo_samples": at_least(1),
              "sigma_convention": one_of("paper", "reference_code")}
    montecarlo_samples: int = 10
    sigma_convention: str = "paper"
    fold_batchnorm: bool = True
    version = 2  # version 1 searched and measured BatchNorm networks unfolded

    def prepared(self, model: nn.Module, init: dict[str, Tensor] | None = None):
        """The network (and initialization) measured: BatchNorm folded as the reference code does
        (``fold_batchnorm``, :func:`._batchnorm.folded_module`), or as given."""
        if not (self.fold_batchnorm and has_batchnorm(model)):
            return model, init
        return folded_module(model), None if init is None else fold_batchnorm(model, state=init)

    def __post_init__(self) -> None:
        if not (isinstance(self.target_deviation, (int, float)) and 0 < self.target_deviation < 1):
            raise self._setting_error("target_deviation", "a number in (0, 1)", self.target_deviation)

    def sigma(self, model: nn.Module, data: Data) -> tuple[float, float, dict]:
        """σ (or σ'), its stderr and the extras (σ, its stderr, the search, the subsample if any)."""
        sub = self.sample(data)
        offset = REFERENCE_SEED_OFFSET if self.sigma_convention == "reference_code" else 0
        s, se, trace = pacbayes_sigma(model, sub, magnitude_eps=self.magnitude_eps if self.magnitude_aware else None,
                                      seed=(0 if self.seed is None else self.seed) + offset,
                                      search_depth=self.search_depth,
                                      montecarlo_samples=self.montecarlo_samples,
                                      target_deviation=self.target_deviation, tolerance=self.tolerance,
                                      sigma_convention=self.sigma_convention)
        return s, se, {"sigma": s, "sigma_stderr": se, "search": trace, **self.record(sub)}


@register_measure("pacbayes_flatness")
class PacBayesFlatness(_PacBayes):
    """1/σ², σ the largest isotropic Gaussian perturbation keeping training accuracy within 0.1
    (Jiang et al. 2020, eq. 53; reference-code search defaults). σ and its search in extras."""

    convention = pacbayes_convention("53")

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        s, se, extras = self.sigma(self.prepared(model)[0], data)
        return MeasureResult(1 / s**2, stderr=2 * se / s**3, extras=extras)


@register_measure("pacbayes_mag_flatness")
class PacBayesMagFlatness(_PacBayes):
    """1/σ'², σ' of the magnitude-aware perturbation N(0, σ'²θ_i² + ε²), ε = 1e-3 (Jiang et al.
    2020, eq. 61; Keskar et al. 2017's magnitude-aware view)."""

    convention = pacbayes_convention("61")

    magnitude_aware = True

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        s, se, extras = self.sigma(self.prepared(model)[0], data)
        return MeasureResult(1 / s**2, stderr=2 * se / s**3, extras=extras)


def _weights_sq(tensors: dict[str, Tensor]) -> float:
    return float(sum((w * w).sum() for w in layer_weights(tensors).values()))


def _pacbayes_bound(model: nn.Module, data: Data, measure: _PacBayes, ref: dict[str, Tensor]) -> MeasureResult:
    """‖w_ref‖²/(4σ²) + log(m/σ) + 10, m the whole training split (whatever σ's search saw)."""
    m = data.n("train")
    s, se, extras = measure.sigma(model, data)
    w2 = _weights_sq(ref)
    value = w2 / (4 * s**2) + math.log(m / s) + 10
    return MeasureResult(value, stderr=abs(-w2 / (2 * s**3) - 1 / s) * se, extras=extras)


@register_measure("pacbayes_orig")
class PacBayesOrig(_PacBayes):
    """PAC-Bayes bound term ‖w‖²/(4σ²) + log(m/σ) + 10 with the origin as prior mean (Jiang et al.
    2020, eq. 49; Neyshabur et al. 2017). m: training examples; w: layer weights (biases out)."""

    convention = pacbayes_convention("49", ("tests/test_flatness.py::test_bound_terms_follow_from_sigma",))

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        model, _ = self.prepared(model)
        return _pacbayes_bound(model, data, self, dict(model.named_parameters()))


@register_measure("pacbayes_init")
class PacBayesInit(_PacBayes):
    """PAC-Bayes bound term ‖w − w⁰‖²/(4σ²) + log(m/σ) + 10 with the initialization as prior mean
    (Jiang et al. 2020, eq. 48; Dziugaite & Roy 2017)."""

    convention = pacbayes_convention("48", ("tests/test_flatness.py::test_bound_terms_follow_from_sigma",))

    needs_init = True

    def compute(self, model: nn.Module, data: Data, init: dict[str, Tensor]) -> MeasureResult:
        model, init = self.prepared(model, init)
        return _pacbayes_bound(model, data, self, {k: p.detach() - init[k].to(p) for k, p in model.named_parameters()})


def pacbayes_mag_bound(ref: Tensor, dist: Tensor, sigma: float, eps: float, m: int) -> tuple[float, float]:
    """¼ Σ_i log[(ε² + (σ'² + 1)‖ref‖²/ω) / (ε² + σ'² dist_i²)] + log(m/σ') + 10 over the ω layer
    weights (flat float64 vectors), and its derivative in σ' (for the stderr)."""
    omega = ref.numel()
    r2 = float((ref * ref).sum())
    num = eps**2 + (sigma**2 + 1) * r2 / omega
    den = eps**2 + sigma**2 * dist * dist
    value = 0.25 * float((math.log(num) - torch.log(den)).sum()) + math.log(m / sigma) + 10
    slope = 0.25 * (omega * 2 * sigma * r2 / omega / num - float((2 * sigma * dist * dist / den).sum())) - 1 / sigma
    return value, slope


class _PacBayesMagBound(_PacBayes):
    """Magnitude-aware PAC-Bayes bound terms: both need the initialization (the posterior's
    variance in the denominator is taken at w − w⁰ in eqs. 56 and 57 alike, as in the reference code)."""

    magnitude_aware = True
    needs_init = True
    origin = False

    def compute(self, model: nn.Module, data: Data, init: dict[str, Tensor]) -> MeasureResult:
        m = data.n("train")
        model, init = self.prepared(model, init)
        s, se, extras = self.sigma(model, data)
        w = layer_weights(dict(model.named_parameters()))
        w0 = layer_weights({k: init[k].to(p) for k, p in model.named_parameters()})
        dist = torch.cat([(w[k] - w0[k]).reshape(-1) for k in w])
        ref = torch.cat([w[k].reshape(-1) for k in w]) if self.origin else dist
        value, slope = pacbayes_mag_bound(ref, dist, s, self.magnitude_eps, m)
        return MeasureResult(value, stderr=abs(slope) * se, extras={**extras, "omega": ref.numel()})


@register_measure("pacbayes_mag_init")
class PacBayesMagInit(_PacBayesMagBound):
    """Magnitude-aware PAC-Bayes term ¼ Σ_i log[(ε² + (σ'²+1)‖w − w⁰‖²/ω) / (ε² + σ'²(w_i − w⁰_i)²)]
    + log(m/σ') + 10, ε = 10⁻³, σ' as in ``pacbayes_mag_flatness`` (Jiang et al. 2020, eq. 56, as the
    reference code computes it)."""

    convention = pacbayes_convention("56", MAG_BOUND_TESTS)


@register_measure("pacbayes_mag_orig")
class PacBayesMagOrig(_PacBayesMagBound):
    """As ``pacbayes_mag_init`` with ‖w‖² in the numerator (Jiang et al. 2020, eq. 57; reference
    code: the denominator keeps (w_i − w⁰_i)², so it needs the initialization too)."""

    convention = pacbayes_convention("57", MAG_BOUND_TESTS)

    origin = True
