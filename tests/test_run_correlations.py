"""Comparison.run_correlations: seeds averaged for ψ and the CMI and paired for sign-error, the
0-1 gap, and a DroppedRunsWarning naming what it leaves out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import complexity_zoo as cz
from complexity_zoo.analysis import conditional_mutual_information, granulated_kendall, kendall_gap, sign_error
from complexity_zoo.comparison import DroppedRunsWarning

# A 2 x 2 grid with two seeds per setting: 8 runs.
HP = pd.DataFrame({"a": [0, 0, 1, 1] * 2, "b": [0, 1, 0, 1] * 2, "seed": [0] * 4 + [1] * 4},
                  index=[f"r{i}" for i in range(8)])
RNG = np.random.default_rng(0)
GAP = RNG.normal(size=8)
M1 = GAP + RNG.normal(scale=0.7, size=8)
M2 = RNG.normal(size=8)


def comparison(m1=M1, m2=M2, gap=GAP, steps=(0, 10)):
    n = len(steps)
    def series(last):
        out = np.full((8, n), 0.5)
        out[:, -1] = last
        return out
    data = {"train_acc": series(np.ones(8)), "test_acc": series(1 - gap),
            "train_loss": series(np.zeros(8)), "test_loss": series(2 * gap)}
    ds = xr.Dataset({k: (("run", "step"), v, {"role": "metric"}) for k, v in data.items()},
                    coords={"run": list(HP.index), "step": list(steps)})
    ds["m1"] = (("run", "step"), series(m1), {"role": "measure", "unit": ""})
    ds["m2"] = (("run", "step"), series(m2), {"role": "measure", "unit": ""})
    return cz.Comparison(ds)


def test_seeds_are_averaged_for_psi_and_cmi_and_paired_for_sign_error():
    table = comparison().run_correlations(HP, seed="seed", gap="accuracy").set_index("measure")
    means = HP.assign(x=M1, y=GAP).groupby(["a", "b"])[["x", "y"]].mean().reset_index()
    row = table.loc["m1"]
    assert row["kendall_tau"] == pytest.approx(kendall_gap(M1, GAP)["tau"])
    assert row["granulated_psi"] == pytest.approx(granulated_kendall(means["x"], means["y"], means[["a", "b"]])["psi"])
    s = sign_error(M1, GAP, HP.reset_index(drop=True), seed="seed")
    assert row["sign_error_mean"] == pytest.approx(s["mean"]) and row["environments"] == s["environments"]
    cmi = conditional_mutual_information(means["x"], means["y"], means[["a", "b"]])["cmi"]
    assert row["cmi"] == pytest.approx(cmi)
    # gap="loss" here is 2 x the 0-1 gap: the same orderings, the same table
    loss = comparison().run_correlations(HP, seed="seed").set_index("measure")
    pd.testing.assert_frame_equal(loss, table)


def test_a_measure_missing_in_some_runs_is_named_in_a_warning():
    m2 = M2.copy()
    m2[[1, 5]] = np.nan
    c = comparison(m2=m2, steps=(10,))
    with pytest.warns(DroppedRunsWarning, match=r"'m2'.*\['r1', 'r5'\]"):
        table = c.run_correlations(HP, seed="seed").set_index("measure")
    assert table.loc["m2", "n_runs"] == 6 and np.isnan(table.loc["m2", "kendall_tau"])
    assert table.loc["m1", "kendall_tau"] == pytest.approx(kendall_gap(M1, 2 * GAP)["tau"])


def test_a_value_from_an_earlier_step_is_named_in_a_warning():
    m2 = M2.copy()
    m2[3] = np.nan  # the last step fails in run r3; its step-0 value (0.5) is used
    with pytest.warns(DroppedRunsWarning, match=r"'m2'.*\['r3'\].*last finite value"):
        table = comparison(m2=m2).run_correlations().set_index("measure")
    used = M2.copy()
    used[3] = 0.5
    assert table.loc["m2", "kendall_tau"] == pytest.approx(kendall_gap(used, 2 * GAP)["tau"])


def test_gap_must_be_named():
    with pytest.raises(cz.errors.InvalidSettingError, match="gap"):
        comparison().run_correlations(gap="error")
