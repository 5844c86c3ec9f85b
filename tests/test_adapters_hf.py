"""The Hugging Face adapter on real transformers.Trainer output (a tiny GPT-2, trained on the CPU)."""

from __future__ import annotations

import json
import math
import shutil
import sys

import pandas as pd
import pytest
import torch

import complexity_zoo as cz
from complexity_zoo.adapters import huggingface as hf
from complexity_zoo.errors import CheckpointError, CheckpointNotFoundError
from complexity_zoo.testing import TokenDataset

# conftest.py sets HF_HUB_OFFLINE=1 before anything imports huggingface_hub: nothing here downloads.
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

STEPS = [2, 4, 6]
VOCAB, SEQ = 64, 16




def token_ids(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, SEQ), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def trainer_dir(tmp_path_factory):
    """What transformers.Trainer writes: checkpoint-{2,4,6}/ with model.safetensors, config, state."""
    out = tmp_path_factory.mktemp("hf") / "gpt2-run"
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=6, save_steps=2, eval_steps=2, eval_strategy="steps", logging_steps=1,
        per_device_train_batch_size=8, per_device_eval_batch_size=8, learning_rate=3e-3, report_to=[],
        use_cpu=True, disable_tqdm=True, seed=0,
    )
    trainer = transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args,
                                   train_dataset=TokenDataset(token_ids(32, 0)),
                                   eval_dataset=TokenDataset(token_ids(16, 1)))
    trainer.train()
    return out


@pytest.fixture(scope="module")
def trajectory(trainer_dir):
    return hf.load_trajectory(trainer_dir)


def saved(folder) -> dict[str, torch.Tensor]:
    return safetensors_torch.load_file(str(folder / "model.safetensors"))


def assert_weights_equal(model, expected):
    state = model.state_dict()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_trainer_output_has_the_layout_the_adapter_reads(trainer_dir):
    assert sorted(p.name for p in trainer_dir.iterdir()) == [f"checkpoint-{s}" for s in STEPS]
    files = {p.name for p in (trainer_dir / "checkpoint-4").iterdir()}
    assert {"model.safetensors", "config.json", "trainer_state.json"} <= files
    assert "lm_head.weight" not in saved(trainer_dir / "checkpoint-4")  # tied to wte, stored once


def test_steps_weights_and_tied_head(trainer_dir, trajectory):
    assert trajectory.steps == STEPS and trajectory.name == "gpt2-run"
    for step in STEPS:
        model = trajectory.model_at(step)
        assert isinstance(model, transformers.GPT2LMHeadModel) and not model.training
        expected = saved(trainer_dir / f"checkpoint-{step}")
        assert_weights_equal(model, expected)
        assert torch.equal(model.lm_head.weight, expected["transformer.wte.weight"])
    assert not torch.equal(trajectory.model_at(2).transformer.wte.weight, trajectory.model_at(6).transformer.wte.weight)


def test_metrics_come_from_the_newest_trainer_state(trainer_dir, trajectory, tmp_path):
    history = json.loads((trainer_dir / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    train = {e["step"]: e["loss"] for e in history if "loss" in e}
    test = {e["step"]: e["eval_loss"] for e in history if "eval_loss" in e}
    m = trajectory.metrics.set_index("step")
    assert list(m.index) == STEPS
    assert m["train_loss"].tolist() == pytest.approx([train[s] for s in STEPS])
    assert m["test_loss"].tolist() == pytest.approx([test[s] for s in STEPS])
    assert not {"eval_runtime", "test_runtime", "loss", "eval_loss"} & set(m.columns)
    all_rows = hf.metrics_from_log_history(history)
    assert all_rows["step"].tolist() == [1, 2, 3, 4, 5, 6]  # rows between checkpoints are kept
    # ... and survive a round trip through the run-folder format, model factory included.
    run = trajectory.save(tmp_path / "run")
    assert sorted(pd.read_csv(run / "metrics.csv")["step"]) == [1, 2, 3, 4, 5, 6]
    back = cz.Trajectory.from_dir(run)
    assert back.model_spec["factory"] == "complexity_zoo.adapters.huggingface:model_from_config"
    assert_weights_equal(back.model_at(4), saved(trainer_dir / "checkpoint-4"))


def test_lm_data_matches_the_models_own_loss(trajectory):
    ids = token_ids(8, 2)
    data = hf.lm_data(ids, ids, batch_size=4)
    model = trajectory.model_at(6)
    with torch.no_grad():
        reference = model(ids, labels=ids).loss.item()  # HF shifts the labels itself
    assert data.evaluate(model, "test")["loss"] == pytest.approx(reference, rel=1e-5)
    x, y = data.train
    assert torch.equal(x, ids) and torch.equal(y, ids) and data.loss_name == "causal_lm"
    padded = ids.clone()
    padded[:, -4:] = 0
    with_pad = hf.lm_data(padded, batch_size=4, pad_token_id=0)
    assert with_pad.evaluate(model)["loss"] != pytest.approx(hf.lm_data(padded).evaluate(model)["loss"])
    with pytest.raises(cz.ComplexityZooError, match="shape"):
        hf.lm_data(torch.zeros(4, 1, dtype=torch.long))


def test_compare_with_weight_measures_and_kolmogorov(trajectory):
    data = hf.lm_data(token_ids(16, 0), token_ids(8, 1), batch_size=8)
    measures = ["l2", "effective_rank", "naive_compression", ("kolmogorov", {"num_deltas": 8})]
    result = cz.compare(trajectory, measures, data=data, progress=False, strict=True)
    frame = result.to_dataframe()
    assert set(frame["measure"]) == {"l2", "effective_rank", "naive_compression", "kolmogorov"}
    assert len(frame) == 4 * len(STEPS) and all(math.isfinite(v) for v in frame["value"])


def test_legacy_bin_sharded_safetensors_and_preference(trainer_dir, trajectory, tmp_path):
    """transformers 5 no longer writes pytorch_model.bin (save_safetensors is gone), so the legacy
    files are written here by hand, as torch.save of the state dict, as transformers 4 did."""
    out = tmp_path / "legacy"
    shutil.copytree(trainer_dir, out)
    full = trajectory.model_at(2).state_dict()  # lm_head.weight included, sharing wte's storage
    (out / "checkpoint-2" / "model.safetensors").unlink()
    torch.save(full, out / "checkpoint-2" / "pytorch_model.bin")
    # checkpoint-4: two safetensors shards and their index, as save_pretrained shards them.
    state = saved(out / "checkpoint-4")
    (out / "checkpoint-4" / "model.safetensors").unlink()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[:10], "model-00002-of-00002.safetensors": keys[10:]}
    for file, part in shards.items():
        safetensors_torch.save_file({k: state[k] for k in part}, str(out / "checkpoint-4" / file))
    index = {"metadata": {}, "weight_map": {k: f for f, part in shards.items() for k in part}}
    (out / "checkpoint-4" / "model.safetensors.index.json").write_text(json.dumps(index))
    # checkpoint-6: safetensors wins over a pytorch_model.bin next to it (here not even readable).
    (out / "checkpoint-6" / "pytorch_model.bin").write_bytes(b"not read")
    traj = hf.load_trajectory(out)
    assert_weights_equal(traj.model_at(2), full)
    assert_weights_equal(traj.model_at(4), state)
    assert_weights_equal(traj.model_at(6), saved(trainer_dir / "checkpoint-6"))


def test_revisions_from_a_local_mirror(trainer_dir):
    mirror = hf.load_trajectory(trainer_dir, revisions=["checkpoint-2", "checkpoint-6"])
    assert mirror.steps == [2, 6]
    assert_weights_equal(mirror.model_at(6), saved(trainer_dir / "checkpoint-6"))
    assert hf.load_trajectory(trainer_dir, revisions={100: "checkpoint-4"}).steps == [100]
    # The Hub path: tests/test_hub_suite.py (a suite in a Hub cache the test builds, offline).


# -- bad input ------------------------------------------------------------------------------
def test_missing_folders_and_files_are_named(trainer_dir, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="absent"):
        hf.load_trajectory(tmp_path / "absent")
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint-N folders"):
        hf.load_trajectory(tmp_path)
    out = tmp_path / "run"
    shutil.copytree(trainer_dir, out)
    (out / "checkpoint-4" / "model.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="checkpoint-4.*holds no model weights"):
        hf.load_trajectory(out)
    with pytest.raises(CheckpointNotFoundError, match="checkpoint-9"):
        hf.load_trajectory(trainer_dir, revisions=["checkpoint-9"])


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_damaged_weights_name_the_file(trainer_dir, tmp_path, damage):
    out = tmp_path / "run"
    shutil.copytree(trainer_dir, out)
    path = out / "checkpoint-4" / "model.safetensors"
    path.write_bytes(b"\x00junk" * 10 if damage == "corrupt" else path.read_bytes()[:-100])
    traj = hf.load_trajectory(out)
    with pytest.raises(CheckpointError, match="checkpoint-4/model.safetensors"):
        traj.model_at(4)
    assert traj.model_at(2) is not None


def test_damaged_state_and_keys_that_are_not_tied(trainer_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trainer_dir, out)
    state = saved(out / "checkpoint-2")
    del state["transformer.ln_f.bias"]
    safetensors_torch.save_file(state, str(out / "checkpoint-2" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \[transformer.ln_f.bias\]"):
        hf.load_trajectory(out).model_at(2)
    (out / "checkpoint-6" / "trainer_state.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="checkpoint-6/trainer_state.json"):
        hf.load_trajectory(out)


def test_a_missing_transformers_names_the_extra(trainer_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(cz.MissingDependencyError, match=r"pip install 'complexity-zoo\[hf\]'"):
        hf.model_from_config(str(trainer_dir / "checkpoint-2"))
