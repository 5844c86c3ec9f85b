"""LLC on a language model: SGLD over a Hugging Face GPT-2's parameters, the loss through Data."""

from __future__ import annotations

import math

import pytest
import torch

import complexity_zoo as cz
from complexity_zoo.measures._sgld import sample

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=32)
    return transformers.GPT2LMHeadModel(config).eval()


def tokens(n: int = 48, t: int = 10) -> torch.Tensor:
    return torch.randint(0, 100, (n, t), generator=torch.Generator().manual_seed(0))


def test_the_chains_first_loss_is_transformers_own_loss_on_that_batch(gpt2):
    """Every chain starts at w*: its first minibatch loss is GPT-2's loss on the sampler's first
    batch (the first 8 of randperm(n) under the seed), which transformers computes itself."""
    ids = tokens()
    mask = torch.ones_like(ids)
    mask[:6, 7:] = 0
    for batch in [(ids,), (ids, ids, mask)]:
        data = cz.Data(train=batch, loss="causal_lm")
        trace = sample(gpt2, data, num_chains=2, num_steps=3, lr=1e-5, n_beta=10.0, localization=100.0,
                       weight_decay=0.0, batch_size=8, seed=5)
        assert trace.vectorized and not bool(trace.diverged.any())
        idx = torch.randperm(48, generator=torch.Generator().manual_seed(5))[:8]
        with torch.no_grad():
            expected = torch.stack([gpt2(ids[i : i + 1], labels=ids[i : i + 1] if len(batch) == 1 else
                                         ids[i : i + 1].masked_fill(mask[i : i + 1] == 0, -100)).loss
                                    for i in idx]).double().mean()
        assert trace.losses[:, 0].tolist() == pytest.approx([float(expected)] * 2, rel=1e-5)


def test_llc_runs_on_gpt2_and_max_examples_subsamples(gpt2):
    data = cz.Data(train=(tokens(),), loss="causal_lm")
    r = cz.get_measure("llc", num_chains=2, num_draws=8, batch_size=8, seed=0, max_examples=16)(gpt2, data)
    assert math.isfinite(r.value) and r.stderr is not None
    assert r.extras["sample"]["splits"]["train"] == {"kept": 16, "total": 48}
    assert "eager" in r.extras["vmap_note"]  # GPT-2's sdpa attention was switched so vmap batches the chains
    with pytest.raises(cz.ComplexityZooError, match="max_examples"):
        cz.get_measure("llc", max_examples=0)
