"""The timm adapter on real output of timm's CheckpointSaver and update_summary, called as train.py does."""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from collections import OrderedDict

import pandas as pd
import pytest
import torch

import complexity_zoo as cz
from complexity_zoo.adapters import timm as zoo_timm
from complexity_zoo.errors import CheckpointError, CheckpointNotFoundError, UnsafeCheckpointError

timm = pytest.importorskip("timm")
timm_utils = pytest.importorskip("timm.utils")

ARCH, CLASSES, EPOCHS = "test_efficientnet", 4, 3


def train_args() -> argparse.Namespace:
    """The slice of timm train.py's arguments that CheckpointSaver stores (as a Namespace)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=ARCH)
    parser.add_argument("--num-classes", type=int, default=CLASSES)
    parser.add_argument("--in-chans", type=int, default=None)
    parser.add_argument("--input-size", type=int, nargs=3, default=None)
    parser.add_argument("--gp", default=None)
    parser.add_argument("--lr", type=float, default=0.05)
    return parser.parse_args([])


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory):
    """Three epochs of timm training: checkpoint-{0,1,2}.pth.tar, last, model_best, summary.csv."""
    out = tmp_path_factory.mktemp("timm") / "effnet-run"
    out.mkdir()
    args = train_args()
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, num_classes=args.num_classes)
    ema = timm_utils.ModelEmaV3(model, decay=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    saver = timm_utils.CheckpointSaver(model=model, optimizer=optimizer, args=args, model_ema=ema,
                                       checkpoint_dir=str(out), recovery_dir=str(out), decreasing=False,
                                       max_history=10)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, CLASSES, (8,), generator=g)
    best_metric = None
    for epoch in range(EPOCHS):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)
        model.eval()
        with torch.no_grad():
            logits = model(x)
        top1, top5 = timm_utils.accuracy(logits, y, topk=(1, 2))
        train_metrics = OrderedDict([("loss", loss.item())])
        eval_metrics = OrderedDict([("loss", torch.nn.functional.cross_entropy(logits, y).item()),
                                    ("top1", top1.item()), ("top5", top5.item())])
        timm_utils.update_summary(epoch, train_metrics, eval_metrics, filename=str(out / "summary.csv"),
                                  lr=args.lr, write_header=best_metric is None)
        best_metric, _ = saver.save_checkpoint(epoch, metric=eval_metrics["top1"])
    return out


@pytest.fixture(scope="module")
def trajectory(output_dir):
    return zoo_timm.load_trajectory(output_dir)


def saved(path, key="state_dict"):
    return torch.load(path, map_location="cpu", weights_only=False)[key]  # our own file: trusted


def assert_weights_equal(model, expected):
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_saver_output_layout(output_dir):
    names = sorted(p.name for p in output_dir.iterdir())
    assert names == ["checkpoint-0.pth.tar", "checkpoint-1.pth.tar", "checkpoint-2.pth.tar", "last.pth.tar",
                     "model_best.pth.tar", "summary.csv"]
    ckpt = torch.load(output_dir / "checkpoint-1.pth.tar", weights_only=False)
    assert {"state_dict", "state_dict_ema", "epoch", "arch", "args", "optimizer", "saver"} <= set(ckpt)
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["epoch"] == 1 and ckpt["arch"] == ARCH


def test_epochs_are_steps_and_weights_match(output_dir, trajectory):
    assert trajectory.steps == [0, 1, 2]  # last.pth.tar and model_best.pth.tar are not steps
    assert trajectory.model_factory.keywords == {"arch": ARCH, "num_classes": CLASSES}
    for epoch in trajectory.steps:
        model = trajectory.model_at(epoch)
        assert model.num_classes == CLASSES and not model.training
        assert_weights_equal(model, saved(output_dir / f"checkpoint-{epoch}.pth.tar"))
    ema = zoo_timm.load_trajectory(output_dir, ema=True)
    assert_weights_equal(ema.model_at(2), saved(output_dir / "checkpoint-2.pth.tar", "state_dict_ema"))


def test_summary_metrics_are_mapped(output_dir, trajectory):
    summary = pd.read_csv(output_dir / "summary.csv")
    assert list(summary.columns) == ["epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "lr"]
    m = trajectory.metrics
    assert m["step"].tolist() == m["epoch"].tolist() == [0, 1, 2]
    assert m["test_acc"].tolist() == pytest.approx((summary["eval_top1"] / 100).tolist())
    assert m["test_top5_acc"].tolist() == pytest.approx((summary["eval_top5"] / 100).tolist())
    assert m["test_loss"].tolist() == pytest.approx(summary["eval_loss"].tolist())
    assert m["train_loss"].tolist() == pytest.approx(summary["train_loss"].tolist())
    assert m["test_acc"].between(0, 1).all()


def test_compare_with_weight_measures(trajectory):
    result = cz.compare(trajectory, ["l2", "effective_rank", "naive_compression"], progress=False, strict=True)
    frame = result.to_dataframe()
    assert len(frame) == 9 and all(math.isfinite(v) for v in frame["value"])


def test_num_classes_from_the_classifier_when_args_lack_it(output_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for epoch in (0, 1):
        ckpt = torch.load(output_dir / f"checkpoint-{epoch}.pth.tar", weights_only=False)
        ckpt["args"] = argparse.Namespace(model=ARCH)
        torch.save(ckpt, out / f"checkpoint-{epoch}.pth.tar")
    traj = zoo_timm.load_trajectory(out)
    assert traj.model_factory.keywords["num_classes"] == CLASSES and traj.metrics.columns.tolist() == ["step", "epoch"]
    assert_weights_equal(traj.model_at(1), saved(output_dir / "checkpoint-1.pth.tar"))


# -- bad input ------------------------------------------------------------------------------
class Payload:
    """Any Python object pickled into a checkpoint: weights-only loading must refuse it."""


def test_other_pickled_objects_are_refused_naming_the_global(output_dir, tmp_path):
    ckpt = torch.load(output_dir / "checkpoint-2.pth.tar", weights_only=False)
    ckpt["extra"] = Payload()
    torch.save(ckpt, tmp_path / "checkpoint-2.pth.tar")
    with pytest.raises(UnsafeCheckpointError, match=r"checkpoint-2\.pth\.tar.*Payload"):
        zoo_timm.load_trajectory(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match="Payload"):
        zoo_timm.load_checkpoint_file(tmp_path / "checkpoint-2.pth.tar")


def test_missing_truncated_and_corrupt_files_are_named(output_dir, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="absent"):
        zoo_timm.load_trajectory(tmp_path / "absent")
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint-<epoch>.pth.tar"):
        zoo_timm.load_trajectory(tmp_path)
    out = tmp_path / "run"
    shutil.copytree(output_dir, out)
    path = out / "checkpoint-1.pth.tar"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    traj = zoo_timm.load_trajectory(out)
    with pytest.raises(CheckpointError, match=r"checkpoint-1\.pth\.tar"):
        traj.model_at(1)
    (out / "checkpoint-2.pth.tar").write_bytes(b"garbage")  # the newest one is read for arch and args
    with pytest.raises(CheckpointError, match=r"checkpoint-2\.pth\.tar"):
        zoo_timm.load_trajectory(out)
    with pytest.raises(CheckpointError, match="no state dict under 'state_dict_ema'"):
        ckpt = torch.load(output_dir / "checkpoint-0.pth.tar", weights_only=False)
        del ckpt["state_dict_ema"]
        torch.save(ckpt, tmp_path / "checkpoint-0.pth.tar")
        zoo_timm.load_checkpoint_file(tmp_path / "checkpoint-0.pth.tar", ema=True)


def test_a_missing_timm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed
    with pytest.raises(cz.MissingDependencyError, match=r"pip install 'complexity-zoo\[timm\]'"):
        zoo_timm.model_from_arch(ARCH, num_classes=CLASSES)
