"""The thread policy: one torch thread for small work, cores // slots for large, overridable by
threads= and $COMPLEXITY_ZOO_THREADS, and torch's own setting restored afterwards."""

from __future__ import annotations

import pytest
import torch

import complexity_zoo as cz
from complexity_zoo import _threads
from complexity_zoo._threads import ENV, SMALL_WORK, choose_threads, using_threads
from complexity_zoo.errors import InvalidSettingError


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def test_small_work_gets_one_thread_and_large_work_shares_the_cores(monkeypatch):
    monkeypatch.setattr(_threads, "host_cores", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert choose_threads(SMALL_WORK - 1) == 1
    assert choose_threads(SMALL_WORK) == 8 and choose_threads(None) == 8
    assert choose_threads(10 * SMALL_WORK, slots=3) == 2 and choose_threads(10 * SMALL_WORK, slots=20) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)  # OMP_NUM_THREADS=3, say: a ceiling
    assert choose_threads(SMALL_WORK) == 3 and choose_threads(SMALL_WORK, slots=4) == 2


def test_the_argument_then_the_environment_override_the_policy(monkeypatch):
    monkeypatch.setenv(ENV, "3")
    assert choose_threads(10) == 3 and choose_threads(None, slots=8) == 3
    assert choose_threads(10, threads=2) == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "two"])
def test_bad_thread_counts_are_refused(bad, monkeypatch):
    with pytest.raises(InvalidSettingError, match="threads"):
        choose_threads(10, threads=bad)
    monkeypatch.setenv(ENV, str(bad))
    with pytest.raises(InvalidSettingError, match=ENV):
        choose_threads(10)


def test_the_setting_is_restored_even_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), using_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise RuntimeError
    assert torch.get_num_threads() == before


class Probe(cz.Measure):
    name = "test_threads_probe"

    def compute(self, model, data=None):
        return float(torch.get_num_threads())


def test_compare_runs_each_job_on_the_policy_s_threads(trajectory, monkeypatch):
    before = torch.get_num_threads()
    seen = cz.compare(trajectory, [Probe()], progress=False, strict=True).dataset["test_threads_probe"]
    assert set(seen.values.ravel()) == {1.0}  # a tiny MLP: one thread
    seen = cz.compare(trajectory, [Probe()], progress=False, strict=True, threads=2).dataset["test_threads_probe"]
    assert set(seen.values.ravel()) == {2.0}
    monkeypatch.setenv(ENV, "3")
    seen = cz.compare(trajectory, [Probe()], progress=False, strict=True).dataset["test_threads_probe"]
    assert set(seen.values.ravel()) == {3.0}
    assert torch.get_num_threads() == before
    with pytest.raises(InvalidSettingError):
        cz.compare(trajectory, [Probe()], progress=False, threads=0)


def test_training_uses_the_policy_s_threads_and_restores_torch_s(tmp_path, monkeypatch):
    from complexity_zoo.tasks.modular import train

    before, seen = torch.get_num_threads(), []
    kwargs = dict(p=7, model="mlp", model_kwargs={"d_embed": 4, "d_hidden": 8}, epochs=1, progress=False,
                  callback=lambda step, metrics: seen.append(torch.get_num_threads()))
    train(tmp_path / "a", **kwargs)
    train(tmp_path / "b", threads=2, **kwargs)
    assert seen == [1, 1, 2, 2] and torch.get_num_threads() == before
    with pytest.raises(InvalidSettingError):
        train(tmp_path / "c", threads=0, **kwargs)


def test_blas_and_openmp_pools_follow_and_are_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy  # noqa: F401  (its BLAS is one of the pools)

    before = {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}
    target = 2 if set(before.values()) == {1} else 1  # a change, whatever OMP_NUM_THREADS says
    with using_threads(target):
        assert {i["num_threads"] for i in threadpoolctl.threadpool_info()} == {target}
    assert {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()} == before
