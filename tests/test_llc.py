"""Local learning coefficient: theory (regular and singular models), diagnostics vs ArviZ."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo.errors import InvalidSettingError, NonFiniteError
from complexity_zoo.measures._mcmc import ess_bulk, rhat
from complexity_zoo.measures.llc import calibrate_llc, default_nbeta
from complexity_zoo.testing import ProductModel, least_squares


def test_regular_model_gives_half_the_dimension():
    model, data = least_squares()
    d, n = 5, 500
    m = cz.get_measure("llc", lr=3e-4, localization=1.0, batch_size=n, num_chains=4, num_draws=1500,
                       num_burnin_steps=300, seed=0)
    r = m(model, data)
    # Equipartition in the localized Gaussian: (d/2) * n_beta h / (n_beta h + γ), h = 2 (mse Hessian)
    expected = d / 2 * (m.nbeta * 2) / (m.nbeta * 2 + 1.0)
    assert abs(r.value - expected) < 0.12 * expected, (r.value, r.stderr)
    assert r.diagnostics["r_hat"] < 1.05 and r.diagnostics["ess_bulk"] > 100


def test_singular_model_is_clearly_below_half_the_dimension():
    g = torch.Generator().manual_seed(1)
    n = 1000
    x, y = torch.randn(n, 1, generator=g), 0.5 * torch.randn(n, 1, generator=g)
    data = cz.Data.from_tensors(train=(x, y), loss="mse")
    m = cz.get_measure("llc", lr=1e-3, localization=1.0, batch_size=n, num_chains=4, num_draws=3000,
                       num_burnin_steps=300, seed=0)
    r = m(ProductModel(), data)
    # λ = 1/2 with multiplicity m = 2: at finite n_beta the expected energy is about
    # λ - (m - 1) / ln(n_beta) (Watanabe's free-energy expansion), here 0.30; d/2 = 1.
    expected = 0.5 - 1 / math.log(m.nbeta)
    assert abs(r.value - expected) < 0.1, (r.value, r.stderr)
    assert r.value < 0.6 * 1.0


def test_same_seed_same_numbers_and_chains_in_extras(model_and_data):
    model, data = model_and_data
    m = cz.get_measure("llc", num_draws=30, num_chains=3, seed=7)
    a, b = m(model, data), m(model, data)
    assert a.value == b.value and a.stderr == b.stderr
    assert len(a.extras["llc_per_chain"]) == 3 and np.asarray(a.extras["loss_trace"]).shape == (3, 30)
    assert a.stderr == pytest.approx(np.std(a.extras["llc_per_chain"], ddof=1) / math.sqrt(3))
    assert a.extras["n_beta"] == pytest.approx(default_nbeta(256))
    c = cz.get_measure("llc", num_draws=30, num_chains=3, seed=8)(model, data)
    assert c.value != a.value


def test_burnin_conventions(model_and_data):
    model, data = model_and_data
    kw = dict(num_draws=40, num_burnin_steps=20, num_chains=2, seed=0)
    dropped = cz.get_measure("llc", **kw)(model, data)
    kept = cz.get_measure("llc", include_burnin=True, **kw)(model, data)
    trace = np.asarray(dropped.extras["loss_trace"])
    init, nb = dropped.extras["init_loss"], dropped.extras["n_beta"]
    assert dropped.value == pytest.approx(np.mean(nb * (trace[:, 20:].mean(1) - init)))
    assert kept.value == pytest.approx(np.mean(nb * (trace.mean(1) - init)))


def test_diverged_chains_are_reported_not_averaged():
    model, data = least_squares(n=100)
    with pytest.raises(NonFiniteError, match="All 2 SGLD chains diverged"):
        cz.get_measure("llc", lr=1e6, num_chains=2, num_draws=50, localization=0.0)(model, data)


def test_diagnostics_match_arviz():
    az = pytest.importorskip("arviz")
    rng = np.random.default_rng(0)
    x = np.zeros((4, 300))
    for t in range(1, 300):
        x[:, t] = 0.9 * x[:, t - 1] + rng.normal(size=4)
    x[0] += 0.4
    assert ess_bulk(x) == pytest.approx(float(az.ess(x, method="bulk")), rel=1e-10)
    assert rhat(x) == pytest.approx(float(az.rhat(x)), rel=1e-10)


def test_calibration_reports_stable_settings():
    model, data = least_squares(n=200)
    table = calibrate_llc(model, data, lrs=(1e-4, 1e6), localizations=(1.0,), num_draws=200, batch_size=200)
    assert list(table.columns) == ["lr", "localization", "llc", "stderr", "r_hat", "ess_bulk", "diverged",
                                   "settled", "stable"]
    huge = table[table["lr"] == 1e6].iloc[0]
    assert not huge["stable"] and huge["diverged"] == 2


@pytest.mark.parametrize("setting, value", [("lr", 0.0), ("num_chains", 0), ("backend", "jax"),
                                            ("init_loss", "mean")])
def test_bad_settings(setting, value):
    with pytest.raises(InvalidSettingError, match=setting):
        cz.get_measure("llc", **{setting: value})


def test_torch_backend_agrees_with_devinterp():
    """Same checkpoint and settings, devinterp's conventions on both sides: every step counts
    (include_burnin=True) and the batch is the whole training set, so devinterp's init loss
    (mean over its first minibatches) is the exact L(w*) that the torch backend uses."""
    pytest.importorskip("devinterp")
    model, data = least_squares(n=400, d=5, seed=3)
    kw = dict(lr=1e-3, localization=100.0, batch_size=400, num_chains=4, num_draws=300,
              num_burnin_steps=50, include_burnin=True, seed=0)
    ours = cz.get_measure("llc", **kw)(model, data)
    ref = cz.get_measure("llc", backend="devinterp", **kw)(model, data)
    assert ref.extras["init_loss"] == pytest.approx(ours.extras["init_loss"], rel=1e-5)
    spread = math.hypot(ours.stderr, ref.stderr)
    assert abs(ours.value - ref.value) < 3 * spread, (ours.value, ref.value, spread)


def test_a_chains_path_does_not_depend_on_how_many_chains_run(model_and_data):
    model, data = model_and_data
    two = cz.get_measure("llc", num_draws=20, num_chains=2, seed=3)(model, data)
    four = cz.get_measure("llc", num_draws=20, num_chains=4, seed=3)(model, data)
    np.testing.assert_array_equal(np.asarray(four.extras["loss_trace"])[:2], two.extras["loss_trace"])
    assert four.extras["llc_per_chain"][:2] == two.extras["llc_per_chain"]


class PositiveSlope(nn.Module):
    """y = a x, defined for a > 0 only: the loss is NaN while a chain's ``a`` is below zero."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.where(self.a > 0, self.a, torch.nan) * x


def test_a_diverged_chain_is_reported_and_left_out_of_the_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, generator=g)
    data = cz.Data.from_tensors(train=(x, 0.1 * x), loss="mse")
    r = cz.get_measure("llc", lr=0.5, localization=0.0, n_beta=1.0, num_chains=8, num_draws=5, seed=0)(
        PositiveSlope(), data)
    bad = r.extras["diverged_chains"]
    assert 0 < len(bad) < 8  # the walk crossed zero in some chains, not all
    per_chain = np.asarray(r.extras["llc_per_chain"], dtype=float)
    trace = np.asarray(r.extras["loss_trace"], dtype=float)
    assert np.isnan(per_chain[bad]).all() and not np.isfinite(trace[bad]).all(axis=1).any()
    good = np.setdiff1d(np.arange(8), bad)
    assert np.isfinite(trace[good]).all()
    assert r.value == pytest.approx(per_chain[good].mean())
