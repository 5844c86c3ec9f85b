"""Per-head element masks for Hugging Face attention layouts, and the LLC of one head.

Models are built locally from small transformers configs (no downloads)."""

from __future__ import annotations

import warnings

import pytest
import torch

import complexity_zoo as cz
from complexity_zoo.measures.llc import attention_head_masks

transformers = pytest.importorskip("transformers")

E, H, LAYERS = 16, 4, 2
HD = E // H


def gpt2():
    cfg = transformers.GPT2Config(n_embd=E, n_head=H, n_layer=LAYERS, vocab_size=13, n_positions=8,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def neox():
    cfg = transformers.GPTNeoXConfig(hidden_size=E, num_attention_heads=H, num_hidden_layers=LAYERS,
                                     intermediate_size=32, vocab_size=13, max_position_embeddings=8,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPTNeoXForCausalLM(cfg).eval()


def llama(kv=2):
    cfg = transformers.LlamaConfig(hidden_size=E, num_attention_heads=H, num_key_value_heads=kv,
                                   num_hidden_layers=LAYERS, intermediate_size=32, vocab_size=13,
                                   max_position_embeddings=8, bos_token_id=0, eos_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


# Counted by hand per head: q, k and v each take HD output units of E inputs (+ HD biases each
# where the layout has biases), and the output projection takes HD input units of E outputs.
EXPECTED = {"gpt2": 3 * HD * E + 3 * HD + HD * E,  # c_attn weight, c_attn bias, c_proj weight
            "neox": 3 * HD * E + 3 * HD + HD * E,  # query_key_value weight + bias, dense weight
            "llama": 3 * HD * E + HD * E}  # q, k, v (GQA: the group's shared k, v), o; no biases


@pytest.mark.parametrize("name, build", [("gpt2", gpt2), ("neox", neox), ("llama", llama)])
def test_each_head_selects_the_expected_number_of_weights(name, build):
    model = build()
    for layer in range(LAYERS):
        seen_q = None
        for head in range(H):
            masks = attention_head_masks(model, layer, head)
            assert sum(int(m.sum()) for m in masks.values()) == EXPECTED[name], (name, layer, head)
            assert all(f".{layer}." in n for n in masks)
            qkv = next(m for n, m in masks.items() if "c_attn.weight" in n or "query_key_value.weight" in n
                       or "q_proj.weight" in n)
            seen_q = qkv.int() if seen_q is None else seen_q + qkv.int()
        assert seen_q.max() == 1  # heads are disjoint; every q (GPT-2/NeoX: q, k, v) weight is some head's
        assert seen_q.min() == 1


def test_grouped_query_heads_share_key_and_value():
    model = llama(kv=2)
    a, b, c = (attention_head_masks(model, 0, h) for h in (0, 1, 2))
    k = "model.layers.0.self_attn.k_proj.weight"
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a[k], b[k]) and not (a[k] & c[k]).any()  # heads 0, 1 in group 0; head 2 in group 1
    assert not (a[q] & b[q]).any()
    assert a[k].shape == (2 * HD, E) and int(a[k].sum()) == HD * E


@pytest.mark.parametrize("build", [gpt2, neox, llama])
def test_head_masks_match_devinterp(build):
    """devinterp 2.x's create_param_masks('l1h2') is an independent implementation."""
    wr = pytest.importorskip("devinterp.slt.weight_restrictions")
    model = build()
    ours = attention_head_masks(model, 1, 2)
    theirs = {n: m for n, m in wr.create_param_masks(model, "l1h2").items() if m is not None}
    assert ours.keys() == theirs.keys()
    for n in ours:
        assert torch.equal(ours[n], theirs[n].bool()), n


def lm_loss(model, batch):
    x = batch[0]
    logits = model(x).logits[:, :-1]
    per_token = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                  reduction="none")
    return per_token.view(x.shape[0], -1).mean(dim=1)


def test_one_heads_llc_runs_batched_on_eager_attention_without_torch_warnings():
    model = gpt2()
    assert model.config._attn_implementation == "sdpa"
    x = torch.randint(0, 13, (64, 8), generator=torch.Generator().manual_seed(0))
    data = cz.Data.from_tensors(train=(x, x), loss=lm_loss)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = cz.get_measure("llc", restrict=attention_head_masks(model, 0, 1), num_chains=2, num_draws=10,
                           batch_size=16, seed=0)(model, data)
    assert r.extras["num_sampled"] == EXPECTED["gpt2"]
    assert "eager" in r.extras["vmap_note"]
    assert model.config._attn_implementation == "sdpa"  # the caller's model is untouched
