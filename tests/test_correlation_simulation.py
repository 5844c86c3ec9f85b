"""The correlation table's p-values and intervals, checked by simulation against known truth.

Issue 22: the co-movement test runs on the innovations of each series' chosen noise model.
Fast cells of the grid in ``benchmarks/analysis_simulation.py`` (families the models were and
were not built around, even and log schedules). With R draws a rate's binomial standard error
is sqrt(a(1-a)/R): at R = 60 and a = 0.05 about 0.028, so "type-I ≤ 0.05 + 3 SE ≈ 0.14".
"""

from __future__ import annotations

import numpy as np
import pytest

from complexity_zoo.analysis.correlation import correlate_batch
from complexity_zoo.analysis.simulation import pairs

R = 60


@pytest.mark.parametrize("family,schedule", [("white", "geometric"), ("white_growing", "even"),
                                             ("ar1", "pythia"), ("t3", "random")])
def test_type_one_error_holds_on_the_innovations(family, schedule):
    x, y, s = pairs(family, schedule, 40, R, seed=3)
    out = correlate_batch(x, y, s, granger=False)
    assert np.mean(out["p"] < 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / R)


def test_power_for_innovations_correlated_0_6():
    x, y, s = pairs("white", "geometric", 60, 40, seed=4, rho=0.6)
    out = correlate_batch(x, y, s, granger=False)
    assert np.mean(out["p"] < 0.05) >= 0.9
    cover = (out["r_diff_ci_low"] <= 0.6) & (0.6 <= out["r_diff_ci_high"])
    assert cover.mean() >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / 40)


def test_the_old_failure_is_fixed():
    """Issue 22: independent white noise on 10·1.15^k (n = 100) was 'correlated' in 48% of draws."""
    x, y, s = pairs("white", "geometric", 100, 30, seed=5, shapes=("flat", "flat"))
    assert np.mean(correlate_batch(x, y, s, granger=False)["p"] < 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 30)


def test_ljung_box_q_is_statsmodels_q():
    from statsmodels.stats.diagnostic import acorr_ljungbox

    from complexity_zoo.analysis.noise_models import ljung_box_q

    z = np.random.default_rng(6).standard_normal((3, 40))
    want = [float(acorr_ljungbox(row, lags=[8])["lb_stat"].iloc[0]) for row in z]
    np.testing.assert_allclose(ljung_box_q(z, 8), want, rtol=1e-10)


@pytest.mark.parametrize("family,schedule", [("white", "even"), ("brownian", "pythia")])
def test_a_correct_noise_model_passes_its_ljung_box_check_at_its_level(family, schedule):
    """Issue 22: residuals of a penalized trend are not white, so against χ² the check rejected
    a correct model in 15-25% (white, even) to 50-75% (Brownian, Pythia) of series at n = 60;
    against Q's distribution for the fit's residual-maker it rejects near 5% (R = 50: ≤ 0.05 + 3 SE)."""
    from complexity_zoo.analysis.noise_models import fit_noise

    x, _, s = pairs(family, schedule, 60, 50, seed=8)
    rejected = [fit_noise(row, s)[0].ljung_box_p < 0.05 for row in x]
    assert np.mean(rejected) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 50)


def test_granger_counts_the_degrees_of_freedom_the_trend_took():
    """Issue 22: on residuals of a 10-column trend fit (n = 30) the F test without the trend's
    degrees of freedom rejected about 11% of independent pairs at 0.05; with them it holds its
    level (1000 draws: |rate - 0.05| ≤ 3 SE on the liberal side)."""
    from complexity_zoo.analysis.correlation import _granger
    from complexity_zoo.analysis.smooth import bspline_basis

    rng = np.random.default_rng(11)
    basis = bspline_basis(np.linspace(0, 1, 30), 10)
    resid = np.eye(30) - basis @ np.linalg.pinv(basis)
    pairs_ = [(resid @ rng.standard_normal(30), resid @ rng.standard_normal(30)) for _ in range(1000)]
    with_edf = np.mean([_granger(u, v, 10.0) < 0.05 for u, v in pairs_])
    without = np.mean([_granger(u, v) < 0.05 for u, v in pairs_])
    assert with_edf <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1000) < without


def test_brownian_noise_on_a_pythia_schedule_at_n_150_gets_its_model():
    """Issue 22, n = 150: a logistic rising among the first ten checkpoints of a Pythia-style
    schedule, with Brownian noise (tiny there). With knots at quantiles of the checkpoints
    alone the trend could not follow that rise and AR(1) or growing-variance noise was chosen
    in every draw (20 of 20); knots from the mixture with a uniform grid let Brownian (or OU,
    its near neighbour) win. 20 draws: at least 16 (the measured share is 20 of 20)."""
    from complexity_zoo.analysis.noise_models import fit_noise

    x, _, steps = pairs("brownian", "pythia", 150, 20, seed=7)
    chosen = [fit_noise(row, steps)[0].model for row in x]
    assert sum(m in ("brownian", "ou") for m in chosen) >= 16, chosen
