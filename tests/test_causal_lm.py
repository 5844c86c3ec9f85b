"""Data(loss="causal_lm") against a hand computation and against transformers' own loss."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from complexity_zoo import Data
from complexity_zoo.errors import DataError
from complexity_zoo.testing import tiny_gpt2

V = 11


class Bigram(nn.Module):
    """Logits at position t depend only on token t: a table the test can read."""

    def __init__(self, kind: str = "tensor") -> None:
        super().__init__()
        self.table = nn.Embedding(V, V)
        self.kind = kind

    def forward(self, ids, attention_mask=None):
        logits = self.table(ids)
        if self.kind == "output":
            return Output(logits=logits)
        return (logits, "cache") if self.kind == "tuple" else logits


@dataclass
class Output:
    logits: torch.Tensor


def hand_loss(model: Bigram, ids: torch.Tensor, labels: torch.Tensor, mask=None) -> tuple[list, list]:
    """Per example: mean of -log p(label[t+1] | token t) over counted t, and next-token accuracy."""
    table = model.table.weight.detach().double()
    losses, accs = [], []
    for b in range(ids.shape[0]):
        terms, hits = [], []
        for t in range(ids.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target == -100 or (mask is not None and int(mask[b, t + 1]) == 0):
                continue
            row = table[int(ids[b, t])]
            terms.append(float(torch.logsumexp(row, 0) - row[target]))
            hits.append(float(int(row.argmax()) == target))
        losses.append(sum(terms) / len(terms))
        accs.append(sum(hits) / len(hits))
    return losses, accs


@pytest.mark.parametrize("kind", ["tensor", "output", "tuple"])
def test_causal_lm_equals_the_hand_computation(kind):
    torch.manual_seed(0)
    model = Bigram(kind)
    ids = torch.randint(0, V, (5, 7))
    labels = ids.clone()
    labels[0, 3] = labels[2, 6] = -100
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    for batch in [(ids,), (ids, labels), (ids, labels, mask)]:
        data = Data(train=batch, loss="causal_lm", batch_size=2)
        losses, accs = hand_loss(model, ids, batch[1] if len(batch) > 1 else ids, batch[2] if len(batch) > 2 else None)
        with torch.no_grad():
            per = data.per_example_loss(model, batch)
        assert per.tolist() == pytest.approx(losses, rel=1e-5)
        out = data.evaluate(model)
        assert out["loss"] == pytest.approx(sum(losses) / 5, rel=1e-5)
        assert out["acc"] == pytest.approx(sum(accs) / 5)
    assert data.num_classes() is None  # a sequence has no single class


def test_model_outputs_without_logits_and_bad_splits_are_refused():
    with pytest.raises(DataError, match="holds no logits"):
        Data(train=(torch.zeros(2, 3), torch.zeros(2, 3)), loss="mse").evaluate(lambda_module(lambda x: {"a": 1}))
    ids = torch.zeros(3, 4, dtype=torch.long)
    with pytest.raises(DataError, match="T >= 2"):
        Data(train=(ids[:, :1],), loss="causal_lm")
    with pytest.raises(DataError, match="integer tensor"):
        Data(train=(ids.float(),), loss="causal_lm")
    labels = ids.clone()
    labels[1, 1:] = -100
    with pytest.raises(DataError, match="Example 1 of the 'train' split has no token"):
        Data(train=(ids, labels), loss="causal_lm")
    with pytest.raises(DataError, match=r"\(input_ids, labels, attention_mask\)"):
        Data(train=(ids, ids, ids, ids), loss="causal_lm")


def lambda_module(fn):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return fn(x)

    return M()


# -- against transformers on a tiny GPT-2 built from a config (nothing downloaded) ---------------
@pytest.fixture(scope="module")
def gpt2():
    pytest.importorskip("transformers")
    return tiny_gpt2()


def test_causal_lm_equals_transformers_loss(gpt2):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 100, (6, 12), generator=g)
    labels = ids.clone()
    labels[0, 5:9] = -100  # examples count different numbers of tokens
    labels[3, 2] = -100
    data = Data(train=(ids, labels), loss="causal_lm", batch_size=4)
    with torch.no_grad():
        ours = data.per_example_loss(gpt2, (ids, labels))
        each = torch.stack([gpt2(ids[i : i + 1], labels=labels[i : i + 1]).loss for i in range(6)])
        batch = gpt2(ids, labels=labels).loss
    assert torch.allclose(ours, each, rtol=1e-5)  # per example: the same mean over its tokens
    counts = (labels[:, 1:] != -100).sum(1).double()
    # HF's batch loss is the token mean: the per-example means weighted by their token counts.
    assert float((ours.double() * counts).sum() / counts.sum()) == pytest.approx(float(batch), rel=1e-5)
    assert data.evaluate(gpt2)["loss"] == pytest.approx(float(ours.double().mean()), rel=1e-6)
    assert not math.isclose(float(ours.double().mean()), float(batch), rel_tol=1e-4)  # the two means differ


def test_right_padding_with_an_attention_mask_equals_the_unpadded_sequences(gpt2):
    g = torch.Generator().manual_seed(2)
    lengths = [12, 7, 4]
    ids = torch.randint(0, 100, (3, 12), generator=g)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0  # pad token
    data = Data(train=(ids, ids, mask), loss="causal_lm")
    with torch.no_grad():
        ours = data.per_example_loss(gpt2, (ids, ids, mask))
        alone = [gpt2(ids[i : i + 1, :n], labels=ids[i : i + 1, :n]).loss for i, n in enumerate(lengths)]
    assert ours.tolist() == pytest.approx([float(a) for a in alone], rel=1e-5)


def test_a_subsample_keeps_the_loss_and_every_field():
    ids = torch.randint(0, V, (20, 6), generator=torch.Generator().manual_seed(0))
    data = Data(train=(ids, ids, torch.ones_like(ids)), loss="causal_lm")
    sub = data.subsample(5, seed=1)
    assert sub.loss_name == "causal_lm" and len(sub.train) == 3 and sub.n() == 5
    rows = [int((ids == r).all(1).nonzero()[0, 0]) for r in sub.train[0]]
    assert torch.equal(sub.train[1], ids[rows]) and sub.sample["splits"]["train"] == {"kept": 5, "total": 20}
