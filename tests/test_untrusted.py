"""Untrusted and damaged inputs: a run folder, checkpoint or cache is data and never runs code.

Each case builds a hostile or corrupt input, asserts its specific error, and that the marker
file the attack would create never appears.
"""

from __future__ import annotations

import argparse
import json
import sys

import pytest
import torch
from safetensors.torch import save_file

import complexity_zoo as cz
from complexity_zoo._trust import allow_factory, disallow_factory
from complexity_zoo.cli import main
from complexity_zoo.errors import (
    CheckpointError,
    FactoryArgumentsError,
    NotACheckpointError,
    TrajectoryError,
    UntrustedCodeError,
)
from complexity_zoo.testing import mlp


def run_folder(tmp_path, spec: dict, name: str = "run"):
    """A valid run folder of the test MLP whose run.json names ``spec`` as its model."""
    traj = cz.Trajectory.from_state_dicts({0: mlp().state_dict(), 10: mlp().state_dict()}, model=mlp)
    root = traj.save(tmp_path / name)
    meta = json.loads((root / "run.json").read_text())
    meta["model"] = spec
    (root / "run.json").write_text(json.dumps(meta))
    return root


def hostile_specs(marker):
    return {
        "os_system": {"factory": "os:system", "kwargs": {"command": f"touch {marker}"}},
        "subprocess_run": {"factory": "subprocess:run", "kwargs": {"args": f"touch {marker}", "shell": True}},
        "path_touch": {"factory": "pathlib:Path.touch", "kwargs": {"self": str(marker)}},
    }


# -- run.json names a callable ----------------------------------------------------------------
@pytest.mark.parametrize("attack", ["os_system", "subprocess_run", "path_touch"])
def test_a_run_folder_cannot_name_any_callable(tmp_path, attack, capsys):
    marker = tmp_path / "PWNED"
    root = run_folder(tmp_path, hostile_specs(marker)[attack])
    with pytest.raises(UntrustedCodeError, match=r"Refusing to import the model factory.*trust=True.*--model"):
        cz.Trajectory.from_dir(root)
    assert main(["compare", str(root), "--measures", "l2", "--out", str(tmp_path / "r.nc"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Refusing to import the model factory" in err and "--trust" in err
    assert not marker.exists() and not (tmp_path / "r.nc").exists()


def test_a_module_shipped_in_the_run_folder_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    root = run_folder(tmp_path, {"factory": "evil_zoo_factory:build", "kwargs": {}})
    (root / "evil_zoo_factory.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\ndef build():\n    return None\n"
    )
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(UntrustedCodeError, match="evil_zoo_factory:build"):
        cz.Trajectory.from_dir(root)
    assert not marker.exists() and "evil_zoo_factory" not in sys.modules


def test_opting_in_model_trust_and_the_allow_list(tmp_path, capsys):
    spec = {"factory": "complexity_zoo.testing:tiny_mlp_not_allowed", "kwargs": {}}
    root = run_folder(tmp_path, spec)
    with pytest.raises(UntrustedCodeError):
        cz.Trajectory.from_dir(root)
    assert cz.Trajectory.from_dir(root, model=mlp).steps == [0, 10]  # the caller's own model
    with pytest.raises(TrajectoryError, match="Cannot import"):  # trusted, but it does not exist
        cz.Trajectory.from_dir(root, trust=True)
    run_folder(tmp_path, {"factory": "complexity_zoo.testing:tiny_classifier", "kwargs": {}}, "r2")
    with pytest.raises(UntrustedCodeError):
        cz.Trajectory.from_dir(tmp_path / "r2")
    allow_factory("complexity_zoo.testing:tiny_classifier")
    try:
        assert cz.Trajectory.from_dir(tmp_path / "r2").steps == [0, 10]
    finally:
        disallow_factory("complexity_zoo.testing:tiny_classifier")
    # The CLI: --model names the factory instead (the user's choice), --trust allows the named one.
    out = tmp_path / "m.nc"
    assert main(["compare", str(root), "--measures", "l2", "--out", str(out), "--quiet",
                 "--model", "complexity_zoo.testing:mlp"]) == 0
    spec = {"factory": "complexity_zoo.testing:mlp", "kwargs": {"hidden": 16}}
    disallow_factory("complexity_zoo.testing:mlp")
    try:
        run_folder(tmp_path, spec, "r3")
        assert main(["compare", str(tmp_path / "r3"), "--measures", "l2", "--out", str(out), "--quiet"]) == 2
        assert main(["compare", str(tmp_path / "r3"), "--measures", "l2", "--out", str(out), "--quiet",
                     "--trust"]) == 0
    finally:
        allow_factory("complexity_zoo.testing:mlp")


def test_factory_kwargs_it_does_not_take_fail_before_computing(tmp_path, capsys):
    root = run_folder(tmp_path, {"factory": "complexity_zoo.testing:mlp", "kwargs": {"depth": 3}})
    with pytest.raises(FactoryArgumentsError, match="does not take the kwargs"):
        cz.Trajectory.from_dir(root)
    assert main(["compare", str(root), "--measures", "l2", "--out", str(tmp_path / "r.nc"), "--quiet"]) == 2
    assert "does not take the kwargs" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["[1, 2]", '"run"', "3", "null"])
def test_run_json_that_is_not_an_object(tmp_path, content):
    root = run_folder(tmp_path, {"factory": "complexity_zoo.testing:mlp", "kwargs": {}})
    (root / "run.json").write_text(content)
    with pytest.raises(TrajectoryError, match="not an object"):
        cz.Trajectory.from_dir(root)


# -- adapters ---------------------------------------------------------------------------------
def gpt2_config() -> dict:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16, n_positions=8)
    return {**cfg.to_dict(), "architectures": ["GPT2LMHeadModel"]}


def test_hf_config_with_auto_map_never_runs_its_code(tmp_path):
    from complexity_zoo.adapters import huggingface as hf

    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "out" / "checkpoint-1"
    ckpt.mkdir(parents=True)
    config = {**gpt2_config(), "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"},
              "architectures": ["EvilModel"]}
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    save_file({"w": torch.zeros(2)}, str(ckpt / "model.safetensors"))
    with pytest.raises(UntrustedCodeError, match="auto_map.*never does.*model=factory"):
        hf.model_from_config(str(ckpt))
    traj = hf.load_trajectory(tmp_path / "out")  # loading is lazy: the model is built when used
    with pytest.raises(UntrustedCodeError, match="auto_map"):
        traj.model_at(1)
    assert not marker.exists()


@pytest.mark.parametrize("shard", ["../outside.safetensors", "ABSOLUTE", "link.safetensors"])
def test_hf_shard_index_cannot_leave_its_folder(tmp_path, shard):
    from complexity_zoo.adapters import huggingface as hf

    outside = tmp_path / "outside.safetensors"
    save_file({"w": torch.ones(2)}, str(outside))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    if shard == "ABSOLUTE":
        shard = str(outside)
    if shard == "link.safetensors":
        (folder / shard).symlink_to(outside)
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(UntrustedCodeError, match="outside"):
        hf.load_weights(index)
    with pytest.raises(UntrustedCodeError, match="outside"):
        hf.weight_files(index)


def test_timm_stored_model_kwargs_that_name_files_are_dropped(tmp_path):
    pytest.importorskip("timm")
    from complexity_zoo.adapters import timm as zoo_timm

    target = tmp_path / "elsewhere.pth"  # create_model would open it (and fail: it does not exist)
    args = argparse.Namespace(model_kwargs={"checkpoint_path": str(target), "pretrained_cfg_overlay":
                                            {"file": str(target)}, "pretrained": True, "drop_rate": 0.1})
    kwargs = zoo_timm._model_kwargs(tmp_path / "c.pth.tar", {"arch": "test_efficientnet", "args": args},
                                    {}, num_classes=4)
    assert kwargs == {"arch": "test_efficientnet", "drop_rate": 0.1, "num_classes": 4}
    model = zoo_timm.model_from_arch("test_efficientnet", num_classes=4, checkpoint_path=str(target))
    assert isinstance(model, torch.nn.Module)


# -- corrupt files ----------------------------------------------------------------------------
def _zip_without_data_pkl(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/version", "3")


CORRUPT = {
    "text": (lambda p: p.write_text("101 checkpoints coming soon\n"), "text"),
    "html": (lambda p: p.write_text("<!DOCTYPE html><html><body>Sign in</body></html>"), "HTML page"),
    "json": (lambda p: p.write_text('{"step": 101}'), "JSON text"),
    "random": (lambda p: p.write_bytes(bytes(range(7, 250, 3)) * 5), "unrecognized binary data"),
    "empty": (lambda p: p.write_bytes(b""), "nothing"),
    "zip": (_zip_without_data_pkl, "zip archive without data.pkl"),
    "lfs": (lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 123\n"),
            "git-lfs pointer"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPT))
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_corrupt_file_is_not_a_checkpoint_and_says_what_it_holds(tmp_path, kind, suffix):
    write, what = CORRUPT[kind]
    if kind == "zip" and suffix == ".safetensors":
        what = "unrecognized binary data"
    path = tmp_path / f"step_101{suffix}"
    write(path)
    with pytest.raises(NotACheckpointError) as info:
        cz.Trajectory.from_files([path], model=mlp).model_at(101)
    message = str(info.value)
    assert "step_101" in message and what in message and "not a" in message
    assert "weights_only=False" not in message and "pickled" not in message
    assert isinstance(info.value, CheckpointError)


# -- hostile metrics and steps ----------------------------------------------------------------
@pytest.mark.parametrize("step, message", [("100.7", "100.7"), ("ten", "'ten'"), (str(2**70), "outside"),
                                           ("-5", "outside"), ("nan", "nan"), ("True", "True")])
def test_metrics_steps_that_are_not_integers_are_refused(tmp_path, step, message):
    (tmp_path / "m.csv").write_text(f"step,train_loss\n0,1.0\n{step},0.5\n")
    with pytest.raises(TrajectoryError, match=f"step in the metrics .*m.csv.*{message}"):
        cz.Trajectory.from_state_dicts({0: mlp().state_dict()}, model=mlp, metrics=tmp_path / "m.csv")


def test_a_step_beyond_int64_in_a_file_name_names_the_file(tmp_path):
    path = tmp_path / f"step_{2**64}.safetensors"
    save_file(mlp().state_dict(), str(path))
    with pytest.raises(TrajectoryError, match=f"step_{2**64}.safetensors.*outside"):
        cz.Trajectory.from_files([path], model=mlp)


@pytest.mark.parametrize("steps", [[100.7], [0, 10.5], ["10"], [True], "0,10", [-1]])
def test_compare_steps_must_be_integers(steps):
    traj = cz.Trajectory.from_state_dicts({0: mlp().state_dict(), 10: mlp().state_dict()}, model=mlp)
    with pytest.raises(TrajectoryError, match="step|steps"):
        cz.compare(traj, ["l2"], steps=steps, progress=False)


@pytest.mark.parametrize("column", ["a/b", "tab\there", " padded"])
def test_metric_names_netcdf_cannot_store_are_refused_before_computing(tmp_path, column):
    import pandas as pd

    traj = cz.Trajectory.from_state_dicts({0: mlp().state_dict()}, model=mlp,
                                          metrics=pd.DataFrame({"step": [0], column: [1.0]}))
    with pytest.raises(TrajectoryError, match="netCDF cannot store"):
        cz.compare(traj, ["l2"], cache=tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").rglob("*.json"))  # refused before any cell was computed


# -- random settings for every measure --------------------------------------------------------
HOSTILE_VALUES = [-(10**12), -3, -1, 0, 1, 2, 3, 7, 10**30, 0.0, 0.5, -0.5, 1e-300, 1e300, float("nan"),
                  float("inf"), -float("inf"), True, False, None, "", "x", "lzma", "train", "torch", [], [0.1],
                  [1e-3, 1.0], [1.0, 1e-3], {}, {"a": 1}, 2**32, 2**40]


def _measure_names() -> list[str]:
    return sorted(cz.list_measures()["name"])


@pytest.mark.parametrize("name", _measure_names())
def test_random_settings_give_a_result_or_a_library_error(name):
    import dataclasses
    import math

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from complexity_zoo.errors import ComplexityZooError
    from complexity_zoo.registry import measure_class
    from complexity_zoo.testing import tiny_classifier

    cls, _ = measure_class(name)
    fields = [f.name for f in dataclasses.fields(cls)]
    model, data = tiny_classifier(0)

    @settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(st.sampled_from([*fields, "no_such_setting"]), st.sampled_from(HOSTILE_VALUES), max_size=3))
    def check(chosen):
        try:
            m = cz.get_measure(name, **chosen)
        except ComplexityZooError:
            return
        # Settings that are valid but ask for hours of work (10**30 draws) are not run here.
        if any(isinstance(v, int) and not isinstance(v, bool) and abs(v) > 64 and k != "seed"
               for k, v in chosen.items()):
            return
        try:
            result = m(model, data)
        except ComplexityZooError:
            return
        assert math.isfinite(result.value)

    check()
