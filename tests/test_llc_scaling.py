"""The quadratic network's LLC scaling (arXiv 2603.01192), with the authors' SGLD settings.

The experiment is examples/llc_quadratic_scaling.py. Its authors validated that SGLD estimates
scale linearly in K and p (not their absolute values); "linear" here: the log-log slope of
the estimate against K, and against 3p - 1, within 0.25 of 1. On our checkpoints neither
holds (README, Results): the tests state the claim and are expected to fail (strict, so a
change that makes them pass is noticed and the README updated).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_path = Path(__file__).parents[1] / "examples" / "llc_quadratic_scaling.py"
_spec = importlib.util.spec_from_file_location("llc_quadratic_scaling", _path)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)


@pytest.fixture(scope="module")
def table():
    return example.scaling_table({"authors": example.SETTINGS["authors"]}, seed=0)


def test_checkpoints_are_in_the_generalizing_basin(table):
    assert (table["test_acc"] >= 0.99).all(), table
    assert (table["llc"] > 0).all() and (table["llc"] < table["theory"]).all(), table


@pytest.mark.xfail(strict=True, reason="measured: exponent -0.02 in K at seed 0 (0.14 at seed 1); flat in K")
def test_llc_scales_linearly_in_k(table):
    assert abs(example.exponents(table)["K"] - 1) < 0.25


@pytest.mark.xfail(strict=True, reason="measured: exponent 1.40 in 3p - 1 at seed 0 (1.30 at seed 1)")
def test_llc_scales_linearly_in_p(table):
    assert abs(example.exponents(table)["p"] - 1) < 0.25
