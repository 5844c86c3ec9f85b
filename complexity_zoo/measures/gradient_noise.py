"""Gradient noise at a checkpoint: the variance of per-example gradients of the training loss.

Per-example gradients g_i = ∇_θ ℓ(f_θ(x_i), y_i) come from ``torch.func.vmap`` of
``torch.func.grad`` (model in eval mode), over ``num_examples`` training examples drawn with
``seed`` (all of them with ``None``). tr Σ = (1/n) Σ_i ‖g_i − ḡ‖² is the total per-example
gradient variance; the 'simple' gradient-noise scale B = tr Σ / ‖ḡ‖² of McCandlish et al. 2018
('An Empirical Model of Large-Batch Training') is the batch size above which larger batches
stop paying. Per-tensor traces in ``extras["per_layer"]``.

Device-agnostic: the moments accumulate on the parameters' device (float64) and the host reads
them once, after the last batch; the subsample (``num_examples``, ``seed``) is in ``extras``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from .._settings import at_least
from ..data import Data
from ..errors import MeasureError
from ..measure import Measure, MeasureResult
from ..registry import register_measure
from .curvature import _eval, _Functional, parameters, training_batches


def gradient_moments(model: nn.Module, data: Data, batches: list) -> tuple[dict[str, Tensor], dict[str, float], Tensor]:
    """Mean gradient per tensor, tr of the per-example covariance per tensor, and ‖g_i‖² per example."""
    params = parameters(model)

    def one(p: dict[str, Tensor], *example: Tensor) -> Tensor:
        batch = tuple(t.unsqueeze(0) for t in example)
        return data.per_example_loss(_Functional(model, p), batch)[0]

    per_example = vmap(grad(one), in_dims=(None, *([0] * len(batches[0]))))
    total = {k: torch.zeros_like(t, dtype=torch.float64) for k, t in params.items()}
    sq = {k: torch.zeros((), dtype=torch.float64, device=t.device) for k, t in params.items()}
    norms = []
    for batch in batches:
        g = per_example(params, *batch)
        norm = torch.zeros(batch[0].shape[0], dtype=torch.float64, device=batch[0].device)
        for k in params:
            gk = g[k].double()
            total[k] += gk.sum(0)
            sq[k] += (gk * gk).sum()
            norm += (gk * gk).reshape(gk.shape[0], -1).sum(1)
        norms.append(norm)
    norms_t = torch.cat(norms)
    n = len(norms_t)
    mean = {k: t / n for k, t in total.items()}
    sq_host = torch.stack([sq[k] for k in params]).tolist()  # one host read for every tensor
    m2 = torch.stack([(mean[k] * mean[k]).sum() for k in params]).tolist()
    trace = {k: a / n - b for k, a, b in zip(params, sq_host, m2)}
    return mean, trace, norms_t


def _stderr(norms: Tensor) -> float:
    """sd(‖g_i‖²)/√n: the error of the mean squared norm (that of ‖ḡ‖², smaller, is left out)."""
    return float(norms.std() / math.sqrt(len(norms)))


class _GradientNoise(Measure):
    needs_data = True
    stochastic = True
    num_examples: int | None = 512
    batch_size: int = 128
    seed: int | None = None
    limits = {"num_examples": at_least(2), "batch_size": at_least(1)}

    def sample(self, data: Data) -> dict:
        """The subsample the moments came from (``num_examples`` of the training split, ``seed``)."""
        n = data.n("train")
        if self.num_examples is None or self.num_examples >= n:
            return {}
        return {"sample": {"num_examples": self.num_examples, "seed": 0 if self.seed is None else self.seed,
                           "total": n}}

    def moments(self, model: nn.Module, data: Data):
        with _eval(model):
            device = next(model.parameters()).device
            batches = training_batches(data, self.num_examples, 0 if self.seed is None else self.seed,
                                       self.batch_size, device)
            return gradient_moments(model, data, batches)


@register_measure("gradient_variance")
class GradientVariance(_GradientNoise):
    """tr Σ = (1/n) Σ_i ‖g_i − ḡ‖², the variance of per-example training-loss gradients.

    Default: 512 training examples (our choice: a subsample keeps the cost to 512 per-example
    gradients); stderr sd(‖g_i‖²)/√n, which leaves out the smaller error of ‖ḡ‖².
    """

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        mean, trace, norms = self.moments(model, data)
        g2 = float(sum((m * m).sum() for m in mean.values()))
        return MeasureResult(sum(trace.values()), stderr=_stderr(norms),
                             extras={"per_layer": trace, "n": len(norms), "mean_gradient_sq_norm": g2,
                                     **self.sample(data)})


@register_measure("gradient_noise_scale")
class GradientNoiseScale(_GradientNoise):
    """The simple gradient-noise scale B = tr Σ / ‖ḡ‖² (McCandlish et al. 2018) over training
    examples; large at a minimum, where the mean gradient vanishes."""

    def compute(self, model: nn.Module, data: Data) -> MeasureResult:
        mean, trace, norms = self.moments(model, data)
        g2 = float(sum((m * m).sum() for m in mean.values()))
        if g2 == 0.0:
            raise MeasureError("The mean gradient is exactly zero; the gradient-noise scale is infinite.")
        value = sum(trace.values()) / g2
        return MeasureResult(value, stderr=_stderr(norms) / g2,
                             extras={"per_layer": trace, "n": len(norms), **self.sample(data)})
