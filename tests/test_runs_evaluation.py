"""The across-runs evaluation table (Kendall, granulated ψ, sign-error, CMI) on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from complexity_zoo.analysis import conditional_mutual_information, granulated_kendall, kendall_gap, sign_error
from complexity_zoo.errors import InvalidSettingError

# A 2 x 2 grid: runs (a, b) = (0,0), (0,1), (1,0), (1,1).
GRID = pd.DataFrame({"a": [0, 0, 1, 1], "b": [0, 1, 0, 1]})
GAP = np.array([1.0, 2.0, 3.0, 4.0])
MEASURE = np.array([5.0, 5.0, 1.0, 2.0])  # constant where a = 0


def test_granulated_kendall_with_ties_by_hand():
    # axis a, groups b=0: runs 0,2 -> measure 5>1 while gap 1<3: tau -1; b=1: runs 1,3 -> -1.
    # axis b, groups a=0: runs 0,1 -> measure tied: 0 (degenerate, counts 0); a=1: runs 2,3 -> +1.
    g = granulated_kendall(MEASURE, GAP, GRID)
    axes = g["axes"].set_index("axis")
    assert axes.loc["a", "tau"] == -1.0 and axes.loc["b", "tau"] == 0.5
    assert axes["groups"].tolist() == [2, 2] and axes.loc["b", "degenerate"] == 1
    assert g["psi"] == pytest.approx(-0.25)  # tau-b would drop the tied group: psi = 0


def test_a_constant_measure_scores_zero_not_nan():
    g = granulated_kendall(np.ones(4), GAP, GRID)
    assert g["psi"] == 0.0 and g["axes"]["degenerate"].tolist() == [2, 2]


def test_granulated_kendall_needs_a_complete_grid_with_one_run_per_setting():
    with pytest.raises(InvalidSettingError, match="complete grid"):
        granulated_kendall(MEASURE[:3], GAP[:3], GRID.iloc[:3])
    twice = pd.concat([GRID, GRID.iloc[:1]], ignore_index=True)
    with pytest.raises(InvalidSettingError, match="more than once"):
        granulated_kendall(np.arange(5.0), np.arange(5.0), twice)


def test_sign_error_by_hand():
    # environments (one axis differs): (0,2) and (1,3) along a, (0,1) and (2,3) along b.
    # (0,2): 5>1 but 1<3 -> 1; (1,3): 5>2 but 2<4 -> 1; (0,1): tie -> 1/2; (2,3): right -> 0.
    s = sign_error(MEASURE, GAP, GRID)
    assert s["environments"] == 4
    assert s["mean"] == pytest.approx(2.5 / 4) and s["worst"] == 1.0
    table = s["table"].set_index("axis")
    assert sorted(table["sign_error"].tolist()) == [0.0, 0.5, 1.0, 1.0]


def test_sign_error_pairs_runs_by_seed():
    hp = pd.DataFrame({"wd": [0, 0, 1, 1], "seed": [0, 1, 0, 1]})
    gap = np.array([1.0, 1.5, 2.0, 2.5])
    measure = np.array([1.0, 3.0, 2.0, 2.5])  # seed 0 ordered right; seed 1 wrong (3 > 2.5)
    s = sign_error(measure, gap, hp, seed="seed")
    assert s["environments"] == 1 and s["mean"] == 0.5  # pairs (0,2) right, (1,3) wrong
    assert sign_error(measure, gap, hp.drop(columns="seed").assign(seed=[0, 1, 0, 1]), seed="seed")["mean"] == 0.5


def test_kendall_gap_is_the_sign_average():
    k = kendall_gap(MEASURE, GAP)
    # pairs: (0,1) tie 0; (0,2) -; (0,3) -; (1,2) -; (1,3) -; (2,3) + -> (1 - 4) / 6
    assert k["tau"] == pytest.approx(-3 / 6) and k["n"] == 4
    with pytest.raises(InvalidSettingError, match="at least 3"):
        kendall_gap([1, 2], [1, 2])
    with pytest.raises(InvalidSettingError, match="non-finite"):
        kendall_gap([1, np.nan, 2], [1, 2, 3])


def test_cmi_by_hand_and_its_extremes():
    # A measure equal to the gap orders every pair right, given any hyperparameters: score 1.
    assert conditional_mutual_information(GAP, GAP, GRID)["cmi"] == pytest.approx(1.0)
    # A measure that only encodes axis a: given a, it says nothing about the gap's order.
    out = conditional_mutual_information(GRID["a"].to_numpy(float), GAP, GRID)
    assert out["cmi"] == pytest.approx(0.0, abs=1e-12) and out["conditioning"] == "a"
    # Unconditional case by hand: ordered pairs of 4 runs: V_g = +-1 equally often; MEASURE's
    # signs: 2 ties (0 with V_g +-1 once each) and 10 disagreeing pairs ... computed from counts.
    i, j = np.nonzero(~np.eye(4, dtype=bool))
    vm, vg = np.sign(MEASURE[i] - MEASURE[j]), np.sign(GAP[i] - GAP[j])
    joint = pd.crosstab(vm, vg).to_numpy() / len(i)
    pm, pg = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / (pm @ pg)[nz])).sum())
    table = conditional_mutual_information(MEASURE, GAP, GRID)["table"].set_index("conditioning")
    assert table.loc["(none)", "cmi"] == pytest.approx(mi / math.log(2))


def test_comparison_run_correlations_wraps_the_functions():
    import xarray as xr

    import complexity_zoo as cz

    runs = ["r0", "r1", "r2", "r3"]
    steps = np.array([0, 100, 200])
    test_loss = np.stack([np.linspace(3, 1 + g, 3) for g in GAP])
    train_loss = np.zeros((4, 3))
    measure = np.stack([np.linspace(0, m, 3) for m in MEASURE])
    ds = xr.Dataset(
        {"test_loss": (("run", "step"), test_loss, {"role": "metric"}),
         "train_loss": (("run", "step"), train_loss, {"role": "metric"}),
         "m": (("run", "step"), measure, {"role": "measure", "unit": ""})},
        coords={"run": runs, "step": steps},
    )
    table = cz.Comparison(ds).run_correlations(GRID.set_axis(runs)).set_index("measure").loc["m"]
    assert table["kendall_tau"] == pytest.approx(kendall_gap(MEASURE, GAP)["tau"])
    assert table["granulated_psi"] == pytest.approx(-0.25)
    assert table["kendall_tau_b"] == pytest.approx(-0.5477, abs=1e-4)
    assert table["psi_a"] == -1.0 and table["psi_b"] == 0.5
    assert table["sign_error_mean"] == pytest.approx(0.625) and table["sign_error_worst"] == 1.0
    assert table["cmi"] == pytest.approx(conditional_mutual_information(MEASURE, GAP, GRID)["cmi"])
