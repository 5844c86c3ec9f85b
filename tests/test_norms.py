"""Norm, distance, path-norm and margin measures against closed forms and plain-numpy
recomputations of Jiang et al. 2020's definitions (the reference code's formulas)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo.errors import UndefinedMeasureError
from complexity_zoo.tasks._modular_models import ModularMLP


def relu_net(seed: int, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7, bias=bias), nn.ReLU(), nn.Linear(7, 6, bias=bias), nn.ReLU(),
                         nn.Linear(6, 4, bias=bias))


def numpy_layers(model):
    return [p.detach().double().numpy().reshape(p.shape[0], -1) for p in model.parameters() if p.ndim >= 2]


def classification_data(model, n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    with torch.no_grad():
        y = model(x + 0.3 * torch.randn(n, 5, generator=g)).argmax(1)  # mostly, not always, right
    return cz.Data.from_tensors(train=(x, y)), x.double().numpy(), y.numpy()


def numpy_forward(model, x):
    h = x
    mods = [m for m in model if isinstance(m, nn.Linear)]
    for i, m in enumerate(mods):
        h = h @ m.weight.detach().double().numpy().T + m.bias.detach().double().numpy()
        if i < len(mods) - 1:
            h = np.maximum(h, 0)
    return h


def numpy_margin(logits, y, q=0.1):
    correct = logits[np.arange(len(y)), y]
    other = logits.copy()
    other[np.arange(len(y)), y] = -np.inf
    m = np.sort(correct - other.max(1))
    return abs(m[max(1, int(len(m) * q)) - 1])


def test_norms_and_distances_match_numpy():
    model, init = relu_net(1), relu_net(2)
    W, W0 = numpy_layers(model), numpy_layers(init)
    fro = np.array([(w**2).sum() for w in W])
    spec = np.array([np.linalg.svd(w, compute_uv=False)[0] ** 2 for w in W])
    d = len(W)
    expected = {
        "param_norm": fro.sum(),
        "frobenius_distance": sum(((w - w0) ** 2).sum() for w, w0 in zip(W, W0)),
        "spectral_distance": sum(np.linalg.svd(w - w0, compute_uv=False)[0] ** 2 for w, w0 in zip(W, W0)),
        "fro_over_spectral": (fro / spec).sum(),
        "log_prod_fro_over_spectral": np.log(fro / spec).sum(),
        "log_prod_spectral": np.log(spec).sum(),
        "log_sum_spectral": math.log(d) + np.log(spec).sum() / d,
        "log_prod_frobenius": np.log(fro).sum(),
        "log_sum_frobenius": math.log(d) + np.log(fro).sum() / d,
    }
    for name, value in expected.items():
        got = cz.get_measure(name)(model, init=init)
        assert got.value == pytest.approx(value, rel=1e-9), name
    per = cz.get_measure("log_prod_spectral")(model).extras["per_layer"]
    assert list(per) == ["0.weight", "2.weight", "4.weight"]
    assert per["2.weight"] == pytest.approx(math.log(spec[1]), rel=1e-9)


def test_margin_measures_match_numpy():
    model, init = relu_net(3), relu_net(4)
    data, x, y = classification_data(model)
    gamma = numpy_margin(numpy_forward(model, x), y)
    W, W0 = numpy_layers(model), numpy_layers(init)
    fro = np.array([(w**2).sum() for w in W])
    spec = np.array([np.linalg.svd(w, compute_uv=False)[0] ** 2 for w in W])
    d, lg = len(W), 2 * math.log(gamma)
    dist = np.array([((w - w0) ** 2).sum() for w, w0 in zip(W, W0)])
    expected = {
        "inverse_margin": 1 / gamma**2,
        "log_prod_spectral_over_margin": np.log(spec).sum() - lg,
        "log_sum_spectral_over_margin": math.log(d) + (np.log(spec).sum() - lg) / d,
        "log_prod_frobenius_over_margin": np.log(fro).sum() - lg,
        "log_sum_frobenius_over_margin": math.log(d) + (np.log(fro).sum() - lg) / d,
        "spec_orig": np.log(spec).sum() - lg + math.log((fro / spec).sum()),
        "spec_init": np.log(spec).sum() - lg + math.log((dist / spec).sum()),
    }
    for name, value in expected.items():  # the model's logits are float32: margins agree to ~1e-6
        got = cz.get_measure(name)(model, data, init=init)
        assert got.value == pytest.approx(value, rel=1e-4), name
        assert got.extras["margin"] == pytest.approx(gamma, rel=1e-4)
    with_quantile = cz.get_measure("inverse_margin", quantile=0.5)(model, data)
    assert with_quantile.value == pytest.approx(1 / numpy_margin(numpy_forward(model, x), y, 0.5) ** 2, rel=1e-4)


def test_diagonal_network_closed_forms():
    a, b = torch.tensor([3.0, -1.0, 0.5]), torch.tensor([2.0, 4.0, -1.0])
    net = nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU(), nn.Linear(3, 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.diag(a))
        net[2].weight.copy_(torch.diag(b))
    assert cz.get_measure("path_norm")(net).value == pytest.approx(float((a**2 * b**2).sum()))
    assert cz.get_measure("log_prod_spectral")(net).value == pytest.approx(math.log(9.0) + math.log(16.0))
    assert cz.get_measure("param_norm")(net).value == pytest.approx(float((a**2).sum() + (b**2).sum()))
    assert cz.get_measure("fro_over_spectral")(net).value == pytest.approx(10.25 / 9 + 21 / 16)


def test_path_norm_of_a_linear_network_with_biases():
    net = relu_net(5)
    W = [m.weight.detach().double().numpy() for m in net if isinstance(m, nn.Linear)]
    B = [m.bias.detach().double().numpy() for m in net if isinstance(m, nn.Linear)]
    h = np.ones(5)
    for w, b in zip(W, B):  # every path's squared weights, bias paths included
        h = (w**2) @ h + b**2
    assert cz.get_measure("path_norm")(net).value == pytest.approx(h.sum(), rel=1e-9)
    no_bias = relu_net(6, bias=False)
    W = [m.weight.detach().double().numpy() for m in no_bias if isinstance(m, nn.Linear)]
    paths = sum((W[0][j, i] * W[1][k, j] * W[2][o, k]) ** 2
                for i, j, k, o in itertools.product(range(5), range(7), range(6), range(4)))
    assert cz.get_measure("path_norm")(no_bias).value == pytest.approx(paths, rel=1e-9)


def test_path_norm_of_the_modular_mlp_enumerates_its_paths():
    torch.manual_seed(0)
    net = ModularMLP(p=3, d_embed=2, d_hidden=3)
    E = net.embed.weight.detach().double().numpy()
    W1, b1 = net.hidden.weight.detach().double().numpy(), net.hidden.bias.detach().double().numpy()
    W2, b2 = net.out.weight.detach().double().numpy(), net.out.bias.detach().double().numpy()
    total = 0.0
    for slot, t, k, j, o in itertools.product(range(2), range(3), range(2), range(3), range(3)):
        total += (E[t, k] * W1[j, slot * 2 + k] * W2[o, j]) ** 2
    total += sum((b1[j] * W2[o, j]) ** 2 for j in range(3) for o in range(3)) + (b2**2).sum()
    assert cz.get_measure("path_norm")(net).value == pytest.approx(total, rel=1e-9)


def test_path_norm_is_undefined_for_tanh_and_says_so():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(UndefinedMeasureError, match="Tanh"):
        cz.get_measure("path_norm")(net)
