"""The Lightning adapter on real Trainer output: ModelCheckpoint .ckpt files and a CSVLogger metrics.csv."""

from __future__ import annotations

import math
import pathlib
import shutil

import pandas as pd
import pytest
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo.adapters import lightning as zoo_lightning
from complexity_zoo.errors import CheckpointError, CheckpointNotFoundError, TrajectoryError, UnsafeCheckpointError

L = pytest.importorskip("lightning")
callbacks = pytest.importorskip("lightning.pytorch.callbacks")
loggers = pytest.importorskip("lightning.pytorch.loggers")

# Lightning 2.6 under torch 2.14 calls a pytree API that torch deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning")

STEPS = [2, 4, 6]


def inner() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


class Net(L.LightningModule):
    def __init__(self, lr: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = inner()
        self.loss = nn.CrossEntropyLoss()

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", self.loss(logits, y))
        self.log("val_acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def dataset() -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Trainer(max_steps=6) saving and validating every 2 steps (3 batches an epoch)."""
    out = tmp_path_factory.mktemp("lightning")
    torch.manual_seed(0)
    data = dataset()
    train = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(48)), batch_size=16)
    val = torch.utils.data.DataLoader(data, batch_size=32)
    checkpoint = callbacks.ModelCheckpoint(dirpath=out / "ckpts", every_n_train_steps=2, save_top_k=-1)
    trainer = L.Trainer(max_steps=6, enable_checkpointing=True, callbacks=[checkpoint],
                        logger=loggers.CSVLogger(out, name="logs"), accelerator="cpu", devices=1,
                        log_every_n_steps=1, val_check_interval=2, check_val_every_n_epoch=None,
                        num_sanity_val_steps=0,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Net(), train, val)
    return out


@pytest.fixture(scope="module")
def trajectory(run_dir):
    return zoo_lightning.load_trajectory(run_dir / "ckpts", model=inner, prefix="model.",
                                         metrics=run_dir / "logs" / "version_0")


def saved(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_checkpoint_files_and_contents(run_dir):
    names = sorted(p.name for p in (run_dir / "ckpts").iterdir())
    assert names == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=1-step=6.ckpt"]
    ckpt = torch.load(run_dir / "ckpts" / names[1], map_location="cpu", weights_only=True)  # no global needed
    assert ckpt["global_step"] == 4 and ckpt["epoch"] == 1 and ckpt["hyper_parameters"] == {"lr": 0.5}
    assert {"model.0.weight", "model.2.bias"} <= set(ckpt["state_dict"])


def test_steps_from_global_step_and_weights_with_the_prefix_stripped(run_dir, trajectory, tmp_path):
    assert trajectory.steps == STEPS and trajectory.metrics["epoch"].tolist() == [0, 1, 1]
    for step, name in zip(STEPS, ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=1-step=6.ckpt"]):
        expected = saved(run_dir / "ckpts" / name)
        model = trajectory.model_at(step)
        for key, value in model.state_dict().items():
            assert torch.equal(value, expected["model." + key])
    # The step is read from the file, never from its name.
    shutil.copy(run_dir / "ckpts" / "epoch=0-step=2.ckpt", tmp_path / "renamed-999.ckpt")
    assert zoo_lightning.load_trajectory(tmp_path, model=inner, prefix="model.").steps == [2]


def test_the_lightning_module_itself_as_the_model(run_dir):
    traj = zoo_lightning.load_trajectory(sorted((run_dir / "ckpts").glob("*.ckpt")), model=Net)
    module = traj.model_at(4)
    assert isinstance(module, Net)
    expected = saved(run_dir / "ckpts" / "epoch=1-step=4.ckpt")
    assert all(torch.equal(v, expected[k]) for k, v in module.state_dict().items())


def test_csv_metrics_are_aligned_to_the_weights_they_describe(run_dir, trajectory):
    raw = pd.read_csv(run_dir / "logs" / "version_0" / "metrics.csv")
    m = trajectory.metrics.set_index("step")
    # Validation ran on the weights of global step 2, 4, 6; Lightning logged it one step earlier.
    assert sorted(raw.dropna(subset=["val_loss"])["step"]) == [1, 3, 5]
    x, y = dataset().tensors
    for step in STEPS:
        with torch.no_grad():
            loss = nn.functional.cross_entropy(trajectory.model_at(step)(x), y).item()
        assert m.loc[step, "test_loss"] == pytest.approx(loss, rel=1e-5)
    assert m["test_acc"].between(0, 1).all() and "val_loss" not in m.columns
    train = raw.dropna(subset=["train_loss"]).set_index("step")["train_loss"]
    assert m.loc[2, "train_loss"] == pytest.approx(train[2]) and m.loc[4, "train_loss"] == pytest.approx(train[4])


class EpochLoggingNet(Net):
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)  # train_loss_step and train_loss_epoch
        return loss


def test_epoch_end_validation_and_checkpoints_align_too(tmp_path):
    """The defaults: validate and save at each epoch's end; Lightning logs at global_step - 1 there too."""
    torch.manual_seed(0)
    data = dataset()
    train = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(48)), batch_size=16)
    trainer = L.Trainer(max_epochs=2, callbacks=[callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts", save_top_k=-1)],
                        logger=loggers.CSVLogger(tmp_path, name="logs"), accelerator="cpu", devices=1,
                        log_every_n_steps=1, num_sanity_val_steps=0, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(EpochLoggingNet(), train, torch.utils.data.DataLoader(data, batch_size=64))
    traj = zoo_lightning.load_trajectory(tmp_path / "ckpts", model=inner, prefix="model.",
                                         metrics=tmp_path / "logs" / "version_0" / "metrics.csv")
    assert traj.steps == [3, 6]
    x, y = data.tensors
    m = traj.metrics.set_index("step")
    for step in traj.steps:
        with torch.no_grad():
            loss = nn.functional.cross_entropy(traj.model_at(step)(x), y).item()
        assert m.loc[step, "test_loss"] == pytest.approx(loss, rel=1e-5)
    assert m["train_loss_epoch"].notna().all()


def test_compare_with_weight_measures(trajectory):
    result = cz.compare(trajectory, ["l2", "effective_rank", "naive_compression"], progress=False, strict=True)
    frame = result.to_dataframe()
    assert len(frame) == 9 and all(math.isfinite(v) for v in frame["value"])


# -- bad input ------------------------------------------------------------------------------
def test_pickled_objects_beyond_containers_are_refused_unless_allowed(run_dir, tmp_path):
    ckpt = torch.load(run_dir / "ckpts" / "epoch=0-step=2.ckpt", map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["data_dir"] = pathlib.Path("/data")  # as save_hyperparameters() stores it
    torch.save(ckpt, tmp_path / "with_path.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=r"with_path\.ckpt.*pathlib\.\w*Path"):
        zoo_lightning.load_trajectory(tmp_path, model=inner, prefix="model.")
    traj = zoo_lightning.load_trajectory(tmp_path, model=inner, prefix="model.", safe_globals=[type(pathlib.Path())])
    assert traj.steps == [2] and traj.model_at(2) is not None


def test_missing_truncated_and_foreign_files_are_named(run_dir, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no .ckpt files"):
        zoo_lightning.load_trajectory(tmp_path, model=inner)
    with pytest.raises(CheckpointNotFoundError, match="gone.ckpt"):
        zoo_lightning.load_trajectory([tmp_path / "gone.ckpt"], model=inner)
    source = run_dir / "ckpts" / "epoch=0-step=2.ckpt"
    (tmp_path / "cut.ckpt").write_bytes(source.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt"):
        zoo_lightning.load_trajectory([tmp_path / "cut.ckpt"], model=inner)
    torch.save(inner().state_dict(), tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match=r"plain\.ckpt.*not a Lightning checkpoint"):
        zoo_lightning.load_trajectory([tmp_path / "plain.ckpt"], model=inner)
    traj = zoo_lightning.load_trajectory([source], model=inner, prefix="net.")
    with pytest.raises(CheckpointError, match=r"step=2\.ckpt.*prefix 'net\.'.*\['model\.'\]"):
        traj.model_at(2)
    with pytest.raises(CheckpointNotFoundError, match="nowhere"):
        zoo_lightning.load_trajectory([source], model=inner, metrics=tmp_path / "nowhere")


# -- the folders Lightning writes by default: lightning_logs/version_N/{checkpoints/, metrics.csv} ----
@pytest.fixture(scope="module")
def logs_dir(tmp_path_factory):
    """Two trainings with the default layout: ModelCheckpoint without dirpath saves in the logger's folder."""
    out = tmp_path_factory.mktemp("default_layout")
    data = dataset()
    for seed in (0, 1):
        torch.manual_seed(seed)
        trainer = L.Trainer(max_steps=4, callbacks=[callbacks.ModelCheckpoint(every_n_train_steps=2, save_top_k=-1)],
                            logger=loggers.CSVLogger(out), accelerator="cpu", devices=1, log_every_n_steps=1,
                            val_check_interval=2, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(Net(), torch.utils.data.DataLoader(data, batch_size=16),
                    torch.utils.data.DataLoader(data, batch_size=64))
    return out / "lightning_logs"


def test_a_version_folder_finds_its_checkpoints_and_metrics(logs_dir):
    version = logs_dir / "version_1"
    assert {p.name for p in version.iterdir()} >= {"checkpoints", "metrics.csv"}
    traj = zoo_lightning.load_trajectory(version, model=inner, prefix="model.")
    assert traj.steps == [2, 4] and traj.name == "version_1"
    assert "test_loss" in traj.metrics.columns and traj.metrics.set_index("step")["test_loss"].notna().all()
    expected = saved(next((version / "checkpoints").glob("*step=4.ckpt")))
    assert all(torch.equal(v, expected["model." + k]) for k, v in traj.model_at(4).state_dict().items())
    # The checkpoints folder itself reads the same metrics, from the version folder around it.
    inside = zoo_lightning.load_trajectory(version / "checkpoints", model=inner, prefix="model.")
    assert inside.name == "version_1" and inside.metrics.equals(traj.metrics)
    picked = zoo_lightning.load_trajectory(logs_dir, model=inner, prefix="model.", version=0)
    assert not torch.equal(picked.model_at(4).state_dict()["0.weight"], traj.model_at(4).state_dict()["0.weight"])


def test_several_versions_are_refused_with_their_names(logs_dir, tmp_path):
    with pytest.raises(TrajectoryError, match=r"2 Lightning runs \(version_0, version_1\).*version=N"):
        zoo_lightning.load_trajectory(logs_dir, model=inner, prefix="model.")
    with pytest.raises(CheckpointNotFoundError, match=r"no version_7.*\['version_0', 'version_1'\]"):
        zoo_lightning.load_trajectory(logs_dir, model=inner, version=7)
    shutil.copytree(logs_dir / "version_0", tmp_path / "lightning_logs" / "version_0")
    assert zoo_lightning.load_trajectory(tmp_path / "lightning_logs", model=inner, prefix="model.").steps == [2, 4]


def test_the_cli_loader_detects_the_folder_and_the_prefix(logs_dir):
    from complexity_zoo.adapters.folders import detect_format, load_folder

    assert detect_format(logs_dir / "version_0") == detect_format(logs_dir / "version_0" / "checkpoints") == "lightning"
    inner_run = load_folder(logs_dir / "version_0", model=inner)  # keys found under the attribute "model."
    whole_run = load_folder(logs_dir / "version_0", model=Net)  # the LightningModule: keys as saved
    assert inner_run.steps == whole_run.steps == [2, 4]
    assert torch.equal(inner_run.model_at(4).state_dict()["0.weight"], whole_run.model_at(4).model[0].weight)
    with pytest.raises(TrajectoryError, match="not in the Lightning checkpoints"):
        load_folder(logs_dir / "version_0", model=lambda: nn.Linear(2, 2))
