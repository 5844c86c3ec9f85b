"""Linear mapping number: closed forms, an independent r² computation, invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import complexity_zoo as cz
from complexity_zoo.errors import InvalidSettingError
from complexity_zoo.measures.lmn import linear_connectivity, linear_mapping_number


def test_block_matrices_give_the_number_of_blocks():
    for c in (1, 2, 5):
        lmat = torch.block_diag(*[torch.ones(4, 4, dtype=torch.float64)] * c)
        value, eig = linear_mapping_number(lmat)
        assert value == pytest.approx(c, rel=1e-9)
        assert eig[:c].tolist() == pytest.approx([4.0] * c)


def test_affine_maps_give_one():
    torch.manual_seed(0)
    affine = nn.Linear(5, 3)
    with torch.no_grad():
        affine.weight[0] = 0.0  # a constant output counts as linear
        affine.bias[0] = 2.0
    lmat, constant = linear_connectivity(affine, torch.randn(12, 5))
    assert torch.allclose(lmat, torch.ones_like(lmat))
    assert constant == 12 * 11 // 2
    assert linear_mapping_number(lmat)[0] == pytest.approx(1.0)


def test_connectivity_matches_scipy_pearson():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    pts = torch.randn(6, 3)
    lmat, _ = linear_connectivity(net, pts, num_points=21)
    lam = np.linspace(0, 1, 21)
    for i in range(6):
        for j in range(i + 1, 6):
            path = pts[i] + torch.tensor(lam, dtype=torch.float32)[:, None] * (pts[j] - pts[i])
            y = net(path).detach().double().numpy()
            expected = np.mean([stats.pearsonr(y[:, k], lam)[0] ** 2 for k in range(2)])
            assert lmat[i, j].item() == pytest.approx(expected, rel=1e-5)
            assert lmat[j, i] == lmat[i, j]


def grouped_function(x):
    """Affine inside each interval [2g, 2g + 0.5); a large zero-mean oscillation between them."""
    inside = (x % 2.0) < 0.5
    return torch.where(inside, 3.0 * x - 1.0, 50.0 * torch.sin(137.0 * x))


def test_piecewise_affine_on_c_groups_gives_about_c():
    """Between groups, r² of an oscillation is about 1/(num_points - 1): many points make it ~0."""
    g = torch.Generator().manual_seed(0)
    for c in (2, 4):
        groups = torch.arange(c).repeat_interleave(10)
        x = (2.0 * groups + 0.5 * torch.rand(len(groups), generator=g)).double().unsqueeze(1)
        lmat, _ = linear_connectivity(grouped_function, x, num_points=801)
        value, _ = linear_mapping_number(lmat)
        assert abs(value - c) < 0.1 * c, (c, value)


def test_permuting_the_inputs_changes_nothing():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Linear(16, 3))
    pts = torch.randn(15, 4)
    perm = torch.randperm(15)
    a = linear_mapping_number(linear_connectivity(net, pts)[0])[0]
    b = linear_mapping_number(linear_connectivity(net, pts[perm])[0])[0]
    assert a == pytest.approx(b, rel=1e-6)  # float32 batches of another composition


def test_measure_interpolates_the_chosen_layer_input(model_and_data):
    _, data = model_and_data
    torch.manual_seed(0)
    linear_after_first = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Linear(8, 3))
    # from "2" (the input of the third module) on, the network is affine: LMN = 1
    assert cz.get_measure("lmn", layer="2", num_samples=20)(linear_after_first, data).value == pytest.approx(1.0)
    # from the first layer on it is not
    r = cz.get_measure("lmn", num_samples=20)(linear_after_first, data)
    assert r.value > 1.01 and r.extras["layer"] == "0" and len(r.extras["eigenvalues"]) == 20
    with pytest.raises(InvalidSettingError, match="modules are"):
        cz.get_measure("lmn", layer="nope")(linear_after_first, data)
    with pytest.raises(InvalidSettingError, match="num_samples=500"):
        cz.get_measure("lmn", num_samples=500)(linear_after_first, data)


def test_value_is_bounded_by_num_samples(model_and_data):
    model, data = model_and_data
    for n in (5, 30):
        value = cz.get_measure("lmn", num_samples=n)(model, data).value
        assert 1.0 <= value <= n + 1e-9 and math.isfinite(value)
