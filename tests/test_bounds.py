"""Generalization bounds against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import complexity_zoo as cz
from complexity_zoo.analysis.bounds import (
    binary_kl,
    binomial_bound,
    kl_bound,
    kl_inverse,
    occam_bound,
    prefix_free_bits,
)
from complexity_zoo.errors import InvalidSettingError
from complexity_zoo.testing import tiny_classifier


def test_occam_closed_form_with_the_prefix_free_code_length():
    # K = 1000 bits -> 1000 + 2*floor(log2 1000) + 1 = 1019 bits; n = 10^6, R̂ = 0.01, δ = 0.05
    assert prefix_free_bits(1000) == 1019 and prefix_free_bits(1) == 2 and prefix_free_bits(999.2) == 1019
    expected = 0.01 + math.sqrt((1019 * math.log(2) + math.log(20)) / 2e6)
    assert occam_bound(1000, 10**6, 0.01, 0.05) == pytest.approx(expected, rel=1e-12)
    # a union over k candidates pays ln k
    expected_k = 0.01 + math.sqrt((1019 * math.log(2) + math.log(33 / 0.05)) / 2e6)
    assert occam_bound(1000, 10**6, 0.01, 0.05, union_size=33) == pytest.approx(expected_k, rel=1e-12)
    assert occam_bound(10**6, 100, 0.3) == 1.0  # clipped


def test_prefix_free_lengths_satisfy_kraft():
    # Elias-gamma length header: sum over L >= 1 of 2^-(L + 2 floor(log2 L) + 1) <= 1
    total = sum(2.0 ** -prefix_free_bits(L) for L in range(1, 200))
    assert total <= 1


def test_kl_inverse_at_zero_error_has_a_closed_form():
    # kl(0 || p) = -ln(1 - p), so the inverse at q = 0 is 1 - exp(-c)
    for c in (1e-4, 0.01, 0.3, 2.0):
        assert kl_inverse(0.0, c) == pytest.approx(1 - math.exp(-c), abs=1e-10)


def test_kl_inverse_solves_the_equation():
    for q, c in [(0.1, 0.05), (0.3, 0.2), (0.01, 1e-3)]:
        p = kl_inverse(q, c)
        assert p > q and binary_kl(q, p) == pytest.approx(c, rel=1e-6)


def test_kl_bound_formula_and_the_binomial_inversion():
    bits, n, err, delta = 5000.0, 50000, 0.05, 0.05
    c = (prefix_free_bits(bits) * math.log(2) + math.log(1 / delta)) / n
    assert kl_bound(bits, n, err, delta) == pytest.approx(kl_inverse(err, c))
    # the kl form is tighter than Occam's square root at small training error
    assert kl_bound(bits, n, 0.0, delta) < occam_bound(bits, n, 0.0, delta)
    # binomial tail inversion is never looser than its Chernoff (kl) relaxation
    for e in (0.0, 0.01, 0.05, 0.2):
        assert binomial_bound(bits, n, e, delta) <= kl_bound(bits, n, e, delta) + 1e-12


def test_binomial_bound_closed_form_at_zero_errors():
    # P[Bin(n, R) <= 0] = (1 - R)^n >= δ 2^-L  <=>  R <= 1 - (δ 2^-L)^(1/n)
    bits, n, delta = 300.0, 2000, 0.05
    log_target = math.log(delta) - prefix_free_bits(bits) * math.log(2)
    assert binomial_bound(bits, n, 0.0, delta) == pytest.approx(1 - math.exp(log_target / n), abs=1e-9)


def test_binomial_bound_matches_scipy_tail():
    from scipy import stats

    bits, n, err, delta = 200.0, 1000, 0.1, 0.05
    r = binomial_bound(bits, n, err, delta)
    target = delta * 2.0 ** -prefix_free_bits(bits)
    assert stats.binom.cdf(100, n, r) == pytest.approx(target, rel=1e-4)


def test_bad_arguments():
    with pytest.raises(InvalidSettingError, match="train_error"):
        occam_bound(10, 100, 1.5)


def test_comparison_bounds_table(trajectory):
    _, data = tiny_classifier(1)
    result = cz.compare(trajectory, ["l2", "naive_compression"], data=data, progress=False)
    table = result.bounds()
    assert set(table["measure"]) == {"naive_compression"} and len(table) == 5
    row = table.iloc[-1]
    assert row["n"] == 128 and row["errors_of"] == "trained model (lossless code)"
    assert row["occam_bound"] == pytest.approx(occam_bound(row["bits"], 128, row["train_error"]))
    assert row["binomial_bound"] <= row["kl_bound"] <= row["occam_bound"]
    assert row["vacuous"]  # thousands of bits against 128 examples
    assert result.dataset.attrs["num_classes"] == 3  # labels 0..2: chance error 2/3
    assert np.isnan(row["test_error"])  # the fixture logs no test accuracy


def test_vacuous_means_no_better_than_guessing():
    import pandas as pd

    from complexity_zoo.analysis.bounds import bounds_table

    frame = pd.DataFrame({"bits": [100.0, 100.0], "n": [10**5, 10**5], "train_error": [0.0, 0.7]})
    table = bounds_table(frame, chance_error=0.9)  # ten classes
    assert table["binomial_bound"].iloc[0] < 0.01 and not table["vacuous"].iloc[0]
    assert table["binomial_bound"].iloc[1] > 0.7 and not table["vacuous"].iloc[1]
    assert bounds_table(frame, chance_error=0.5)["vacuous"].tolist() == [False, True]


def test_kolmogorov_bounds_use_the_coarse_models_own_errors(trajectory, rebuild_coarse):
    """Issue 12 item 1: the bits describe the coarse-grained model, so its error goes in."""
    _, data = tiny_classifier(1)
    result = cz.compare(trajectory, [("kolmogorov", {"epsilon": 0.5})], data=data, progress=False)
    table = result.bounds(delta=0.05, union_size=5).set_index("step")
    checked = 0
    for step in trajectory.steps:
        extras = result.extras("kolmogorov", step)
        row = table.loc[step]
        coarse = rebuild_coarse(trajectory.model_at(step), extras)
        x, y = data.train
        with torch.no_grad():
            err = float((coarse(x).argmax(1) != y).double().mean())
        xt, yt = data.test
        with torch.no_grad():
            test_err = float((coarse(xt).argmax(1) != yt).double().mean())
        assert row["errors_of"] == "coarse-grained model (recorded)"
        assert row["train_error"] == pytest.approx(err, abs=1e-12)
        assert row["test_error"] == pytest.approx(test_err, abs=1e-12)
        assert row["occam_bound"] == pytest.approx(occam_bound(row["bits"], 128, err, 0.05, union_size=5))
        assert row["binomial_bound"] == pytest.approx(binomial_bound(row["bits"], 128, err, 0.05, union_size=5))
        checked += not extras["stored_exactly"]
    assert checked >= 2  # coarse models, where the trained model's error would be wrong


def test_bits_without_recorded_errors_get_no_bound(trajectory, scratch_registry):
    @cz.register_measure("lossy_bits")
    class LossyBits(cz.Measure):
        """Bits of some coarse description that records none of its errors."""

        unit = "bits"

        def compute(self, model, data=None):
            return 100.0

    _, data = tiny_classifier(1)
    table = cz.compare(trajectory, ["lossy_bits"], data=data, progress=False).bounds()
    assert table["occam_bound"].isna().all() and table["errors_of"].str.startswith("unknown").all()


def test_bounds_union_over_every_reported_step_by_default(trajectory):
    """Issue 22: the default table may be read at any of its steps, so every bound pays
    ln(number of steps); checked on rows the union moves (bounds below 1, not clipped)."""
    _, data = tiny_classifier(1)
    result = cz.compare(trajectory, [("kolmogorov", {"epsilon": 0.5})], data=data, progress=False)
    steps = len(result.dataset["step"])
    default, fixed = result.bounds(), result.bounds(union_size=1)
    ok = default["kl_bound"] < 1
    assert steps > 1 and ok.any()
    for (_, row), (_, one) in zip(default[ok].iterrows(), fixed[ok].iterrows()):
        assert row["kl_bound"] == pytest.approx(kl_bound(row["bits"], row["n"], row["train_error"], 0.05, steps))
        assert row["binomial_bound"] == pytest.approx(
            binomial_bound(row["bits"], row["n"], row["train_error"], 0.05, union_size=steps))
        assert row["kl_bound"] > one["kl_bound"]  # the union costs something where the bound is not clipped
