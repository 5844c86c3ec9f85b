"""Slow: examples/pythia_suite.py --demo end to end, offline against a Hub cache it builds."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "pythia_suite.py"


def test_demo_suite_measures_log_spaced_revisions_and_correlates_with_eval_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = importlib.util.spec_from_file_location("pythia_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--demo", str(tmp_path), "--quick", "--steps", "5"])
    values = pd.read_csv(out / "values.csv")
    assert sorted(set(values["step"])) == [0, 4, 16, 64, 256]  # 5 log-spaced of 0, 1, 2, 4, ..., 256
    assert set(values["measure"]) == {"l2", "stable_rank", "log_prod_spectral", "hessian_trace",
                                      "pacbayes_flatness", "inverse_margin", "lmn"}
    assert all(math.isfinite(v) for v in values["value"])
    table = pd.read_csv(out / "correlations.csv")
    assert set(table["measure"]) == set(values["measure"]) and (table["n"] == 5).all()
