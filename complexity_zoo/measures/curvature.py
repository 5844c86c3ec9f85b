"""Curvature of the training loss at a checkpoint: Hessian trace, top eigenvalue, Fisher–Rao norm.

The loss is the mean per-example loss of the data's ``loss`` over the training split (all of it,
or ``num_examples`` drawn with ``seed``), with the model in eval mode; for a causal language
model the mean next-token cross-entropy per sequence, its attention through torch's math SDPA
backend while the measure runs (the fused kernels have no second derivatives). Hessian-vector products
are exact (double backward through ``torch.func.functional_call``), batch by batch.

Device-agnostic: probes and start vectors are drawn by a generator on the parameters' device
(on the CPU exactly the draws of a CPU generator), inner products stay on the device (float64),
and the host reads nothing inside Hutchinson's loop and one pair of numbers per power-iteration
step (its stopping rule). ``num_examples`` is the data budget (a seeded draw of the training
split, recorded in ``extras["sample"]``).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from .._causal_lm import double_backward_attention
from .._settings import above, at_least
from ..data import Batch, Data
from ..errors import InvalidSettingError
from ..measure import Convention, Measure, MeasureResult
from ..registry import register_measure

Params = dict[str, Tensor]


class _Functional:
    """``model`` evaluated at ``params`` (a callable the data's loss can use as the model)."""

    def __init__(self, model: nn.Module, params: Params) -> None:
        self.model, self.params = model, params

    def __call__(self, *args, **kwargs):
        return functional_call(self.model, self.params, args, kwargs)


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, attention through a twice-differentiable path (transformers'
    default fused SDPA has no double backward: see ``_causal_lm.double_backward_attention``);
    torch's forward-mode AD loads its decompositions through the deprecated ``torch.jit.script``
    on first use, a FutureWarning of torch's own, silenced here."""
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), double_backward_attention():
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            yield
    finally:
        model.train(was_training)


def training_batches(data: Data, num_examples: int | None, seed: int, batch_size: int,
                     device: torch.device) -> list[Batch]:
    """The training split (or ``num_examples`` of it, drawn with ``seed``) in batches on ``device``."""
    tensors = data.tensors("train")
    n = tensors[0].shape[0]
    if num_examples is not None and num_examples < n:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:num_examples].sort().values
        tensors = tuple(t[idx] for t in tensors)
        n = num_examples
    return [tuple(t[i : i + batch_size].to(device) for t in tensors) for i in range(0, n, batch_size)]


def parameters(model: nn.Module) -> Params:
    return {k: p.detach() for k, p in model.named_parameters()}


def mean_loss_fn(model: nn.Module, data: Data, n: int) -> Callable[[Params, Batch], Tensor]:
    """params, batch -> the batch's share of the mean training loss (sum over the batch / n)."""

    def loss(params: Params, batch: Batch) -> Tensor:
        return data.per_example_loss(_Functional(model, params), batch).sum() / n

    return loss


def hvp_fn(model: nn.Module, data: Data, batches: list[Batch]) -> Callable[[Params], Params]:
    """v -> H v, H the Hessian of the mean loss over ``batches`` at the model's parameters.

    Exact, by double backward (Pearlmutter 1994) through ``torch.func.functional_call``: on the
    CPU this measured ~3.5x faster than ``torch.func.jvp`` of ``torch.func.grad`` on small nets.
    """
    params = {k: t.clone().requires_grad_(True) for k, t in parameters(model).items()}
    loss = mean_loss_fn(model, data, sum(b[0].shape[0] for b in batches))
    leaves = list(params.values())

    def hvp(v: Params) -> Params:
        out = {k: torch.zeros_like(t) for k, t in v.items()}
        with torch.enable_grad():
            for batch in batches:
                g = torch.autograd.grad(loss(params, batch), leaves, create_graph=True)
                hv = torch.autograd.grad(g, leaves, grad_outputs=[v[k] for k in params], allow_unused=True)
                for k, t in zip(params, hv):
                    if t is not None:
                        out[k] += t.detach()
        return out

    return hvp


def dot_t(a: Params, b: Params) -> Tensor:
    """Σ_k ⟨a_k, b_k⟩ in float64, a 0-dim tensor on the tensors' device (no host read)."""
    return sum((a[k].double() * b[k].double()).sum() for k in a)


def dot(a: Params, b: Params) -> float:
    return float(dot_t(a, b))


def hutchinson_trace(hvp: Callable[[Params], Params], like: Params, num_probes: int,
                     generator: torch.Generator) -> tuple[float, float, list[float]]:
    """tr H ≈ mean_i vᵢᵀ H vᵢ with Rademacher vᵢ (Hutchinson 1990); the mean, its stderr, the samples."""
    out = []
    for _ in range(num_probes):
        v = {k: (torch.randint(0, 2, t.shape, generator=generator, device=generator.device) * 2 - 1).to(t)
             for k, t in like.items()}
        out.append(dot_t(v, hvp(v)))
    samples = torch.stack(out).tolist()  # one host read, after the loop
    mean = sum(samples) / len(samples)
    var = sum((s - mean) ** 2 for s in samples) / (len(samples) - 1) if len(samples) > 1 else math.nan
    return mean, math.sqrt(var / len(samples)), samples


def power_iteration(hvp: Callable[[Params], Params], like: Params, max_iterations: int, tol: float,
                    generator: torch.Generator) -> tuple[float, float, int]:
    """The eigenvalue of largest magnitude of H (Rayleigh quotient), the residual ‖Hv − λv‖ and
    the iterations used; stops when λ changes by less than ``tol`` relative to |λ|."""
    v = {k: torch.randn(t.shape, generator=generator, device=generator.device).to(t) for k, t in like.items()}
    norm = math.sqrt(dot(v, v))
    v = {k: t / norm for k, t in v.items()}
    lam, it = 0.0, 0
    for it in range(1, max_iterations + 1):
        hv = hvp(v)
        new, hh = torch.stack([dot_t(v, hv), dot_t(hv, hv)]).tolist()  # the step's one host read
        residual = math.sqrt(max(hh - new * new, 0.0))
        norm = math.sqrt(hh)
        if norm == 0.0:
            return 0.0, 0.0, it
        v = {k: t / norm for k, t in hv.items()}
        done = abs(new - lam) <= tol * abs(new)
        lam = new
        if done:
            break
    return lam, residual, it


class _Curvature(Measure):
    needs_data = True
    num_examples: int | None = None
    batch_size: int = 512
    seed: int | None = 0
    limits = {"num_examples": at_least(1), "batch_size": at_least(1)}

    def _setup(self, model: nn.Module, data: Data):
        device = next(model.parameters()).device
        batches = training_batches(data, self.num_examples, self.seed or 0, self.batch_size, device)
        return batches, torch.Generator(device=device).manual_seed(self.seed or 0)

    def _sample(self, data: Data) -> dict:
        """What the measure was computed on, when ``num_examples`` subsampled the training split."""
        n = data.n("train")
        if self.num_examples is None or self.num_examples >= n:
            return {}
        return {"sample": {"num_examples": self.num_examples, "seed": self.seed or 0, "total": n}}


@register_measure("hessian_trace")
class HessianTrace(_Curvature):
    """Trace of the Hessian of the mean training loss, by Hutchinson's estimator (Rademacher probes).

    ``num_probes`` = 100 (our choice, as PyHessian's default ``maxIter``, Yao et al. 2020): the
    stderr (sample sd / √probes) is in the result; the per-probe values in extras.
    """

    convention = Convention(
        paper="Hutchinson 1990; Yao et al. 2020 (PyHessian)", code="pyhessian 0.1 (PyPI), hessian.trace()",
        default="Rademacher probes from a seeded generator; mean per-example training loss, eval mode",
        switch="none needed (same estimator)",
        agreement="every probe's vᵀHv equal to PyHessian's to 1e-4 relative (float32), same seed (MLP)",
        tests=("tests/test_pyhessian_reference.py::test_hutchinson_probes_equal_pyhessians_probe_for_probe",))

    stochastic = True
    limits = {**_Curvature.limits, "num_probes": at_least(2)}
    num_probes: int = 100

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        with _eval(model):
            batches, gen = self._setup(model, data)
            mean, stderr, samples = hutchinson_trace(hvp_fn(model, data, batches), parameters(model),
                                                     self.num_probes, gen)
        return MeasureResult(mean, stderr=stderr, extras={"probes": samples, **self._sample(data)})


@register_measure("hessian_top_eigenvalue")
class HessianTopEigenvalue(_Curvature):
    """Largest-magnitude eigenvalue of the training-loss Hessian, by power iteration on exact HVPs.

    As in PyHessian (Yao et al. 2020; defaults ``max_iterations`` 100, ``tol`` 1e-3 relative).
    At a minimum it is the top eigenvalue (the Hessian is then positive semi-definite). The
    stderr is the residual ‖Hv − λv‖: some eigenvalue of H lies within it of the value.
    """

    convention = Convention(
        paper="Yao et al. 2020 (PyHessian), power iteration", code="pyhessian 0.1 (PyPI), hessian.eigenvalues()",
        default="power iteration on exact HVPs, relative tolerance 1e-3",
        switch="none needed (same method)",
        agreement="ours and PyHessian's both within 1e-3 of the exact eigenvalue at tol 1e-6 (MLP)",
        tests=("tests/test_pyhessian_reference.py::test_top_eigenvalue_agrees_with_pyhessian_and_the_exact_one",))

    stochastic = True
    limits = {**_Curvature.limits, "max_iterations": at_least(1), "tol": above(0)}
    max_iterations: int = 100
    tol: float = 1e-3


    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        with _eval(model):
            batches, gen = self._setup(model, data)
            lam, residual, its = power_iteration(hvp_fn(model, data, batches), parameters(model),
                                                 self.max_iterations, self.tol, gen)
        return MeasureResult(lam, stderr=residual, extras={"iterations": its, **self._sample(data)})


def fisher_rao_terms(model: nn.Module, data: Data, batches: list[Batch]) -> Tensor:
    """⟨θ, ∇_θ ℓ(f_θ(x_i), y_i)⟩ for every example: one forward-mode JVP along θ per batch."""
    params = parameters(model)
    out = []
    for batch in batches:
        _, t = jvp(lambda p, b=batch: data.per_example_loss(_Functional(model, p), b), (params,), (params,))
        out.append(t.detach().double())
    return torch.cat(out)


@register_measure("fisher_rao_norm")
class FisherRaoNorm(_Curvature):
    """Squared Fisher–Rao norm ‖θ‖²_fr = ⟨θ, F θ⟩ = mean_i ⟨θ, ∇_θ ℓ_i⟩² with the empirical Fisher F
    (training labels; Liang, Poggio, Rakhlin & Stokes 2019, and Jiang et al. 2020's use of it).

    We compute this defining form, valid for any network. For bias-free networks with positively
    homogeneous activations (ReLU) and L hidden layers, Liang et al. show ⟨θ, ∇_θ ℓ⟩ =
    (L+1)⟨∂ℓ/∂f, f⟩, so it equals (L+1)² mean_i ⟨∂ℓ/∂f(x_i), f(x_i)⟩² there (tested).
    Deterministic with ``num_examples=None`` (the whole training split, the default).
    """

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        with _eval(model):
            batches, _ = self._setup(model, data)
            terms = fisher_rao_terms(model, data, batches)
        if not bool(torch.isfinite(terms).all()):
            raise InvalidSettingError("The Fisher–Rao terms are not finite; check the data's loss.")
        sq = terms**2
        stderr = float(sq.std() / math.sqrt(len(sq))) if len(sq) > 1 else None
        return MeasureResult(float(sq.mean()), stderr=stderr,
                             extras={"mean_inner_product": float(terms.mean()), **self._sample(data)})
