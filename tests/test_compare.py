"""compare(): values, metrics, failures, the cache, executors and the netCDF round trip."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import json

import numpy as np
import pytest
import torch
import xarray as xr

import complexity_zoo as cz
from complexity_zoo.errors import MeasureFailedWarning, MissingDataError, NonFiniteError
from complexity_zoo.testing import mlp

WEIGHT_MEASURES = ["l2", "param_count", "effective_rank", "spectral_entropy", "stable_rank", "naive_compression"]


def test_values_equal_direct_calls_and_metrics_come_along(trajectory):
    result = cz.compare(trajectory, WEIGHT_MEASURES, progress=False)
    ds = result.dataset
    assert dict(ds.sizes) == {"run": 1, "step": 5}
    assert result.measures == WEIGHT_MEASURES
    for step in trajectory.steps:
        model = trajectory.model_at(step)
        for name in WEIGHT_MEASURES:
            assert ds[name].sel(run="tiny", step=step).item() == cz.get_measure(name)(model).value
    assert np.allclose(ds["train_loss"].sel(run="tiny").values, trajectory.metrics["train_loss"].values)
    assert ds["l2"].attrs["role"] == "measure" and ds["naive_compression"].attrs["unit"] == "bits"
    assert set(json.loads(ds.attrs["measures"])) == set(WEIGHT_MEASURES)
    assert ds.attrs["torch_version"] == torch.__version__
    tidy = result.to_dataframe()
    assert len(tidy) == 5 * len(WEIGHT_MEASURES)
    assert list(tidy.columns) == ["run", "step", "measure", "value", "stderr", "unit"]
    assert result.extras("l2", step=40)["per_layer"].keys() == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_save_and_load_lose_nothing(tmp_path, trajectory):
    bad = dict(trajectory.checkpoint(20).state_dict())
    bad["0.weight"] = torch.full_like(bad["0.weight"], float("nan"))
    states = {s: trajectory.checkpoint(s).state_dict() for s in trajectory.steps}
    states[20] = bad
    traj = cz.Trajectory.from_state_dicts(states, model=mlp, metrics=trajectory.metrics, name="tiny")
    with pytest.warns(MeasureFailedWarning):
        result = cz.compare(traj, ["l2", "stable_rank"], progress=False)
    path = result.save(tmp_path / "out" / "r.nc")
    back = cz.Comparison.load(path)
    xr.testing.assert_identical(back.dataset, result.dataset)
    assert back.errors.equals(result.errors)
    assert back.extras("stable_rank", step=40) == result.extras("stable_rank", step=40)


def test_a_failing_cell_is_nan_recorded_and_warned(trajectory):
    states = {s: dict(trajectory.checkpoint(s).state_dict()) for s in trajectory.steps}
    states[30]["2.bias"][0] = float("inf")
    traj = cz.Trajectory.from_state_dicts(states, model=mlp, name="broken")
    with pytest.warns(MeasureFailedWarning) as caught:
        result = cz.compare(traj, ["l2", "param_count"], progress=False)
    assert "Measure 'l2' failed at step 30 of run 'broken'" in str(caught[0].message)
    assert np.isnan(result.dataset["l2"].sel(run="broken", step=30).item())
    assert np.isfinite(result.dataset["l2"].sel(run="broken", step=40).item())
    assert len(result.errors) == 2
    row = result.errors.iloc[0]
    assert (row["step"], row["error"]) == (30, "NonFiniteError") and "'2.bias'" in row["message"]
    with pytest.raises(NonFiniteError, match="2.bias"):
        cz.compare(traj, ["l2"], progress=False, strict=True)


def test_a_checkpoint_that_does_not_load_fails_only_its_cells(tmp_path, trajectory):
    trajectory.save(tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "step_00000010.safetensors").write_bytes(b"torn")
    with pytest.warns(MeasureFailedWarning, match="step_00000010.safetensors"):
        result = cz.compare(cz.Trajectory.from_dir(tmp_path / "run"), ["l2"], progress=False)
    assert int(np.isnan(result.dataset["l2"].values).sum()) == 1


class CountingL2(cz.Measure):
    """L2 norm that counts its calls and can be told to interrupt, like a Ctrl-C."""

    scale: float = 1.0
    calls = 0
    interrupt_at: int | None = None

    def compute(self, model, data=None):
        CountingL2.calls += 1
        if CountingL2.calls == CountingL2.interrupt_at:
            raise KeyboardInterrupt
        return self.scale * float(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).norm())


def test_cache_resumes_after_an_interrupt(tmp_path, trajectory, scratch_registry):
    cz.register_measure("test_counting_l2")(CountingL2)
    CountingL2.calls, CountingL2.interrupt_at = 0, 3  # two cells finish, the third is interrupted
    with pytest.raises(KeyboardInterrupt):
        cz.compare(trajectory, ["test_counting_l2"], cache=tmp_path / "cache", progress=False)
    CountingL2.calls, CountingL2.interrupt_at = 0, None
    resumed = cz.compare(trajectory, ["test_counting_l2"], cache=tmp_path / "cache", progress=False)
    assert CountingL2.calls == 3  # only the five checkpoints minus the two finished ones
    fresh = cz.compare(trajectory, ["test_counting_l2"], progress=False)
    np.testing.assert_array_equal(resumed.dataset["test_counting_l2"].values,
                                  fresh.dataset["test_counting_l2"].values)
    CountingL2.calls = 0
    cz.compare(trajectory, ["test_counting_l2"], cache=tmp_path / "cache", progress=False)
    assert CountingL2.calls == 0  # everything cached
    cz.compare(trajectory, [("test_counting_l2", {"scale": 2.0})], cache=tmp_path / "cache", progress=False)
    assert CountingL2.calls == 5  # a changed setting is a different entry


def test_executor_gives_the_serial_result(trajectory):
    serial = cz.compare(trajectory, ["l2", "effective_rank"], progress=False)
    with cf.ThreadPoolExecutor(2) as pool:
        parallel = cz.compare(trajectory, ["l2", "effective_rank"], executor=pool, progress=False)
    for name in ("l2", "effective_rank"):
        np.testing.assert_array_equal(serial.dataset[name].values, parallel.dataset[name].values)


def test_several_runs_steps_and_repeated_measures(trajectory):
    states = {s: trajectory.checkpoint(s).state_dict() for s in trajectory.steps[:3]}
    other = cz.Trajectory.from_state_dicts(states, model=functools.partial(mlp), name="short")
    result = cz.compare([trajectory, other], ["l2", ("naive_compression", {"compressor": "zlib"}),
                                             "naive_compression"], steps=[0, 20, 40], progress=False)
    ds = result.dataset
    assert ds["run"].values.tolist() == ["tiny", "short"] and ds["step"].values.tolist() == [0, 20, 40]
    assert np.isnan(ds["l2"].sel(run="short", step=40).item())
    assert set(result.measures) == {"l2", "naive_compression[compressor=zlib]", "naive_compression[]"}


def test_data_measures_need_data_up_front(scratch_registry, trajectory):
    @cz.register_measure("test_train_loss")
    class TrainLoss(cz.Measure):
        """Mean training loss."""

        needs_data = True

        def compute(self, model, data):
            return data.evaluate(model)["loss"]

    with pytest.raises(MissingDataError, match="test_train_loss"):
        cz.compare(trajectory, ["l2", "test_train_loss"], progress=False)
    _, data = __import__("complexity_zoo.testing", fromlist=["x"]).tiny_classifier(1)
    result = cz.compare(trajectory, ["test_train_loss"], data=data, progress=False)
    np.testing.assert_allclose(result.dataset["test_train_loss"].sel(run="tiny").values,
                               trajectory.metrics["train_loss"].values, rtol=1e-6)


def test_stochastic_measures_get_the_compare_seed(scratch_registry, trajectory):
    @cz.register_measure("test_noisy")
    class Noisy(cz.Measure):
        """A seeded random number with a stderr."""

        stochastic = True
        seed: int | None = None

        def compute(self, model, data=None):
            g = torch.Generator().manual_seed(self.seed)
            return cz.MeasureResult(float(torch.rand(1, generator=g)), stderr=0.1, diagnostics={"r_hat": 1.0})

    a = cz.compare(trajectory, ["test_noisy"], seed=3, progress=False).dataset
    b = cz.compare(trajectory, ["test_noisy"], seed=3, progress=False).dataset
    c = cz.compare(trajectory, ["test_noisy"], seed=4, progress=False).dataset
    assert a["test_noisy"].equals(b["test_noisy"]) and not a["test_noisy"].equals(c["test_noisy"])
    assert float(a["test_noisy_stderr"].max()) == 0.1 and float(a["test_noisy_r_hat"].min()) == 1.0
