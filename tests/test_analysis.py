"""Transitions, correlations, exports and figures on series with a known truth."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image

import complexity_zoo as cz
from complexity_zoo.analysis.correlation import correlate, granulated_kendall
from complexity_zoo.analysis.transitions import change_points, detect

STEPS = np.unique(np.round(np.geomspace(1, 10**4, 40))).astype(float)  # log-spaced checkpoints


def sigmoid_step(center: float, width: float = 0.15) -> np.ndarray:
    return 1 / (1 + np.exp(-(np.log10(STEPS) - np.log10(center)) / width))


def test_known_transitions_are_recovered():
    rng = np.random.default_rng(0)
    train_acc = np.clip(sigmoid_step(30) + rng.normal(0, 0.005, len(STEPS)), 0, 1)
    test_acc = np.clip(0.05 + 0.95 * sigmoid_step(1500) + rng.normal(0, 0.01, len(STEPS)), 0, 1)
    peak = np.exp(-((np.log10(STEPS) - np.log10(400)) ** 2) / 0.1) + rng.normal(0, 0.02, len(STEPS))
    table = detect(STEPS, {"train_acc": train_acc, "test_acc": test_acc, "complexity": peak}, "r")
    get = table.set_index(["series", "kind"])["step"]
    # tolerance: a factor of 1.5 in step (about two checkpoints of this grid). The sigmoid is
    # within 0.01 of its plateau at 30 * 10^(0.15 ln 99) = 147.
    plateau_step = 30 * 10 ** (0.15 * np.log(99))
    assert plateau_step / 1.5 <= get[("train_acc", "memorization")] <= plateau_step * 1.5
    assert 1500 / 1.5 <= get[("test_acc", "generalization")] <= 1500 * 1.5
    assert 400 / 1.5 <= get[("complexity", "peak")] <= 400 * 1.5
    assert get[("complexity", "fall_onset")] > get[("complexity", "peak")]
    cps = table[(table["series"] == "test_acc") & (table["kind"] == "change_point")]["step"]
    assert any(1500 / 2 <= s <= 1500 * 2 for s in cps)


def test_change_points_find_a_noisy_mean_shift_and_no_more():
    rng = np.random.default_rng(1)
    values = np.where(np.arange(40) < 25, 0.0, 3.0) + rng.normal(0, 0.5, 40)
    found = change_points(np.arange(40.0), values)
    assert [r["step"] for r in found] == [25.0]
    assert change_points(np.arange(40.0), rng.normal(0, 1, 40)) == []


def test_known_correlation_is_covered_by_the_block_bootstrap_interval():
    rng = np.random.default_rng(2)
    covered, rho, trials = 0, 0.6, 60
    for _ in range(trials):
        x = np.zeros(120)
        for t in range(1, 120):  # AR(1), strongly autocorrelated
            x[t] = 0.8 * x[t - 1] + rng.normal()
        x = x / np.sqrt(1 / (1 - 0.64))
        y = rho * x + np.sqrt(1 - rho**2) * np.concatenate([[0], np.diff(rng.normal(size=120).cumsum())])
        res = correlate(x, y, "pearson", seed=int(rng.integers(1 << 30)))
        covered += res["ci_low"] <= rho <= res["ci_high"]
    assert covered / trials >= 0.85


def test_independent_random_walks_are_rarely_significant():
    rng = np.random.default_rng(3)
    trials, naive, ours = 200, 0, 0
    from scipy import stats

    for _ in range(trials):
        x, y = rng.normal(size=33).cumsum(), rng.normal(size=33).cumsum()
        naive += stats.pearsonr(x, y)[1] < 0.05
        ours += correlate(x, y, "pearson")["p"] < 0.05
    assert naive / trials > 0.4  # the failure of the naive test
    assert ours / trials <= 0.08  # nominal 5%, a few percent of slack for 200 trials


def comparison_with(series: dict[str, np.ndarray], runs=("a",)) -> cz.Comparison:
    data_vars = {}
    for name, v in series.items():
        role = "metric" if name.endswith(("_acc", "_loss")) else "measure"
        data_vars[name] = (("run", "step"), np.tile(v, (len(runs), 1)), {"role": role, "unit": ""})
    ds = xr.Dataset(data_vars, coords={"run": list(runs), "step": STEPS.astype(np.int64)})
    return cz.Comparison(ds)


def test_comparison_correlations_windows_and_exports(tmp_path):
    rng = np.random.default_rng(4)
    test_loss = 2 - 1.8 * sigmoid_step(1500) + rng.normal(0, 0.02, len(STEPS))
    result = comparison_with({
        "train_acc": sigmoid_step(30), "test_acc": sigmoid_step(1500), "test_loss": test_loss,
        "tracks": test_loss * 3 + rng.normal(0, 0.05, len(STEPS)), "noise": rng.normal(size=len(STEPS)),
    })
    table = result.correlations()
    assert set(table["measure"]) == {"tracks", "noise"} and len(table) == 6
    tracks = table[(table["measure"] == "tracks") & (table["method"] == "pearson")].iloc[0]
    assert tracks["r"] > 0.95 and tracks["p_adjusted"] < 0.01 and tracks["ci_low"] > 0.8
    late = result.correlations(window="post_memorization")
    assert late["n"].max() < table["n"].max()
    with pytest.raises(cz.ComplexityZooError, match="No series 'nope'"):
        result.correlations(target="nope")

    tex = result.export(tmp_path / "corr.tex", caption="Measures vs test loss", label="tab:corr").read_text()
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 1
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"\label{tab:corr}" in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 2  # one row per measure
    n_cols = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1))
    assert all(line.count(" & ") == n_cols - 1 for line in body)
    md = result.export(tmp_path / "t.md", kind="transitions").read_text().splitlines()
    assert md[0].startswith("| run | series | kind | step")
    assert len(pd.read_csv(result.export(tmp_path / "v.csv", kind="values"))) == 2 * len(STEPS)
    with pytest.raises(cz.ComplexityZooError, match="writes"):
        result.export(tmp_path / "x.xlsx")


def test_figure_is_written_and_nonempty(tmp_path):
    result = comparison_with({"train_acc": sigmoid_step(30), "test_acc": sigmoid_step(1500),
                              "test_loss": 1 - sigmoid_step(1500), "m1": sigmoid_step(300), "m2": -sigmoid_step(900)},
                             runs=("a", "b"))
    path = result.plot(tmp_path / "fig.png")
    with Image.open(path) as img:
        w, h = img.size
        gray = np.asarray(img.convert("L"))
    assert w > 800 and h > 500
    assert (gray < 128).mean() > 0.01  # something is drawn


def test_granulated_kendall_by_hand():
    runs = ["r1", "r2", "r3", "r4"]
    hp = pd.DataFrame({"wd": [0, 0, 1, 1], "lr": [1, 2, 1, 2]}, index=runs)
    values = pd.Series([1.0, 2.0, 3.0, 4.0], index=runs)
    gap = pd.Series([1.0, 2.0, 4.0, 3.0], index=runs)
    g = granulated_kendall(values, gap, hp).set_index("axis")["tau"]
    # wd axis: groups lr=1 (r1, r3): concordant; lr=2 (r2, r4): concordant -> 1
    # lr axis: groups wd=0 (r1, r2): concordant; wd=1 (r3, r4): discordant -> 0
    assert g["wd"] == 1.0 and g["lr"] == 0.0


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_vectorized_correlations_match_scipy(method):
    from scipy import stats

    from complexity_zoo.analysis.correlation import batch_corr

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(4, 25)), rng.normal(size=(4, 25))
    x[1, :5] = x[1, 5:10]  # ties
    ref = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}[method]
    np.testing.assert_allclose(batch_corr(method, x, y), [ref(a, b)[0] for a, b in zip(x, y)], rtol=1e-10)


def test_a_smooth_trend_is_not_cut_into_many_change_points():
    smooth = np.exp(-STEPS / 3000.0)
    assert len(change_points(STEPS, smooth)) <= 3
