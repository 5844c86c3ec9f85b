"""The back ends of compare(): serial, threads, processes and a real Dask LocalCluster give the
serial numbers bit for bit, stream cells into the cache, and survive a worker that dies."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import json
import os
import pickle
import sys
import textwrap

import numpy as np
import pytest
import torch

import complexity_zoo as cz
from complexity_zoo import _executors
from complexity_zoo.compare import Cell
from complexity_zoo.errors import ExecutorError, ExecutorWarning, MeasureFailedWarning, WorkerLostError
from complexity_zoo.testing import mlp

distributed = pytest.importorskip("distributed")

MEASURES = ["l2", "gradient_variance", "frobenius_distance"]  # deterministic, stochastic, needs_init

# A measure that kills the process it runs in, for the worker-loss tests. It lives in a module
# of its own so that worker processes (spawned, or Dask's) can import it by name.
CRASH_MODULE = '''
import os
import torch
import complexity_zoo as cz


class Crash(cz.Measure):
    """The L2 norm of the weights; at the checkpoint whose L2 norm is ``at`` it kills its worker
    process, the first time only (it leaves ``marker`` behind) or every time (``once=False``)."""

    name = "test_crash"
    at: float = -1.0
    marker: str = ""
    once: bool = True

    def compute(self, model, data=None):
        value = float(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).norm())
        if value == self.at and not (self.once and os.path.exists(self.marker)):
            open(self.marker, "w").close()
            os._exit(3)
        return value
'''


@pytest.fixture(scope="module")
def crash_module(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash_module")
    (root / "cz_test_crash.py").write_text(textwrap.dedent(CRASH_MODULE))
    sys.path.insert(0, str(root))  # spawned workers start with this sys.path
    import cz_test_crash

    yield cz_test_crash
    sys.path.remove(str(root))
    sys.modules.pop("cz_test_crash", None)


# What Dask's nanny writes into the environment of the process that starts a cluster.
NANNY_WRITES = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "PYTHONHASHSEED")


@pytest.fixture(scope="module", autouse=True)
def clean_environment():
    """Workers start without MALLOC_TRIM_THRESHOLD_ whatever the caller's environment holds (with it,
    every Dask comparison on CPU warns, and warnings are errors here); what the nanny leaves behind
    is removed again for the modules after this one."""
    with _executors.restored_environ(NANNY_WRITES):
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        yield


@pytest.fixture(scope="module")
def client(crash_module, clean_environment):
    """Two single-threaded worker processes; a job whose worker dies is rerun once."""
    import dask

    with dask.config.set({**_executors.DASK_CONFIG, "distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=":0")
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture
def run(trajectory, tmp_path):
    """The tiny trajectory as a run folder: jobs ship file paths and a factory by reference."""
    trajectory.save(tmp_path / "run")
    return cz.Trajectory.from_dir(tmp_path / "run")


def l2_at(traj, step: int) -> float:
    """What Crash computes at ``step``."""
    return float(torch.cat([p.detach().reshape(-1) for p in traj.model_at(step).parameters()]).norm())


def cells_on_disk(cache) -> dict:
    """Every cached cell, less its timing: value, stderr, settings (with the cell's seed) ..."""
    out = {}
    for path in sorted(cache.rglob("*.json")):
        record = json.loads(path.read_text())
        record.pop("seconds"), record.pop("checksum")  # the checksum covers the timing
        out[path.relative_to(cache).as_posix()] = record
    return out


def assert_same(a: cz.Comparison, b: cz.Comparison) -> None:
    assert set(a.dataset.data_vars) == set(b.dataset.data_vars)
    for name, var in a.dataset.data_vars.items():
        if not name.endswith("_seconds"):
            np.testing.assert_array_equal(var.values, b.dataset[name].values, err_msg=name)


def test_every_back_end_gives_the_serial_numbers_bit_for_bit(run, model_and_data, client, tmp_path):
    data = model_and_data[1]
    results, caches = {}, {}
    backends = {"serial": None, "threads": "threads", "processes": "processes", "dask": client}
    for name, executor in backends.items():
        caches[name] = tmp_path / f"cache-{name}"
        results[name] = cz.compare(run, MEASURES, data=data, executor=executor, cache=caches[name],
                                   workers=2 if isinstance(executor, str) else None, progress=False)
    assert np.isfinite(results["serial"].dataset["gradient_variance_stderr"].values).all()
    for name in backends:
        assert_same(results["serial"], results[name])
        assert cells_on_disk(caches[name]) == cells_on_disk(caches["serial"]), name  # seeds included
    seeds = {r["settings"]["seed"] for k, r in cells_on_disk(caches["serial"]).items() if "gradient_variance" in k}
    assert len(seeds) == len(run.steps)  # one derived seed per cell


def test_a_job_ships_one_checkpoint_path_not_the_series(run, trajectory):
    cell = Cell("tiny", 20, "l2", cz.get_measure("l2"), "k")
    run.model_at(20), run.checkpoint(20).state_dict()  # loading keeps nothing that a job would ship
    view = _executors.job_trajectory(run, 20, [cell])
    assert view.steps == [20] and view.checkpoint(20).source == run.checkpoint(20).source
    assert len(pickle.dumps(view)) < 4000  # a path and a factory; the weights are 1.1 kB per step
    init = Cell("tiny", 20, "f", cz.get_measure("frobenius_distance"), "k")
    assert _executors.job_trajectory(run, 20, [init]).steps == [0, 20]  # the initial weights come along
    # A series held in memory can only ship tensors, and then only those of its job's step.
    one = _executors.job_trajectory(trajectory, 20, [cell])
    assert len(pickle.dumps(one)) < len(pickle.dumps(trajectory)) / 3


def test_a_worker_that_dies_loses_only_its_job_which_is_retried(run, client, crash_module, tmp_path):
    serial = cz.compare(run, ["l2", crash_module.Crash()], progress=False)  # Crash() never crashes
    for name, executor in {"processes": "processes", "dask": client}.items():
        crash = crash_module.Crash(at=l2_at(run, 20), marker=str(tmp_path / f"died-{name}"))
        result = cz.compare(run, ["l2", crash], executor=executor, progress=False, strict=True)
        assert (tmp_path / f"died-{name}").exists()  # a worker did die at step 20
        np.testing.assert_array_equal(result.dataset["l2"].values, serial.dataset["l2"].values)
        np.testing.assert_array_equal(result.dataset["test_crash"].values, serial.dataset["test_crash"].values)


@pytest.mark.parametrize("backend", ["dask", pytest.param("processes", marks=pytest.mark.slow)])
def test_a_job_that_always_kills_its_worker_is_given_up(backend, run, client, crash_module, tmp_path, monkeypatch):
    monkeypatch.setattr(_executors, "RETRIES", 0)  # the process pool's bound (the cluster allows 1 failure)
    executor = client if backend == "dask" else backend
    serial = cz.compare(run, ["l2"], progress=False)
    crash = crash_module.Crash(at=l2_at(run, 20), marker=str(tmp_path / "marker"), once=False)
    with pytest.warns(MeasureFailedWarning, match="WorkerLostError: The worker running step 20"):
        result = cz.compare(run, ["l2", crash], executor=executor, cache=tmp_path / "cache", progress=False)
    assert list(result.errors["step"]) == [20] and list(result.errors["error"]) == ["WorkerLostError"]
    # The job's l2 cell finished before its worker died: it is in the cache and in the result.
    np.testing.assert_array_equal(result.dataset["l2"].values, serial.dataset["l2"].values)
    assert np.isnan(result.dataset["test_crash"].sel(step=20).item())
    assert len(cells_on_disk(tmp_path / "cache")) == 2 * len(run.steps) - 1


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["dask", "processes"])
def test_strict_raises_when_a_job_always_kills_its_worker(backend, run, client, crash_module, tmp_path, monkeypatch):
    monkeypatch.setattr(_executors, "RETRIES", 0)
    executor = client if backend == "dask" else backend
    crash = crash_module.Crash(at=l2_at(run, 20), marker=str(tmp_path / "marker"), once=False)
    with pytest.raises(WorkerLostError, match=r"step 20 of run 'run'.*died"):
        cz.compare(run, [crash], executor=executor, progress=False, strict=True)


def test_unsendable_jobs_and_unknown_back_ends_are_refused_clearly(trajectory):
    local = cz.Trajectory.from_state_dicts({s: trajectory.checkpoint(s).state_dict() for s in trajectory.steps},
                                           model=lambda: mlp(), name="local")
    with cf.ProcessPoolExecutor(1) as pool, pytest.raises(ExecutorError, match="cannot be sent to worker processes"):
        cz.compare(local, ["l2"], executor=pool, progress=False)
    with pytest.raises(ExecutorError, match=r"one of \['serial', 'threads', 'processes', 'dask'\]"):
        cz.compare(trajectory, ["l2"], executor="gpu", progress=False)
    with pytest.raises(ExecutorError, match="workers must be a positive integer"):
        cz.compare(trajectory, ["l2"], executor="threads", workers=0, progress=False)


def test_a_local_closure_runs_on_dask(trajectory, client):
    """Dask sends a lambda factory by value (cloudpickle), where a process pool cannot.

    Cyclic garbage is collected first and the collector held off while the lambda is pickled:
    cloudpickle recurses deeply here (this module is imported by path, so ``mlp`` goes by value),
    and a finalizer of some earlier test's garbage that the collector ran at that depth hit the
    recursion limit once (an "exception ignored", which pytest turns into a failure)."""
    import gc

    states = {s: trajectory.checkpoint(s).state_dict() for s in trajectory.steps}
    local = cz.Trajectory.from_state_dicts(states, model=lambda: mlp(), name="tiny")
    ref = cz.Trajectory.from_state_dicts(states, model=functools.partial(mlp), name="tiny")
    gc.collect()
    gc.disable()
    try:
        remote = cz.compare(local, ["l2"], executor=client, progress=False)
    finally:
        gc.enable()
    assert_same(remote, cz.compare(ref, ["l2"], progress=False))


def test_threads_do_not_oversubscribe_and_the_setting_is_restored(trajectory):
    before = torch.get_num_threads()
    seen = []

    class Probe(cz.Measure):
        name = "test_probe"

        def compute(self, model, data=None):
            seen.append(torch.get_num_threads())
            return 1.0

    cz.compare(trajectory, [Probe()], executor="threads", workers=_executors.host_cores(), progress=False)
    assert set(seen) == {1} and torch.get_num_threads() == before


def test_cli_runs_on_a_named_back_end_and_on_a_scheduler(run, client, tmp_path):
    from complexity_zoo.cli import main

    folder = str(tmp_path / "run")
    assert main(["compare", folder, "--measures", "l2,stable_rank", "--out", str(tmp_path / "a.nc"), "--quiet"]) == 0
    assert main(["compare", folder, "--measures", "l2,stable_rank", "--out", str(tmp_path / "b.nc"), "--quiet",
                 "--executor", "threads", "--workers", "2"]) == 0
    assert main(["compare", folder, "--measures", "l2,stable_rank", "--out", str(tmp_path / "c.nc"), "--quiet",
                 "--scheduler", client.scheduler.address]) == 0
    a = cz.Comparison.load(tmp_path / "a.nc")
    for other in ("b.nc", "c.nc"):
        assert_same(a, cz.Comparison.load(tmp_path / other))
    assert main(["compare", folder, "--measures", "l2", "--out", str(tmp_path / "d.nc"), "--quiet",
                 "--scheduler", client.scheduler.address, "--workers", "2"]) == 2  # workers is the cluster's


def test_the_dask_cluster_compare_starts_gives_the_serial_numbers(run):
    assert_same(cz.compare(run, ["l2", "stable_rank"], executor="dask", workers=1, progress=False),
                cz.compare(run, ["l2", "stable_rank"], progress=False))


def test_the_dask_cluster_compare_starts_leaves_malloc_adaptive():
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers, which makes torch's CPU
    work 30-55% slower (benchmarks/malloc_trim.py); the cluster executor="dask" starts unsets it,
    and Dask's global configuration is left as it was."""
    import dask

    before = dask.config.get("distributed.nanny.pre-spawn-environ")
    environ = dict(os.environ)
    with _executors._owned("dask", 1) as c:
        seen = c.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")))
    assert list(seen.values()) == [(None, "1")]
    assert dask.config.get("distributed.nanny.pre-spawn-environ") == before
    assert dict(os.environ) == environ  # the nanny's writes into this process are undone


def test_workers_with_dasks_malloc_setting_get_a_warning_and_the_same_numbers(run, monkeypatch):
    """A cluster started with Dask's defaults (here: the variable inherited, as Dask's nanny
    leaves it in the environment of the process that starts a cluster)."""
    import dask

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # removed again after the test
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 65536}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as lc, \
            distributed.Client(lc) as c:
        with pytest.warns(ExecutorWarning, match=r"1 of 1 Dask workers run with MALLOC_TRIM_THRESHOLD_=65536"):
            result = cz.compare(run, ["l2"], executor=c, progress=False)
    assert_same(result, cz.compare(run, ["l2"], progress=False))
