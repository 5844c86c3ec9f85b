"""Slow: the paper's claims about the Kolmogorov estimate, on real grokking runs (make test-slow).

cpu-small (an MLP on a + b mod 97, weight decay 1.0) groks; cpu-small-noreg does not. What
DeMoss et al. report: the estimate is 30-40x below the naive compressed size, rises while the
network memorizes and falls as it generalizes, and stays high without regularization.
"""

from __future__ import annotations

import numpy as np
import pytest

import complexity_zoo as cz
from complexity_zoo.tasks import task_data
from complexity_zoo.tasks.modular import from_preset, train

pytestmark = pytest.mark.slow
STEPS = [0, 400, 800, 1600, 2400, 3200, 4000, 4800, 5600, 8000]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("grokking")
    runs = [cz.Trajectory.from_dir(train(root / name, **from_preset(name), progress=False))
            for name in ("cpu-small", "cpu-small-noreg")]
    data = {t.name: task_data(t.task) for t in runs}
    return cz.compare(runs, ["kolmogorov", "naive_compression"], data=data, steps=STEPS, progress=False)


def test_grokked_estimate_is_far_below_naive_compression(comparison):
    ds = comparison.dataset.sel(run="cpu-small", step=8000)
    assert float(ds["test_acc"]) >= 0.95
    assert float(ds["naive_compression"]) / float(ds["kolmogorov"]) >= 30


def test_complexity_rises_in_memorization_and_falls_with_generalization(comparison):
    k = comparison.dataset["kolmogorov"].sel(run="cpu-small")
    acc = comparison.dataset["test_acc"].sel(run="cpu-small")
    peak_step = int(k.idxmax("step"))
    assert float(k.sel(step=0)) < float(k.max()) / 10  # rises from the initialization
    assert float(acc.sel(step=peak_step)) < 0.5  # the peak comes before generalization
    assert float(k.sel(step=8000)) < 0.5 * float(k.max())  # and falls as test accuracy rises
    later = k.sel(step=[s for s in STEPS if s > peak_step]).values
    assert np.all(np.diff(later) <= 0.05 * float(k.max()))  # no second rise


def test_without_regularization_complexity_stays_high(comparison):
    noreg = comparison.dataset["kolmogorov"].sel(run="cpu-small-noreg")
    wd = comparison.dataset["kolmogorov"].sel(run="cpu-small")
    assert float(comparison.dataset["test_acc"].sel(run="cpu-small-noreg", step=8000)) < 0.1
    assert float(noreg.sel(step=8000)) >= 0.8 * float(noreg.max())
    assert float(noreg.sel(step=8000)) > 2 * float(wd.sel(step=8000))
