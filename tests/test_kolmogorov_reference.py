"""``kolmogorov.paper`` against the authors' own estimator, run as published (slow; needs JAX).

Needs ``pip install 'complexity-zoo[paper-reference]'`` and a copy of
github.com/brantondemoss/GrokkingComplexity in ``COMPLEXITY_ZOO_GROKKING_REF``; skipped otherwise.
Checkpoints: the ``cpu-small`` demo run and a short run of the paper's 1-layer transformer
(``paper-add``, 40 epochs = 200 steps), trained here unless ``COMPLEXITY_ZOO_KOLMO_RUNS`` names a
folder holding ``cpu-small/`` and ``paper-add/`` runs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

import complexity_zoo as cz
from complexity_zoo.tasks import task_data

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "kolmogorov_reference", HERE.parent / "examples" / "kolmogorov_reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]
RUNS = {"cpu-small": {}, "paper-add": {"epochs": 40}}


@pytest.fixture(scope="module")
def ref():
    why = reference.missing()
    if why:
        pytest.skip(why)
    return reference.Reference()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if os.environ.get("COMPLEXITY_ZOO_KOLMO_RUNS"):
        return Path(os.environ["COMPLEXITY_ZOO_KOLMO_RUNS"])
    from complexity_zoo.tasks.modular import from_preset, train

    root = tmp_path_factory.mktemp("kolmo-runs")
    for name, overrides in RUNS.items():
        train(root / name, **from_preset(name, **overrides), progress=False)
    return root


def _checkpoints(runs: Path, name: str) -> tuple[list, object]:
    traj = cz.Trajectory.from_dir(runs / name)
    steps = traj.steps
    picks = [steps[1], steps[-1]] if name == "cpu-small" else [steps[len(steps) // 2], steps[-1]]
    return [(s, traj.model_at(s)) for s in picks], task_data(traj.task)


@pytest.mark.parametrize("name", list(RUNS))
def test_paper_preset_matches_the_authors_estimator(ref, runs, name):
    checkpoints, data = _checkpoints(runs, name)
    paper, default = cz.get_measure("kolmogorov.paper"), cz.get_measure("kolmogorov")
    for step, model in checkpoints:
        theirs = reference.authors_bits(ref, model, data, paper._data(data))["bits"]
        ours = paper(model, data).value
        assert abs(ours / theirs - 1) <= 0.02, (name, step, ours, theirs)
        assert default(model, data).value <= ours, (name, step)


@pytest.mark.parametrize("name", list(RUNS))
def test_paper_coder_sizes_equal_theirs_at_the_same_point(ref, runs, name):
    """Same (Δ, τ): the same bytes (their float32 SVD and quantization, their pickle envelope)."""
    checkpoints, data = _checkpoints(runs, name)
    paper = cz.get_measure("kolmogorov.paper")
    for _, model in checkpoints:
        problem = paper._problem(model, data)
        for tau, delta in [(1.0, 1e-3), (0.9, 0.01), (0.5, 0.1), (0.0, 1.0)]:
            cand = problem.candidate(delta, tau, problem.grainer.ranks(tau))
            theirs = reference.authors_size(ref, model, data, tau, delta)
            assert problem.bits(cand) == theirs["bits"], (name, tau, delta)
            ours_loss = problem.evaluate(problem.weights(cand), data)["loss"]
            assert ours_loss == pytest.approx(theirs["train_loss"], rel=1e-3, abs=1e-4)
