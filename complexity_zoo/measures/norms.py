"""Norm and size measures of the weights (no data needed)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..measure import Measure, MeasureResult
from ..registry import register_measure


def l2_norm(tensors: dict[str, Tensor]) -> tuple[float, dict[str, float]]:
    """Frobenius norm of all tensors taken together, and of each one (float64 accumulation)."""
    per = {k: float(torch.linalg.vector_norm(t.detach().double())) for k, t in tensors.items()}
    return float(sum(v * v for v in per.values()) ** 0.5), per


@register_measure("l2")
class L2Norm(Measure):
    """L2 (Frobenius) norm of all parameters: sqrt(sum_i theta_i^2).

    The classic weight-decay quantity that grokking papers plot (e.g. Liu et al. 2022,
    'Omnigrok'; Jiang et al. 2020 list it among the norm measures). Per-tensor norms in extras.
    """

    def compute(self, model: nn.Module, data=None) -> MeasureResult:
        total, per = l2_norm(dict(model.named_parameters()))
        return MeasureResult(total, extras={"per_tensor": per})


@register_measure("param_count")
class ParamCount(Measure):
    """Number of scalar parameters (Jiang et al. 2020's baseline 'measure')."""

    def compute(self, model: nn.Module, data=None) -> float:
        return float(sum(p.numel() for p in model.parameters()))
