"""Curvature measures against closed forms and torch.autograd.functional.hessian."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import complexity_zoo as cz


def least_squares_case(n=64, d=6, seed=0, scales=(3.0, 1.0, 1.0, 1.0, 1.0, 1.0)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    if scales is not None:
        x = x * torch.tensor(scales, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    return model, cz.Data.from_tensors(train=(x, y), loss="mse", batch_size=64), x, y


def test_quadratic_loss_known_hessian():
    model, data, x, _ = least_squares_case()
    hessian = 2 * x.T @ x / len(x)  # mean (w·x - y)^2
    trace = cz.get_measure("hessian_trace", num_probes=200)(model, data)
    assert abs(trace.value - float(hessian.trace())) < 4 * trace.stderr
    top = cz.get_measure("hessian_top_eigenvalue", max_iterations=300, tol=1e-10)(model, data)
    assert top.value == pytest.approx(float(torch.linalg.eigvalsh(hessian)[-1]), rel=1e-6)


def test_hutchinson_is_exact_on_a_diagonal_hessian():
    """x with orthogonal columns gives a diagonal Hessian: every Rademacher probe returns the trace."""
    q, _ = torch.linalg.qr(torch.randn(32, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    x = q * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    model = nn.Linear(4, 1, bias=False).double()
    data = cz.Data.from_tensors(train=(x, torch.zeros(32, 1, dtype=torch.float64)), loss="mse")
    result = cz.get_measure("hessian_trace", num_probes=5)(model, data)
    assert result.value == pytest.approx(2 * 30 / 32, rel=1e-10)
    assert result.stderr == pytest.approx(0.0, abs=1e-10)


def test_curvature_of_a_tiny_net_matches_autograd_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(40, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)
    data = cz.Data.from_tensors(train=(x, y), batch_size=20)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            params[n] = theta[i : i + s.numel()].reshape(s)
            i += s.numel()
        return nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    hessian = torch.autograd.functional.hessian(loss, flat)
    eig = torch.linalg.eigvalsh(hessian)
    trace = cz.get_measure("hessian_trace", num_probes=100, seed=3)(model, data)
    assert abs(trace.value - float(hessian.trace())) < 4 * trace.stderr
    top = cz.get_measure("hessian_top_eigenvalue", max_iterations=300, tol=1e-9)(model, data)
    largest = float(eig[eig.abs().argmax()])
    assert top.extras["iterations"] < 300
    assert top.value == pytest.approx(largest, rel=1e-4)
    assert abs(top.value - largest) <= top.stderr + 1e-12  # the residual bounds the error


def test_fisher_rao_of_a_linear_model_in_closed_form():
    model, data, x, y = least_squares_case(n=50, d=4, seed=4, scales=None)
    f = x @ model.weight.detach().T
    # l = (f - y)^2, dl/df = 2(f - y); a linear model is 1-homogeneous: <θ, ∇l> = <dl/df, f>
    expected = float(((2 * (f - y) * f) ** 2).mean())
    assert cz.get_measure("fisher_rao_norm")(model, data).value == pytest.approx(expected, rel=1e-10)


def test_fisher_rao_of_a_bias_free_relu_net_is_the_homogeneity_form():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.ReLU(), nn.Linear(8, 8, bias=False), nn.ReLU(),
                          nn.Linear(8, 3, bias=False)).double()
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (30,), generator=g)
    data = cz.Data.from_tensors(train=(x, y))
    f = model(x).detach().requires_grad_(True)
    dl_df = torch.autograd.grad(nn.functional.cross_entropy(f, y, reduction="sum"), f)[0]
    hidden_layers = 2
    expected = float(((hidden_layers + 1) ** 2 * ((dl_df * f.detach()).sum(1) ** 2)).mean())
    assert cz.get_measure("fisher_rao_norm")(model, data).value == pytest.approx(expected, rel=1e-9)
