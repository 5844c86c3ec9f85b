"""benchmarks/zoo.py's scaling arithmetic: the log-log fit and the 1B x 100 extrapolation."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def zoo():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("zoo_bench", BENCH / "zoo.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_fit_recovers_an_exact_power_law(zoo):
    xs = [2e5, 1e7, 1.2e8]
    slope, intercept = zoo.fit(xs, [3.0 * x ** 1.5 for x in xs])
    assert slope == pytest.approx(1.5, rel=1e-12) and math.exp(intercept) == pytest.approx(3.0, rel=1e-9)
    assert zoo.fit([1e6], [2.0]) is None and zoo.fit([1e6, 1e6], [1.0, 2.0]) is None


def test_scaling_extrapolates_and_applies_the_feasibility_rule(zoo):
    def row(params, seconds, mib, measure="m"):
        return {"measure": measure, "status": "ok", "params": params, "s_per_ckpt": seconds, "device": "cpu",
                "peak_rss_mib": 500 + mib, "base_rss_mib": 500.0, "cuda_peak_mib": float("nan")}

    # time linear in parameters: 1 s at 1e7 -> 100 s at 1e9, x 100 checkpoints = 10,000 s
    rows = [row(1e7, 1.0, 40.0), row(1e8, 10.0, 400.0)]
    (out,) = zoo.scaling(rows)
    assert out["time_exponent"] == pytest.approx(1.0) and out["hours_1b_x100"] == pytest.approx(1e4 / 3600)
    assert out["mem_gb_1b"] == pytest.approx(4000 / 1024) and out["feasible_one_gpu"] == "yes"
    slow = zoo.scaling([row(1e7, 100.0, 40.0, "s"), row(1e8, 1000.0, 400.0, "s")])[0]
    assert slow["hours_1b_x100"] == pytest.approx(1e6 / 3600) and slow["feasible_one_gpu"].startswith("no on CPU")
    one = zoo.scaling([row(1e7, 1.0, 40.0, "o")])[0]
    assert one["feasible_one_gpu"].startswith("unknown") and math.isnan(one["hours_1b_x100"])


def test_combine_takes_the_later_run_of_a_series_and_measure(zoo, tmp_path):
    def row(series, params, measure, seconds, status="ok"):
        return {"series": series, "measure": measure, "status": status, "params": params, "s_per_ckpt": seconds,
                "measure_s": seconds, "device": "cpu", "peak_rss_mib": 600.0, "base_rss_mib": 500.0,
                "cuda_peak_mib": float("nan"), "error": ""}

    full = [row("small", 1e6, "m", 1.0), row("big", 1e8, "m", float("nan"), "skipped"), row("small", 1e6, "k", 2.0)]
    rerun = [row("big", 1e8, "m", 100.0)]
    paths = []
    for i, rows in enumerate((full, rerun)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps({"rows": rows}))
    rows = zoo.combined([str(p) for p in paths])
    assert [(r["series"], r["measure"], r["status"]) for r in rows] == [
        ("small", "k", "ok"), ("small", "m", "ok"), ("big", "m", "ok")]
    scale = {s["measure"]: s for s in zoo.scaling(rows)}
    assert scale["m"]["time_exponent"] == pytest.approx(1.0)  # 1 s at 1e6, 100 s at 1e8
    table = zoo.markdown(rows, zoo.scaling(rows), "## t")
    assert "| `k` | 2 (2), 600 | not run |" in table
