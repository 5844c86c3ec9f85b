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


def small_net_case(seed: int = 0):
    """A 3-4-2 ReLU net, its 'initialization' (another draw) and 64 random labelled examples."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    init = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(64, 3)
    data = cz.Data.from_tensors(train=(x, (x[:, 0] > 0).long()))
    return net, init, data


def _weights_np(module: nn.Module):
    import numpy as np

    return np.concatenate([p.detach().double().numpy().ravel() for p in module.parameters() if p.ndim >= 2])


def test_magnitude_aware_bound_terms_match_the_formula_in_numpy():
    """Jiang et al. eqs. 56/57 as the reference code writes them, recomputed in numpy from σ'."""
    import numpy as np

    net, init, data = small_net_case()
    kw = dict(montecarlo_samples=3, search_depth=6, seed=4)
    sigma = cz.get_measure("pacbayes_mag_flatness", **kw)(net, data).extras["sigma"]
    w, w0 = _weights_np(net), _weights_np(init)
    eps, m, omega = 1e-3, 64, w.size
    assert omega == 3 * 4 + 4 * 2

    def formula(ref):
        num = eps**2 + (sigma**2 + 1) * (ref @ ref) / omega
        den = eps**2 + sigma**2 * (w - w0) ** 2
        return 0.25 * np.log(num / den).sum() + np.log(m / sigma) + 10

    at_init = cz.get_measure("pacbayes_mag_init", **kw)(net, data, init=init)
    orig = cz.get_measure("pacbayes_mag_orig", **kw)(net, data, init=init)
    assert at_init.extras["sigma"] == sigma and orig.extras["sigma"] == sigma  # the same search
    assert at_init.value == pytest.approx(formula(w - w0), rel=1e-12)
    assert orig.value == pytest.approx(formula(w), rel=1e-12)
    assert at_init.extras["omega"] == omega and orig.stderr >= 0


def test_sharpness_bound_terms_match_the_closed_form():
    """On the two-logit case α' = a exactly (see the worst-case test), so eqs. 50/51 are known:
    ‖w − w_ref‖² log(2ω)/(4a²) + log(m/σ') + 10 with σ' = a/√(2 log 2ω), ω = 2, m = 1."""
    a = 0.8
    model, data = two_logit_case(a)
    init = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        init.weight.copy_(torch.tensor([[0.3], [0.1]]))
    log4 = math.log(4)
    sigma = a / math.sqrt(2 * log4)
    orig = cz.get_measure("sharpness_orig", search_depth=20, seed=0)(model, data)
    assert orig.extras["alpha"] == pytest.approx(a, abs=1e-4)
    assert orig.value == pytest.approx(2 * a**2 * log4 / (4 * a**2) + math.log(1 / sigma) + 10, abs=1e-3)
    at_init = cz.get_measure("sharpness_init", search_depth=20, seed=0)(model, data, init=init)
    assert at_init.value == pytest.approx(1.06 * log4 / (4 * a**2) + math.log(1 / sigma) + 10, abs=1e-3)
    assert at_init.extras["sigma_prime"] == pytest.approx(sigma, abs=1e-4)


def test_max_examples_subsamples_the_search_but_not_the_bound():
    net, _, data = small_net_case(1)
    kw = dict(montecarlo_samples=2, search_depth=4, seed=0)
    sub = cz.get_measure("pacbayes_orig", max_examples=16, **kw)(net, data)
    assert sub.extras["sample"]["splits"]["train"] == {"kept": 16, "total": 64}
    s = sub.extras["sigma"]
    w2 = float((_weights_np(net) ** 2).sum())
    assert sub.value == pytest.approx(w2 / (4 * s**2) + math.log(64 / s) + 10)  # m: the whole split
    assert "sample" not in cz.get_measure("pacbayes_orig", **kw)(net, data).extras


def test_noise_generator_on_cpu_draws_what_a_cpu_generator_draws():
    from complexity_zoo.measures.flatness import draw, generator

    like = torch.zeros(5, 3, dtype=torch.float64)
    expected = torch.randn(5, 3, generator=torch.Generator().manual_seed(7)).to(like)
    assert torch.equal(draw("randn", like, generator(7, torch.device("cpu"))), expected)
