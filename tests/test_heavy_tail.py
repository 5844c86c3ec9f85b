"""Heavy-tailed spectral measures: α of known power-law spectra, traps of planted large entries."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo.measures.heavy_tail import power_law_fit, trap_threshold


def matrix_with_eigenvalues(lam, n, seed=0):
    """An n x m matrix W (m = len(lam)) whose WᵀW has eigenvalues ``lam``."""
    g = torch.Generator().manual_seed(seed)
    m = len(lam)
    u, _ = torch.linalg.qr(torch.randn(n, m, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    return (u * torch.tensor(np.sqrt(lam))) @ v.T


def pareto(alpha, n, xmin=1.0, seed=0):
    u = np.random.default_rng(seed).uniform(size=n)
    return xmin * u ** (-1 / (alpha - 1))  # density ∝ λ^(-alpha) on [xmin, ∞)


class OneLayer(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w.float())


@pytest.mark.parametrize("alpha", [2.0, 3.5, 5.0])
def test_alpha_of_a_pure_power_law_spectrum_is_within_its_error(alpha):
    fit = power_law_fit(pareto(alpha, 800, seed=int(alpha * 10)))
    assert abs(fit["alpha"] - alpha) < 3 * fit["alpha_stderr"]


def test_alpha_of_a_power_law_tail_above_a_bulk_finds_the_tail():
    rng = np.random.default_rng(1)
    lam = np.concatenate([rng.uniform(0.1, 1.0, 300), pareto(3.0, 300, xmin=2.0, seed=2)])
    fit = power_law_fit(lam)
    assert abs(fit["alpha"] - 3.0) < 3 * fit["alpha_stderr"]
    assert fit["xmin"] >= 1.0


def test_alpha_measures_read_the_layer_spectrum():
    lam = pareto(2.5, 200, seed=3)
    model = OneLayer(matrix_with_eigenvalues(lam, 300))
    fit = power_law_fit(lam)
    result = cz.get_measure("alpha")(model)
    assert result.value == pytest.approx(fit["alpha"], rel=1e-3)  # float32 storage of W
    weighted = cz.get_measure("alpha_weighted")(model)
    assert weighted.value == pytest.approx(fit["alpha"] * math.log10(lam.max()), rel=1e-3)


def test_correlation_traps_find_a_planted_large_entry_and_not_noise():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(400, 200, generator=g, dtype=torch.float64) * 0.05
    assert cz.get_measure("correlation_traps", seed=0)(OneLayer(noise)).value == 0
    trapped = noise.clone()
    trapped[3, 7] = 5.0  # survives any shuffle: a rank-one spike of the randomized ESD
    assert cz.get_measure("correlation_traps", seed=0)(OneLayer(trapped)).value >= 1


def test_trap_threshold_bounds_gaussian_top_eigenvalues():
    """About 99% of Gaussian matrices' top eigenvalues lie under it (Tracy–Widom 0.99 quantile)."""
    g = torch.Generator().manual_seed(5)
    tops = [float(torch.linalg.svdvals(torch.randn(300, 100, generator=g, dtype=torch.float64))[0] ** 2)
            for _ in range(200)]
    frac = np.mean(np.array(tops) > trap_threshold(300, 100, 1.0))
    assert frac < 0.05


def test_weightwatcher_agrees_where_installed():
    ww = pytest.importorskip("weightwatcher")
    torch.manual_seed(0)
    w = matrix_with_eigenvalues(pareto(3.0, 150, seed=4), 300)
    model = nn.Sequential(nn.Linear(150, 300, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(w)
    with warnings.catch_warnings():  # weightwatcher's own pandas/numpy deprecation warnings
        warnings.simplefilter("ignore")
        details = ww.WeightWatcher(model=model).analyze()
    ours = cz.get_measure("alpha")(model).value
    assert ours == pytest.approx(float(details["alpha"].iloc[0]), rel=0.05)
