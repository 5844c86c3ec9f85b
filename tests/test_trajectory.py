"""Trajectories: constructors, the run-folder round trip, lazy loading and bad checkpoints."""

from __future__ import annotations

import collections
import functools
import json

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from complexity_zoo import Trajectory
from complexity_zoo.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    TrajectoryError,
    UnsafeCheckpointError,
)
from complexity_zoo.testing import mlp
from complexity_zoo.trajectory import Checkpoint, RunWriter, step_from_filename


def state(seed):
    torch.manual_seed(seed)
    return mlp().state_dict()


def test_from_state_dicts_orders_steps_and_aligns_metrics():
    metrics = pd.DataFrame({"step": [0, 5, 10, 20], "train_loss": [2.0, 1.5, 1.0, 0.5]})
    traj = Trajectory.from_state_dicts({20: state(2), 0: state(0), 10: state(1)}, model=mlp, metrics=metrics)
    assert traj.steps == [0, 10, 20]
    assert traj.metrics["train_loss"].tolist() == [2.0, 1.0, 0.5]
    model = traj.model_at(10)
    for k, v in state(1).items():
        assert torch.equal(model.state_dict()[k], v)
    assert not model.training


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_from_files_reads_steps_from_names(tmp_path, suffix):
    for step in (100, 20, 3000):
        path = tmp_path / f"step{step:06d}{suffix}"
        if suffix == ".pt":
            torch.save(state(step), path)
        else:
            save_file(state(step), str(path))
    traj = Trajectory.from_files(str(tmp_path / f"*{suffix}"), model=mlp)
    assert traj.steps == [20, 100, 3000]
    assert torch.equal(traj.model_at(3000).state_dict()["0.weight"], state(3000)["0.weight"])


def test_from_files_accepts_nested_state_dict_and_metrics_files(tmp_path):
    torch.save({"model": state(0), "step": 7}, tmp_path / "ckpt_7.pt")
    torch.save({"state_dict": state(1)}, tmp_path / "ckpt_9.pt")
    pd.DataFrame({"step": [7, 9], "test_acc": [0.1, 0.9]}).to_json(tmp_path / "m.json")
    traj = Trajectory.from_files([tmp_path / "ckpt_7.pt", tmp_path / "ckpt_9.pt"], model=mlp,
                                 metrics=tmp_path / "m.json")
    assert traj.metrics["test_acc"].tolist() == [0.1, 0.9]
    assert torch.equal(traj.model_at(9).state_dict()["2.bias"], state(1)["2.bias"])


def test_loading_is_lazy():
    calls = collections.Counter()

    def loader(step):
        calls[step] += 1
        return state(step)

    ckpts = [Checkpoint(s, functools.partial(loader, s)) for s in (0, 1, 2)]
    traj = Trajectory(ckpts, model=mlp)
    assert traj.steps == [0, 1, 2] and not calls
    traj.model_at(1)
    assert calls == {1: 1}


def test_subset_shares_the_lazy_checkpoints_and_leaves_the_run_whole():
    calls = collections.Counter()

    def loader(step):
        calls[step] += 1
        return state(step)

    metrics = pd.DataFrame({"step": [0, 1, 2, 3], "test_loss": [4.0, 3.0, 2.0, 1.0]})
    traj = Trajectory([Checkpoint(s, functools.partial(loader, s)) for s in (0, 1, 2)], model=mlp,
                      metrics=metrics, name="r")
    part = traj.subset([2, 0])
    assert part.steps == [0, 2] and traj.steps == [0, 1, 2] and part.name == "r" and not calls
    assert part.metrics["test_loss"].tolist() == [4.0, 2.0]
    assert part.checkpoint(2) is traj.checkpoint(2)
    torch.testing.assert_close(part.model_at(2).state_dict()["0.weight"], state(2)["0.weight"])
    assert calls == {2: 1}
    bare = traj.subset([1], metrics=False)
    assert bare.steps == [1] and bare.metrics["test_loss"].tolist() == [3.0]  # the checkpoint's own row
    assert bare._all_metrics.empty and len(traj._all_metrics) == 4  # the logged table (step 3 too) stays behind
    with pytest.raises(TrajectoryError, match="no step 5"):
        traj.subset([0, 5])
    with pytest.raises(TrajectoryError, match="at least one step"):
        traj.subset([])
    with pytest.raises(TrajectoryError, match="not an integer"):
        traj.subset([1.5])


def test_run_folder_round_trip(tmp_path, trajectory):
    out = trajectory.save(tmp_path / "run")
    meta = json.loads((out / "run.json").read_text())
    assert meta["format"] == 1 and meta["model"]["factory"] == "complexity_zoo.testing:mlp"
    back = Trajectory.from_dir(out)
    assert back.steps == trajectory.steps and back.name == "run"
    pd.testing.assert_frame_equal(back.metrics, trajectory.metrics, check_dtype=False, check_like=True)
    for step in trajectory.steps:
        a, b = trajectory.model_at(step).state_dict(), back.model_at(step).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[0] == "step_00000000.safetensors"


def test_run_writer_widens_metrics_and_refuses_another_run(tmp_path):
    spec = {"factory": "complexity_zoo.testing:mlp", "kwargs": {}}
    w = RunWriter(tmp_path / "r", model=spec)
    w.write_checkpoint(0, state(0), {"train_loss": 2.0})
    w.write_checkpoint(10, state(1), {"train_loss": 1.0, "test_acc": 0.5})
    df = pd.read_csv(tmp_path / "r" / "metrics.csv")
    assert list(df.columns) == ["step", "test_acc", "train_loss"] and df["train_loss"].tolist() == [2.0, 1.0]
    with pytest.raises(TrajectoryError, match="different run"):
        RunWriter(tmp_path / "r", model={"factory": "complexity_zoo.testing:mlp", "kwargs": {"hidden": 3}})


def test_save_needs_an_importable_factory(tmp_path):
    traj = Trajectory.from_state_dicts({0: state(0)}, model=lambda: mlp())
    with pytest.raises(TrajectoryError, match="importable module-level callable"):
        traj.save(tmp_path / "x")


def test_step_from_filename():
    assert step_from_filename("ckpts/step000100.pt") == 100
    assert step_from_filename("run3/epoch_12-step_4500.safetensors") == 4500
    with pytest.raises(TrajectoryError, match="No step number"):
        step_from_filename("final.pt")


# -- bad input ------------------------------------------------------------------------------
def test_missing_files_and_folders(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="No checkpoint files match"):
        Trajectory.from_files(str(tmp_path / "*.pt"), model=mlp)
    with pytest.raises(CheckpointNotFoundError, match="nope.pt"):
        Trajectory.from_files([tmp_path / "nope.pt"], model=mlp)
    with pytest.raises(CheckpointNotFoundError, match="no run.json"):
        Trajectory.from_dir(tmp_path)
    with pytest.raises(FileNotFoundError):
        Trajectory.from_dir(tmp_path / "absent")


def test_duplicate_steps_name_both_files(tmp_path):
    torch.save(state(0), tmp_path / "a_step10.pt")
    save_file(state(1), str(tmp_path / "b_step10.safetensors"))
    with pytest.raises(TrajectoryError, match="Two checkpoints have step 10.*a_step10.pt.*b_step10.safetensors"):
        Trajectory.from_files([tmp_path / "a_step10.pt", tmp_path / "b_step10.safetensors"], model=mlp)


@pytest.mark.parametrize("name, content", [("garbage_1.pt", b"not a checkpoint at all"),
                                           ("garbage_2.safetensors", b"\x00\x01\x02junk")])
def test_corrupt_files_name_the_file(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    traj = Trajectory.from_files([tmp_path / name], model=mlp)
    with pytest.raises(CheckpointError, match=name):
        traj.model_at(traj.steps[0])


def test_truncated_safetensors_names_the_file(tmp_path):
    path = tmp_path / "step_5.safetensors"
    save_file(state(0), str(path))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CheckpointError, match="step_5.safetensors"):
        Trajectory.from_files([path], model=mlp).model_at(5)


class Payload:
    """Stands for any Python object inside a pickle: what weights_only loading refuses."""


def test_pickled_objects_are_refused_with_the_global_named(tmp_path):
    path = tmp_path / "step_1.pt"
    torch.save({"state_dict": state(0), "extra": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"Payload.*Trajectory.from_state_dicts"):
        Trajectory.from_files([path], model=mlp).model_at(1)


def test_keys_and_shapes_that_do_not_fit_are_named():
    sd = state(0)
    sd["extra.weight"] = torch.zeros(2)
    del sd["2.bias"]
    sd["0.weight"] = torch.zeros(5, 5)
    traj = Trajectory.from_state_dicts({3: sd}, model=mlp)
    with pytest.raises(CheckpointError) as info:
        traj.model_at(3)
    msg = str(info.value)
    assert "missing keys [2.bias]" in msg and "unexpected keys [extra.weight]" in msg
    assert "0.weight: checkpoint (5, 5) vs model (16, 4)" in msg


def test_bad_metrics():
    with pytest.raises(TrajectoryError, match="'step' column"):
        Trajectory.from_state_dicts({0: state(0)}, model=mlp, metrics=pd.DataFrame({"epoch": [0]}))
    with pytest.raises(TrajectoryError, match="does not exist"):
        Trajectory.from_state_dicts({0: state(0)}, model=mlp, metrics="missing.csv")
