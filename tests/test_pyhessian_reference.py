"""hessian_trace and hessian_top_eigenvalue beside PyHessian (Yao et al. 2020).

Optional: skipped unless the ``reference`` extra (pyhessian) is installed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import complexity_zoo as cz


@pytest.fixture(scope="module")
def pyhessian():
    return pytest.importorskip("pyhessian")


def their_hessian(pyhessian, net, x, y):
    """PyHessian's object (its backward(create_graph=True) warning about a cycle silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*create_graph=True.*", category=UserWarning)
        return pyhessian.hessian(net, nn.CrossEntropyLoss(), data=(x, y), cuda=False)


def problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x = torch.randn(64, 5)
    y = torch.randint(0, 3, (64,))
    return net, x, y


def test_hutchinson_probes_equal_pyhessians_probe_for_probe(pyhessian):
    """With the global generator seeded as ours, PyHessian draws the same Rademacher probes
    (randint 0/1 mapped to -1/+1), so each vᵀHv agrees to float32 HVP precision."""
    net, x, y = problem()
    ours = cz.get_measure("hessian_trace", num_probes=20, seed=3)(net, cz.Data.from_tensors(train=(x, y)))
    torch.manual_seed(3)
    theirs = their_hessian(pyhessian, net, x, y).trace(maxIter=20, tol=0.0)
    net.zero_grad(set_to_none=True)
    assert len(theirs) == 20
    np.testing.assert_allclose(ours.extras["probes"], theirs, rtol=1e-4, atol=1e-6)


def test_top_eigenvalue_agrees_with_pyhessian_and_the_exact_one(pyhessian):
    net, x, y = problem()
    params = {k: p.detach() for k, p in net.named_parameters()}
    names, shapes = list(params), [p.shape for p in params.values()]
    sizes = [p.numel() for p in params.values()]

    def loss(flat):
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(torch.split(flat, sizes), shapes))))
        return nn.functional.cross_entropy(functional_call(net, parts, (x.double(),)), y)

    net.double()
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    exact = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat)).abs().max())
    net.float()
    ours = cz.get_measure("hessian_top_eigenvalue", tol=1e-6, max_iterations=1000)(net, cz.Data.from_tensors(
        train=(x, y)))
    torch.manual_seed(0)
    theirs = their_hessian(pyhessian, net, x, y).eigenvalues(
        maxIter=1000, tol=1e-6)[0][0]
    net.zero_grad(set_to_none=True)
    assert ours.value == pytest.approx(exact, rel=1e-3)
    assert theirs == pytest.approx(exact, rel=1e-3)
