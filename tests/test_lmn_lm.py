"""LMN at scale: memory bounded by max_elements, chunked = unchunked, and language models."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import complexity_zoo as cz
from complexity_zoo.errors import InvalidSettingError
from complexity_zoo.measures.lmn import linear_connectivity
from complexity_zoo.tasks import _modular_models as modular
from complexity_zoo.testing import tiny_gpt2


@pytest.mark.parametrize("max_elements", [5, 40, 400, 3000])
def test_chunked_equals_unchunked(max_elements):
    """Whole pairs per forward reduced in slices, and pairs split over forwards (moments), against
    one unbounded pass; float64 so the model's batch composition cannot move the numbers."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 12)).double()
    with torch.no_grad():
        net[2].weight[0] = 0.0  # one constant output, counted as linear on every path
    pts = torch.randn(9, 3, dtype=torch.float64)
    full, constant = linear_connectivity(net, pts, num_points=21, max_elements=None)
    chunked, constant_chunked = linear_connectivity(net, pts, num_points=21, batch_size=50, max_elements=max_elements)
    assert torch.allclose(chunked, full, rtol=1e-10, atol=1e-12)
    assert constant == constant_chunked == 36


def test_reference_values_do_not_move(model_and_data):
    """The tiny classifier's LMN with the defaults is computed as before max_elements existed."""
    model, data = model_and_data
    a = cz.get_measure("lmn", num_samples=30)(model, data).value
    b = cz.get_measure("lmn", num_samples=30, max_elements=None)(model, data).value
    assert a == b


@pytest.fixture(scope="module")
def gpt2():
    pytest.importorskip("transformers")
    return tiny_gpt2()


def test_a_transformer_is_measured_from_its_token_embedding(gpt2):
    ids = torch.randint(0, 100, (30, 10), generator=torch.Generator().manual_seed(1))
    data = cz.Data(train=(ids,), loss="causal_lm")
    default = cz.get_measure("lmn", num_samples=12)(gpt2, data)
    assert default.extras["layer"] == "transformer.wte" and default.extras["interpolated"] == "output"
    # The same path as the input of the dropout after wte + wpe (the positions are fixed along a path).
    drop = cz.get_measure("lmn", num_samples=12, layer="transformer.drop")(gpt2, data)
    assert drop.extras["interpolated"] == "input" and drop.value == pytest.approx(default.value, rel=1e-4)
    block = cz.get_measure("lmn", num_samples=12, layer="transformer.h.1", max_elements=21_000)(gpt2, data)
    assert 1.0 <= block.value <= 12 and block.value != pytest.approx(default.value, rel=1e-3)


def test_modular_models_keep_the_papers_layer_or_use_the_embedding():
    ids = torch.randint(0, 11, (40, 4), generator=torch.Generator().manual_seed(0))
    data = cz.Data.from_tensors(train=(ids, ids[:, 0]))
    torch.manual_seed(0)
    mlp = modular.mlp(p=11, d_embed=8, d_hidden=16)  # its embedding runs twice (a and b): the paper's layer
    assert cz.get_measure("lmn", num_samples=10)(mlp, data).extras["layer"] == "hidden"
    with pytest.raises(InvalidSettingError, match="runs 2 times per forward"):
        cz.get_measure("lmn", num_samples=10, layer="embed")(mlp, data)
    net = modular.transformer(p=11, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_positions=4)
    assert cz.get_measure("lmn", num_samples=10)(net, data).extras["layer"] == "embed"


class Counting(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y, self.reads = x, y, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        return self.x[i], self.y[i]


def test_inputs_are_read_from_a_dataloader_without_loading_the_split(model_and_data):
    model, data = model_and_data
    x, y = data.train
    ds = Counting(x, y)
    loader = cz.Data(train=torch.utils.data.DataLoader(ds, batch_size=16))
    a = cz.get_measure("lmn", num_samples=10, seed=3)(model, loader).value
    assert ds.reads == 10
    assert a == pytest.approx(cz.get_measure("lmn", num_samples=10, seed=3)(model, data).value, rel=1e-12)


MEMORY = textwrap.dedent("""
    import json, torch, transformers
    import complexity_zoo as cz
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = transformers.GPT2Config(n_layer=1, n_head=1, n_embd=16, vocab_size=512, n_positions=8)
    model = transformers.GPT2LMHeadModel(config).eval()
    data = cz.Data(train=(torch.randint(0, 512, (40, 8)),), loss="causal_lm")
    def status(key):  # Linux: VmRSS now, VmHWM the peak since the last reset
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    def growth(max_elements):  # peak RSS growth of one call (the high-water mark reset first)
        base = status("VmRSS:")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        value = cz.get_measure("lmn", max_elements=max_elements, **settings)(model, data).value
        return value, status("VmHWM:") - base
    settings = dict(num_samples=30, seed=0, layer="transformer.drop")
    cz.get_measure("lmn", num_samples=3, seed=0)(model, data)  # warm up: lazy imports, allocator
    bounded, bounded_mb = growth(2**18)
    unbounded, unbounded_mb = growth(None)
    print(json.dumps({"bounded_mb": bounded_mb, "unbounded_mb": unbounded_mb, "values": [bounded, unbounded]}))
""")


def test_peak_memory_is_bounded_by_max_elements():
    """435 pairs x 21 points x (8 tokens x 512 logits): the unbounded path keeps 390 pairs' outputs
    (134 MB float32, and float64 copies); 2**18 outputs per forward keep about 2 MB."""
    pytest.importorskip("transformers")
    out = subprocess.run([sys.executable, "-c", MEMORY], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print(report)
    assert report["values"][0] == pytest.approx(report["values"][1], rel=1e-5)
    assert report["bounded_mb"] < 100, report
    assert report["unbounded_mb"] > 500 and report["unbounded_mb"] > 8 * max(report["bounded_mb"], 1), report
