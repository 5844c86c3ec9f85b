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
from complexity_zoo._cache import CACHE_FORMAT
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
    with pytest.raises(KeyboardInterrupt, match=r"interrupted after 2 of 5 cells.*run the same comparison"):
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


# -- the cache follows content ----------------------------------------------------------------
CALLS: dict[str, int] = {}


class CountingWeights(cz.Measure):
    """Sum of the first layer's weights; counts its calls."""

    def compute(self, model, data=None):
        CALLS["weights"] = CALLS.get("weights", 0) + 1
        return float(next(model.parameters()).detach().sum())


class CountingLoss(cz.Measure):
    """Mean per-example loss on the training split; counts its calls."""

    needs_data = True

    def compute(self, model, data):
        CALLS["loss"] = CALLS.get("loss", 0) + 1
        with torch.no_grad():
            return float(torch.cat([data.per_example_loss(model, b) for b in data.batches()]).mean())


def gelu_mlp(in_features: int = 4, hidden: int = 16, out_features: int = 3) -> torch.nn.Module:
    """The test MLP's architecture with GELU: the same state dict, another function."""
    return torch.nn.Sequential(torch.nn.Linear(in_features, hidden), torch.nn.GELU(),
                               torch.nn.Linear(hidden, out_features))


def scaled_loss(scale: float):
    def loss(model, batch):
        return scale * torch.nn.functional.cross_entropy(model(batch[0]), batch[1], reduction="none")
    return loss


def test_changing_factory_labels_loss_or_a_file_invalidates_exactly_its_cells(tmp_path, trajectory, scratch_registry):
    import os
    import shutil

    cz.register_measure("test_count_w")(CountingWeights)
    cz.register_measure("test_count_loss")(CountingLoss)
    _, data = __import__("complexity_zoo.testing", fromlist=["x"]).tiny_classifier(1)
    root = trajectory.save(tmp_path / "run")
    cache = tmp_path / "cache"

    def calls(traj, d, **kw):
        CALLS.clear()
        result = cz.compare(traj, ["test_count_w", "test_count_loss"], data=d, cache=cache, progress=False, **kw)
        return (CALLS.get("weights", 0), CALLS.get("loss", 0)), result

    relu = cz.Trajectory.from_dir(root)
    assert calls(relu, data)[0] == (5, 5)
    assert calls(relu, data)[0] == (0, 0)
    gelu = cz.Trajectory.from_dir(root, model=gelu_mlp)
    (n, gelu_result), (_, relu_result) = calls(gelu, data), calls(relu, data)
    assert n == (5, 5)  # another factory: every cell is new (LMN of a GELU net is not a ReLU net's)
    assert not np.array_equal(gelu_result.dataset["test_count_loss"], relu_result.dataset["test_count_loss"])
    x, y = data.train
    shuffled = cz.Data.from_tensors((x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]),
                                    data.test, batch_size=data.batch_size)
    assert calls(relu, shuffled)[0] == (0, 5)  # new labels: only the cells that read the data
    one = cz.Data.from_tensors(data.train, data.test, loss=scaled_loss(1.0), batch_size=data.batch_size)
    hundred = cz.Data.from_tensors(data.train, data.test, loss=scaled_loss(100.0), batch_size=data.batch_size)
    assert one.fingerprint() != hundred.fingerprint() != data.fingerprint()
    assert calls(relu, one)[0] == (0, 5) and calls(relu, hundred)[0] == (0, 5) and calls(relu, one)[0] == (0, 0)
    # A file edited in place, mtime and size unchanged: only its step's cells are recomputed.
    path = root / "checkpoints" / "step_00000020.safetensors"
    st = os.stat(path)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1  # the last byte of the last tensor
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert calls(cz.Trajectory.from_dir(root), data)[0] == (1, 1)
    # Moving the run folder keeps every cell.
    shutil.move(root, tmp_path / "moved")
    assert calls(cz.Trajectory.from_dir(tmp_path / "moved"), data)[0] == (0, 0)


@pytest.mark.parametrize("damage", ["{}", "", "{\"value\": 1.0", "[1, 2]", "\xff\xfe", "null", "NaN",
                                    "WRONG_KEY", "OLD_FORMAT", "NO_VALUE"])
def test_a_damaged_cache_cell_is_recomputed(tmp_path, trajectory, damage):
    cache = tmp_path / "cache"
    first = cz.compare(trajectory, ["l2"], cache=cache, progress=False).dataset["l2"].values
    files = sorted((cache / "l2").glob("*.json"))
    assert len(files) == 5
    good = json.loads(files[0].read_text())
    text = {"WRONG_KEY": json.dumps({**good, "key": "0" * 40}), "OLD_FORMAT": json.dumps({**good, "format": 1}),
            "NO_VALUE": json.dumps({k: v for k, v in good.items() if k != "value"})}.get(damage, damage)
    files[0].write_bytes(text.encode("utf-8", "surrogateescape") if damage != "\xff\xfe" else b"\xff\xfe")
    with pytest.warns(cz.errors.CacheWarning, match=f"{files[0].name}.*is not used.*computed again"):
        again = cz.compare(trajectory, ["l2"], cache=cache, progress=False).dataset["l2"].values
    np.testing.assert_array_equal(first, again)
    assert json.loads(files[0].read_text())["value"] == good["value"]  # rewritten whole


def test_a_dataloader_needs_a_data_id_to_be_cached(tmp_path, trajectory, scratch_registry):
    cz.register_measure("test_count_loss")(CountingLoss)
    _, data = __import__("complexity_zoo.testing", fromlist=["x"]).tiny_classifier(1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data.train), batch_size=32)
    with pytest.raises(cz.errors.DataError, match="data_id"):
        cz.compare(trajectory, ["test_count_loss"], data=cz.Data(loader), cache=tmp_path / "c", progress=False)
    cz.compare(trajectory, ["test_count_loss"], data=cz.Data(loader), progress=False)  # no cache: fine
    named = cz.Data(loader, data_id="tiny-train-v1")
    CALLS.clear()
    cz.compare(trajectory, ["test_count_loss"], data=named, cache=tmp_path / "c", progress=False)
    cz.compare(trajectory, ["test_count_loss"], data=named, cache=tmp_path / "c", progress=False)
    assert CALLS["loss"] == 5


# -- killed at random times -------------------------------------------------------------------
KILLED_SCRIPT = '''
import sys, time
import torch
import complexity_zoo as cz
from complexity_zoo.cli import main

@cz.register_measure("test_slow_l2")
class SlowL2(cz.Measure):
    """L2 norm, slowly."""

    def compute(self, model, data=None):
        time.sleep(0.05)
        return float(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).norm())

print("START", flush=True)
sys.exit(main(["compare", sys.argv[1], "--measures", "l2,test_slow_l2,effective_rank,naive_compression",
               "--cache", sys.argv[2], "--out", sys.argv[3], "--quiet"]))
'''


def _cache_state(cache) -> dict[str, bytes]:
    """Every cell file of the cache; each must parse as a complete record."""
    files = {str(p): p.read_bytes() for p in cache.rglob("*.json")} if cache.exists() else {}
    for path, raw in files.items():
        record = json.loads(raw)
        assert record["value"] is not None and record["format"] == CACHE_FORMAT, path
    return files


def _start(script, run, cache, out):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, str(script), str(run), str(cache), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "START"
    return proc


@pytest.mark.parametrize("kills", [2, pytest.param(8, marks=pytest.mark.slow)])
def test_killed_at_random_times_loses_no_cell_and_resumes_bit_identically(tmp_path, kills):
    import random
    import signal
    import time

    states = {s: {k: v + 0.01 * s for k, v in mlp().state_dict().items()} for s in range(24)}
    run = cz.Trajectory.from_state_dicts(states, model=mlp, name="killed").save(tmp_path / "killed")
    script = tmp_path / "script.py"
    script.write_text(KILLED_SCRIPT)
    cache, out = tmp_path / "cache", tmp_path / "out.nc"
    rng = random.Random(0)
    seen: dict[str, bytes] = {}
    for _ in range(kills):
        proc = _start(script, run, cache, out)
        time.sleep(rng.uniform(0.0, 0.3))  # a fraction of the computation (24 x 0.05 s and more)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        now = _cache_state(cache)
        assert all(now.get(path) == raw for path, raw in seen.items())  # nothing finished is lost
        seen = now
    # SIGTERM: a clean stop that says how to resume.
    proc = _start(script, run, cache, out)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    if proc.returncode == 130:  # (it may have finished first)
        assert "interrupted" in err and "--cache" in err and str(cache) in err
    assert all(_cache_state(cache).get(p) == raw for p, raw in seen.items())
    proc = _start(script, run, cache, out)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    resumed = cz.Comparison.load(out).dataset
    fresh = cz.compare(cz.Trajectory.from_dir(run), ["l2", "effective_rank", "naive_compression"],
                       progress=False).dataset
    for name in ("l2", "effective_rank", "naive_compression"):
        np.testing.assert_array_equal(resumed[name].values, fresh[name].values)
    assert len(_cache_state(cache)) == 4 * 24


def test_each_cell_gets_its_own_seed_derived_from_the_compare_seed(trajectory):
    from complexity_zoo.compare import derive_seed
    from complexity_zoo.testing import tiny_classifier

    _, data = tiny_classifier(1)
    spec = [("lmn", {"num_samples": 12})]
    a = cz.compare(trajectory, spec, data=data, seed=3, progress=False).dataset["lmn"].sel(run="tiny")
    b = cz.compare(trajectory, spec, data=data, seed=3, progress=False).dataset["lmn"].sel(run="tiny")
    c = cz.compare(trajectory, spec, data=data, seed=4, progress=False).dataset["lmn"].sel(run="tiny")
    assert a.equals(b) and not a.equals(c)
    unset = cz.get_measure("lmn", num_samples=12)
    seeds = [derive_seed(3, "tiny", s, unset) for s in trajectory.steps]
    assert len(set(seeds)) == len(seeds)  # independent cells
    for step, seed in zip(trajectory.steps, seeds):  # the rule, recomputed by hand
        direct = cz.get_measure("lmn", num_samples=12, seed=seed)(trajectory.model_at(step), data).value
        assert direct == a.sel(step=step).item()
    # A seed given on the measure is used as is in every cell: the same inputs at every step.
    fixed = cz.compare(trajectory, [("lmn", {"num_samples": 12, "seed": 0})], data=data, seed=3, progress=False)
    for step in trajectory.steps:
        direct = cz.get_measure("lmn", num_samples=12, seed=0)(trajectory.model_at(step), data).value
        assert direct == fixed.dataset["lmn"].sel(run="tiny", step=step).item()
