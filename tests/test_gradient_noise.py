"""Per-example gradient variance against the closed-form gradients of least squares."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import complexity_zoo as cz


def test_gradient_variance_and_noise_scale_match_least_squares():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 3, generator=g, dtype=torch.float64)
    y = torch.randn(100, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(3, 1).double()
    data = cz.Data.from_tensors(train=(x, y), loss="mse")
    r = (model(x) - y).detach()  # d/dθ (w·x + b - y)^2 = 2 r (x, 1)
    grads = torch.cat([2 * r * x, 2 * r], dim=1)
    mean = grads.mean(0)
    trace = float(((grads - mean) ** 2).sum(1).mean())
    result = cz.get_measure("gradient_variance", num_examples=None, batch_size=32)(model, data)
    assert result.value == pytest.approx(trace, rel=1e-10)
    assert result.extras["per_layer"]["bias"] == pytest.approx(float(((grads[:, 3] - mean[3]) ** 2).mean()), rel=1e-10)
    scale = cz.get_measure("gradient_noise_scale", num_examples=None)(model, data)
    assert scale.value == pytest.approx(trace / float(mean @ mean), rel=1e-10)
