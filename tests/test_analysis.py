"""Transitions, correlations, exports and figures on series with a known truth."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from PIL import Image

import complexity_zoo as cz
from complexity_zoo.analysis import correlate
from complexity_zoo.analysis.transitions import change_points, detect, fit_change_points, generalization, memorization

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
    # issue 22: a grokking sigmoid is a transition (generalization), not a change point
    cps = table[(table["series"] == "test_acc") & (table["kind"] == "change_point")]["step"]
    assert not any(1500 / 2 <= s <= 1500 * 2 for s in cps)
    gen = table.set_index(["series", "kind"]).loc[("test_acc", "generalization")]
    assert gen["low"] <= gen["step"] <= gen["high"]


def test_change_points_find_a_noisy_mean_shift_and_no_more():
    rng = np.random.default_rng(1)
    values = np.where(np.arange(40) < 25, 0.0, 3.0) + rng.normal(0, 0.5, 40)
    (found,) = fit_change_points(np.arange(40.0), values)["points"]  # issue 22: within two checkpoints
    assert abs(found["step"] - 25) <= 2 and found["low"] <= 25 <= found["high"]
    assert change_points(np.arange(40.0), rng.normal(0, 1, 40)) == []


SMOOTH = {
    "linear": lambda t: t,
    "exponential decay": lambda t: np.exp(-10 * t),
    "slow exponential": lambda t: np.exp(-3 * t),
    "logarithmic rise": lambda t: np.log1p(50 * t),
    "sigmoid": lambda t: 1 / (1 + np.exp(-10 * (t - 0.5))),
}


@pytest.mark.parametrize("n", [20, 40])
@pytest.mark.parametrize("shape", sorted(SMOOTH))
def test_smooth_curves_get_at_most_one_change_point(shape, n):
    """Issue 12: smooth monotone curves with 1% noise gave exactly the cap (3) every time."""
    rng = np.random.default_rng(n)
    t = np.linspace(0, 1, n)
    clean = SMOOTH[shape](t)
    assert len(change_points(t, clean)) <= 1
    counts = [len(change_points(t, clean + 0.01 * np.ptp(clean) * rng.standard_normal(n))) for _ in range(40)]
    assert np.mean(np.array(counts) <= 1) >= 0.9  # 40 draws (the bootstrap-calibrated test is slower)


@pytest.mark.parametrize("n", [20, 40])
def test_a_single_mean_shift_is_found_exactly_once_where_it_is(n):
    rng = np.random.default_rng(100 + n)
    t = np.linspace(0, 1, n)
    hits = [change_points(np.arange(n), (t >= 0.5) + 0.01 * rng.standard_normal(n)) for _ in range(40)]
    # issue 22's criterion: within two checkpoints of the jump (the spline may take one point of it)
    # a second, spurious point is a false alarm of the bootstrap test at level 0.05: exactly one
    # in >= 0.95 - 3 binomial SEs at 40 draws (0.95 - 0.10)
    assert np.mean([len(h) == 1 and abs(h[0] - n // 2) <= 2 for h in hits]) >= 0.85
    noise = [len(change_points(np.arange(n), rng.standard_normal(n))) for _ in range(60)]
    assert np.mean(np.array(noise) == 0) >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / 60)  # false alarms at level 0.05


def test_the_cap_is_reported():
    steps = np.arange(60.0)
    levels = np.repeat([0.0, 5.0, 1.0, 6.0], 15) + np.random.default_rng(0).normal(0, 0.05, 60)  # three jumps
    fit = fit_change_points(steps, levels, max_points=2)
    assert len(fit["points"]) == 2 and fit["truncated"]
    full = fit_change_points(steps, levels, max_points=3)
    assert [p["step"] for p in full["points"]] == [15.0, 30.0, 45.0] and not full["truncated"]


def test_generalization_flags_a_run_still_rising_at_its_end():
    steps = np.arange(1, 41) * 100.0
    done = generalization(steps, 1 / (1 + np.exp(-(steps - 1500) / 200)))
    rising = generalization(steps, np.clip((steps - 1000) / 4000, 0, 1))  # still climbing at 4000
    assert not done["still_rising"] and done["flag"] == ""
    assert rising["still_rising"] and "still rising" in rising["flag"]


def test_correlate_returns_both_statistics_and_refuses_short_series():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=33).cumsum(), rng.normal(size=33).cumsum()
    out = correlate(x, y, steps=np.arange(33) * 10)
    assert {"n", "n_eff", "r", "ci_low", "ci_high", "r_diff", "r_diff_ci_low", "r_diff_ci_high", "p"} <= set(out)
    assert out["n"] == 33 and 1 <= out["n_eff"] <= 33 and out["ci_low"] <= out["r"] <= out["ci_high"]
    with pytest.warns(cz.errors.ComplexityZooWarning, match="at least 5"):
        assert np.isnan(correlate([1, 2, 3], [3, 1, 2])["r"])
    with pytest.warns(cz.errors.ComplexityZooWarning, match="constant"):
        correlate(np.ones(10), np.arange(10))
    with pytest.raises(cz.ComplexityZooError, match="strictly increasing"):
        correlate(x, y, steps=np.zeros(33))


def test_the_table_flags_a_level_correlation_against_its_increments():
    """Issue 12 item 2: r on levels and the p of the increments must not be read together."""
    rng = np.random.default_rng(8)
    n = 30
    trend = np.linspace(0, 1, n)
    wiggle = rng.normal(size=n)
    x = 5 * trend + 0.3 * wiggle
    y = 5 * trend - 0.3 * wiggle  # co-trend up, move against each other
    out = correlate(x, y)
    assert out["r"] > 0.9 and out["r_diff"] < -0.5 and out["p"] < 0.05 and out["signs_disagree"]


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
    assert tracks["r"] > 0.95 and tracks["r_diff"] > 0.5 and tracks["p_adjusted"] < 0.01
    assert tracks["ci_low"] < tracks["r"] < tracks["ci_high"] and tracks["n_eff"] < tracks["n"]
    late = result.correlations(window="post_memorization")
    assert late["n"].max() < table["n"].max()
    with pytest.raises(cz.ComplexityZooError, match="No series 'nope'"):
        result.correlations(target="nope")

    tex = result.export(tmp_path / "corr.tex", caption="Measures vs test loss", label="tab:corr").read_text()
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 1
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"\label{tab:corr}" in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 6  # one row per measure and method
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


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_vectorized_correlations_match_scipy(method):
    from scipy import stats

    from complexity_zoo.analysis.correlation import batch_corr

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(4, 25)), rng.normal(size=(4, 25))
    x[1, :5] = x[1, 5:10]  # ties
    ref = {"pearson": stats.pearsonr, "spearman": stats.spearmanr, "kendall": stats.kendalltau}[method]
    np.testing.assert_allclose(batch_corr(method, x, y), [ref(a, b)[0] for a, b in zip(x, y)], rtol=1e-10)


def test_a_smooth_trend_is_not_cut_into_change_points():
    assert change_points(STEPS, np.exp(-STEPS / 3000.0)) == []


def test_transitions_are_computed_once_per_comparison(monkeypatch):
    import complexity_zoo.analysis.transitions as tr

    calls = []
    real = tr.detect
    monkeypatch.setattr(tr, "detect", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = comparison_with({"train_acc": sigmoid_step(30), "test_acc": sigmoid_step(1500),
                              "test_loss": 1 - sigmoid_step(1500), "m": sigmoid_step(300)})
    result.transitions()
    result.correlations(window="post_memorization")
    result.transitions()
    assert len(calls) == 1


def test_no_peak_on_a_monotone_series():
    from complexity_zoo.analysis.transitions import peak_and_fall

    assert peak_and_fall(np.arange(5.0), np.array([0.0, 1, 2, 2, 2])) == []


def test_noise_model_likelihood_matches_scipy_and_can_be_forced():
    from scipy import stats

    from complexity_zoo.analysis.noise_models import _gls, _whitener
    from complexity_zoo.analysis.smooth import bspline_basis, coordinate

    rng = np.random.default_rng(0)
    s = 10 * 1.15 ** np.arange(30)
    u, y = coordinate(s), rng.standard_normal(30)
    basis = bspline_basis(u, 4)
    for model, param in [("ar1", 0.6), ("ou", np.log(50.0)), ("brownian", 0.0), ("white_growing", 2.0)]:
        ll = _gls(model, param, y, basis, s, u, None)[0]
        w = _whitener(model, param, s, u, None)[0](np.eye(30))
        cov = np.linalg.inv(w.T @ w)
        prec = np.linalg.inv(cov)
        beta = np.linalg.solve(basis.T @ prec @ basis, basis.T @ prec @ y)
        r = y - basis @ beta
        ref = stats.multivariate_normal(basis @ beta, (r @ prec @ r / 30) * cov).logpdf(y)
        assert ll == pytest.approx(ref, rel=1e-9)
    out = correlate(y, rng.standard_normal(30), s, noise="ar1")
    assert out["noise_model"] == "ar1 / ar1" and isinstance(out["p_reliable"], bool)


def test_stages_find_a_plateau_and_a_dip_but_nothing_on_smooth_curves():
    from scipy.ndimage import gaussian_filter1d

    from complexity_zoo.analysis import stages

    steps = np.geomspace(10, 1e5, 80)
    u = np.log10(steps)
    knots = ([1, 2, 2.2, 2.8, 3, 4, 4.3, 5], [0, 1, 1.02, 1.04, 1.05, 1.5, 1.3, 2.5])
    curve = gaussian_filter1d(np.interp(u, *knots), 1.5)
    found = stages(steps, curve + 0.01 * np.random.default_rng(0).standard_normal(80))
    kinds = [f["kind"] for f in found]
    assert kinds == ["plateau", "peak", "trough"]
    for f, truth in zip(found, [(2.0, 3.0), (4.0, 4.0), (4.3, 4.3)]):
        assert f["low"] <= f["step"] <= f["high"]
        assert truth[0] - 0.15 <= np.log10(f["step"]) <= truth[1] + 0.15
    assert stages(steps, 1 / (1 + np.exp(-(u - 3) / 0.3))) == []
    assert stages(steps, 2 + 5 * steps**-0.3) == []


def test_holm_family_is_the_whole_table_and_named_in_the_caption(tmp_path):
    rng = np.random.default_rng(9)
    result = comparison_with({"train_acc": sigmoid_step(30), "test_acc": sigmoid_step(1500),
                              "test_loss": 1 - sigmoid_step(1500) + rng.normal(0, 0.02, len(STEPS)),
                              "m1": rng.normal(size=len(STEPS)), "m2": rng.normal(size=len(STEPS))}, runs=("a", "b"))
    table = result.correlations(methods=("pearson",))
    assert "all 4 tests" in table.attrs["p_family"]
    from complexity_zoo.analysis.correlation import holm

    np.testing.assert_allclose(table["p_adjusted"], holm(table["p"].to_numpy()))
    tex = result.export(tmp_path / "c.tex", methods=("pearson",)).read_text()
    assert "Holm over all 4 tests" in tex


def _accuracy_coverage(which: str, draws: int = 300) -> float:
    steps = np.geomspace(10, 1e5, 40)
    u = np.log10(steps)
    curve = {"generalization": 0.05 + 0.9 / (1 + np.exp(-(u - 3) / 0.3)),
             "memorization": 0.1 + 0.9 / (1 + np.exp(-(u - 2) / 0.2))}[which]
    locate = {"generalization": generalization, "memorization": memorization}[which]
    truth = locate(steps, curve)["step"]
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(draws):
        found = locate(steps, rng.binomial(500, curve) / 500, n_examples=500)
        hits += found["low"] <= truth <= found["high"]
    return hits / draws


def test_generalization_interval_covers_at_its_nominal_rate():
    """Issue 22: with test accuracy on 500 examples the true grokking step lies inside the 95%
    interval at the nominal rate (300 draws: >= 0.95 - 3 binomial SEs)."""
    assert _accuracy_coverage("generalization") >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / 300)


def test_memorization_interval_covers_at_its_nominal_rate():
    """Issue 22: the same for the memorization step (the union of the percentile and basic
    bootstrap intervals with the checkpoint gap; the grid with its per-cell coverage is
    benchmarks/transition_simulation.py --parts accuracy). 300 draws: >= 0.95 - 3 binomial SEs."""
    assert _accuracy_coverage("memorization") >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / 300)


def test_memorization_locates_the_crossing_on_the_isotonic_fit():
    """A noisy early accuracy near the plateau does not decide the step: the isotonic fit of
    [0.2, 0.995, 0.95, 0.99, 1, 1] pools 0.995 and 0.95 to 0.9725 (by hand), so the fit first
    reaches 1 - 0.01 at the fourth checkpoint (step 8), not between the first two (raw rule)."""
    found = memorization([1, 2, 4, 8, 16, 32], [0.2, 0.995, 0.95, 0.99, 1.0, 1.0])
    assert found["step"] == pytest.approx(8.0, rel=1e-12)
    assert found["low"] == pytest.approx(4.0) and found["high"] == pytest.approx(8.0)


def test_stages_rates_on_multi_stage_and_smooth_curves():
    """Issue 22 acceptance, a few cells of benchmarks/transition_simulation.py --parts stages:
    the three boundaries of the multi-stage curve within 15% of the smoothed curve's own turns
    (measured 0.91 over 100 draws; here 40 draws, >= 0.91 - 3 binomial SEs) and no stage on a
    smooth logistic with 1% noise on the geometric, Pythia and random schedules in >= 80% of
    draws (measured 0.99-1.00 over 100 draws; judged against the pointwise z instead of the
    simultaneous band, Pythia gave 0.76 here). On the random schedule the logistic rises from
    0.02 to 0.54 between its first two checkpoints; before a turn had to be measured by two
    checkpoints on each side, the spline's swing across that gap gave a boundary (mostly a
    trough) in 0.27 of draws."""
    from scipy.ndimage import gaussian_filter1d

    from complexity_zoo.analysis import stages
    from complexity_zoo.analysis.simulation import schedule, shape, turning_step

    rng = np.random.default_rng(21)
    steps = np.geomspace(10, 1e5, 80)
    knots = ([1, 2, 2.2, 2.8, 3, 4, 4.3, 5], [0, 1, 1.02, 1.04, 1.05, 1.5, 1.3, 2.5])
    curve = gaussian_filter1d(np.interp(np.log10(steps), *knots), 1.5)
    turns = [np.log10(turning_step(steps, curve, 10**lo, 10**hi, k)) for k, lo, hi in (("peak", 3.5, 4.2),
                                                                                         ("trough", 4.05, 4.6))]
    truth = [("plateau", 2.0, 3.0), ("peak", turns[0], turns[0]), ("trough", turns[1], turns[1])]
    hits = 0
    for _ in range(40):
        got = stages(steps, curve + 0.01 * rng.standard_normal(80))
        hits += len(got) == 3 and all(g["kind"] == k and 10**lo / 1.15 <= g["step"] <= 10**hi * 1.15
                                      for g, (k, lo, hi) in zip(got, truth))
    assert hits / 40 >= 0.91 - 3 * np.sqrt(0.91 * 0.09 / 40)
    for kind in ("geometric", "pythia", "random"):
        s = schedule(kind, 50)
        c = shape("logistic", s)
        assert np.mean([stages(s, c + 0.01 * rng.standard_normal(50)) == [] for _ in range(100)]) >= 0.8


def test_stages_of_a_curve_moving_on_log_time_between_evenly_spaced_checkpoints():
    """Issue 22: a published LLC series (500 checkpoints every 100 steps, moving on log time) got
    no stage boundary: the spline in step could not follow its fast early rise. ``stages`` now
    fits in step or log step, whichever fits better. A staged curve of that shape (simulation.staged_curve,
    1% noise): its three boundaries within 15% in 0.79 of 100 draws
    (benchmarks/transition_simulation.py --parts stages; 0 before); here 10 draws, >= 6. The same
    curves without stages (logistic, exponential in log step) give none."""
    from complexity_zoo.analysis import stages
    from complexity_zoo.analysis.noise_models import trend_coordinates
    from complexity_zoo.analysis.simulation import staged_curve

    rng = np.random.default_rng(5)
    steps = 100.0 * np.arange(1, 501)
    hits = 0
    for _ in range(10):
        peak = 10 ** rng.uniform(3.7, 3.9)
        curve, truth = staged_curve(steps, 10 ** rng.uniform(2.85, 3.1), peak, peak * 10**0.12)
        got = stages(steps, curve + 0.01 * rng.standard_normal(500))
        hits += [g["kind"] for g in got] == list(truth) and all(
            abs(np.log(g["step"] / truth[g["kind"]])) <= np.log(1.15) for g in got)
    assert hits >= 6
    u = trend_coordinates(steps[:200])
    for smooth in (1 / (1 + np.exp(-(u - 0.3) / 0.08)), np.exp(-5 * u)):
        assert np.mean([stages(steps[:200], smooth + 0.01 * rng.standard_normal(200)) == []
                        for _ in range(20)]) >= 0.8

def test_comparison_intervals_use_the_split_sizes_given_to_compare():
    """Issue 22: the memorization/generalization intervals include the binomial noise of the
    split the accuracies were measured on: the recorded split size when the accuracies are
    multiples of 1/n, else the size their granularity shows."""
    from complexity_zoo.analysis.transitions import examples_behind, generalization, memorization

    rng = np.random.default_rng(3)
    train = rng.binomial(400, np.clip(sigmoid_step(300), 0.02, 0.98)) / 400
    test = rng.binomial(250, np.clip(sigmoid_step(1500), 0.02, 0.98)) / 250
    result = comparison_with({"train_acc": train, "test_acc": test, "test_loss": 1 - test})
    result.dataset.attrs.update(n_train='{"a": 400}', n_test='{"a": 250}')
    rows = result.transitions().set_index("kind")
    for kind, fn, acc, n in (("memorization", memorization, train, 400), ("generalization", generalization, test, 250)):
        expected = fn(STEPS.astype(float), acc, n_examples=n)
        assert (rows.loc[kind, "low"], rows.loc[kind, "high"]) == pytest.approx((expected["low"], expected["high"]))
    # a recorded size the accuracies do not fit (they came from another set): their granularity decides
    from complexity_zoo.analysis.transitions import examples_measured_on

    assert examples_measured_on(test.astype(np.float32), 250) == 250  # float32-logged metrics still fit
    assert examples_measured_on(test, 7) == examples_behind(test) == 250
