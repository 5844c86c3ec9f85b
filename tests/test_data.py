"""Data: validation, batched evaluation against a direct computation, fingerprints."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from complexity_zoo import Data
from complexity_zoo.errors import DataError
from complexity_zoo.testing import mlp


def test_batched_evaluation_equals_the_full_batch(model_and_data):
    model, data = model_and_data
    x, y = data.train
    with torch.no_grad():
        logits = model(x)
        full = torch.nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(1) == y).float().mean().item()
    out = data.evaluate(model, "train", batch_size=7)
    assert out["loss"] == pytest.approx(full, rel=1e-6)
    assert out["acc"] == pytest.approx(acc)


def test_mse_and_dataloader_splits():
    torch.manual_seed(0)
    x, y = torch.randn(20, 4), torch.randn(20, 3)
    model = mlp()
    loader = DataLoader(TensorDataset(x, y), batch_size=6)
    data = Data(train=loader, test=(x, y), loss="mse")
    with torch.no_grad():
        expected = ((model(x) - y) ** 2).mean().item()
    assert data.evaluate(model, "train")["loss"] == pytest.approx(expected, rel=1e-6)
    assert data.evaluate(model, "test")["loss"] == pytest.approx(expected, rel=1e-6)
    assert data.n("train") == 20 and "acc" not in data.evaluate(model, "test")
    tx, ty = data.tensors("train")
    assert torch.equal(tx, x) and torch.equal(ty, y)


def test_sequence_cross_entropy_averages_tokens():
    logits = torch.randn(3, 5, 7)
    y = torch.randint(0, 7, (3, 5))
    data = Data.from_tensors(train=(logits, y), loss="cross_entropy")
    per = data.per_example_loss(torch.nn.Identity(), (logits, y))
    direct = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), y.reshape(-1), reduction="none")
    assert torch.allclose(per, direct.reshape(3, 5).mean(1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(train=(torch.zeros(3, 2), torch.zeros(4))), "share their first dimension"),
        (dict(train=(torch.zeros(0, 2), torch.zeros(0))), "empty"),
        (dict(train=torch.zeros(3, 2)), "tuple of tensors"),
        (dict(train=(torch.zeros(3, 2), torch.zeros(3)), loss="hinge"), "must be one of"),
        (dict(train=(torch.zeros(3, 2), torch.zeros(3)), batch_size=0), "batch_size"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(DataError, match=message):
        Data.from_tensors(**kwargs)


def test_missing_test_split_and_bad_loss_shape(model_and_data):
    model, data = model_and_data
    train_only = Data.from_tensors(train=data.train)
    with pytest.raises(DataError, match="no test split"):
        train_only.evaluate(model, "test")
    scalar = Data.from_tensors(train=data.train, loss=lambda m, b: m(b[0]).sum())
    with pytest.raises(DataError, match="one value per example"):
        scalar.evaluate(model, "train")


def test_fingerprint_follows_the_examples(model_and_data):
    _, data = model_and_data
    same = Data.from_tensors(train=tuple(t.clone() for t in data.train), test=data.test, batch_size=32)
    x, y = data.train
    other = Data.from_tensors(train=(x + 1, y), test=data.test, batch_size=32)
    assert data.fingerprint() == same.fingerprint() != other.fingerprint()
