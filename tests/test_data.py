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


def test_subsample_draws_without_replacement_and_records_the_draw():
    x = torch.arange(100).float().unsqueeze(1)
    y = torch.arange(100) % 3
    data = Data.from_tensors(train=(x, y), test=(x[:10], y[:10]))
    sub = data.subsample(30, seed=7)
    kept = sub.tensors("train")[0].squeeze(1).long()
    assert kept.numel() == 30 and kept.unique().numel() == 30  # no example twice
    assert torch.equal(sub.tensors("train")[1], y[kept])  # rows stay paired
    assert sub.n("test") == 10  # a budget above the split's size keeps it whole
    assert sub.sample == {"max_examples": 30, "seed": 7,
                          "splits": {"train": {"kept": 30, "total": 100}, "test": {"kept": 10, "total": 10}}}
    assert sub.loss_name == "cross_entropy" and sub.num_classes() == 3
    again = data.subsample(30, seed=7).tensors("train")[0]
    assert torch.equal(again, sub.tensors("train")[0])  # the seed decides the draw
    assert not torch.equal(data.subsample(30, seed=8).tensors("train")[0], again)
    assert data.subsample(None, seed=0) is data


def test_subsample_is_uniform_over_examples():
    """Each example is kept with probability k/n: counts over many seeds match a binomial."""
    n, k, reps = 20, 5, 2000
    data = Data.from_tensors(train=(torch.arange(n).float().unsqueeze(1), torch.zeros(n, dtype=torch.long)))
    counts = torch.zeros(n)
    for seed in range(reps):
        counts[data.subsample(k, seed=seed).tensors("train")[0].squeeze(1).long()] += 1
    expected = reps * k / n
    sd = (reps * (k / n) * (1 - k / n)) ** 0.5
    assert float((counts - expected).abs().max()) < 4.5 * sd  # max of 20 near-normal counts


def test_subsample_of_a_loader_and_bad_budgets():
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.randn(50, 2)
    y = torch.randint(0, 2, (50,))
    data = Data(train=DataLoader(TensorDataset(x, y), batch_size=8), data_id="toy")
    sub = data.subsample(12, seed=1)
    assert sub.n("train") == 12 and sub.data_id == "toy|sample:12:1"
    assert sum(b[0].shape[0] for b in sub.batches("train")) == 12
    for bad in (0, -3, 2.5, True):
        with pytest.raises(DataError):
            data.subsample(bad, seed=0)
