"""alpha and alpha_weighted under WeightWatcher's conventions against WeightWatcher's analyze().

Optional: skipped unless the ``reference`` extra (weightwatcher) is installed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import complexity_zoo as cz

WW = {"xmin_statistic": "weightwatcher", "conv_reading": "per_position"}


@pytest.fixture(scope="module")
def ww():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    return module


def analyze(ww, model: nn.Module):
    """WeightWatcher's per-layer table (defaults), its chatter silenced."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return ww.WeightWatcher(model=model).analyze()


def student_t(n: int, m: int, df: float, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_t(df, size=(n, m))).float()


def heavy_tailed_net(seed: int) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(120, 300), nn.ReLU(), nn.Linear(300, 200), nn.ReLU(), nn.Conv2d(24, 40, 3))
    with torch.no_grad():
        net[0].weight.copy_(student_t(300, 120, 2.0 + seed, seed))
        net[2].weight.copy_(student_t(200, 300, 3.5 + seed, 10 + seed))
        net[4].weight.copy_(student_t(40 * 24, 9, 2.5 + seed, 20 + seed).reshape(40, 24, 3, 3))
    return net


def trained_net() -> nn.Sequential:
    """An MLP trained (full batch SGD, 400 steps) on a teacher's labels; 24 outputs, so every layer
    has the 20 eigenvalues WeightWatcher's standard fit needs."""
    torch.manual_seed(0)
    x = torch.randn(512, 64)
    y = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))(x).argmax(1)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 24))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(400):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net


def check_equal(ww, net: nn.Module) -> tuple[float, float]:
    table = analyze(ww, net)
    ours = cz.get_measure("alpha", **WW)(net)
    theirs = dict(zip(table["name"], table["alpha"]))
    names = {n.removesuffix(".weight"): v for n, v in ours.extras["per_layer"].items()}
    assert set(names) == set(theirs)
    for n, v in names.items():
        assert v == pytest.approx(theirs[n], rel=1e-6), n
    assert ours.value == pytest.approx(float(np.mean(table["alpha"])), rel=1e-6)
    weighted = cz.get_measure("alpha_weighted", **WW)(net).value
    assert weighted == pytest.approx(float(np.mean(table["alpha_weighted"])), rel=1e-6)
    return ours.value, cz.get_measure("alpha")(net).value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alpha_equals_weightwatcher_on_student_t_layers(ww, seed):
    check_equal(ww, heavy_tailed_net(seed))


def test_alpha_equals_weightwatcher_on_a_trained_mlp(ww):
    check_equal(ww, trained_net())


def test_the_defaults_are_another_convention(ww):
    """Default (two-sided KS, (out, in·k·k)) differs from WeightWatcher's on these layers: the
    switch matters, so the test above could fail."""
    differ = [abs(a - b) > 1e-3 * abs(a) for a, b in (check_equal(ww, heavy_tailed_net(s)) for s in range(3))]
    assert any(differ)


def test_layers_too_small_for_weightwatchers_standard_fit_are_skipped_and_listed(ww):
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    result = cz.get_measure("alpha", **WW)(net)
    assert list(result.extras["per_layer"]) == ["0.weight"] and result.extras["skipped"] == ["2.weight"]
