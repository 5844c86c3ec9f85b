"""A folder stays inside itself: no path it yields (a file, a link, a name in a file) is read
outside the folder the user named, and nothing a file names causes a network request. Steps are
told without ambiguity: two files of one step, or a negative step, are errors naming the files.

Each attack case records every file Python opens or lists (an audit hook) and checks that the
folder outside the scratch run was neither opened nor changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import complexity_zoo as cz
from complexity_zoo.cli import main
from complexity_zoo.errors import ComplexityZooError, OutsideFolderError, TrajectoryError, UntrustedCodeError
from complexity_zoo.testing import mlp

_SEEN: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    global _SEEN
    if _SEEN is not None and event in ("open", "os.listdir", "os.scandir") and args:
        target = args[0]
        if isinstance(target, (str, bytes, os.PathLike)):
            seen, _SEEN = _SEEN, None  # resolving reads links: not recorded
            try:
                seen.append(os.path.realpath(os.fsdecode(target)))
            finally:
                _SEEN = seen


sys.addaudithook(_audit)


class Outside:
    """A folder outside the run, with files a link may point to. ``seal()`` (once the test has
    built its links) starts recording every file opened or listed; at the end no file in the
    folder may have been opened or listed, and its contents must be unchanged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.before: dict[Path, bytes] = {}

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def snapshot(self) -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in self.path.rglob("*") if p.is_file()}

    def seal(self) -> None:
        global _SEEN
        self.before = self.snapshot()
        _SEEN = []


@pytest.fixture
def outside(tmp_path):
    global _SEEN
    out = Outside(tmp_path / "outside")
    out.path.mkdir()
    save_file({k: v * 7 for k, v in mlp().state_dict().items()}, str(out / "step.safetensors"))
    (out / "metrics.csv").write_text("step,secret\n0,42\n10,43\n")
    (out / "checkpoints").mkdir()
    save_file(mlp().state_dict(), str(out / "checkpoints" / "step_00000000.safetensors"))
    yield out
    seen, _SEEN = _SEEN, None
    assert seen is not None, "the test never sealed the outside folder"
    base = str(out.path.resolve())
    leaked = [s for s in seen if s == base or s.startswith(base + os.sep)]
    assert not leaked, f"read outside the run folder: {leaked}"
    assert out.snapshot() == out.before


def run_folder(tmp_path, name: str = "run") -> Path:
    traj = cz.Trajectory.from_state_dicts({0: mlp().state_dict(), 10: mlp().state_dict()}, model=mlp)
    return traj.save(tmp_path / name)


def _replace_with_link(path: Path, target: Path) -> None:
    if path.is_dir():
        for p in sorted(path.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        path.rmdir()
    elif path.exists():
        path.unlink()
    path.symlink_to(target)


# -- run folders ------------------------------------------------------------------------------
@pytest.mark.parametrize("what", ["checkpoint", "metrics", "checkpoints_dir", "run_json"])
def test_a_run_folder_never_follows_a_link_outside(tmp_path, outside, what, capsys):
    root = run_folder(tmp_path)
    link, target = {
        "checkpoint": (root / "checkpoints" / "step_00000010.safetensors", outside / "step.safetensors"),
        "metrics": (root / "metrics.csv", outside / "metrics.csv"),
        "checkpoints_dir": (root / "checkpoints", outside / "checkpoints"),
        "run_json": (root / "run.json", outside / "metrics.csv"),
    }[what]
    if what == "metrics":
        link.write_text("step\n0\n")
    _replace_with_link(link, target)
    outside.seal()
    with pytest.raises(OutsideFolderError, match=f"{link.name}.*is a link to .*outside the folder"):
        cz.Trajectory.from_dir(root)
    out = tmp_path / "r.nc"
    assert main(["compare", str(root), "--measures", "l2", "--out", str(out), "--quiet"]) == 2
    assert "is a link to" in capsys.readouterr().err and not out.exists()


def test_a_linked_run_folder_itself_is_read(tmp_path, outside):
    root = run_folder(tmp_path)
    (tmp_path / "alias").symlink_to(root)
    outside.seal()
    assert cz.Trajectory.from_dir(tmp_path / "alias").steps == [0, 10]


def test_a_link_that_stays_inside_is_read(tmp_path, outside):
    root = run_folder(tmp_path)
    ckpt = root / "checkpoints"
    (ckpt / "step_00000020.safetensors").symlink_to(ckpt / "step_00000010.safetensors")
    outside.seal()
    assert cz.Trajectory.from_dir(root).steps == [0, 10, 20]


# -- factories named by run.json --------------------------------------------------------------
def _with_spec(root: Path, spec: dict) -> Path:
    meta = json.loads((root / "run.json").read_text())
    meta["model"] = spec
    (root / "run.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("config, error, message", [
    ("OUTSIDE", OutsideFolderError, "outside its folder"),
    ("../outside", OutsideFolderError, "outside its folder"),
    ("gpt2", OutsideFolderError, "does not exist inside.*network"),
    ("EleutherAI/pythia-70m", OutsideFolderError, "does not exist inside.*network"),
])
def test_hf_factory_config_from_a_file_stays_inside_and_offline(tmp_path, outside, config, error, message):
    root = run_folder(tmp_path)
    config = str(outside.path) if config == "OUTSIDE" else config
    _with_spec(root, {"factory": "complexity_zoo.adapters.huggingface:model_from_config",
                      "kwargs": {"config": config}})
    outside.seal()
    with pytest.raises(error, match=message):
        cz.Trajectory.from_dir(root)


def test_hf_factory_revision_from_a_file_is_refused(tmp_path, outside):
    root = run_folder(tmp_path)
    (root / "cfg").mkdir()
    _with_spec(root, {"factory": "complexity_zoo.adapters.huggingface:model_from_config",
                      "kwargs": {"config": "cfg", "revision": "main"}})
    outside.seal()
    with pytest.raises(UntrustedCodeError, match="revision='main'.*network.*trust=True"):
        cz.Trajectory.from_dir(root)


@pytest.mark.parametrize("arch", ["hf-hub:timm/resnet18.a1_in1k", "hf_hub:timm/resnet18", "local-dir:/tmp/x",
                                  "timm/resnet18"])
def test_timm_architecture_names_that_reach_out_are_refused(arch):
    from complexity_zoo.adapters import timm as zoo_timm

    with pytest.raises(UntrustedCodeError, match="source prefix.*network or a file"):
        zoo_timm.model_from_arch(arch, num_classes=3)


def test_cli_model_gets_no_path_from_run_json(tmp_path, outside, capsys):
    pytest.importorskip("timm")
    root = run_folder(tmp_path)
    _with_spec(root, {"factory": "complexity_zoo.testing:mlp",
                      "kwargs": {"model_name": "resnet18", "checkpoint_path": str(outside / "step.safetensors")}})
    out = tmp_path / "r.nc"
    outside.seal()
    code = main(["compare", str(root), "--measures", "l2", "--out", str(out), "--quiet",
                 "--model", "timm:create_model"])
    err = capsys.readouterr().err
    assert code == 2 and "checkpoint_path" in err and "--trust" in err and not out.exists()


def test_a_saved_hf_trajectory_carries_its_config(tmp_path, outside):
    transformers = pytest.importorskip("transformers")
    from complexity_zoo.adapters import huggingface as hf

    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16, n_positions=8)
    for step in (1, 2):
        transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "hf" / f"checkpoint-{step}")
    outside.seal()
    run = hf.load_trajectory(tmp_path / "hf").save(tmp_path / "run")
    spec = json.loads((run / "run.json").read_text())["model"]
    assert spec["kwargs"]["config"] == "model_files/config" and (run / "model_files/config/config.json").is_file()
    import shutil

    shutil.rmtree(tmp_path / "hf")  # the run folder is whole without the Trainer folder
    back = cz.Trajectory.from_dir(run)
    assert back.steps == [1, 2] and isinstance(back.model_at(2), torch.nn.Module)
    assert back.save(tmp_path / "again").joinpath("model_files/config/config.json").is_file()


# -- adapters ---------------------------------------------------------------------------------
def _hf_folder(tmp_path: Path, steps=("1", "2")) -> Path:
    for name in steps:
        folder = tmp_path / "hf" / f"checkpoint-{name}"
        folder.mkdir(parents=True)
        save_file(mlp().state_dict(), str(folder / "model.safetensors"))
    return tmp_path / "hf"


@pytest.mark.parametrize("revisions, what", [(None, "folder"), (None, "weights"), (None, "config"),
                                             (None, "trainer_state"), ("checkpoint-*", "folder"),
                                             ("checkpoint-*", "weights"), ("checkpoint-*", "config")])
def test_hf_folder_never_follows_a_link_outside(tmp_path, outside, revisions, what):
    """A Trainer output folder, and the same folder read as a local mirror of revisions (one
    subfolder per revision), are confined alike."""
    from complexity_zoo.adapters import huggingface as hf

    root = _hf_folder(tmp_path)
    ckpt = root / "checkpoint-2"
    if what == "folder":
        (outside / "ckpt").mkdir()
        save_file(mlp().state_dict(), str(outside / "ckpt" / "model.safetensors"))
        _replace_with_link(ckpt, outside / "ckpt")
    elif what == "weights":
        _replace_with_link(ckpt / "model.safetensors", outside / "step.safetensors")
    else:
        (ckpt / f"{what}.json").symlink_to(outside / "metrics.csv")
    outside.seal()
    model = None if (revisions and what == "config") else mlp  # a mirror reads config.json only to build
    with pytest.raises(OutsideFolderError, match="is a link to .*outside the folder"):
        hf.load_trajectory(root, revisions=revisions, model=model)


def _timm_file(path: Path, epoch: int = 0) -> None:
    torch.save({"state_dict": mlp().state_dict(), "epoch": epoch, "arch": "resnet18",
                "args": argparse.Namespace(num_classes=3)}, path)


@pytest.mark.parametrize("what", ["checkpoint", "summary"])
def test_timm_output_folder_never_follows_a_link_outside(tmp_path, outside, what):
    from complexity_zoo.adapters import timm as zoo_timm

    root = tmp_path / "timm"
    root.mkdir()
    _timm_file(root / "checkpoint-0.pth.tar")
    if what == "checkpoint":
        _timm_file(outside / "c.pth.tar")
        (root / "checkpoint-1.pth.tar").symlink_to(outside / "c.pth.tar")
    else:
        (root / "summary.csv").symlink_to(outside / "metrics.csv")
    outside.seal()
    with pytest.raises(OutsideFolderError, match="is a link to .*outside the folder"):
        zoo_timm.load_trajectory(root, model=mlp)


def _ckpt(path: Path, step: int) -> None:
    torch.save({"state_dict": mlp().state_dict(), "global_step": step, "epoch": 0}, path)


@pytest.mark.parametrize("what", ["checkpoint", "metrics", "checkpoints_dir"])
def test_lightning_folder_never_follows_a_link_outside(tmp_path, outside, what):
    from complexity_zoo.adapters import lightning as zoo_lightning

    version = tmp_path / "logs" / "version_0"
    (version / "checkpoints").mkdir(parents=True)
    _ckpt(version / "checkpoints" / "a.ckpt", 1)
    if what == "checkpoint":
        _ckpt(outside / "b.ckpt", 2)
        (version / "checkpoints" / "b.ckpt").symlink_to(outside / "b.ckpt")
    elif what == "metrics":
        (version / "metrics.csv").symlink_to(outside / "metrics.csv")
    else:
        _ckpt(outside / "checkpoints" / "b.ckpt", 2)
        _replace_with_link(version / "checkpoints", outside / "checkpoints")
    outside.seal()
    with pytest.raises(OutsideFolderError, match="is a link to .*outside the folder"):
        zoo_lightning.load_trajectory(version, model=mlp)


# -- steps ------------------------------------------------------------------------------------
def test_two_hf_folders_of_one_step_are_refused_naming_both(tmp_path):
    from complexity_zoo.adapters import huggingface as hf

    root = _hf_folder(tmp_path, steps=("40", "040"))
    with pytest.raises(TrajectoryError, match=r"checkpoint-0?40'.*checkpoint-0?40'.*both step 40") as info:
        hf.load_trajectory(root, model=mlp)
    assert "checkpoint-40" in str(info.value) and "checkpoint-040" in str(info.value)


def test_two_timm_files_of_one_epoch_are_refused_naming_both(tmp_path):
    from complexity_zoo.adapters import timm as zoo_timm

    root = tmp_path / "timm"
    root.mkdir()
    _timm_file(root / "checkpoint-1.pth.tar", 1)
    _timm_file(root / "checkpoint-01.pth.tar", 1)
    with pytest.raises(TrajectoryError, match="both step 1") as info:
        zoo_timm.load_trajectory(root, model=mlp)
    assert "checkpoint-1.pth.tar" in str(info.value) and "checkpoint-01.pth.tar" in str(info.value)


def test_two_safetensors_files_of_one_step_are_refused_naming_both(tmp_path):
    root = run_folder(tmp_path)
    save_file(mlp().state_dict(), str(root / "checkpoints" / "step_010.safetensors"))
    with pytest.raises(TrajectoryError, match="step_00000010.safetensors.*step_010.safetensors"):
        cz.Trajectory.from_dir(root)


def test_negative_steps_are_refused(tmp_path):
    from complexity_zoo.adapters import lightning as zoo_lightning

    path = tmp_path / "step_-5.safetensors"
    save_file(mlp().state_dict(), str(path))
    with pytest.raises(TrajectoryError, match="step_-5.safetensors.*-5, outside"):
        cz.Trajectory.from_files([path], model=mlp)
    _ckpt(tmp_path / "a.ckpt", -5)
    with pytest.raises(TrajectoryError, match="global_step of .*a.ckpt.*-5, outside"):
        zoo_lightning.load_trajectory([tmp_path / "a.ckpt"], model=mlp)


@pytest.mark.parametrize("value", ["nan", "inf", "abc", "-1", str(2**70)])
def test_every_step_parse_names_its_file(tmp_path, value):
    from complexity_zoo.adapters import huggingface as hf
    from complexity_zoo.adapters import lightning as zoo_lightning
    from complexity_zoo.adapters import timm as zoo_timm

    (tmp_path / "summary.csv").write_text(f"epoch,train_loss\n{value},1.0\n")
    with pytest.raises(ComplexityZooError, match="summary.csv"):
        zoo_timm.metrics_from_summary(tmp_path / "summary.csv")
    (tmp_path / "metrics.csv").write_text(f"step,val_loss\n{value},1.0\n")
    if value != "nan" and value != "abc":  # blank and unparseable rows are skipped as Lightning writes them
        with pytest.raises(TrajectoryError, match="metrics.csv"):
            zoo_lightning.metrics_from_csv(tmp_path / "metrics.csv")
    parsed = json.loads(value) if value not in ("nan", "inf", "abc") else value
    with pytest.raises(TrajectoryError, match="log_history"):
        hf.metrics_from_log_history([{"step": parsed, "loss": 1.0}])
    root = _hf_folder(tmp_path / "x")
    (root / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": parsed}))
    with pytest.raises(TrajectoryError, match="trainer_state.json"):
        hf.load_trajectory(root, model=mlp)


def test_python_m_from_inside_a_run_folder_imports_nothing_shipped_there(tmp_path):
    import subprocess

    root = run_folder(tmp_path)
    marker = tmp_path / "PWNED"
    for name in ("pandas", "numpy"):
        (root / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    done = subprocess.run([sys.executable, "-m", "complexity_zoo.cli", "measures", "l2", "--short"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "l2" in done.stdout and not marker.exists()
