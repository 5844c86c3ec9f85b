"""max_examples / num_examples on the catalogue's data measures: the subsample is what they
measure (checked against numpy on the same examples) and it is recorded in the result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import complexity_zoo as cz


def net_and_data(n: int = 200):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 5, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return model, cz.Data.from_tensors(train=(x, y))


def numpy_margin(model, x, y, q=0.1):
    with torch.no_grad():
        logits = model(x).double().numpy()
    y = y.numpy()
    correct = logits[np.arange(len(y)), y]
    logits[np.arange(len(y)), y] = -np.inf
    m = np.sort(correct - logits.max(1))
    return abs(m[max(1, int(len(m) * q)) - 1])


def test_margin_on_a_subsample_is_the_subsample_margin():
    model, data = net_and_data()
    got = cz.get_measure("inverse_margin", max_examples=50, seed=3)(model, data)
    x, y = data.subsample(50, seed=3, splits=("train",)).tensors("train")
    assert got.extras["margin"] == pytest.approx(numpy_margin(model, x, y), rel=1e-6)
    assert got.extras["sample"]["splits"]["train"] == {"kept": 50, "total": 200}
    whole = cz.get_measure("inverse_margin")(model, data)
    assert "sample" not in whole.extras
    assert whole.extras["margin"] == pytest.approx(numpy_margin(model, *data.tensors("train")), rel=1e-6)
    with pytest.raises(cz.errors.InvalidSettingError):
        cz.get_measure("spec_orig", max_examples=0)


@pytest.mark.parametrize("name", ["fisher_rao_norm", "gradient_variance"])
def test_curvature_and_gradient_noise_record_their_subsample(name):
    model, data = net_and_data()
    sub = cz.get_measure(name, num_examples=40, seed=2)(model, data)
    assert sub.extras["sample"] == {"num_examples": 40, "seed": 2, "total": 200}
    assert "sample" not in cz.get_measure(name, num_examples=None)(model, data).extras
