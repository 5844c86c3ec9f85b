"""PAC-Bayes σ against a closed form: one shared perturbation decides every prediction."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm
from torch import nn

import complexity_zoo as cz


def two_logit_case(a: float = 1.0):
    """Logits (a x, -a x) on x = 1, label 0: correct iff a - (-a) + (n0 - n1) > 0, so the expected
    accuracy under N(0, s²) noise on both weights is Φ(2a / (√2 s))."""
    model = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[a], [-a]]))
    data = cz.Data.from_tensors(train=(torch.ones(1, 1), torch.zeros(1, dtype=torch.long)))
    return model, data


def test_isotropic_sigma_matches_the_closed_form():
    a = 0.8
    model, data = two_logit_case(a)
    expected = math.sqrt(2) * a / norm.ppf(0.9)  # Φ(√2 a / σ) = 0.9
    m = cz.get_measure("pacbayes_flatness", montecarlo_samples=2000, search_depth=20, tolerance=2e-3, seed=1)
    result = m(model, data)
    assert result.extras["sigma"] == pytest.approx(expected, rel=0.05)
    assert abs(result.extras["sigma"] - expected) < 4 * result.extras["sigma_stderr"] + 1e-3
    assert result.value == pytest.approx(1 / result.extras["sigma"] ** 2)


def test_magnitude_aware_sigma_matches_the_closed_form():
    a, eps = 0.8, 1e-3
    model, data = two_logit_case(a)
    z = norm.ppf(0.9)  # variance σ'² a² + ε² on each weight: Φ(2a / √(2(σ'² a² + ε²))) = 0.9
    expected = math.sqrt(2 / z**2 - eps**2 / a**2)
    m = cz.get_measure("pacbayes_mag_flatness", montecarlo_samples=2000, search_depth=20, tolerance=2e-3, seed=2)
    assert m(model, data).extras["sigma"] == pytest.approx(expected, rel=0.05)


def test_bound_terms_follow_from_sigma():
    model, data = two_logit_case(0.8)
    init = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        init.weight.copy_(torch.tensor([[0.3], [0.1]]))
    kw = dict(montecarlo_samples=200, seed=3)
    orig = cz.get_measure("pacbayes_orig", **kw)(model, data)
    s = orig.extras["sigma"]
    assert orig.value == pytest.approx(2 * 0.64 / (4 * s**2) + math.log(1 / s) + 10)
    at_init = cz.get_measure("pacbayes_init", **kw)(model, data, init=init)
    assert at_init.extras["sigma"] == s  # the same seed draws the same noise
    assert at_init.value == pytest.approx((0.25 + 0.81) / (4 * s**2) + math.log(1 / s) + 10)


def test_worst_case_sharpness_matches_the_closed_form():
    """Worst case in the box |u_i| <= α: u = (-α, +α) flips the prediction iff α > a."""
    a = 0.8
    model, data = two_logit_case(a)
    alpha = cz.get_measure("sharpness_flatness", search_depth=20, seed=0)(model, data).extras["alpha"]
    assert alpha == pytest.approx(a, abs=1e-4)
    mag = cz.get_measure("sharpness_mag_flatness", search_depth=20, seed=0)(model, data).extras["alpha"]
    assert mag == pytest.approx((a - 1e-3) / a, abs=1e-4)  # α' a + ε = a
