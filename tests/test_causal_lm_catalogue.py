"""The catalogue on causal LMs: GPT-2, GPT-NeoX and Llama-style checkpoints read from a Hub cache.

Curvature runs through the math SDPA backend (checked against eager attention, an independent
attention implementation); PAC-Bayes and sharpness searches use next-token accuracy and the
margins are per next token (checked against hand computations on a bigram table).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo.testing import check_measure, hub_cache_suite

transformers = pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

from complexity_zoo.adapters import huggingface as hf  # noqa: E402
from complexity_zoo.measures.flatness import train_accuracy  # noqa: E402

ARCHS = {"gpt2": "transformer.wte", "gpt_neox": "gpt_neox.embed_in", "llama": "model.embed_tokens"}
SMALL = {"hessian_trace": {"num_probes": 4}, "hessian_top_eigenvalue": {"max_iterations": 10},
         "fisher_rao_norm": {}, "pacbayes_flatness": {"search_depth": 4, "montecarlo_samples": 2},
         "sharpness_flatness": {"search_depth": 3, "ascent_steps": 2}, "inverse_margin": {},
         "log_prod_spectral_over_margin": {}}


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    """arch -> (the step-40 model read back through load_trajectory(revisions="step*"), its lm_data)."""
    cache = tmp_path_factory.mktemp("hub")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        for arch in ARCHS:
            tokens = hub_cache_suite(cache, f"org/tiny-{arch}", [0, 40], arch=arch)
            traj = hf.load_trajectory(f"org/tiny-{arch}", revisions="step*", cache_dir=cache)
            assert traj.steps == [0, 40]
            out[arch] = traj.model_at(40), hf.lm_data(tokens[:16], tokens[16:24], batch_size=8)
    return out


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", SMALL)
def test_the_catalogue_gives_finite_conforming_values(suites, arch, name):
    model, data = suites[arch]
    result = check_measure(cz.get_measure(name, **SMALL[name]), model, data)
    assert math.isfinite(result.value)


@pytest.mark.parametrize("arch", ARCHS)
def test_lmn_starts_at_the_token_embedding_and_llc_runs(suites, arch):
    model, data = suites[arch]
    lmn = cz.get_measure("lmn", num_samples=4)(model, data)
    assert lmn.extras["layer"] == ARCHS[arch] and math.isfinite(lmn.value)
    llc = cz.get_measure("llc", num_chains=2, num_draws=5, batch_size=8, per_component="layer")(model, data)
    assert math.isfinite(llc.value)
    assert all(math.isfinite(v) for v in llc.extras["per_layer"].values())


@pytest.mark.parametrize("arch", ARCHS)
def test_curvature_through_math_sdpa_equals_eager_attention_and_is_restored(suites, arch):
    model, data = suites[arch]
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    for name, settings in [("hessian_trace", {"num_probes": 3, "seed": 1}),
                           ("hessian_top_eigenvalue", {"max_iterations": 20, "seed": 1}), ("fisher_rao_norm", {})]:
        a = cz.get_measure(name, **settings)(model, data).value
        b = cz.get_measure(name, **settings)(eager, data).value
        assert a == pytest.approx(b, rel=1e-3, abs=1e-6), name
    ids = data.train[0][:2]  # afterwards, the model's own fused attention again: no double backward
    loss = model(ids, labels=ids).loss
    (g,) = torch.autograd.grad(loss, [model.get_input_embeddings().weight], create_graph=True)
    with pytest.raises(RuntimeError, match="derivative for .*scaled_dot_product"):
        torch.autograd.grad(g.sum(), [model.get_input_embeddings().weight])


V = 7


class Bigram(nn.Module):
    """Logits at position t depend only on token t: a table the test reads by hand."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.table = nn.Embedding(V, V)

    def forward(self, ids, attention_mask=None):
        return self.table(ids)


def test_token_margins_and_next_token_accuracy_by_hand():
    model = Bigram()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (6, 9), generator=g)
    labels = ids.clone()
    labels[0, 3] = -100  # not counted
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padding: not counted
    data = cz.Data.from_tensors(train=(ids, labels, mask), loss="causal_lm", batch_size=4)
    table = model.table.weight.detach().double()
    margins, accs = [], []
    for b in range(6):
        hits = []
        for t in range(8):
            y = int(labels[b, t + 1])
            if y == -100 or int(mask[b, t + 1]) == 0:
                continue
            row = table[int(ids[b, t])]
            margins.append(float(row[y] - max(float(row[j]) for j in range(V) if j != y)))
            hits.append(float(int(row.argmax()) == y))
        accs.append(sum(hits) / len(hits))
    k = max(1, int(len(margins) * 0.1))  # the reference's k-th smallest, k = floor(m / 10)
    gamma = abs(sorted(margins)[k - 1])
    assert cz.get_measure("inverse_margin")(model, data).value == pytest.approx(1 / gamma**2, rel=1e-9)
    assert train_accuracy(model, data) == pytest.approx(sum(accs) / len(accs), rel=1e-12)
    moved = {n: p.detach() + 0.0 for n, p in model.named_parameters()}
    assert train_accuracy(model, data, moved) == pytest.approx(sum(accs) / len(accs), rel=1e-12)
