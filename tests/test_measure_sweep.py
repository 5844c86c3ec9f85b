"""Slow: examples/measure_sweep.py --quick end to end (8 small runs, every built-in measure)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "measure_sweep.py"


def test_quick_sweep_writes_the_evaluation_tables(tmp_path):
    spec = importlib.util.spec_from_file_location("measure_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = module.main(["--quick", "--out", str(tmp_path), "--skip", "kolmogorov,llc"])
    values = pd.read_csv(root / "values.csv")
    evaluation = pd.read_csv(root / "evaluation.csv")
    assert len(values) == 8 and {"gap", "weight_decay", "train_frac", "width"} <= set(values.columns)
    assert "path_norm" in set(evaluation["measure"]) and "kolmogorov" not in set(evaluation["measure"])
    ok = evaluation.dropna(subset=["tau"])
    assert len(ok) >= 25
    assert ok["tau"].between(-1, 1).all() and ok["sign_error_mean"].between(0, 1).all()
    assert (root / "evaluation.md").is_file() and (root / "evaluation.png").stat().st_size > 1000
    kendall = pd.read_csv(root / "trajectory_kendall.csv")  # along the trajectory: 2 runs, 7 checkpoints
    assert len(kendall) == len(evaluation) and kendall.shape[1] == 1 + 2 + 1
    taus = kendall.drop(columns="measure").to_numpy()
    assert (np.abs(taus[np.isfinite(taus)]) <= 1).all() and np.isfinite(taus[:, -1]).sum() >= 25
    assert (root / "trajectory_layers.png").stat().st_size > 1000
